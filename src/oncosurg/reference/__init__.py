"""The synthetic reference cohort reconstructed from the seed study.

:func:`build_reference_rows` returns 151 registry rows (dicts keyed by the registry CSV columns of
``docs/registry-columns.md``, values as CSV cell strings) whose analysis with the seed protocol
reproduces every figure published by Adam et al., J Clin Oncol 2007;25:4593-602.  The data are **synthetic**; see
:data:`REFERENCE_DESCRIPTION` and ``docs/reference-cohort.md``.
"""

from __future__ import annotations

import csv
from pathlib import Path

from oncosurg.reference.cohort import (
    CENTRE,
    COLUMNS,
    DATA_CUT,
    DEFAULT_SEED,
    OPERATED,
    build_rows,
)

__all__ = [
    "CENTRE",
    "COLUMNS",
    "DATA_CUT",
    "OPERATED",
    "REFERENCE_DESCRIPTION",
    "build_reference_rows",
    "write_reference_csv",
]

REFERENCE_DESCRIPTION: str = (
    "Synthetic data - no real patients. The reference cohort is a deterministic, computer-generated "
    f"registry of 151 fictitious patients at the \"{CENTRE}\", built by oncosurg so that the "
    "figures published by Adam et al. (J Clin Oncol 2007;25:4593-602: 151 evaluated, 133 in-house and "
    "18 referred, 27 operated, 25 hepatectomies, 1/27 postoperative death, 13/26 complications, 9/25 "
    "liver abnormalities, 23/25 alive and 10/25 disease-free, median follow-up 16, observed OS 20 and "
    "PFS 13 months) come out of patient-level records. The 27 operated patients are pinned by hand; "
    "everything the publication does not constrain (calendar dates, demographics, the 124 "
    f"non-operated patients) is drawn from a seeded random generator. Data cut {DATA_CUT.isoformat()}. "
    "It is a test and demonstration fixture, not evidence about any patient or treatment."
)


def build_reference_rows(seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """The 151 synthetic registry rows, identical for identical seeds.

    Each row has exactly the registry CSV columns (in schema order); values are CSV cell strings
    (ISO dates, ``yes``/``no``, enum spellings, ``""`` for unknown/not applicable).  The published
    figures hold for every seed; the seed only changes what the publication leaves free.
    """
    return build_rows(seed)


def write_reference_csv(path: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the reference cohort as a UTF-8 registry CSV (header in schema order); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(build_reference_rows(seed))
    return out
