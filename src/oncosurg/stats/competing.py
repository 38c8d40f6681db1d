"""Aalen-Johansen cumulative incidence for competing risks, as R's multi-state ``survfit``.

``survfit(Surv(time, factor(cause)) ~ 1)`` with cause 0 = censored and 1..k the competing events
(e.g. recurrence versus death without recurrence).  States are ``"(s0)"`` (event-free) and the
causes.  At each distinct time t_j with n_j at risk and d_kj events of cause k:

* cause-specific hazard increment  dL_kj = d_kj / n_j,  dL_j = sum_k dL_kj
* event-free probability           S(t_j) = prod_{l <= j} (1 - dL_l)          (Kaplan-Meier)
* cumulative incidence             F_k(t_j) = sum_{l <= j} S(t_{l-1}) dL_kl

Standard errors are R's infinitesimal-jackknife (IJ) ones: var = sum_i U_i(t)^2 with U_i the
derivative of the estimate with respect to the case weight of row i.  Rather than updating an
n x states influence matrix at every time (R's C code), we use that all rows still at risk share
one influence value, and a row that left at t_m has influence G_i + u_i * F_k(t) afterwards, so the
sum of squares is a few cumulative sums:  O(n log n) overall.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oncosurg.stats._checks import (
    SurvivalInputError,
    as_1d_array,
    check_conf_level,
    check_same_length,
    check_time,
    check_weights,
    label,
    where,
)
from oncosurg.stats._timefix import aeq_surv
from oncosurg.stats.km import _z
from oncosurg.stats.results import CumulativeIncidence

__all__ = ["cumulative_incidence"]


def _check_cause(cause: Any, n: int, names: dict[str, str] | None) -> tuple[np.ndarray, int]:
    c = as_1d_array(cause, "cause", names)
    check_same_length(n, c, "cause", names)
    bad = ~np.isfinite(c) | (c < 0) | (c != np.round(c)) if c.dtype.kind == "f" else (c < 0)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise SurvivalInputError(
            f"{label('cause', names)} must be 0 (censored) or a cause number 1, 2, ...; "
            f"{where(i, names)} is {c[i]!r}. Recode the status column and fill missing values."
        )
    ci = c.astype(np.int64)
    k = int(ci.max())
    return ci, k


def cumulative_incidence(
    time: Any,
    cause: Any,
    *,
    weights: Any = None,
    conf_level: float = 0.95,
    names: dict[str, str] | None = None,
) -> CumulativeIncidence:
    """Aalen-Johansen estimate (``pstate``), IJ standard errors and log-scale CIs (as R).

    ``weights`` are case counts (the result equals the expanded data).
    """
    conf_level = check_conf_level(conf_level)
    t = check_time(time, "time", names).astype(np.float64, copy=False)
    n = t.shape[0]
    c, k = _check_cause(cause, n, names)
    w = np.ones(n) if weights is None else check_weights(weights, n, "weights", names)
    if weights is not None and (w == 0).any():
        keep = w > 0
        t, c, w = t[keep], c[keep], w[keep]
    t = aeq_surv(t)[0]  # R survfit: timefix = TRUE
    # counts per distinct time and cause (column 0 = censored)
    times, inv = np.unique(t, return_inverse=True)
    m = times.shape[0]
    cnt = np.bincount(inv * (k + 1) + c, weights=w, minlength=m * (k + 1)).reshape(m, k + 1)
    total = cnt.sum(axis=1)
    n_risk = w.sum() - np.cumsum(total) + total
    d = cnt[:, 1:]  # (m, k)
    cens = cnt[:, 0]
    dall = d.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        dlk = d / n_risk[:, None]
        dl = dall / n_risk
        surv = np.cumprod(1.0 - dl)
        s_prev = np.concatenate(([1.0], surv[:-1]))
        F = np.cumsum(s_prev[:, None] * dlk, axis=0)
        # influence of a row still at risk:  aS_j = aS_{j-1}(1 - dL_j) + S_{j-1} dL_j / n_j
        inc = dl / (n_risk * (1.0 - dl))
        aS = surv * np.cumsum(inc)
        last = np.flatnonzero(1.0 - dl == 0)  # everybody at risk has the event (only possible last)
        if last.size:
            j = int(last[0])
            aprev = 0.0 if j == 0 else aS[j - 1]
            aS[j] = aprev * 0.0 + s_prev[j] * dl[j] / n_risk[j]
        aS_prev = np.concatenate(([0.0], aS[:-1]))
        aF = np.cumsum((aS_prev - s_prev / n_risk)[:, None] * dlk, axis=0)
        # rows leaving at t_m: u = U(S_m) / S_m, G_k = U(F_km) - u F_km
        pos = surv > 0
        u_c = np.where(pos, aS / surv, 0.0)  # censored at t_m
        u_e = np.where(pos, (aS - s_prev / n_risk) / surv, 0.0)  # event (any cause) at t_m
        G_c = aF - u_c[:, None] * F  # (m, k)
        sum_u2 = cens * u_c**2 + dall * u_e**2
        # event of cause k' at t_m: G = aF_k + S_{m-1}[k == k'] / n_m - u_e F_k
        G_e_base = aF - u_e[:, None] * F  # (m, k) without the own-cause term
        own = (s_prev / n_risk)[:, None]  # added to column k' for a cause-k' event
        sum_G2 = cens[:, None] * G_c**2 + dall[:, None] * G_e_base**2 + d * (2 * G_e_base * own + own**2)
        sum_Gu = cens[:, None] * G_c * u_c[:, None] + (dall[:, None] * G_e_base + d * own) * u_e[:, None]
        cu2, cG2, cGu = np.cumsum(sum_u2), np.cumsum(sum_G2, axis=0), np.cumsum(sum_Gu, axis=0)
        after = n_risk - total  # rows with time > t_j (still at risk, influence aS_j / aF_j)
        var_s = after * aS**2 + surv**2 * cu2
        var_f = after[:, None] * aF**2 + cG2 + 2 * F * cGu + F**2 * cu2[:, None]
    pstate = np.column_stack([surv, F])
    se = np.sqrt(np.maximum(np.column_stack([var_s, var_f]), 0.0))
    # survfit_confint(logse = FALSE, conf.type = "log"): se/p on the log scale, NA where p = 0
    z = _z(conf_level)
    with np.errstate(divide="ignore", invalid="ignore"):
        xx = np.where(pstate == 0, np.nan, pstate)
        se_log = np.where(se == 0, 0.0, se / pstate)
        lower = np.exp(np.log(xx) - z * se_log)
        upper = np.minimum(np.exp(np.log(xx) + z * se_log), 1.0)
    wsum = float(w.sum())
    return CumulativeIncidence(
        time=times,
        n_risk=n_risk,
        n_event=d,
        n_censor=cens,
        states=["(s0)", *[str(i) for i in range(1, k + 1)]],
        pstate=pstate,
        std_err=se,
        lower=lower,
        upper=upper,
        n=int(wsum) if wsum.is_integer() else wsum,
        conf_level=conf_level,
    )
