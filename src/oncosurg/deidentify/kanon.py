"""k-anonymity of a release over its quasi-identifiers, and the Datafly generalisation that enforces it.

Quasi-identifiers (issue 14): sex, age band (10 years; 90 and above pooled), primary site, primary
side, centre and the year of time zero (the accrual date as released).  ``k`` is the size of the
smallest group of rows sharing all six values.  :func:`enforce` follows Sweeney's Datafly algorithm
(Int J Uncertain Fuzz 2002;10:571-88): while more than ``k`` rows sit in groups smaller than ``k``,
suppress (blank for every row) the quasi-identifier with the most distinct values; then drop the rows
still in groups smaller than ``k``.  Before that, the release's ages are generalised to the band the
measure uses (:func:`band_floor` for columns that must stay numeric), so that ``k`` holds for what is
released.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

QUASI_IDENTIFIERS = ("sex", "age_band", "primary_site", "primary_side", "centre", "year")
SUPPRESSED = "*"


def age_band(age: Any) -> str | None:
    """``"60-69"``; ``"90+"`` from 90 years on; ``None`` without an age (a band is returned unchanged)."""
    if age is None or age == "":
        return None
    if isinstance(age, str) and "-" in age:
        return age
    years = int(float(str(age).rstrip("+")))
    if years >= 90:
        return "90+"
    low = years // 10 * 10
    return f"{low}-{low + 9}"


def band_floor(age: Any) -> int | None:
    """The age as the first year of its 10-year band (60 for 60-69; 18 for 18-19, the registry's minimum;
    90 for 90 and above): a numeric column generalised to :func:`age_band`."""
    band = age_band(age)
    if band is None:
        return None
    return max(18, int(band.split("-")[0].rstrip("+")))


def quasi_identifiers(row: Mapping[str, Any], accrual_column: str) -> dict[str, Any]:
    """The six quasi-identifier values of a released row (flat registry columns or safe-harbor columns)."""
    start = row.get(accrual_column)
    year = start.year if isinstance(start, dt.date) else row.get("start_year")
    return {"sex": row.get("sex"), "age_band": age_band(row.get("age_at_cetuximab")),
            "primary_site": row.get("primary_site"), "primary_side": row.get("primary_side"),
            "centre": row.get("centre"), "year": year}


def measure(qis: Sequence[Mapping[str, Any]], target: int = 5) -> dict[str, Any]:
    """``k``, the number of groups, the rows unique on the quasi-identifiers and the rows in groups < ``target``."""
    groups = Counter(tuple(q[name] for name in QUASI_IDENTIFIERS) for q in qis)
    return {"quasi_identifiers": list(QUASI_IDENTIFIERS), "rows": len(qis), "k": min(groups.values(), default=0),
            "groups": len(groups), "unique_rows": sum(1 for n in groups.values() if n == 1),
            f"rows_in_groups_below_{target}": sum(n for n in groups.values() if n < target)}


Row = Any  # a released row: a flat record or a long-registry PatientRecord


def enforce(rows: list[Row], qi_of: Callable[[Row], dict[str, Any]], k: int,
            suppressible: Mapping[str, Callable[[Row], None]]) -> tuple[list[Row], dict[str, Any]]:
    """Datafly: suppress whole quasi-identifiers, then rows, until every group has ``k`` rows or more.

    ``suppressible`` maps a quasi-identifier to the function that blanks it in a released row; the
    others (e.g. the year when dates are kept) are never suppressed.  Returns the kept rows and what was done.
    """
    done: set[str] = set()

    def qis() -> list[tuple[Any, ...]]:
        out = []
        for row in rows:
            q = qi_of(row)
            out.append(tuple(SUPPRESSED if name in done else q[name] for name in QUASI_IDENTIFIERS))
        return out

    suppressed_columns: list[str] = []
    while True:
        keys = qis()
        groups = Counter(keys)
        violating = sum(n for n in groups.values() if n < k)
        candidates = [n for n in suppressible if n not in done]
        if violating <= k or not candidates:
            break
        index = {name: i for i, name in enumerate(QUASI_IDENTIFIERS)}
        widest = max(candidates, key=lambda n: (len({key[index[n]] for key in keys}), -list(suppressible).index(n)))
        done.add(widest)
        suppressed_columns.append(widest)
    for name in suppressed_columns:
        for row in rows:
            suppressible[name](row)
    keys = qis()
    groups = Counter(keys)
    kept = [row for row, key in zip(rows, keys, strict=True) if groups[key] >= k]
    return kept, {"target_k": k, "suppressed_quasi_identifiers": suppressed_columns,
                  "rows_dropped": len(rows) - len(kept)}
