"""Score residuals, dfbeta and the robust (sandwich) variance of a Cox fit (private).

As R's ``coxph(..., robust = TRUE, cluster = )``: the score residuals of ``residuals.coxph(type =
"score")`` (``coxscore2`` / ``agscore3``), times the case weights, times the model-based variance
give ``dfbeta``; summed within clusters, ``t(dfbeta) %*% dfbeta`` is the robust variance (Lin & Wei
1989).  The robust score test uses the same residuals at beta = 0.
"""

from __future__ import annotations

import numpy as np

from oncosurg.stats import _cox_kernels as _k
from oncosurg.stats._cox_linalg import _cholesky2, _chsolve2


def score_residuals(
    start: np.ndarray | None,
    stop: np.ndarray,
    event: np.ndarray,
    scode: np.ndarray,
    Xc: np.ndarray,
    coef: np.ndarray,
    wt: np.ndarray,
    efron: int,
) -> np.ndarray:
    """(n, p) score residuals in input row order (unweighted, as R's ``type = "score"``)."""
    n = stop.shape[0]
    ev = event.astype(np.int8)
    order = np.lexsort((-ev, stop, scode))  # R: order(strata, stop, -status)
    X = np.ascontiguousarray(Xc[order])
    lp = X @ coef
    score = np.exp(lp)
    if start is None:
        r = _k.cox_score_resid(
            np.ascontiguousarray(stop[order]), np.ascontiguousarray(ev[order]),
            np.ascontiguousarray(scode[order]), X, score, np.ascontiguousarray(wt[order]), efron,
        )
    else:
        st = np.ascontiguousarray(start[order])
        sc = np.ascontiguousarray(scode[order])
        sort1 = np.lexsort((st, sc)).astype(np.int64)  # R: order(istrat, start)
        r = _k.cox_score_resid_counting(
            st, np.ascontiguousarray(stop[order]), np.ascontiguousarray(ev[order]), sc, X, score,
            np.ascontiguousarray(wt[order]), sort1, efron,
        )
    out = np.empty((n, Xc.shape[1]))
    out[order] = r
    return out


def collapse(rows: np.ndarray, cluster: np.ndarray, ncluster: int) -> np.ndarray:
    """R's ``rowsum(rows, cluster)``: per-cluster column sums."""
    out = np.zeros((ncluster, rows.shape[1]))
    np.add.at(out, cluster, rows)
    return out


def robust_variance(
    start: np.ndarray | None,
    stop: np.ndarray,
    event: np.ndarray,
    scode: np.ndarray,
    Xc: np.ndarray,
    coef: np.ndarray,
    naive_var: np.ndarray,
    wt: np.ndarray,
    cluster: np.ndarray,
    efron: int,
    toler_chol: float,
) -> tuple[np.ndarray, float, np.ndarray]:
    """(robust variance, robust score test, dfbeta per cluster) as R's coxph."""
    ncl = int(cluster.max()) + 1
    resid = score_residuals(start, stop, event, scode, Xc, coef, wt, efron)
    dfbeta = collapse((resid @ naive_var) * wt[:, None], cluster, ncl)
    var = dfbeta.T @ dfbeta
    resid0 = score_residuals(start, stop, event, scode, Xc, np.zeros_like(coef), wt, efron)
    temp0 = collapse(resid0 * wt[:, None], cluster, ncl)
    u = temp0.sum(axis=0)
    chol, _ = _cholesky2(temp0.T @ temp0, toler_chol)
    rscore = float(np.dot(u, _chsolve2(chol, u)))
    return var, rscore, dfbeta
