"""Restricted mean survival time (RMST) up to tau, as R ``print(survfit(...), rmean = tau)``.

Port of the ``pfun`` inside ``survival:::survmean`` (R 3.5.3), applied to the ``survfit0`` curve
(a time-0 row with S = 1 prepended):

* RMST = sum of the rectangles under the step function S(t) from 0 to tau
  (``rectangles <- delta * c(1, tempsurv[-n])``);
* variance = sum_j A_j^2 d_j / (n_j (n_j - d_j)), where A_j is the area under S from t_j to tau
  (``sum(cumsum(rev(rectangles[-1]))^2 * rev(hh)[-1])``); like R, a time where everybody at risk
  has the event (n_j = d_j) contributes 0, not Inf.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from oncosurg.stats._checks import (
    SurvivalData,
    SurvivalInputError,
    check_group,
    check_survival_input,
    show,
)
from oncosurg.stats.km import _fit
from oncosurg.stats.results import KaplanMeier, RMSTEstimate, RMSTResult

__all__ = ["rmst", "rmst_from_km"]


def rmst_from_km(km: KaplanMeier, tau: float) -> tuple[float, float]:
    """(RMST, SE) of a Kaplan-Meier curve up to ``tau`` (R ``survmean``'s ``pfun``)."""
    time, surv = km.time, km.surv
    n_risk = km.n_risk.astype(np.float64)
    n_event = km.n_event.astype(np.float64)
    if time.shape[0] == 0 or time[0] != 0:  # survfit0
        time = np.concatenate(([0.0], time))
        surv = np.concatenate(([1.0], surv))
        n_risk = np.concatenate((n_risk[:1], n_risk))
        n_event = np.concatenate(([0.0], n_event))
    start = 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        hh = np.where(n_risk - n_event == 0, 0.0, n_event / (n_risk * (n_risk - n_event)))
    keep = np.flatnonzero(time <= tau)
    if keep.size == 0:
        temptime, tempsurv, hh = np.array([tau]), np.array([1.0]), np.array([0.0])
    else:
        temptime = np.concatenate((time[keep], [tau]))
        tempsurv = np.concatenate((surv[keep], [surv[keep[-1]]]))
        hh = np.concatenate((hh[keep], [0.0]))
    n = temptime.shape[0]
    delta = np.diff(np.concatenate(([start], temptime)))
    rectangles = delta * np.concatenate(([1.0], tempsurv[: n - 1]))
    varmean = float(np.sum(np.cumsum(rectangles[1:][::-1]) ** 2 * hh[::-1][1:]))
    return float(np.sum(rectangles)) + start, math.sqrt(varmean)


def rmst(
    time: Any,
    event: Any,
    tau: float,
    *,
    group: Any = None,
    weights: Any = None,
    entry: Any = None,
    names: dict[str, str] | None = None,
) -> RMSTResult:
    """RMST and its SE up to ``tau``, overall and (with ``group``) per group level.

    Equals the ``*rmean`` and ``*se(rmean)`` columns of R ``print(survfit(...), rmean = tau)``.
    """
    data = check_survival_input(time, event, weights=weights, entry=entry, names=names)
    try:
        tau_f = float(tau)
    except (TypeError, ValueError):
        tau_f = math.nan
    if not math.isfinite(tau_f):
        raise SurvivalInputError(f"tau must be a finite time; got {show(tau)}.")
    overall = _fit(data, "log", 0.95)
    if tau_f < overall.time[0]:
        raise SurvivalInputError(
            f"tau = {tau_f:g} is before the first observed time ({overall.time[0]:g}); "
            "R stops with 'Truncation point for the mean time in state is < smallest survival'. "
            "Choose a tau inside the follow-up."
        )
    m, se = rmst_from_km(overall, tau_f)
    res_overall = RMSTEstimate(m, se, overall.n, overall.events)
    by_group = None
    if group is not None:
        levels, codes = check_group(group, data.n_input, "group", names)
        codes = data.subset_codes(codes)
        by_group = {}
        for i, lev in enumerate(levels):
            mask = codes == i
            sub = SurvivalData(
                data.time[mask],
                data.event[mask],
                None if data.weights is None else data.weights[mask],
                None if data.entry is None else data.entry[mask],
            )
            km = _fit(sub, "log", 0.95)
            gm, gse = rmst_from_km(km, tau_f)
            by_group[lev] = RMSTEstimate(gm, gse, km.n, km.events)
    return RMSTResult(tau=tau_f, overall=res_overall, by_group=by_group)
