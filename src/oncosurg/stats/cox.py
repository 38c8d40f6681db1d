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
    label,
)
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

    def to_dict(self) -> dict[str, Any]:
        return clean({
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


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "to_numpy") and not isinstance(x, np.ndarray):
        try:
            return np.asarray(x.to_numpy())
        except TypeError:  # pragma: no cover - exotic series types
            pass
    return np.asarray(x)


def _rows(idx: np.ndarray, limit: int = 5) -> str:
    idx = np.asarray(idx).ravel()
    shown = ", ".join(str(int(i)) for i in idx[:limit])
    more = f" and {idx.size - limit} more" if idx.size > limit else ""
    return f"row{'s' if idx.size > 1 else ''} {shown}{more} (0-based)"


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return v is not None


def _covariate_columns(X: Any, names: Sequence[str] | None) -> tuple[list[str], list[Any]]:
    if isinstance(X, Mapping):
        cols = list(X.keys())
        return [str(c) for c in cols], [X[c] for c in cols]
    if hasattr(X, "columns") and hasattr(X, "__getitem__") and not isinstance(X, np.ndarray):
        cols = list(X.columns)  # pandas or polars DataFrame
        return [str(c) for c in cols], [X[c] for c in cols]
    arr = _to_numpy(X)
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise SurvivalInputError(f"covariates must be a 2-D array (n, p), got shape {arr.shape}")
    p = arr.shape[1]
    if names is None:
        names = [f"x{j + 1}" for j in range(p)]
    return list(names), [arr[:, j] for j in range(p)]


def _design(X: Any, names: Sequence[str] | None, n: int) -> tuple[np.ndarray, list[str]]:
    colnames, cols = _covariate_columns(X, names)
    if names is not None:
        if len(names) != len(cols):
            raise SurvivalInputError(f"'names' has {len(names)} entries but there are {len(cols)} covariates")
        colnames = [str(s) for s in names]
    if len(cols) == 0:
        raise SurvivalInputError("no covariates given; coxph needs at least one column in X")
    if len(set(colnames)) != len(colnames):
        dup = sorted({c for c in colnames if colnames.count(c) > 1})
        raise SurvivalInputError(f"duplicate covariate names: {', '.join(dup)}")
    out = np.empty((n, len(cols)), dtype=np.float64)
    for j, (nm, col) in enumerate(zip(colnames, cols, strict=True)):
        arr = _to_numpy(col)
        if arr.ndim != 1:
            raise SurvivalInputError(f"covariate '{nm}' must be one-dimensional, got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            bad = next((v for v in arr if not (_is_number(v) and not isinstance(v, str))), None)
            raise SurvivalInputError(
                f"covariate '{nm}' is not numeric (dtype {arr.dtype}, e.g. value {bad!r}); "
                "encode categories as 0/1 indicator columns"
            )
        if arr.shape[0] != n:
            raise SurvivalInputError(f"covariate '{nm}' has {arr.shape[0]} values but 'time' has {n}")
        out[:, j] = arr
        bad = ~np.isfinite(out[:, j])
        if bad.any():
            raise SurvivalInputError(
                f"covariate '{nm}' has missing or infinite values at {_rows(np.flatnonzero(bad))}; "
                "remove those rows first (R's coxph drops them silently)"
            )
    return out, colnames


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
# linear algebra as in survival's cholesky2 / chsolve2 / chinv2 (generalised Cholesky, FDF')
# ----------------------------------------------------------------------------------------------


def _cholesky2(m: np.ndarray, toler: float) -> tuple[np.ndarray, int]:
    a = np.array(m, dtype=np.float64, copy=True)
    n = a.shape[0]
    a = np.triu(a) + np.triu(a, 1).T  # R reads the upper triangle
    diag = np.diag(a)
    eps = float(np.max(diag[np.isfinite(diag)], initial=0.0))
    eps = max(eps, 0.0)
    if eps == 0:
        return np.zeros_like(a), 0
    eps *= toler
    rank = 0
    nonneg = 1
    for i in range(n):
        pivot = a[i, i]
        if not np.isfinite(pivot) or pivot < eps:
            a[i, i] = 0.0
            if pivot < -8 * eps:
                nonneg = -1
        else:
            rank += 1
            for j in range(i + 1, n):
                temp = a[j, i] / pivot
                a[j, i] = temp
                a[j, j] -= temp * temp * pivot
                for k in range(j + 1, n):
                    a[k, j] -= temp * a[k, i]
    return a, rank * nonneg


def _chsolve2(chol: np.ndarray, y: np.ndarray) -> np.ndarray:
    y = np.array(y, dtype=np.float64, copy=True)
    n = y.shape[0]
    for i in range(n):
        y[i] -= float(np.dot(y[:i], chol[i, :i]))
    for i in range(n - 1, -1, -1):
        if chol[i, i] == 0:
            y[i] = 0.0
        else:
            y[i] = y[i] / chol[i, i] - float(np.dot(y[i + 1 :], chol[i + 1 :, i]))
    return y


def _chinv2(chol: np.ndarray) -> np.ndarray:
    m = np.array(chol, dtype=np.float64, copy=True)
    n = m.shape[0]
    for i in range(n):
        if m[i, i] > 0:
            m[i, i] = 1.0 / m[i, i]
            for j in range(i + 1, n):
                m[j, i] = -m[j, i]
                for k in range(i):
                    m[j, k] += m[j, i] * m[i, k]
    for i in range(n):
        if m[i, i] == 0:
            m[:i, i] = 0.0
            m[i, i:] = 0.0
        else:
            for j in range(i + 1, n):
                temp = m[j, i] * m[j, j]
                m[i, j] = temp
                for k in range(i, j):
                    m[i, k] += temp * m[j, k]
    upper = np.triu(m)
    return upper + np.triu(upper, 1).T


def _wald(var: np.ndarray, b: np.ndarray, toler: float) -> tuple[float, int]:
    """``coxph.wtest``: b' V^-1 b with the generalised Cholesky, df = rank."""
    if b.size == 1:
        return float(b[0] * b[0] / var[0, 0]), 1
    chol, _ = _cholesky2(var, toler)
    df = int(np.sum(np.diag(chol) > 0))
    sol = _chsolve2(chol, b)
    return float(np.dot(b, sol)), df


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
    Xm, colnames = _design(X, names, n)
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
    means = np.where(zero_one, 0.0, Xm.mean(axis=0))
    Xc_full = Xm - means
    absmean = np.abs(Xc_full).mean(axis=0)
    scale = np.where(zero_one | (absmean <= 0), 1.0, 1.0 / np.where(absmean > 0, absmean, 1.0))

    evaluate = _evaluator(stop, ev, start, scode, slevels is not None, t_order if not counting else None,
                          Xc_full * scale, efron)

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

    se = np.sqrt(np.diag(var))
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
    conc, conc_se = _concordance(start if counting else None, stop, ev, lp, scode, tid, ntime)

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
    )


def _evaluator(stop: np.ndarray, ev: np.ndarray, start: np.ndarray | None, scode: np.ndarray, stratified: bool,
               t_order: np.ndarray | None, Xs_full: np.ndarray, efron: int
               ) -> Callable[[np.ndarray], tuple[float, np.ndarray, np.ndarray]]:
    """``beta -> (log partial likelihood, score, information)`` on timefixed data (coxfit6 or agfit4 kernels)."""
    n = stop.shape[0]
    if start is None:
        assert t_order is not None
        order = t_order if not stratified else t_order[np.argsort(scode[t_order], kind="stable")]
        s_time = np.ascontiguousarray(stop[order])
        s_stat = np.ascontiguousarray(ev[order])
        s_strat = np.ascontiguousarray(scode[order])
        Xs = np.ascontiguousarray(Xs_full[order])

        def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            return _k.cox_right_iter(s_time, s_stat, s_strat, Xs, beta, efron)

        return evaluate
    # agreg.fit: rows whose interval contains no event time (of their stratum) are not used
    offset = scode * (1.0 + stop.max() - start.min()) if stratified else 0.0
    y1 = start + offset
    y2 = stop + offset
    uy, inv = np.unique(np.concatenate((y1, y2)), return_inverse=True)
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

    def evaluate_counting(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        return _k.cox_counting_iter(c_start, c_stop, c_ev, c_strat, Xc, beta, p_sort1, p_sort2, nused, efron)

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
        # ran out of iterations: report the last good beta
        if maxiter > 1:
            loglik1, u, imat = evaluate(beta)
            chol, _ = _cholesky2(imat, toler_chol)
        return beta, _chinv2(chol), u, loglik0, loglik1, sctest, maxiter, 1000, rank

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
        st, np.ascontiguousarray(stop), status, rank, scode, sort_stop, sort_start, nrank, counting
    )
    npair = count[0] + count[1] + count[2]
    if npair == 0:
        return float("nan"), float("nan")
    somer = (count[0] - count[1]) / npair
    dfbeta = (imat[:, 0] - imat[:, 1]) / npair - (somer / npair) * imat.sum(axis=1)
    var = float(np.dot(dfbeta, dfbeta)) / 4.0
    conc = 1.0 - (somer + 1.0) / 2.0  # reverse = TRUE: higher risk score, shorter survival
    return conc, math.sqrt(var)
