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


def residual_order(start: np.ndarray | None, stop: np.ndarray, event: np.ndarray, scode: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """R's sort for the residuals, order(strata, stop, -status) (and order(strata, start) of those
    rows for (start, stop] data), as one integer key sort."""
    _, tr = np.unique(stop, return_inverse=True)
    key = (scode.astype(np.int64) * (int(tr.max()) + 1) + tr.ravel()) * 2 + (event == 0)
    order = np.argsort(key, kind="stable")
    if start is None:
        return order, None
    _, sr = np.unique(start[order], return_inverse=True)
    skey = scode[order].astype(np.int64) * (int(sr.max()) + 1) + sr.ravel()
    return order, np.argsort(skey, kind="stable").astype(np.int64)


def score_residuals(
    start: np.ndarray | None,
    stop: np.ndarray,
    event: np.ndarray,
    scode: np.ndarray,
    Xc: np.ndarray,
    coef: np.ndarray,
    wt: np.ndarray,
    efron: int,
    sorted_rows: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> np.ndarray:
    """(n, p) score residuals in input row order (unweighted, as R's ``type = "score"``)."""
    n = stop.shape[0]
    ev = event.astype(np.int8)
    order, sort1 = sorted_rows if sorted_rows is not None else residual_order(start, stop, ev, scode)
    X = np.ascontiguousarray(Xc[order])
    score = np.exp(X @ coef)
    if start is None:
        r = _k.cox_score_resid(
            np.ascontiguousarray(stop[order]), np.ascontiguousarray(ev[order]),
            np.ascontiguousarray(scode[order]), X, score, np.ascontiguousarray(wt[order]), efron,
        )
    else:
        r = _k.cox_score_resid_counting(
            np.ascontiguousarray(start[order]), np.ascontiguousarray(stop[order]), np.ascontiguousarray(ev[order]),
            np.ascontiguousarray(scode[order]), X, score, np.ascontiguousarray(wt[order]), sort1, efron,
        )
    out = np.empty((n, Xc.shape[1]))
    out[order] = r
    return out


def collapse(rows: np.ndarray, cluster: np.ndarray | None, ncluster: int) -> np.ndarray:
    """R's ``rowsum(rows, cluster)``: per-cluster column sums (``None``: each row its own cluster)."""
    if cluster is None:
        return rows
    return np.column_stack([np.bincount(cluster, weights=rows[:, j], minlength=ncluster)
                            for j in range(rows.shape[1])])


def robust_variance(
    start: np.ndarray | None,
    stop: np.ndarray,
    event: np.ndarray,
    scode: np.ndarray,
    Xc: np.ndarray,
    coef: np.ndarray,
    naive_var: np.ndarray,
    wt: np.ndarray,
    cluster: np.ndarray | None,
    efron: int,
    toler_chol: float,
) -> tuple[np.ndarray, float, np.ndarray]:
    """(robust variance, robust score test, dfbeta per cluster) as R's coxph; ``cluster=None``
    means each row is its own cluster."""
    ncl = stop.shape[0] if cluster is None else int(cluster.max()) + 1
    rows = residual_order(start, stop, event, scode)
    resid = score_residuals(start, stop, event, scode, Xc, coef, wt, efron, rows)
    dfbeta = collapse((resid @ naive_var) * wt[:, None], cluster, ncl)
    var = dfbeta.T @ dfbeta
    resid0 = score_residuals(start, stop, event, scode, Xc, np.zeros_like(coef), wt, efron, rows)
    temp0 = collapse(resid0 * wt[:, None], cluster, ncl)
    u = temp0.sum(axis=0)
    chol, _ = _cholesky2(temp0.T @ temp0, toler_chol)
    rscore = float(np.dot(u, _chsolve2(chol, u)))
    return var, rscore, dfbeta
