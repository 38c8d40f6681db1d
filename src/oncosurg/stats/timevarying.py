"""Comparing operated with non-operated patients without guarantee-time bias.

Patients who undergo surgery (e.g. hepatectomy after rescue cetuximab) must survive long enough to
be operated.  Classifying them as "operated" from the time origin credits the surgery group with
that guaranteed survival time ("immortal time" / guarantee-time bias; Giobbie-Hurder, Gelber and
Regan, J Clin Oncol 2013;31:2963-9).  Two standard remedies:

* :func:`landmark` - choose a landmark time L; keep the patients still under observation at L
  (follow-up time > L), classify them by whether they were operated by L, and measure survival
  from L.  Surgery after L is ignored (such patients stay in the "not operated by L" group).
* :func:`split_at_exposure` - treat surgery as a time-dependent exposure: each operated patient
  contributes an unexposed interval (0, s] and an exposed interval (s, T].  The rows feed
  :func:`oncosurg.stats.cox.coxph` with ``entry=start`` (as R's ``tmerge(..., tdc(surgery))`` +
  ``coxph(Surv(tstart, tstop, death) ~ exposed)``).

Conventions (identical to R ``survival::tmerge``): an exposure at time 0 means exposed from the
start (a single exposed row); an exposure at or after the end of follow-up, or a missing exposure
time (NaN / None), means never exposed during follow-up (a single unexposed row).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oncosurg.stats._checks import (
    SurvivalInputError,
    as_1d_array,
    check_event,
    check_same_length,
    check_time,
    show,
)
from oncosurg.stats.results import _Tabular, clean

__all__ = ["LandmarkData", "SplitData", "landmark", "split_at_exposure"]


def _exposure_times(exposure_time: Any, n: int) -> np.ndarray:
    e = as_1d_array(exposure_time, "exposure_time").astype(np.float64, copy=False)
    check_same_length(n, e, "exposure_time")
    bad = e < 0  # NaN (never exposed) compares False
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SurvivalInputError(
            f"argument 'exposure_time' must be >= 0 (time from the origin) or missing (never exposed); "
            f"row {i} is {e[i]:g}. Check the date arithmetic (surgery before the time origin?)."
        )
    return e


def _covariates(covariates: Mapping[str, Any] | None, n: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, col in (covariates or {}).items():
        arr = as_1d_array(col, str(name), numeric=False)
        check_same_length(n, arr, str(name))
        out[str(name)] = arr
    return out


@dataclass(frozen=True)
class LandmarkData(_Tabular):
    """Patients at risk at the landmark, with time re-origined at the landmark."""

    landmark_time: float
    time: np.ndarray = field(repr=False)  # time since the landmark
    event: np.ndarray = field(repr=False)  # 0/1
    exposed: np.ndarray = field(repr=False)  # 1 = exposed (operated) by the landmark
    index: np.ndarray = field(repr=False)  # row of the input each patient came from
    covariates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    n_excluded: int = 0  # patients whose follow-up ended at or before the landmark

    @property
    def n(self) -> int:
        return int(self.time.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "landmark_time": self.landmark_time,
                "n": self.n,
                "n_excluded": self.n_excluded,
                "n_exposed": int(self.exposed.sum()),
                "events": int(self.event.sum()),
            }
        )

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for k in range(self.n):
            row = {
                "index": int(self.index[k]),
                "time": float(self.time[k]),
                "event": int(self.event[k]),
                "exposed": int(self.exposed[k]),
            }
            row.update({c: clean(v[k]) for c, v in self.covariates.items()})
            rows.append(row)
        return rows


def landmark(
    time: Any,
    event: Any,
    exposure_time: Any,
    landmark_time: float,
    *,
    covariates: Mapping[str, Any] | None = None,
) -> LandmarkData:
    """Landmark analysis data set (Giobbie-Hurder et al., JCO 2013).

    Keeps the patients still under observation at ``landmark_time`` (follow-up time strictly
    greater than the landmark: alive and not yet censored), sets ``exposed = 1`` for those exposed
    (e.g. operated) at or before the landmark, and re-origins time at the landmark
    (``time - landmark_time``).  Fit e.g. ``coxph(d.time, d.event, {"operated": d.exposed})``.
    """
    t = check_time(time, "time").astype(np.float64)
    n = t.shape[0]
    ev = check_event(event, n, "event").astype(np.int8)
    ex = _exposure_times(exposure_time, n)
    L = float(landmark_time)
    if not np.isfinite(L) or L < 0:
        raise SurvivalInputError(f"landmark_time must be a finite time >= 0; got {show(landmark_time)}.")
    cov = _covariates(covariates, n)
    keep = t > L
    idx = np.flatnonzero(keep)
    exposed = (~np.isnan(ex[idx]) & (ex[idx] <= L)).astype(np.int8)
    return LandmarkData(
        landmark_time=L,
        time=t[idx] - L,
        event=ev[idx],
        exposed=exposed,
        index=idx,
        covariates={k: v[idx] for k, v in cov.items()},
        n_excluded=int(n - idx.size),
    )


@dataclass(frozen=True)
class SplitData(_Tabular):
    """Counting-process rows (start, stop] with a time-dependent 0/1 exposure."""

    start: np.ndarray = field(repr=False)
    stop: np.ndarray = field(repr=False)
    event: np.ndarray = field(repr=False)
    exposed: np.ndarray = field(repr=False)
    id: np.ndarray = field(repr=False)  # input row (patient) each interval belongs to
    covariates: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.stop.shape[0])

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "n_rows": self.n_rows,
                "n_patients": int(np.unique(self.id).size),
                "n_split": int(self.n_rows - np.unique(self.id).size),
                "events": int(self.event.sum()),
                "events_exposed": int(self.event[self.exposed == 1].sum()),
            }
        )

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for k in range(self.n_rows):
            row = {
                "id": int(self.id[k]),
                "start": float(self.start[k]),
                "stop": float(self.stop[k]),
                "event": int(self.event[k]),
                "exposed": int(self.exposed[k]),
            }
            row.update({c: clean(v[k]) for c, v in self.covariates.items()})
            rows.append(row)
        return rows


def split_at_exposure(
    time: Any,
    event: Any,
    exposure_time: Any,
    covariates: Mapping[str, Any] | None = None,
) -> SplitData:
    """Split each patient's follow-up at the exposure (e.g. surgery) time.

    A patient exposed at ``s`` with ``0 < s < time`` gives two rows: ``(0, s]`` unexposed without
    event and ``(s, time]`` exposed carrying the patient's event.  Everyone else gives one row
    ``(0, time]`` (exposed if ``s == 0``).  Fixed covariates are repeated on each row.  Rows come
    per patient in input order, earlier interval first - the same rows as R's
    ``tmerge(base, base, id, death = event(time, status))`` followed by
    ``tmerge(., surgery, id, exposed = tdc(surgery_time))``.

    Use: ``coxph(d.stop, d.event, {"exposed": d.exposed, **d.covariates}, entry=d.start)``.
    """
    t = check_time(time, "time").astype(np.float64)
    n = t.shape[0]
    ev = check_event(event, n, "event").astype(np.int8)
    ex = _exposure_times(exposure_time, n)
    cov = _covariates(covariates, n)
    zero = t <= 0
    if zero.any():
        i = int(np.flatnonzero(zero)[0])
        raise SurvivalInputError(
            f"argument 'time' must be > 0 to form an interval (0, time]; row {i} is {t[i]:g}. "
            "Drop patients with no follow-up or add a small positive time."
        )
    known = ~np.isnan(ex)
    split = known & (ex > 0) & (ex < t)
    exposed_all = known & (ex <= 0)
    reps = np.where(split, 2, 1)
    ids = np.repeat(np.arange(n), reps)
    first = np.concatenate(([True], ids[1:] != ids[:-1]))  # first interval of each patient
    m = ids.size
    start = np.zeros(m)
    stop = t[ids].copy()
    event_out = ev[ids].copy()
    exposed = exposed_all[ids].astype(np.int8)
    srows = split[ids]
    pre = srows & first
    post = srows & ~first
    stop[pre] = ex[ids[pre]]
    event_out[pre] = 0
    start[post] = ex[ids[post]]
    exposed[post] = 1
    return SplitData(
        start=start,
        stop=stop,
        event=event_out,
        exposed=exposed,
        id=ids,
        covariates={k: v[ids] for k, v in cov.items()},
    )
