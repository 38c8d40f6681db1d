"""Cox proportional hazards regression, matching R ``survival::coxph`` (survival 3.5.3).

>>> res = coxph(time, event, {"age": age, "sex": sex})            # doctest: +SKIP
>>> res.to_dict()["coefficients"]["age"]["hr"]                    # doctest: +SKIP

What is reproduced from R, and how
----------------------------------
* Ties: Efron (default, as ``coxph``) or Breslow.
* Input: right-censored ``(time, event)``; counting-process ``(entry, time]`` when ``entry`` is given
  (left truncation, time-varying covariates with several rows per subject); ``strata``.
* Times are first passed through R's ``aeqSurv`` rule (``coxph.control(timefix=TRUE)``): times that
  differ by less than ``sqrt(machine eps)`` (absolutely or relative to the mean |time|) are merged.
* Newton-Raphson from beta = 0 exactly as ``coxfit6.c`` (right-censored) and ``agfit4.c``
  (counting-process): covariates centred (columns whose values are all in {-1, 0, 1} are left
  alone, R's ``nocenter``) and scaled, step-halving when the log-likelihood decreases, convergence
  when ``abs(1 - loglik_old / loglik_new) <= tol``.  Defaults are R's ``coxph.control()``:
  ``eps = 1e-9`` (our ``tol``), ``iter.max = 20`` (our ``max_iter``), ``toler.chol = eps**0.75``,
  ``toler.inf = sqrt(eps)``.
* Score (log-rank) test at beta = 0, Wald test ``b' V^-1 b`` (``coxph.wtest``) and likelihood
  ratio test, each with df = number of coefficients.
* Harrell's concordance and its standard error as ``fit$concordance`` (``concordancefit`` with
  ``timewt = "n"``, per stratum, with the (start, stop] risk sets for counting-process data).
* Separation: R's warning "Loglik converged before variable ...; coefficient may be infinite";
  the fit still returns within ``max_iter``.

Deliberate differences from R: collinear covariates raise :class:`SurvivalInputError` naming the
columns (R silently reports NA for the redundant ones), as do non-numeric covariates, missing
values (R drops the rows), stop <= start and a fit with no events.

Speed: one sort, then each Newton iteration is a single O(n p^2) sweep in a numba-compiled kernel
(see :mod:`oncosurg.stats._cox_kernels` for why numba).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as _sps

from oncosurg.stats import _cox_kernels as _k
from oncosurg.stats._checks import (
    SurvivalInputError,
    check_conf_level,
    check_event,
    check_group,
    check_same_length,
    check_time,
    check_weights,
    label,
    show,
)
from oncosurg.stats._cox_design import _design, _rows
from oncosurg.stats._cox_linalg import _chinv2, _cholesky2, _chsolve2, _wald
from oncosurg.stats._cox_robust import robust_variance
from oncosurg.stats._timefix import aeq_surv, tie_keep
from oncosurg.stats.results import _Tabular, clean

__all__ = ["CoxConvergenceWarning", "CoxResult", "coxph"]

_EPS = float(np.finfo(float).eps)


class CoxConvergenceWarning(RuntimeWarning):
    """The Newton-Raphson iteration hit a possibly infinite coefficient or did not converge."""


# ----------------------------------------------------------------------------------------------
# result object
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoxCoefficient:
    """One row of the coefficient table."""

    name: str
    coef: float
    se: float
    hr: float
    hr_lower: float
    hr_upper: float
    z: float
    p: float
    naive_se: float | None = None  # model-based SE when the fit is robust (R's "se(coef)")

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.naive_se is None else {"naive_se": self.naive_se}
        return clean({
            **extra,
            "coef": self.coef,
            "se": self.se,
            "hr": self.hr,
            "hr_lower": self.hr_lower,
            "hr_upper": self.hr_upper,
            "z": self.z,
            "p": self.p,
        })


@dataclass(frozen=True)
class CoxResult(_Tabular):
    """Immutable result of :func:`coxph` (the fields of R's ``summary(coxph(...))``)."""

    coefficients: tuple[CoxCoefficient, ...]
    loglik_null: float
    loglik: float
    lr_chisq: float
    lr_df: int
    lr_p: float
    wald_chisq: float
    wald_df: int
    wald_p: float
    score_chisq: float
    score_df: int
    score_p: float
    concordance: float
    concordance_se: float
    n: int
    events: int
    ties: str
    iterations: int
    converged: bool
    conf_level: float
    counting_process: bool
    strata: tuple[Any, ...] | None
    var: tuple[tuple[float, ...], ...] = field(repr=False)
    warnings: tuple[str, ...] = ()
    terms: tuple[tuple[str, tuple[int, ...]], ...] = ()  # input column -> its design columns (factors)
    robust: bool = False
    robust_score_chisq: float | None = None  # R's fit$rscore
    naive_var: tuple[tuple[float, ...], ...] = field(default=(), repr=False)  # R's fit$naive.var
    # the fitted data (design matrix, times, weights), kept for cox.zph and survfit(fit, newdata)
    _data: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def zph(self, transform: str = "km", *, terms: bool = True) -> Any:
        """Proportional-hazards test, R's ``cox.zph(fit, transform)`` (see :mod:`oncosurg.stats.cox_zph`)."""
        from oncosurg.stats.cox_zph import cox_zph

        return cox_zph(self, transform, terms=terms)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.coefficients)

    @property
    def params(self) -> dict[str, float]:
        """Coefficients (log hazard ratios) by covariate name."""
        return {c.name: c.coef for c in self.coefficients}

    @property
    def hazard_ratios(self) -> dict[str, float]:
        return {c.name: c.hr for c in self.coefficients}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN / infinite -> None, as R's NA / Inf in the JSON reference)."""
        return clean({
            "coefficients": {c.name: c.to_dict() for c in self.coefficients},
            "loglik_null": self.loglik_null,
            "loglik": self.loglik,
            "lr_chisq": self.lr_chisq,
            "lr_df": self.lr_df,
            "lr_p": self.lr_p,
            "concordance": self.concordance,
            "extra": {
                "concordance_se": self.concordance_se,
                "wald_chisq": self.wald_chisq,
                "wald_df": self.wald_df,
                "wald_p": self.wald_p,
                "score_chisq": self.score_chisq,
                "score_df": self.score_df,
                "score_p": self.score_p,
                **({} if self.robust_score_chisq is None else {
                    "robust_score_chisq": self.robust_score_chisq,
                    "robust_score_p": float(_sps.chi2.sf(self.robust_score_chisq, self.score_df)),
                }),
            },
            "n": self.n,
            "events": self.events,
            "ties": self.ties,
            "iterations": self.iterations,
            "converged": self.converged,
            "warnings": list(self.warnings),
        })

    def table(self) -> list[dict[str, Any]]:
        """Tidy coefficient table: one dict per covariate (``res.to_pandas()`` for a DataFrame)."""
        return [{"term": c.name, **c.to_dict()} for c in self.coefficients]

    def __str__(self) -> str:  # a compact, R-like print
        pct = round(100 * self.conf_level)
        lines = [
            f"Cox PH ({self.ties} ties)  n = {self.n}, events = {self.events}",
            f"{'':12s} {'coef':>10s} {'HR':>10s} {'se':>10s} {'z':>8s} {'p':>10s}  {pct}% CI for HR",
        ]
        for c in self.coefficients:
            lines.append(
                f"{c.name:12.12s} {c.coef:10.4g} {c.hr:10.4g} {c.se:10.4g} {c.z:8.3f} {c.p:10.3g}"
                f"  {c.hr_lower:.4g} - {c.hr_upper:.4g}"
            )
        lines.append(
            f"Concordance = {self.concordance:.3f} (se = {self.concordance_se:.3f})\n"
            f"Likelihood ratio test = {self.lr_chisq:.4g} on {self.lr_df} df, p = {self.lr_p:.3g}\n"
            f"Wald test = {self.wald_chisq:.4g} on {self.wald_df} df, p = {self.wald_p:.3g}\n"
            f"Score (logrank) test = {self.score_chisq:.4g} on {self.score_df} df, p = {self.score_p:.3g}"
        )
        lines.extend(f"Warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def _timefix_sorted(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``aeqSurv`` for right-censored data using one sort, which is reused for the fit.

    Returns (merged times, ascending order, dense index of each row's distinct time, number of
    distinct times).
    """
    n = t.shape[0]
    order = np.argsort(t, kind="stable")
    st = t[order]
    newgrp = np.empty(n, dtype=bool)
    newgrp[0] = True
    np.not_equal(st[1:], st[:-1], out=newgrp[1:])
    uniq = st[newgrp]
    keep = tie_keep(uniq)  # R: aeqSurv
    if keep is not None:
        cut_of_unique = np.cumsum(keep) - 1
        st = uniq[keep][cut_of_unique[np.cumsum(newgrp) - 1]]
        np.not_equal(st[1:], st[:-1], out=newgrp[1:])
    tid_sorted = np.cumsum(newgrp) - 1
    merged = np.empty_like(t)
    merged[order] = st
    tid = np.empty(n, dtype=np.int64)
    tid[order] = tid_sorted
    return merged, order, tid, int(tid_sorted[-1]) + 1


def _dense_rank(x: np.ndarray) -> tuple[np.ndarray, int]:
    """0-based dense ranks of x (equal values share a rank) and the number of distinct values."""
    order = np.argsort(x, kind="stable")
    sx = x[order]
    newgrp = np.empty(x.shape[0], dtype=bool)
    newgrp[0] = True
    np.not_equal(sx[1:], sx[:-1], out=newgrp[1:])
    r_sorted = np.cumsum(newgrp) - 1
    r = np.empty(x.shape[0], dtype=np.int64)
    r[order] = r_sorted
    return r, int(r_sorted[-1]) + 1


# ----------------------------------------------------------------------------------------------
# the fit
# ----------------------------------------------------------------------------------------------


def _collinearity_message(Xc: np.ndarray, names: list[str], singular: list[int]) -> str:
    ok = [j for j in range(len(names)) if j not in singular]
    parts = []
    rng = np.random.default_rng(0)
    sub = Xc if Xc.shape[0] <= 200_000 else Xc[rng.choice(Xc.shape[0], 200_000, replace=False)]
    sub = sub - sub.mean(axis=0)  # linear combination up to a constant
    for s in singular:
        col = sub[:, s]
        if np.ptp(col) == 0 or np.allclose(col, 0):
            parts.append(f"'{names[s]}' has no variation (constant)")
            continue
        if ok:
            coef, *_ = np.linalg.lstsq(sub[:, ok], col, rcond=None)
            resid = col - sub[:, ok] @ coef
            scale = np.abs(sub[:, ok]).mean(axis=0) * np.abs(coef)
            if np.sqrt(np.mean(resid**2)) <= 1e-6 * np.sqrt(np.mean(col**2)):
                involved = [names[ok[i]] for i in np.flatnonzero(scale > 1e-8 * np.abs(col).mean())]
                combo = ", ".join(f"'{v}'" for v in involved)
                parts.append(f"'{names[s]}' is a linear combination of {combo}")
                continue
        parts.append(
            f"'{names[s]}' carries no information beyond the other covariates within the risk sets "
            "(e.g. it is constant within strata)"
        )
    return (
        "collinear covariates: "
        + "; ".join(parts)
        + ". R's coxph would report NA for "
        + ", ".join(f"'{names[s]}'" for s in singular)
        + "; drop or combine the redundant column(s) and refit."
    )


def coxph(
    time: Any,
    event: Any,
    X: Any,
    *,
    ties: str = "efron",
    entry: Any = None,
    strata: Any = None,
    names: Sequence[str] | None = None,
    conf_level: float = 0.95,
    max_iter: int = 20,
    tol: float = 1e-9,
    column_names: Mapping[str, str] | None = None,
    weights: Any = None,
    robust: bool | None = None,
    cluster: Any = None,
) -> CoxResult:
    """Fit a Cox proportional hazards model as R's ``coxph`` does.

    Parameters
    ----------
    time, event:
        Follow-up (stop) time and event indicator (1 = event, 0 = censored); numpy arrays, lists,
        pandas or polars Series.
    X:
        Covariates: a 2-D array (n, p), a dict of columns, or a pandas/polars DataFrame.
    ties:
        ``"efron"`` (default, as ``coxph``) or ``"breslow"``.
    entry:
        Start of each (entry, time] interval: counting-process data, for delayed entry (left
        truncation) or time-varying covariates (several rows per subject, see
        :func:`oncosurg.stats.timevarying.split_at_exposure`).
    strata:
        Stratum label per row: separate baseline hazards, common coefficients.
    names:
        Covariate names (default: DataFrame/dict keys, else ``x1..xp``).
    conf_level:
        Level of the hazard-ratio confidence intervals.
    max_iter, tol:
        Newton-Raphson limits; defaults are R's ``coxph.control()`` (``iter.max = 20``,
        ``eps = 1e-9``).
    weights:
        Case weights (R's ``weights =``), e.g. inverse-probability weights; must be > 0.
    robust, cluster:
        Robust (sandwich) variance, R's ``robust = TRUE``: the reported variance, SEs, CIs and Wald
        test use it (``naive_se`` keeps the model-based SE).  ``cluster`` labels rows of one subject or
        cluster (R's ``cluster =``); as R, robust defaults to True when ``cluster`` is given or a
        weight is not an integer, and each row is its own cluster when none is given.
    column_names:
        Optional map from argument name (``"time"``, ``"event"``, ``"entry"``, ``"strata"``) to the
        user's column name, so that error messages name the CSV column.
    """
    if ties not in ("efron", "breslow"):
        raise SurvivalInputError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    conf_level = check_conf_level(conf_level)
    if int(max_iter) < 0:
        raise SurvivalInputError("max_iter must be >= 0")
    if not tol > 0:
        raise SurvivalInputError("tol must be > 0")

    stop = check_time(time, "time", column_names).astype(np.float64)
    n = stop.shape[0]
    ev = check_event(event, n, "event", column_names).astype(np.int8)
    factor_levels: dict[str, list[Any]] = {}
    Xm, colnames, terms = _design(X, names, n, factor_levels)
    counting = entry is not None
    start = None
    if counting:
        start = check_time(entry, "entry", column_names).astype(np.float64)
        check_same_length(n, start, "entry", column_names)
        bad = stop <= start
        if bad.any():
            raise SurvivalInputError(
                f"{label('entry', column_names)} must be < {label('time', column_names)} on every row "
                f"(interval (start, stop]); stop <= start at {_rows(np.flatnonzero(bad))}. "
                "Fix or drop those rows."
            )
    if strata is not None:
        levels, scode = check_group(strata, n, "strata", column_names)
        scode = scode.astype(np.int64)
        slevels: tuple[Any, ...] | None = tuple(levels)
    else:
        scode, slevels = np.zeros(n, dtype=np.int64), None
    wt = np.ones(n) if weights is None else check_weights(weights, n, "weights", column_names)
    if weights is not None and not (wt > 0).all():
        i = int(np.flatnonzero(wt <= 0)[0])
        raise SurvivalInputError(
            f"{label('weights', column_names)} must be > 0 for a Cox model (R: 'Invalid weights, must be "
            f">0'); row {i} is {show(wt[i])}. Drop the rows that stand for no one."
        )
    ccode = None
    if cluster is not None:
        _, ccode = check_group(cluster, n, "cluster", column_names)
    if robust is None:
        robust = ccode is not None or not np.array_equal(wt, np.round(wt))
    elif robust and ccode is None and counting:
        raise SurvivalInputError(
            "robust = True with (start, stop] rows needs cluster = the subject id (R: 'one of cluster "
            "or id is needed'): rows of one subject are not independent."
        )
    nevents = int(ev.sum())
    if nevents == 0:
        raise SurvivalInputError(
            f"no events: every {label('event', column_names)} value is 0, so a Cox model cannot be fitted."
        )

    # R: coxph.control(timefix = TRUE) -> aeqSurv
    if counting:
        start, stop = aeq_surv(start, stop)
        if np.any(stop <= start):
            bad = np.flatnonzero(stop <= start)
            raise SurvivalInputError(
                f"interval of effective length 0 after merging near-equal times at {_rows(bad)}"
            )
        tid, ntime = _dense_rank(stop)
    else:
        stop, t_order, tid, ntime = _timefix_sorted(stop)

    p = Xm.shape[1]
    efron = 1 if ties == "efron" else 0
    toler_chol = _EPS**0.75
    toler_inf = math.sqrt(tol)

    # centring and scaling (coxfit6 / agfit4 with nocenter = c(-1, 0, 1))
    zero_one = np.all((Xm == 0) | (Xm == 1) | (Xm == -1), axis=0)
    means = np.where(zero_one, 0.0, np.average(Xm, axis=0, weights=wt))
    Xc_full = Xm - means
    absmean = np.average(np.abs(Xc_full), axis=0, weights=wt)
    scale = np.where(zero_one | (absmean <= 0), 1.0, 1.0 / np.where(absmean > 0, absmean, 1.0))

    evaluate = _evaluator(stop, ev, start if counting else None, scode, slevels is not None,
                          t_order if not counting else None, Xc_full * scale, efron, wt)

    beta, var_s, u_s, loglik0, loglik1, sctest, iters, flag, _rank = _newton(
        evaluate, p, int(max_iter), float(tol), toler_chol, agreg=counting, Xc=Xc_full, names=colnames
    )
    converged = flag != 1000

    # back to the original scale
    coef = beta * scale
    u = u_s / scale
    var = var_s * np.outer(scale, scale)

    warn_msgs: list[str] = []
    if int(max_iter) > 1:
        infs = np.abs(u @ var)
        if not converged:
            warn_msgs.append("Ran out of iterations and did not converge")
            if not np.all(np.isfinite(infs)):
                warn_msgs.append("one or more coefficients may be infinite")
        else:
            if counting:
                bad = ~np.isfinite(u) | (infs > toler_inf * (1 + np.abs(coef)))
                tail = "beta may be infinite."
            else:
                bad = ~np.isfinite(u) | ((infs > tol) & (infs > toler_inf * np.abs(coef)))
                tail = "coefficient may be infinite."
            if bad.any():
                which = np.flatnonzero(bad)
                warn_msgs.append(
                    "Loglik converged before variable "
                    + ",".join(f"{j + 1} ({colnames[j]})" for j in which)
                    + "; "
                    + tail
                )
    for msg in warn_msgs:
        warnings.warn(msg, CoxConvergenceWarning, stacklevel=2)

    naive_var = var
    rscore = None
    if robust:
        var, rscore, _ = robust_variance(
            start if counting else None, stop, ev, scode, Xc_full, coef, naive_var, wt,
            None if ccode is None else np.asarray(ccode, np.int64), efron, toler_chol,
        )
    se = np.sqrt(np.diag(var))
    naive_se = np.sqrt(np.diag(naive_var))
    zq = float(_sps.norm.ppf((1 + conf_level) / 2))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        z = coef / se
        pvals = _sps.chi2.sf(z * z, 1)
        hr = np.exp(coef)
        lower = np.exp(coef - zq * se)
        upper = np.exp(coef + zq * se)
    coefs = tuple(
        CoxCoefficient(
            name=colnames[j],
            coef=float(coef[j]),
            se=float(se[j]),
            hr=float(hr[j]),
            hr_lower=float(lower[j]),
            hr_upper=float(upper[j]),
            z=float(z[j]),
            p=float(pvals[j]),
            naive_se=float(naive_se[j]) if robust else None,
        )
        for j in range(p)
    )

    lr = 2.0 * (loglik1 - loglik0)
    try:
        wald, _ = _wald(var, coef, toler_chol)
    except (FloatingPointError, ZeroDivisionError):  # pragma: no cover
        wald = float("nan")

    # concordance on the linear predictor (R: x %*% coef - sum(coef * means))
    lp = Xm @ coef - float(np.dot(coef, means))
    conc, conc_se = _concordance(start if counting else None, stop, ev, lp, scode, tid, ntime, wt,
                                 None if cluster is None else np.asarray(ccode, np.int64))

    return CoxResult(
        coefficients=coefs,
        loglik_null=float(loglik0),
        loglik=float(loglik1),
        lr_chisq=float(lr),
        lr_df=p,
        lr_p=float(_sps.chi2.sf(lr, p)),
        wald_chisq=float(wald),
        wald_df=p,
        wald_p=float(_sps.chi2.sf(wald, p)),
        score_chisq=float(sctest),
        score_df=p,
        score_p=float(_sps.chi2.sf(sctest, p)),
        concordance=float(conc),
        concordance_se=float(conc_se),
        n=n,
        events=nevents,
        ties=ties,
        iterations=int(iters),
        converged=bool(converged),
        conf_level=float(conf_level),
        counting_process=counting,
        strata=slevels,
        var=tuple(tuple(float(v) for v in row) for row in var),
        warnings=tuple(warn_msgs),
        terms=tuple((t, tuple(cols)) for t, cols in terms),
        robust=bool(robust),
        robust_score_chisq=rscore,
        naive_var=tuple(tuple(float(v) for v in row) for row in naive_var),
        _data={
            "X": Xm, "stop": stop, "start": start if counting else None, "event": ev, "strata": scode,
            "weights": wt, "efron": efron, "means": means, "levels": factor_levels,
        },
    )


def _evaluator(stop: np.ndarray, ev: np.ndarray, start: np.ndarray | None, scode: np.ndarray, stratified: bool,
               t_order: np.ndarray | None, Xs_full: np.ndarray, efron: int, wt: np.ndarray | None = None
               ) -> Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]:
    """``beta -> (log partial likelihood, score, information)`` on timefixed data (coxfit6 or agfit4
    kernels), with case weights ``wt`` (default 1)."""
    n = stop.shape[0]
    wt = np.ones(n) if wt is None else wt
    if start is None:
        assert t_order is not None
        order = t_order if not stratified else t_order[np.argsort(scode[t_order], kind="stable")]
        s_time = np.ascontiguousarray(stop[order])
        s_stat = np.ascontiguousarray(ev[order])
        s_strat = np.ascontiguousarray(scode[order])
        Xs = np.ascontiguousarray(Xs_full[order])
        s_wt = np.ascontiguousarray(wt[order])

        def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            return _k.cox_right_iter(s_time, s_stat, s_strat, Xs, beta, efron, s_wt)

        return evaluate
    # agreg.fit: rows whose interval contains no event time (of their stratum) are not used
    # (stratum, time) pairs as integer keys: a float offset per stratum overflows near 1e308
    _, rinv = np.unique(np.concatenate((start, stop)), return_inverse=True)
    nkey = int(rinv.max()) + 1
    key = np.tile(scode, 2) * nkey + rinv.ravel()
    uy, inv = np.unique(key, return_inverse=True)
    inv = inv.ravel()
    is_event_time = np.zeros(uy.size, dtype=bool)
    is_event_time[inv[n:][ev == 1]] = True
    n_event_times_upto = np.cumsum(is_event_time)  # findInterval(y, dtime)
    ignore = n_event_times_upto[inv[:n]] == n_event_times_upto[inv[n:]]
    nused = int(n - ignore.sum())
    sort2 = np.lexsort((-stop, scode, ignore))
    sort1 = np.lexsort((-start, scode, ignore))
    # store the rows in sort2 order so that the add-at-stop sweep reads memory sequentially
    pos = np.empty(n, dtype=np.int64)
    pos[sort2] = np.arange(n, dtype=np.int64)
    p_sort1 = pos[sort1]
    p_sort2 = np.arange(n, dtype=np.int64)
    Xc = np.ascontiguousarray(Xs_full[sort2])
    c_start = np.ascontiguousarray(start[sort2])
    c_stop = np.ascontiguousarray(stop[sort2])
    c_ev = np.ascontiguousarray(ev[sort2])
    c_strat = np.ascontiguousarray(scode[sort2])
    c_wt = np.ascontiguousarray(wt[sort2])

    def evaluate_counting(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return _k.cox_counting_iter(c_start, c_stop, c_ev, c_strat, Xc, beta, p_sort1, p_sort2, nused, efron, c_wt)

    return evaluate_counting


def cox_score_information(time: Any, event: Any, X: np.ndarray, *, entry: Any = None, ties: str = "efron"
                          ) -> Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]:
    """``beta -> (loglik, score, information)`` of one stratum's partial likelihood, as ``coxph`` iterates it.

    For federated Newton-Raphson (:mod:`oncosurg.federated`): the log partial likelihood of a
    stratified model is the sum over strata, so each centre evaluates its own stratum.  ``X`` is
    centred here (the partial likelihood does not change); ``beta`` is on the scale of ``X``.
    """
    stop = np.asarray(time, dtype=np.float64)
    ev = np.asarray(event).astype(np.int8)
    Xm = np.asarray(X, dtype=np.float64).reshape(stop.shape[0], -1)
    scode = np.zeros(stop.shape[0], dtype=np.int64)
    efron = 1 if ties == "efron" else 0
    Xc = Xm - Xm.mean(axis=0) if stop.shape[0] else Xm
    if entry is None:
        stop, t_order, _tid, _ntime = _timefix_sorted(stop)
        return _evaluator(stop, ev, None, scode, False, t_order, Xc, efron)
    start, stop = aeq_surv(np.asarray(entry, dtype=np.float64), stop)
    return _evaluator(stop, ev, start, scode, False, None, Xc, efron)


def _newton(evaluate, p, maxiter, eps, toler_chol, *, agreg, Xc, names):
    """Newton-Raphson with step halving: coxfit6.c (right-censored) or agfit4.c (counting)."""
    beta = np.zeros(p)
    loglik0, u, imat = evaluate(beta)
    chol, rank = _cholesky2(imat, toler_chol)
    if rank < p:
        diag = np.diag(chol)
        singular = [j for j in range(p) if diag[j] == 0]
        raise SurvivalInputError(_collinearity_message(Xc, names, singular))
    a = _chsolve2(chol, u)
    sctest = float(np.dot(u, a))
    loglik1 = loglik0
    if maxiter == 0 or not np.isfinite(loglik0):
        return beta, _chinv2(chol), u, loglik0, loglik0, sctest, 0, rank, rank

    if not agreg:
        newbeta = beta + a
        halving = 0
        for it in range(1, maxiter + 1):
            newlk, u, imat = evaluate(newbeta)
            chol, flag = _cholesky2(imat, toler_chol)
            notfinite = not (np.all(np.isfinite(u)) and np.all(np.isfinite(imat)) and np.isfinite(newlk))
            if not notfinite and abs(1 - loglik1 / newlk) <= eps:
                return newbeta, _chinv2(chol), u, loglik0, newlk, sctest, it, flag, rank
            if notfinite or newlk < loglik1:
                halving += 1
                newbeta = (newbeta + halving * beta) / (halving + 1.0)
            else:
                halving = 0
                loglik1 = newlk
                step = _chsolve2(chol, u)
                beta = newbeta
                newbeta = newbeta + step
        # ran out of iterations: report the last good beta.  coxfit6.c recomputes the information
        # there but inverts it with chinv2 without a Cholesky step first; coxfit6_iter fills only
        # one triangle, so R's variance is diag(1 / diag(I(beta))).  We return R's numbers (and
        # fit$iter = iter.max + 1) and warn that the fit did not converge.
        if maxiter > 1:
            loglik1, u, imat = evaluate(beta)
            d = np.diag(imat)
            with np.errstate(divide="ignore"):
                var = np.diag(np.where(d > 0, 1.0 / d, 0.0))
        else:
            var = _chinv2(chol)
        return beta, var, u, loglik0, loglik1, sctest, maxiter + 1, 1000, rank

    # agfit4
    oldbeta = beta.copy()
    beta = beta + a
    halving = 0
    newlk = loglik0
    flag = rank
    it = 0
    for it in range(1, maxiter + 1):
        newlk, u, imat = evaluate(beta)
        fail = int(np.sum(~np.isfinite(np.diag(imat))))
        chol, rank2 = _cholesky2(imat, toler_chol)
        fail += int(not np.isfinite(newlk)) + abs(rank - rank2)
        if fail == 0 and halving == 0 and abs(1 - loglik1 / newlk) <= eps:
            break
        if it == maxiter:
            flag = 1000
            if maxiter > 1 and (newlk - loglik1) / abs(loglik1) < -eps:
                beta = oldbeta.copy()
                newlk, u, imat = evaluate(beta)
                chol, _ = _cholesky2(imat, toler_chol)
            break
        if fail > 0 or newlk < loglik1:
            halving += 1
            beta = (oldbeta * halving + beta) / (halving + 1.0)
        else:
            halving = 0
            loglik1 = newlk
            step = _chsolve2(chol, u)
            oldbeta = beta.copy()
            beta = beta + step
    return beta, _chinv2(chol), u, loglik0, newlk, sctest, it, flag, rank


def _concordance(
    start: np.ndarray | None,
    stop: np.ndarray,
    status: np.ndarray,
    lp: np.ndarray,
    scode: np.ndarray,
    tid: np.ndarray,
    ntime: int,
    wt: np.ndarray,
    cluster: np.ndarray | None = None,
) -> tuple[float, float]:
    """``concordancefit(Y, lp, strata, reverse = TRUE)`` as called by coxph: (C, se(C)).

    ``tid`` is the dense index of each row's stop time among the ``ntime`` distinct stop times.
    """
    rank, nrank = _dense_rank(lp)
    counting = start is not None
    # order(strata, -stop, status, rank) as one int64 key when it fits, else a lexsort
    nstrat = int(scode.max()) + 1
    if float(nstrat) * ntime * 2 * nrank < 2.0**62:
        key = scode * ntime + (ntime - 1 - tid)
        key = (key * 2 + status) * nrank + rank
        sort_stop = np.argsort(key, kind="stable").astype(np.int64)
    else:  # pragma: no cover - astronomically many strata x times x scores
        sort_stop = np.lexsort((rank, status, -stop, scode)).astype(np.int64)
    if counting:
        sort_start = np.lexsort((-start, scode)).astype(np.int64)
        st = np.ascontiguousarray(start)
    else:
        sort_start = np.zeros(1, dtype=np.int64)
        st = np.zeros(1)
    count, imat = _k.concordance_kernel(
        st, np.ascontiguousarray(stop), status, rank, scode, sort_stop, sort_start, nrank, counting,
        np.ascontiguousarray(wt, dtype=np.float64),
    )
    npair = count[0] + count[1] + count[2]
    if npair == 0:
        return float("nan"), float("nan")
    somer = (count[0] - count[1]) / npair
    dfbeta = wt * ((imat[:, 0] - imat[:, 1]) / npair - (somer / npair) * imat.sum(axis=1))
    if cluster is not None:  # R: tapply(dfbeta, cluster, sum)
        dfbeta = np.bincount(cluster, weights=dfbeta)
    var = float(np.dot(dfbeta, dfbeta)) / 4.0
    conc = 1.0 - (somer + 1.0) / 2.0  # reverse = TRUE: higher risk score, shorter survival
    return conc, math.sqrt(var)
