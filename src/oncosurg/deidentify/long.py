"""The ``limited`` release of the long registry: every episode table of every patient (docs/interop.md).

The same pseudonyms and the same per-patient shift as the flat release
(:func:`oncosurg.deidentify.release.limited`), applied to every date of every table; besides, the
birth year is removed, ``age_at_rescue`` kept in whole years (90 and above as 90), and free text
(MDT ``notes``, complication ``description``) removed: it may name people or places.  The cohort
and the quasi-identifiers are read on each patient's flat projection (:func:`~oncosurg.pathway.flat.to_flat`).
Rows are ordered by centre pseudonym and pseudonym (the long format's order), a keyed order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oncosurg.deidentify import kanon
from oncosurg.deidentify.release import (
    AGE_CAP,
    MAX_SHIFT_DAYS,
    TIME_ZERO,
    Release,
    Window,
    base_manifest,
    centre_pseudonym,
    date_shift,
    pseudonym,
    whole_years,
)
from oncosurg.pathway.flat import PatientRecord, to_flat
from oncosurg.pathway.model import TABLE_BY_NAME, TABLES, Table
from oncosurg.schema import Kind

#: Columns removed from every release of the long registry.
REMOVED = {Table.PATIENT: ("birth_year",), Table.MDT_REVIEW: ("notes",), Table.COMPLICATION: ("description",)}


def _release_record(record: PatientRecord, key: bytes) -> PatientRecord:
    shift = dt.timedelta(days=date_shift(key, record.centre, record.patient_id))

    def move(table: Table, row: dict[str, Any]) -> dict[str, Any]:
        new = dict(row)
        for fld in TABLE_BY_NAME[table].fields:
            if fld.kind is Kind.DATE and isinstance(new.get(fld.name), dt.date):
                new[fld.name] = new[fld.name] + shift
        for column in REMOVED.get(table, ()):
            if column in new:
                new[column] = None
        return new

    patient = move(Table.PATIENT, record.patient)
    patient["patient_id"] = pseudonym(key, record.centre, record.patient_id)
    patient["age_at_rescue"] = whole_years(patient.get("age_at_rescue"))
    episodes = {table: [move(table, row) for row in rows] for table, rows in record.episodes.items()}
    return PatientRecord(centre_pseudonym(key, record.centre), patient, episodes)


def _blank_patient(column: str) -> Callable[[PatientRecord], None]:
    def blank(record: PatientRecord) -> None:
        record.patient[column] = None
    return blank


def _pool_centre(record: PatientRecord) -> None:
    record.centre = "centre-pooled"


def limited_long(records: Iterable[PatientRecord], key: bytes, *, window: Window | None = None,
                 k: int | None = None, index_dates: Mapping[tuple[str, str], Any] | None = None) -> Release:
    """The ``limited`` release of long-registry ``records`` (their true values) under ``key``
    (``index_dates``: each patient's index date when the window is on it, a format-2 protocol)."""
    total = outside = 0
    released: list[PatientRecord] = []
    capped = 0
    for record in records:
        total += 1
        day = (index_dates.get((record.centre, record.patient_id)) if index_dates is not None
               else to_flat(record).get(window.column) if window is not None else None)
        if window is not None and not window.holds(day):
            outside += 1
            continue
        new = _release_record(record, key)
        capped += new.patient.get("age_at_rescue") == AGE_CAP
        released.append(new)
    manifest = base_manifest("limited", window, total, outside)
    manifest["method"] = "keyed HMAC-SHA256 pseudonyms and one keyed date shift per patient, every episode table"
    dated = [f"{spec.file}:{f.name}" for spec in TABLES for f in spec.fields if f.kind is Kind.DATE]
    manifest["columns"] = [
        {"column": "patient_id", "action": "replaced",
         "detail": "'DI-' + 20 hex digits of HMAC-SHA256(key, centre, patient_id)"},
        {"column": "centre", "action": "replaced", "detail": "'centre-' + 8 hex digits of HMAC-SHA256(key, centre)"},
        {"column": "patients.csv:age_at_rescue", "action": "coarsened",
         "detail": f"whole years; {AGE_CAP} and above reported as {AGE_CAP}", "capped": capped},
        *({"column": f"{TABLE_BY_NAME[t].file}:{c}", "action": "removed", "detail": "identifying or free text"}
          for t, columns in REMOVED.items() for c in columns),
        *({"column": c, "action": "shifted",
           "detail": f"one shift per patient, 1 to {MAX_SHIFT_DAYS} days earlier, from HMAC(key, patient) only; "
                     "intervals kept"} for c in dated),
    ]

    def qi_of(record: PatientRecord) -> dict[str, Any]:
        return kanon.quasi_identifiers(to_flat(record), TIME_ZERO)

    manifest["k_anonymity"] = {"before": kanon.measure([qi_of(r) for r in released])}
    if k is None:
        manifest["k_anonymity"]["note"] = "ages are released in whole years, finer than the 10-year band measured"
    else:
        for record in released:
            record.patient["age_at_rescue"] = kanon.band_floor(record.patient.get("age_at_rescue"))
        manifest["k_anonymity"]["age_generalised"] = (
            "first year of the 10-year band (60 = 60-69; 18 = 18-19; 90 = 90 and above)")
        suppressible = {"age_band": _blank_patient("age_at_rescue"), "primary_side": _blank_patient("primary_side"),
                        "sex": _blank_patient("sex"), "primary_site": _blank_patient("primary_site"),
                        "centre": _pool_centre}
        released, done = kanon.enforce(released, qi_of, k, suppressible)
        manifest["k_anonymity"].update(done)
        manifest["k_anonymity"]["after"] = kanon.measure([qi_of(r) for r in released])
    released.sort(key=lambda r: (r.centre, r.patient_id))
    manifest["records"] = len(released)
    return Release("limited", released, tuple(spec.file for spec in TABLES), manifest)
