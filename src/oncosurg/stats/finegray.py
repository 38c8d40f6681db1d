"""Fine-Gray subdistribution hazards for competing risks, as R's ``finegray`` + weighted ``coxph``.

Recurrence after hepatectomy with death as a competing event: the cause-specific Cox model answers
"what drives recurrence among those alive", the Fine-Gray model "what drives the cumulative
incidence of recurrence".  R (Therneau, Crowson & Atkinson, "Multi-state models and competing
risks", survival vignette) fits it by expanding the data:

* patients with the event of interest or censored keep one row (0, t];
* a patient with a competing event at t stays in the risk set after t with a decreasing weight
  G(s) / G(t), G the Kaplan-Meier of the censoring distribution: one row per censoring interval that
  contains an event of interest (``finegray.c``);

then ``coxph(Surv(fgstart, fgstop, fgstatus) ~ x, weights = fgwt)``.  As in R, the non-integer
weights make the Cox variance robust (each expanded row its own cluster, R's default).

>>> fg = fine_gray(time, status, {"age": age, "major": major}, event=1, group=arm)  # doctest: +SKIP
>>> fg.cox.hazard_ratios, fg.cif_by_group["A"].cif(1)                                # doctest: +SKIP

Right-censored data only (R's ``finegray`` also takes (start, stop] rows with an id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oncosurg.stats._checks import SurvivalInputError, check_group, check_time, check_weights, show
from oncosurg.stats._timefix import aeq_surv
from oncosurg.stats.competing import _check_cause, cumulative_incidence
from oncosurg.stats.cox import CoxResult, coxph
from oncosurg.stats.results import CumulativeIncidence, _Tabular, clean

__all__ = ["FineGray", "FineGrayData", "fine_gray", "finegray_data"]


@dataclass(frozen=True, eq=False)
class FineGrayData(_Tabular):
    """R's ``finegray()`` output: counting-process rows with weights (``fgstart, fgstop, fgstatus,
    fgwt``) and ``row``, the input row each comes from."""

    start: np.ndarray = field(repr=False)
    stop: np.ndarray = field(repr=False)
    status: np.ndarray = field(repr=False)
    wt: np.ndarray = field(repr=False)
    row: np.ndarray = field(repr=False)
    event: str = "1"

    def table(self) -> list[dict[str, Any]]:
        return [clean({"row": int(r), "fgstart": a, "fgstop": b, "fgstatus": int(s), "fgwt": w})
                for r, a, b, s, w in zip(self.row, self.start, self.stop, self.status, self.wt, strict=True)]


@dataclass(frozen=True, eq=False)
class FineGray:
    """Fine-Gray fit: the weighted Cox model on the expanded data, the data, and the Aalen-Johansen
    cumulative incidence (all causes) overall and by group."""

    cox: CoxResult
    data: FineGrayData
    event: str
    cif: CumulativeIncidence
    cif_by_group: dict[Any, CumulativeIncidence] | None = None

    def to_dict(self) -> dict[str, Any]:
        k = self.cif.states.index(self.event)
        out: dict[str, Any] = {"event": self.event, "cox": self.cox.to_dict(), "rows": int(self.data.row.size)}
        if self.cif_by_group is not None:
            out["cif_by_group"] = {
                str(g): {"time": clean(c.time), "cif": clean(c.pstate[:, k])} for g, c in self.cif_by_group.items()
            }
        return out


def finegray_data(time: Any, cause: Any, *, event: Any = 1, censor: Any = 0,
                  weights: Any = None) -> FineGrayData:
    """The expanded data of R's ``finegray(Surv(time, factor(cause)) ~ ., etype = event)``."""
    t = check_time(time, "time").astype(np.float64)
    n = t.shape[0]
    codes, states = _check_cause(cause, n, censor, None)
    label = str(event)
    if label not in states:
        raise SurvivalInputError(
            f"event {show(event)} is not one of the observed causes ({', '.join(states)}); "
            "name the code of the event of interest."
        )
    enum = states.index(label) + 1
    uw = np.ones(n) if weights is None else check_weights(weights, n, "weights")
    t = aeq_surv(t)[0]  # R: timefix = TRUE
    zero = 0.0 if t.min() > 0 else 2.0 * t.min() - 1.0
    # G: Kaplan-Meier of censoring; at a tied time the events leave before the censorings (R shifts
    # event times by -0.2 on the index scale)
    cens = codes == 0
    ctime = np.unique(t[cens])
    ts = np.sort(t)
    after = t.shape[0] - np.searchsorted(ts, ctime, side="right")  # time > c
    cs = np.sort(t[cens])
    at_c = np.searchsorted(cs, ctime, side="right") - np.searchsorted(cs, ctime, side="left")
    n_risk = after + at_c
    cprob = np.cumprod(1.0 - at_c / n_risk)
    ct2 = np.concatenate((ctime, [t.max()]))
    cp2 = np.concatenate(([1.0], cprob))
    m = ct2.shape[0]
    etimes = np.unique(t[codes == enum])
    idx = np.searchsorted(ct2, etimes, side="left")  # findInterval(times, ct2, left.open = TRUE)
    keep = np.zeros(m, dtype=bool)
    keep[0] = True
    keep[idx[(idx >= 1) & (idx < m)]] = True
    expand = (codes != 0) & (codes != enum)
    rows, starts, stops, wts = [], [], [], []
    for i in range(n):
        if not expand[i]:
            rows.append(i)
            starts.append(zero)
            stops.append(t[i])
            wts.append(1.0)
            continue
        j = int(np.searchsorted(ct2, t[i], side="left"))  # first cut >= t
        j = min(j, m - 1)
        rows.append(i)
        starts.append(zero)
        stops.append(ct2[j])
        wts.append(1.0)
        tempwt = cp2[j]
        for jj in range(j + 1, m):
            if keep[jj]:
                rows.append(i)
                starts.append(ct2[jj - 1])
                stops.append(ct2[jj])
                wts.append(cp2[jj] / tempwt)
    row = np.asarray(rows, dtype=np.int64)
    status = (codes[row] == enum).astype(np.int8)
    return FineGrayData(start=np.asarray(starts), stop=np.asarray(stops), status=status,
                        wt=np.asarray(wts) * uw[row], row=row, event=label)


def fine_gray(time: Any, cause: Any, X: Any, *, event: Any = 1, censor: Any = 0, weights: Any = None,
              group: Any = None, ties: str = "efron", conf_level: float = 0.95) -> FineGray:
    """Fine-Gray model for ``event`` (a cause code) with the other causes competing.

    ``X``: covariates as for :func:`~oncosurg.stats.cox.coxph` (row-aligned with ``time``).
    ``group`` (optional): labels for the Aalen-Johansen cumulative incidence by group (R's
    ``survfit(Surv(time, factor(cause)) ~ group)``).
    """
    from oncosurg.stats._cox_design import _design

    fg = finegray_data(time, cause, event=event, censor=censor, weights=weights)
    n = np.asarray(check_time(time, "time")).shape[0]
    Xm, colnames, terms = _design(X, None, n)
    # expanded rows carry their patient's covariates (categoricals already expanded: keep the names)
    Xe = {nm: Xm[fg.row, j] for j, nm in enumerate(colnames)}
    cox = coxph(fg.stop, fg.status, Xe, entry=fg.start, weights=fg.wt, ties=ties, conf_level=conf_level)
    cox = _with_terms(cox, terms)
    cif = cumulative_incidence(time, cause, censor=censor, weights=weights, conf_level=conf_level)
    by = None
    if group is not None:
        levels, gcode = check_group(group, n, "group")
        t_all = np.asarray(check_time(time, "time"), dtype=np.float64)
        c_all = np.asarray(cause.to_numpy() if hasattr(cause, "to_numpy") else cause)
        w_all = None if weights is None else np.asarray(weights, dtype=np.float64)
        by = {}
        for k, lab in enumerate(levels):
            m = gcode == k
            by[lab] = cumulative_incidence(t_all[m], c_all[m], censor=censor,
                                           weights=None if w_all is None else w_all[m], conf_level=conf_level)
    return FineGray(cox=cox, data=fg, event=fg.event, cif=cif, cif_by_group=by)


def _with_terms(cox: CoxResult, terms: list[tuple[str, list[int]]]) -> CoxResult:
    import dataclasses

    return dataclasses.replace(cox, terms=tuple((t, tuple(c)) for t, c in terms))
