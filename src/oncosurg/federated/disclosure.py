"""Disclosure rules applied at each centre before anything leaves it.

* **Minimum cell count** ``threshold`` (default 3, DataSHIELD's ``nfilter.tab``): every count a
  centre releases is 0 or at least ``threshold``; a quantity with a smaller non-zero cell is
  withheld and named.
* **Event tables** (time, status, count) and entry tables (time, count) are released at full
  resolution when every cell passes, else with times coarsened to the first width of
  :data:`LADDER_MONTHS` at which every cell passes: exits (events, censorings) move to the end of
  their interval, entries to its start, so each patient's interval only grows and stays valid.  The
  width (a bound on every shift) and the number of patients whose time moved (itself 0 or at least
  the threshold, else withheld) are the precision cost; the largest actual shift is not released,
  as it would give one patient's exact time.
* **Order statistics** (a median's ranks) are released only with ``threshold`` patients at or
  below and at or above them, over all centres; the minimum and maximum are therefore withheld
  whenever ``threshold`` > 1.
* A centre registering fewer than ``threshold`` patients releases nothing.

A centre applies ``max(requested threshold, its own floor)``: the floor comes from the environment
variable ``ONCOSURG_MIN_CELL`` of the node (or the database's ``min_cell`` parameter,
``<LABEL>_DB_PARAM_MIN_CELL``), so a researcher cannot lower it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oncosurg.schema import DAYS_PER_MONTH

DEFAULT_THRESHOLD = 3
#: Coarsening widths tried in turn, in months (one week, then 1, 3, 6, 12, 24 and 60 months).
LADDER_MONTHS: tuple[float, ...] = (7 / DAYS_PER_MONTH, 1.0, 3.0, 6.0, 12.0, 24.0, 60.0)


def node_floor() -> int:
    """The node's own minimum cell count (0 when it sets none)."""
    values = [os.environ.get("ONCOSURG_MIN_CELL", "")]
    values += [v for k, v in os.environ.items() if k.endswith("_DB_PARAM_MIN_CELL")]
    floors = [int(v) for v in values if v.strip().isdigit()]
    return max(floors, default=0)


def effective_threshold(requested: int) -> int:
    return max(int(requested), node_floor(), 1)


def cell_ok(n: float, threshold: int) -> bool:
    """A released count is 0 or at least ``threshold`` (DataSHIELD ``nfilter.tab``)."""
    return n == 0 or n >= threshold


def cells_ok(counts: Iterable[float], threshold: int) -> bool:
    return all(cell_ok(n, threshold) for n in counts)


@dataclass(frozen=True)
class Coarsened:
    """An event table as released: rows ``[time, status, count]``, entries ``[time, count]``."""

    rows: list[list[Any]]
    entries: list[list[Any]] | None
    width: float | None  # None: full resolution
    moved: int = 0  # patients whose exit or entry time changed (stays at the site unless it passes the threshold)


def _to_grid(t: np.ndarray, width: float, up: bool) -> np.ndarray:
    k = np.round(t / width, 9)
    return (np.ceil(k) if up else np.floor(k)) * width


def _table(keys: list[np.ndarray], n: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of ``keys`` (sorted) with their summed counts."""
    if n.size == 0:
        return [k[:0] for k in keys], n
    stacked = np.column_stack(keys)
    uniq, inv = np.unique(stacked, axis=0, return_inverse=True)
    return [uniq[:, j] for j in range(len(keys))], np.bincount(inv.ravel(), weights=n).astype(np.int64)


def coarsen(rows: Sequence[Sequence[Any]], threshold: int, *, entries: Sequence[Sequence[Any]] | None = None,
            days: bool = False) -> Coarsened | None:
    """Release ``rows`` (time, status, count) and ``entries`` (time, count) under the cell rule, or None.

    ``days``: times are in days (the ladder is scaled from months); else months.  Statuses are integers.
    """
    rt = np.asarray([float(r[0]) for r in rows], dtype=float)
    rs = np.asarray([int(r[1]) for r in rows], dtype=float)
    rn = np.asarray([int(r[2]) for r in rows], dtype=float)
    et = None if entries is None else np.asarray([float(e[0]) for e in entries], dtype=float)
    en = None if entries is None else np.asarray([int(e[1]) for e in entries], dtype=float)

    def release(width: float | None) -> tuple[list[list[Any]], list[list[Any]] | None] | None:
        t = rt if width is None else _to_grid(rt, width, True)
        (tt, ss), nn = _table([t, rs], rn)
        if not cells_ok(nn[nn > 0].tolist(), threshold):
            return None
        out_rows = [[float(a), int(b), int(c)] for a, b, c in zip(tt, ss, nn, strict=True) if c]
        if et is None or en is None:
            return out_rows, None
        e = et if width is None else _to_grid(et, width, False)
        (te,), ne = _table([e], en)
        if not cells_ok(ne[ne > 0].tolist(), threshold):
            return None
        return out_rows, [[float(a), int(c)] for a, c in zip(te, ne, strict=True) if c]

    full = release(None)
    if full is not None:
        return Coarsened(full[0], full[1], None)
    scale = DAYS_PER_MONTH if days else 1.0
    for w_months in LADDER_MONTHS:
        w = w_months * scale
        done = release(w)
        if done is not None:
            moved = int(rn[np.abs(_to_grid(rt, w, True) - rt) > 1e-12].sum())
            if et is not None and en is not None:
                moved += int(en[np.abs(_to_grid(et, w, False) - et) > 1e-12].sum())
            return Coarsened(done[0], done[1], w, moved)
    return None


