"""The synthetic reference cohort reconstructed from the seed study, and random multi-episode registries.

:func:`reference_records` returns the 151 patients of the reference cohort as episode records
(:class:`~oncosurg.pathway.flat.PatientRecord`: several therapy lines, MDT reviews, response
assessments, liver procedures with complications and pathology, disease events, contacts).  Their
flat projection, :func:`build_reference_rows` (dicts keyed by the registry CSV columns of
``docs/registry-columns.md``, values as CSV cell strings), reproduces every figure published by
Adam et al., J Clin Oncol 2007;25:4593-602.  :func:`random_registry` makes large valid
multi-centre registries for tests and benchmarks.  The data are **synthetic**; see :data:`REFERENCE_DESCRIPTION` and
``docs/reference-cohort.md``.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from oncosurg.pathway.flat import PatientRecord, to_flat
from oncosurg.reference.builder import Draw
from oncosurg.reference.cohort import (
    CENTRE,
    COLUMNS,
    DATA_CUT,
    DEFAULT_SEED,
    OPERATED,
    build_rows,
)
from oncosurg.reference.episodes import build_pathway
from oncosurg.reference.random_registry import iter_random_registry, random_registry
from oncosurg.rules import parse_record

__all__ = [
    "CENTRE",
    "COLUMNS",
    "DATA_CUT",
    "OPERATED",
    "REFERENCE_DESCRIPTION",
    "build_reference_rows",
    "flat_texts",
    "iter_random_registry",
    "random_registry",
    "reference_records",
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


def reference_records(seed: int = DEFAULT_SEED) -> list[PatientRecord]:
    """The 151 synthetic patients with all their episodes, identical for identical seeds.

    Each record's flat projection (:func:`oncosurg.pathway.flat.to_flat`) is the patient's row of the
    pinned flat cohort (``cohort.build_rows``), so every published figure holds for every seed; the
    episodes the projection leaves out (earlier and later lines, reviews, assessments, first stages,
    repeat hepatectomies, complications, recurrences, contacts) are drawn per patient from the seed.
    """
    records = []
    for number, row in enumerate(build_rows(seed), start=1):
        flat, issues = parse_record(row, line=number + 1)
        if issues:  # pragma: no cover - the pinned cohort is valid (tests/test_reference_cohort.py)
            raise ValueError(f"reference row {row['patient_id']}: {issues[0]}")
        records.append(build_pathway(flat, Draw(((seed << 24) + number) << 1)))
    return records


def flat_texts(values: Mapping[str, Any]) -> dict[str, str]:
    """A typed flat row as registry CSV cells (whole numbers without a decimal point, as typed by hand)."""
    out = {}
    for column in COLUMNS:
        value = values.get(column)
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif isinstance(value, dt.date):
            text = value.isoformat()
        elif isinstance(value, float) and value.is_integer():
            text = str(int(value))
        else:
            text = str(value)
        out[column] = text
    return out


def build_reference_rows(seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """The 151 synthetic registry rows: the flat projection of :func:`reference_records`.

    Each row has exactly the registry CSV columns (in schema order); values are CSV cell strings
    (ISO dates, ``yes``/``no``, enum spellings, ``""`` for unknown/not applicable).  The published
    figures hold for every seed; the seed only changes what the publication leaves free.
    """
    return [flat_texts(to_flat(record)) for record in reference_records(seed)]


def write_reference_csv(path: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the reference cohort as a UTF-8 registry CSV (header in schema order); return the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(build_reference_rows(seed))
    return out
