"""Survival curves from a Cox model, as R's ``survfit(coxph_fit, newdata = )``.

For each row of ``newdata`` (a covariate pattern, e.g. "a 65-year-old with bilobar disease") the
curve is ``S(t | x) = exp(-H0(t) exp(x' beta))`` with the baseline cumulative hazard H0 of the fit:
Breslow's for ``ties = "breslow"``, the Efron-corrected one for ``ties = "efron"`` (R's default
``ctype``: ``stype = 2``, ``ctype = 2`` for Efron fits).  Standard errors are R's: the variance of the
cumulative hazard plus the term for the uncertainty in beta (``agsurv`` / ``coxsurv.fit``), using
the fit's variance (robust when the fit is); confidence bands as ``survfit_confint`` on the log
scale by default.  Stratified fits give one set of curves per stratum.

>>> fit = coxph(time, status, {"age": age, "major": major})              # doctest: +SKIP
>>> cs = survfit_cox(fit, {"age": [60, 60], "major": [0, 1]})             # doctest: +SKIP
>>> cs.curves[0].surv[:, 1]                                               # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oncosurg.stats._checks import SurvivalInputError, check_conf_level, check_conf_type
from oncosurg.stats._cox_design import newdata_matrix
from oncosurg.stats.km import confint
from oncosurg.stats.results import _Tabular, clean

__all__ = ["CoxCurve", "CoxSurvival", "survfit_cox"]


@dataclass(frozen=True, eq=False)
class CoxCurve:
    """Curves of one stratum: rows are the distinct times of the stratum's data, columns the rows
    of ``newdata``.  ``std_err`` is the SE of the cumulative hazard (= of log S, R's ``std.err``)."""

    stratum: Any
    time: np.ndarray = field(repr=False)
    n_risk: np.ndarray = field(repr=False)
    n_event: np.ndarray = field(repr=False)
    n_censor: np.ndarray = field(repr=False)
    surv: np.ndarray = field(repr=False)  # (ntime, nnew)
    cumhaz: np.ndarray = field(repr=False)
    std_err: np.ndarray = field(repr=False)
    lower: np.ndarray = field(repr=False)
    upper: np.ndarray = field(repr=False)

    def at(self, t: float) -> np.ndarray:
        """S(t) for each newdata row (1 before the first time)."""
        i = int(np.searchsorted(self.time, t, side="right")) - 1
        return np.ones(self.surv.shape[1]) if i < 0 else self.surv[i]


@dataclass(frozen=True, eq=False)
class CoxSurvival(_Tabular):
    """Result of :func:`survfit_cox`: one :class:`CoxCurve` per stratum (one without strata)."""

    curves: tuple[CoxCurve, ...]
    newdata: np.ndarray = field(repr=False)  # design rows used
    names: tuple[str, ...] = ()
    conf_type: str = "log"
    conf_level: float = 0.95

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for c in self.curves:
            for k in range(c.surv.shape[1]):
                for j, t in enumerate(c.time.tolist()):
                    rows.append(clean({
                        "stratum": c.stratum, "curve": k, "time": t, "n_risk": c.n_risk[j], "surv": c.surv[j, k],
                        "std_err": c.std_err[j, k], "lower": c.lower[j, k], "upper": c.upper[j, k],
                    }))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return clean({
            "conf_type": self.conf_type, "conf_level": self.conf_level, "names": list(self.names),
            "newdata": self.newdata,
            "curves": [{"stratum": c.stratum, "time": c.time, "n_risk": c.n_risk, "surv": c.surv.T,
                        "std_err": c.std_err.T, "lower": c.lower.T, "upper": c.upper.T} for c in self.curves],
        })


def _rowsum(values: np.ndarray, inv: np.ndarray, m: int) -> np.ndarray:
    if values.ndim == 1:
        return np.bincount(inv, weights=values, minlength=m)
    out = np.zeros((m, values.shape[1]))
    np.add.at(out, inv, values)
    return out


def _rcumsum(x: np.ndarray) -> np.ndarray:
    return np.cumsum(x[::-1], axis=0)[::-1]


def _agsurv(stop, start, event, x, wt, risk, efron: bool):  # type: ignore[no-untyped-def]
    """R's ``agsurv`` (survtype = vartype = 2 Breslow, 3 Efron): counts, hazard, its variance and
    the cumulative ``xbar`` term, at the distinct times of one stratum."""
    time, inv = np.unique(stop, return_inverse=True)
    inv = inv.ravel()
    m = time.shape[0]
    death = event == 1
    nevent = _rowsum(wt * death, inv, m)
    ncens = _rowsum(wt * ~death, inv, m)
    wrisk = wt * risk
    nrisk = _rcumsum(_rowsum(wrisk, inv, m))
    irisk = _rcumsum(_rowsum(wt, inv, m))
    xsum = _rcumsum(_rowsum(wrisk[:, None] * x, inv, m))
    if start is not None:  # minus the rows not yet entered (start >= t)
        later = np.searchsorted(np.sort(start), time, side="left")  # rows with start < t
        order = np.argsort(start, kind="stable")
        cw = np.concatenate(([0.0], np.cumsum(wrisk[order])))
        ci = np.concatenate(([0.0], np.cumsum(wt[order])))
        cx = np.vstack((np.zeros(x.shape[1]), np.cumsum(wrisk[order, None] * x[order], axis=0)))
        nrisk = nrisk - (cw[-1] - cw[later])
        irisk = irisk - (ci[-1] - ci[later])
        xsum = xsum - (cx[-1] - cx[later])
    ndeath = np.bincount(inv, weights=death.astype(np.float64), minlength=m)
    if not efron:
        with np.errstate(divide="ignore", invalid="ignore"):
            haz = np.where(nevent > 0, nevent / nrisk, 0.0)
            varhaz = np.where(nevent > 0, nevent / nrisk**2, 0.0)
            xbar = (xsum / nrisk[:, None]) * haz[:, None]
    else:  # agsurv5
        erisk = _rowsum(wrisk * death, inv, m)
        xsum2 = _rowsum((wrisk * death)[:, None] * x, inv, m)
        sum1 = np.zeros(m)
        sum2 = np.zeros(m)
        xb = np.zeros((m, x.shape[1]))
        for i in np.flatnonzero(ndeath > 0):
            d = int(ndeath[i])
            for j in range(d):
                temp = 1.0 / (nrisk[i] - erisk[i] * j / d)
                sum1[i] += temp / d
                sum2[i] += temp * temp / d
                xb[i] += (xsum[i] - xsum2[i] * j / d) * temp * temp / d
        haz = nevent * sum1
        varhaz = nevent * sum2
        xbar = nevent[:, None] * xb
    return time, irisk, nevent, ncens, np.cumsum(haz), np.cumsum(varhaz), np.cumsum(xbar, axis=0)


def survfit_cox(fit: Any, newdata: Any = None, *, conf_type: str = "log", conf_level: float = 0.95) -> CoxSurvival:
    """Predicted survival curves of a :class:`~oncosurg.stats.cox.CoxResult` for ``newdata``.

    ``newdata``: a dict / DataFrame with the model's input columns (categorical values as levels) or
    its design-column names, or a 2-D array of design rows; ``None`` gives R's default curve at the
    fit's centring values (``fit$means``: the column means, 0 for 0/1 columns).
    """
    check_conf_type(conf_type)
    conf_level = check_conf_level(conf_level)
    data = getattr(fit, "_data", None)
    if not data:
        raise SurvivalInputError("this Cox result carries no data (it was not made by coxph); refit it.")
    names = tuple(fit.names)
    means = np.asarray(data["means"], dtype=np.float64)
    if newdata is None:
        x2 = means.reshape(1, -1)
    else:
        terms = fit.terms or tuple((nm, (j,)) for j, nm in enumerate(names))
        x2 = newdata_matrix(newdata, names, terms, data.get("levels", {}))
    beta = np.array([c.coef for c in fit.coefficients])
    V = np.asarray(fit.var, dtype=np.float64)
    X = data["X"] - means
    x2c = x2 - means
    risk = np.exp(X @ beta)
    risk2 = np.exp(x2c @ beta)
    scode = data["strata"]
    labels = fit.strata if fit.strata is not None else (None,)
    curves = []
    for s, lab in enumerate(labels):
        rows = np.flatnonzero(scode == s)
        start = None if data["start"] is None else data["start"][rows]
        time, nrisk, nevent, ncens, cumhaz, cvar, xbar = _agsurv(
            data["stop"][rows], start, data["event"][rows], X[rows], data["weights"][rows], risk[rows],
            bool(data["efron"]),
        )
        surv = np.exp(-np.outer(cumhaz, risk2))
        se = np.empty_like(surv)
        for k in range(x2c.shape[0]):
            dt = np.outer(cumhaz, x2c[k]) - xbar
            se[:, k] = np.sqrt((cvar + np.einsum("ij,jk,ik->i", dt, V, dt)) * risk2[k] ** 2)
        lo, up = confint(surv, se, conf_type, conf_level)
        curves.append(CoxCurve(stratum=lab, time=time, n_risk=nrisk, n_event=nevent, n_censor=ncens, surv=surv,
                               cumhaz=np.outer(cumhaz, risk2), std_err=se, lower=lo, upper=up))
    return CoxSurvival(curves=tuple(curves), newdata=x2, names=names, conf_type=conf_type, conf_level=conf_level)
