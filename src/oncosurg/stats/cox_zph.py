"""Test of proportional hazards for a Cox model, as R's ``cox.zph(fit, transform = "km")``.

The test (Grambsch & Therneau, Biometrika 1994) is the score test for adding ``g(t) x`` to the
model, with g the transformed time centred at its mean over the events: per term and global
(R 3.x's exact score test, not the old approximation).  Scaled Schoenfeld residuals
(``beta + V^-1 r``) plotted against g(t) show how a coefficient drifts over time.

>>> fit = coxph(time, status, X)             # doctest: +SKIP
>>> z = cox_zph(fit)                         # or fit.zph()
>>> z.table()                                # term, chisq, df, p (and GLOBAL)

Transforms (R's ``transform =``): ``"km"`` (default: 1 - the left-continuous Kaplan-Meier of the
fitted data), ``"identity"``, ``"rank"``, ``"log"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sps

from oncosurg.stats import _cox_kernels as _k
from oncosurg.stats._checks import SurvivalData, SurvivalInputError
from oncosurg.stats.results import _Tabular, clean

__all__ = ["CoxZph", "cox_zph"]

TRANSFORMS = ("km", "identity", "rank", "log")


@dataclass(frozen=True, eq=False)
class CoxZph(_Tabular):
    """Result of :func:`cox_zph`: the test table and the scaled Schoenfeld residuals.

    ``terms``/``chisq``/``df``/``p`` hold one row per model term and a last ``"GLOBAL"`` row.
    ``x`` (transformed times), ``time`` and ``y`` (n_events x n_terms scaled residuals, NaN where a
    covariate is constant within the stratum) are R's ``$x``, ``$time`` and ``$y``; ``var`` is R's
    ``$var``.
    """

    terms: tuple[str, ...]
    chisq: np.ndarray
    df: np.ndarray
    p: np.ndarray
    transform: str
    x: np.ndarray = field(repr=False)
    time: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    var: np.ndarray = field(repr=False)
    strata: np.ndarray | None = field(default=None, repr=False)

    def table(self) -> list[dict[str, Any]]:
        return [
            clean({"term": t, "chisq": self.chisq[i], "df": int(self.df[i]), "p": self.p[i]})
            for i, t in enumerate(self.terms)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "table": self.table()}

    @property
    def global_p(self) -> float:
        return float(self.p[-1])


def _transform_times(times: np.ndarray, data: Any, transform: str) -> np.ndarray:
    if transform == "identity":
        return times.copy()
    if transform == "log":
        return np.log(times)
    if transform == "rank":
        from scipy.stats import rankdata

        return rankdata(times)  # R's rank(): average ranks for ties
    # km: 1 - c(1, S)[findInterval(times, km$time, left.open = TRUE) + 1], unweighted KM of the data
    from oncosurg.stats.km import _fit

    km = _fit(SurvivalData(data["stop"], data["event"] == 1, None, data["start"]), "log", 0.95)
    idx = np.searchsorted(km.time, times, side="left")  # number of KM times < t
    return 1.0 - np.concatenate(([1.0], km.surv))[idx]


def cox_zph(fit: Any, transform: str = "km", *, terms: bool = True, global_test: bool = True) -> CoxZph:
    """Proportional-hazards test of a :class:`~oncosurg.stats.cox.CoxResult` (R's ``cox.zph``).

    ``terms=True`` tests each input column as a whole (a factor's indicators together, df = levels
    - 1), as R's default; ``terms=False`` tests each coefficient.
    """
    if transform not in TRANSFORMS:
        raise SurvivalInputError(f"transform must be one of {', '.join(map(repr, TRANSFORMS))}; got {transform!r}.")
    data = getattr(fit, "_data", None)
    if not data:
        raise SurvivalInputError("this Cox result carries no data (it was not made by coxph); refit it.")
    X = data["X"]
    n, p = X.shape
    stop = data["stop"]
    ev = data["event"].astype(np.int64)
    scode = data["strata"]
    coef = np.array([c.coef for c in fit.coefficients])
    counting = data["start"] is not None
    start = data["start"] if counting else np.full(n, -np.inf)
    Xc = np.ascontiguousarray(X - X.mean(axis=0))  # zph1/zph2 recentre by the plain mean
    eta = Xc @ coef
    ttimes = _transform_times(stop, data, transform)
    event = ev == 1
    gtime = ttimes - ttimes[event].mean()
    idx = np.arange(n)
    if counting:
        sort2 = np.lexsort((idx, -stop, -scode)).astype(np.int64)
    else:  # zph1's order: ties in reverse so that the residuals come out in row order, as R's
        sort2 = np.lexsort((-idx, -stop, -scode)).astype(np.int64)
    sort1 = np.lexsort((idx, -start, -scode)).astype(np.int64)
    u, imat, schoen, rows = _k.zph_kernel(
        np.ascontiguousarray(start, dtype=np.float64), np.ascontiguousarray(stop), ev,
        np.ascontiguousarray(scode, dtype=np.int64), Xc, eta, np.ascontiguousarray(data["weights"]),
        np.ascontiguousarray(gtime), sort1, sort2, data["efron"],
    )
    if terms:
        asgn = [(name, list(cols)) for name, cols in fit.terms] or [(nm, [j]) for j, nm in enumerate(fit.names)]
    else:
        asgn = [(nm, [j]) for j, nm in enumerate(fit.names)]
    nterm = len(asgn)
    test = np.zeros(nterm + 1)
    df = np.ones(nterm + 1, dtype=np.int64)
    for ii, (_, jj) in enumerate(asgn):
        kk = list(range(p)) + [j + p for j in jj]
        uu = np.concatenate((np.zeros(p), u[[j + p for j in jj]]))
        test[ii] = float(np.linalg.solve(imat[np.ix_(kk, kk)], uu) @ uu)
        df[ii] = len(jj)
    uu = np.concatenate((np.zeros(p), u[p:]))
    test[nterm] = float(np.linalg.solve(imat, uu) @ uu)
    df[nterm] = p
    pval = _sps.chi2.sf(test, df)
    names = [a[0] for a in asgn] + ["GLOBAL"]
    if not global_test:
        test, df, pval, names = test[:-1], df[:-1], pval[:-1], names[:-1]

    # scaled Schoenfeld residuals
    nstrat = int(scode.max()) + 1
    ev_strat = scode[rows]
    used = np.zeros((nstrat, p), dtype=np.int64)
    for s in range(nstrat):
        m = scode == s
        if not m.any():
            continue
        d = int(ev[m].sum())
        first = X[m][0]
        used[s] = np.where((X[m] != first).any(axis=0), d, 0)
    for _, jj in asgn:
        if len(jj) > 1 and (used[:, jj] == 0).any():
            used[:, jj] = used[:, jj].max(axis=1, keepdims=True)
    wtmat = np.zeros((p, p))
    for s in range(nstrat):
        wtmat += np.minimum.outer(used[s], used[s])
    vmean = imat[:p, :p] / np.where(wtmat == 0, 1, wtmat)
    sresid = schoen.copy()
    if terms and any(len(jj) > 1 for _, jj in asgn):
        temp = np.zeros((p, nterm))
        for i, (_, jj) in enumerate(asgn):
            temp[jj, i] = 1.0 if len(jj) == 1 else coef[jj]
        sresid = sresid @ temp
        vmean = temp.T @ vmean @ temp
        used = used[:, [jj[0] for _, jj in asgn]]
    sresid = np.asarray(sresid, dtype=np.float64).copy()
    for s in range(nstrat):
        k = np.flatnonzero(used[s] > 0)
        j = np.flatnonzero(ev_strat == s)
        if k.size == 0 or j.size == 0:
            continue
        sresid[np.ix_(j, k)] = np.linalg.solve(vmean[np.ix_(k, k)], sresid[np.ix_(j, k)].T).T
        other = np.setdiff1d(np.arange(sresid.shape[1]), k)
        sresid[np.ix_(j, other)] = np.nan
    for i, (_, jj) in enumerate(asgn):
        sresid[:, i] += coef[jj[0]] if len(jj) == 1 else 1.0
    return CoxZph(
        terms=tuple(names), chisq=test, df=df, p=pval, transform=transform,
        x=ttimes[rows], time=stop[rows], y=sresid, var=np.linalg.inv(vmean),
        strata=None if fit.strata is None else np.asarray(fit.strata, dtype=object)[ev_strat],
    )
