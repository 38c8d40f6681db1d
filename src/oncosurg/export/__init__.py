"""Writers of the registry in other formats: REDCap, HL7 FHIR R4 (mCODE), Excel, and de-identified.

Each writer takes registry records as :func:`oncosurg.store.repository.iter_records` yields them
(column → typed value) and writes a file that the matching reader in :mod:`oncosurg.ingest` turns
back into the same records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from oncosurg.schema import COLUMNS


def cell_text(value: Any) -> str:
    """A typed registry value as the registry CSV writes it (empty for ``None``; a whole number as an
    integer, ``71`` not ``71.0``, whatever column type stored it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def record_texts(record: Mapping[str, Any]) -> dict[str, str]:
    """Every registry column of a record as registry CSV text."""
    return {c: cell_text(record.get(c)) for c in COLUMNS}
