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

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


def _to_grid(t: float, width: float, up: bool) -> float:
    k = t / width
    k = math.ceil(round(k, 9)) if up else math.floor(round(k, 9))
    return k * width


def _aggregate(pairs: Iterable[tuple[tuple[Any, ...], int]]) -> dict[tuple[Any, ...], int]:
    out: dict[tuple[Any, ...], int] = {}
    for key, n in pairs:
        out[key] = out.get(key, 0) + n
    return out


def coarsen(rows: Sequence[Sequence[Any]], threshold: int, *, entries: Sequence[Sequence[Any]] | None = None,
            days: bool = False) -> Coarsened | None:
    """Release ``rows`` (time, status, count) and ``entries`` (time, count) under the cell rule, or None.

    ``days``: times are in days (the ladder is scaled from months); else months.
    """
    rows = [(float(t), s, int(n)) for t, s, n in rows if n]
    ents = None if entries is None else [(float(t), int(n)) for t, n in entries if n]

    def passes(r: dict[tuple[Any, ...], int], e: dict[tuple[Any, ...], int] | None) -> bool:
        return cells_ok(r.values(), threshold) and (e is None or cells_ok(e.values(), threshold))

    full_r = _aggregate(((t, s), n) for t, s, n in rows)
    full_e = None if ents is None else _aggregate(((t,), n) for t, n in ents)
    if passes(full_r, full_e):
        return Coarsened([[t, s, n] for (t, s), n in sorted(full_r.items(), key=_order)],
                         None if full_e is None else [[t, n] for (t,), n in sorted(full_e.items())], None)
    scale = DAYS_PER_MONTH if days else 1.0
    for w_months in LADDER_MONTHS:
        w = w_months * scale
        r = _aggregate(((_to_grid(t, w, True), s), n) for t, s, n in rows)
        e = None if ents is None else _aggregate(((_to_grid(t, w, False),), n) for t, n in ents)
        if passes(r, e):
            shifts = [(abs(_to_grid(t, w, True) - t), n) for t, _s, n in rows]
            shifts += [(abs(_to_grid(t, w, False) - t), n) for t, n in ents or ()]
            moved = sum(n for d, n in shifts if d > 1e-12)
            return Coarsened([[t, s, n] for (t, s), n in sorted(r.items(), key=_order)],
                             None if e is None else [[t, n] for (t,), n in sorted(e.items())], w, moved)
    return None


def _order(item: tuple[tuple[Any, Any], int]) -> tuple[float, str]:
    (t, s), _n = item
    return (t, str(s))
