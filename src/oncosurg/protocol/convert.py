"""Format-1 protocols, read as format 2.

Format 1 (oncosurg ≤ 0.1) had no index event and three built-in outcomes measured from the flat
columns: overall survival and progression-free survival from ``cetuximab_start``, follow-up from
``surgery_date``.  :func:`convert_v1` rewrites a format-1 TOML table into the format-2 table that
computes the same numbers, so every format-1 file keeps loading and giving its results:

* ``[cohort] include = [...]`` becomes ``[[eligibility]]``; the accrual window stays on
  ``accrual_column`` (no ``[index]``);
* the outcomes ``os``, ``pfs`` and ``followup_from_surgery`` are declared (their columns
  ``os_months``, ``os_event``, ``pfs_months``… keep their names);
* the rest is unchanged.

The results carry :data:`FORMAT_1_NOTICE`; ``docs/protocol.md`` says how to write the file in
format 2 (an index event instead of ``accrual_column``, outcomes from the index).
"""

from __future__ import annotations

import copy
from typing import Any

FORMAT_1_NOTICE = (
    "This protocol is in format 1 (no `format = 2` under [protocol]); it was read through the format-1 "
    "compatibility layer: outcomes os and pfs from cetuximab_start and followup_from_surgery from surgery_date, "
    "no index event, no data cut. To use index events, declared outcomes and comparisons, convert it as "
    "docs/protocol.md ('Upgrading a format-1 protocol') shows."
)

#: The format-1 built-in outcomes, as format-2 declarations (same columns, same numbers).
V1_OUTCOMES: dict[str, dict[str, Any]] = {
    "os": {"label": "Overall survival", "origin": "cetuximab_start", "events": ["death"],
           "definition": "cetuximab_start to death, else last contact"},
    "pfs": {"label": "Progression-free survival", "origin": "cetuximab_start",
            "events": ["progression_date", "death"],
            "definition": "cetuximab_start to the first of progression or death, else last contact"},
    "followup_from_surgery": {"label": "Follow-up from surgery", "origin": "surgery_date", "events": ["death"],
                              "definition": "surgery_date to death, else last contact"},
}


def convert_v1(data: dict[str, Any]) -> dict[str, Any]:
    """The format-2 table equivalent to a format-1 one (structural problems are left for the loader)."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    meta = out.get("protocol")
    if isinstance(meta, dict):
        meta["format"] = 2
    cohort = out.get("cohort")
    if isinstance(cohort, dict):
        include = cohort.pop("include", None)
        if include is not None:
            out["eligibility"] = include
        cohort.setdefault("accrual_column", "cetuximab_start")
    if "outcomes" not in out:
        out["outcomes"] = copy.deepcopy(V1_OUTCOMES)
    return out
