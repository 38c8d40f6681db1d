"""Aalen-Johansen cumulative incidence for competing risks, as R's multi-state ``survfit``.

``survfit(Surv(time, factor(cause)) ~ 1)`` with cause 0 = censored and 1..k the competing events
(e.g. recurrence versus death without recurrence).  States are ``"(s0)"`` (event-free) and the
causes.  At each distinct time t_j with n_j at risk and d_kj events of cause k:

* cause-specific hazard increment  dL_kj = d_kj / n_j,  dL_j = sum_k dL_kj
* event-free probability           S(t_j) = prod_{l <= j} (1 - dL_l)          (Kaplan-Meier)
* cumulative incidence             F_k(t_j) = sum_{l <= j} S(t_{l-1}) dL_kl

Standard errors are R's infinitesimal-jackknife (IJ) ones: var = sum_c (sum_{i in c} w_i U_i(t))^2
with U_i the derivative of the estimate with respect to the case weight of row i and c the clusters
(each row its own by default).  Rather than updating an n x states influence matrix at every time
(R's C code), :mod:`oncosurg.stats._ij` keeps a few running totals: O(n log n + n k) overall, with
left truncation (``entry``), case weights and clusters.

States are the distinct observed cause codes other than the censoring code, in R's ``factor()``
level order (numbers ascending, strings in R's collation), so codes {0, 1, 9} give the states
``(s0)``, ``1``, ``9`` as R does.  Note: R takes the *first* factor level as "censored" whatever its
value; here the censoring code is explicit (``censor``, default 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oncosurg.stats._checks import (
    SurvivalInputError,
    as_1d_array,
    check_conf_level,
    check_entry,
    check_group,
    check_same_length,
    check_time,
    check_weights,
    label,
    r_level_order,
    show,
    where,
)
from oncosurg.stats._ij import aj_ij
from oncosurg.stats._timefix import aeq_surv
from oncosurg.stats.km import _z
from oncosurg.stats.results import CumulativeIncidence

__all__ = ["cumulative_incidence"]


def _r_label(v: Any) -> str:
    """How R names a factor level made from a number: ``as.character`` (integer columns in full,
    doubles in the shorter of fixed and scientific notation: 1e9 -> "1e+09", as R)."""
    if isinstance(v, str):
        return v
    if isinstance(v, int | np.integer):
        return str(int(v))
    f = float(v)
    fixed = np.format_float_positional(f, precision=15, unique=True, trim="-")
    sci = np.format_float_scientific(f, precision=14, unique=True, trim="-", exp_digits=2)
    return fixed if len(fixed) <= len(sci) else sci


def _check_cause(
    cause: Any, n: int, censor: Any, names: dict[str, str] | None
) -> tuple[np.ndarray, list[str]]:
    """Codes 0 (censored) and 1..k (the states in R's factor order) and the k state labels."""
    c = as_1d_array(cause, "cause", names, numeric=False)
    check_same_length(n, c, "cause", names)
    if c.dtype.kind in "biuf":
        cf = c.astype(np.float64)
        bad = ~np.isfinite(cf)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise SurvivalInputError(
                f"{label('cause', names)} must be {show(censor)} (censored) or a cause code; "
                f"{where(i, names)} is {show(cf[i])}. Recode the status column and fill missing values."
            )
        try:
            cens = float(censor)
        except (TypeError, ValueError):
            raise SurvivalInputError(
                f"censor must be a number for a numeric cause column; got {show(censor)}."
            ) from None
        levels, inv = np.unique(cf, return_inverse=True)
        is_cens = levels == cens
        vals: list[Any] = [int(v) if c.dtype.kind in "biu" else float(v) for v in levels]
    else:
        text = []
        for i, v in enumerate(c.tolist()):
            if v is None or (isinstance(v, float) and v != v) or str(v).strip() in ("", "NA", "nan"):
                raise SurvivalInputError(
                    f"{label('cause', names)} has a missing value at {where(i, names)}; every row needs "
                    f"a cause code or {show(censor)} (censored)."
                )
            text.append(str(v))
        uniq = r_level_order(sorted(set(text)))
        index = {v: i for i, v in enumerate(uniq)}
        inv = np.fromiter((index[v] for v in text), dtype=np.int64, count=len(text))
        levels = np.array(uniq, dtype=object)
        is_cens = np.array([v == str(censor) for v in uniq], dtype=bool)
        vals = list(uniq)
    # new code: 0 for the censoring level, 1..k for the others in level order
    new = np.cumsum(~is_cens)
    new[is_cens] = 0
    codes = new[inv.ravel()].astype(np.int64)
    states = [_r_label(v) for v, cz in zip(vals, is_cens, strict=True) if not cz]
    return codes, states


def cumulative_incidence(
    time: Any,
    cause: Any,
    *,
    entry: Any = None,
    weights: Any = None,
    cluster: Any = None,
    censor: Any = 0,
    conf_level: float = 0.95,
    names: dict[str, str] | None = None,
) -> CumulativeIncidence:
    """Aalen-Johansen estimate (``pstate``), IJ standard errors and log-scale CIs, as R's
    ``survfit(Surv([entry,] time, factor(cause)) ~ 1, weights =, cluster =)``.

    ``cause``: ``censor`` (default 0) = censored, any other value (numbers or strings) a cause.
    ``entry``: left truncation, risk set entry < t <= time.  ``weights``: case weights (the
    estimate equals the expanded data; the IJ variance, as R's, treats each row as one subject:
    sum (w_i U_i)^2).  ``cluster``: rows of one subject or cluster, R's ``cluster =``.
    """
    conf_level = check_conf_level(conf_level)
    t = check_time(time, "time", names).astype(np.float64, copy=False)
    n = t.shape[0]
    c, states = _check_cause(cause, n, censor, names)
    k = len(states)
    w = np.ones(n) if weights is None else check_weights(weights, n, "weights", names)
    s = None if entry is None else check_entry(entry, t, "entry", names)
    if cluster is None:
        g = np.arange(n, dtype=np.int64)
        ng = n
    else:
        levels, g = check_group(cluster, n, "cluster", names)
        g = g.astype(np.int64)
        ng = len(levels)
    if weights is not None and (w == 0).any():
        keep = w > 0
        t, c, w, g = t[keep], c[keep], w[keep], g[keep]
        s = None if s is None else s[keep]
    if s is None:
        t = aeq_surv(t)[0]  # R survfit: timefix = TRUE
    else:
        s, t = aeq_surv(s.astype(np.float64), t)
    # counts per distinct (exit) time and cause (column 0 = censored)
    times, inv = np.unique(t, return_inverse=True)
    inv = inv.ravel()
    m = times.shape[0]
    cnt = np.bincount(inv * (k + 1) + c, weights=w, minlength=m * (k + 1)).reshape(m, k + 1)
    total = cnt.sum(axis=1)
    n_risk = w.sum() - np.cumsum(total) + total
    entry_idx = np.zeros(t.shape[0], np.int64)
    if s is not None:  # minus rows not yet entered (entry >= t_j)
        entry_idx = np.searchsorted(times, s, side="right").astype(np.int64)
        entered = np.bincount(entry_idx, weights=w, minlength=m + 1)[:m]
        n_risk = n_risk - (w.sum() - np.cumsum(entered))
    d = np.ascontiguousarray(cnt[:, 1:])
    cens = cnt[:, 0]
    surv, F, var_s, var_f = aj_ij(
        np.ascontiguousarray(n_risk, dtype=np.float64), d, entry_idx, (inv + 1).astype(np.int64),
        c, w, g, ng,
    )
    pstate = np.column_stack([surv, F])
    se = np.sqrt(np.column_stack([var_s, var_f]))
    # survfit_confint(logse = FALSE, conf.type = "log"): se/p on the log scale, NA where p = 0
    z = _z(conf_level)
    with np.errstate(divide="ignore", invalid="ignore"):
        xx = np.where(pstate == 0, np.nan, pstate)
        se_log = np.where(se == 0, 0.0, se / pstate)
        lower = np.exp(np.log(xx) - z * se_log)
        upper = np.minimum(np.exp(np.log(xx) + z * se_log), 1.0)
    wsum = float(w.sum())
    if weights is not None:  # R reports the number of rows at risk (unweighted) for multi-state fits
        rows = np.bincount(inv, minlength=m)
        n_rows = t.shape[0] - np.cumsum(rows) + rows
        if s is not None:
            n_rows = n_rows - (t.shape[0] - np.cumsum(np.bincount(entry_idx, minlength=m + 1)[:m]))
    else:
        n_rows = np.rint(n_risk).astype(np.int64)
    return CumulativeIncidence(
        time=times,
        n_risk=n_rows,
        n_event=d,
        n_censor=cens,
        states=["(s0)", *states],
        pstate=pstate,
        std_err=se,
        lower=lower,
        upper=upper,
        n=int(wsum) if wsum.is_integer() else wsum,
        conf_level=conf_level,
    )
