"""The two de-identification modes of an export, on flat registry records (docs/interop.md).

``limited`` (a HIPAA limited data set, for survival analysis) keeps dates, shifted:

* ``patient_id`` → ``DI-`` + 20 hex digits of HMAC-SHA256(key, centre ␟ patient_id), ``centre`` →
  ``centre-`` + 8 hex digits of an HMAC of its name: the same key links exports, nothing else does;
* every date of a patient moves back by one shift of 1 to :data:`MAX_SHIFT_DAYS` days drawn from
  HMAC(key, centre ␟ patient_id) alone — not from the export day, the protocol or the dates — so two
  exports never differ in a patient's shift, no date lands in the future and every interval is kept;
* ``age_at_cetuximab`` → whole years, 90 and above reported as 90.

``safe-harbor`` (HIPAA Safe Harbor, 45 CFR 164.514(b)(2)) keeps no date: a random code per patient
(not derived from any identifier, different in every export), centres numbered at random, the year of
time zero (``start_year``) and every other date as days from time zero (``days_to_*``); ages in
whole years with 90 and above pooled as ``90+``.  It needs no key.

Both modes release only the protocol's cohort (the accrual window is applied to the true dates, so
shifted dates never move a patient in or out), in a keyed (``limited``) or random (``safe-harbor``)
row order — never the registry's order — and measure k-anonymity (:mod:`oncosurg.deidentify.kanon`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from oncosurg.deidentify import kanon
from oncosurg.schema import COLUMNS, FIELDS, Kind

if TYPE_CHECKING:
    from oncosurg.protocol.model import Protocol

MODES = ("limited", "safe-harbor")
DATE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind is Kind.DATE)
TIME_ZERO = "cetuximab_start"
#: The shift range (days back).  The accrual window is public and bounds each released patient's true
#: start, so an attacker intersects it with [shifted + 1, shifted + MAX_SHIFT_DAYS]: with ten years the
#: intersection is the whole window for most patients (seed window of 820 days: median 820 days, 1.3 %
#: below 200 days; with 730 days it would be 549 and 6.8 %).
MAX_SHIFT_DAYS = 3650
AGE_CAP = 90
#: Safe-harbor columns: the registry's, with each date replaced (time zero by its year).
SAFE_HARBOR_COLUMNS: tuple[str, ...] = tuple(
    ("start_year" if c == TIME_ZERO else "days_to_" + c.removesuffix("_date")) if c in DATE_COLUMNS else c
    for c in COLUMNS)


@dataclass(frozen=True, slots=True)
class Window:
    """A protocol's accrual window over a date column (either end may be open)."""

    column: str = TIME_ZERO
    start: dt.date | None = None
    end: dt.date | None = None

    def holds(self, day: Any) -> bool:
        return (isinstance(day, dt.date) and (self.start is None or day >= self.start)
                and (self.end is None or day <= self.end))

    def describe(self) -> dict[str, str | None]:
        return {"column": self.column, "start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None}


@dataclass(frozen=True, slots=True)
class Release:
    """De-identified rows in release order (flat records, or :class:`~oncosurg.pathway.flat.PatientRecord`\\ s of
    the long registry), their columns (the long registry's files) and the manifest (no secret, no original value)."""

    mode: str
    records: list[Any]
    columns: tuple[str, ...]
    manifest: dict[str, Any] = field(hash=False)


def _mac(key: bytes, *parts: str) -> bytes:
    return hmac.new(key, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()


def pseudonym(key: bytes, centre: str, patient_id: str) -> str:
    """The keyed pseudonym of a patient (``limited``)."""
    return "DI-" + _mac(key, "patient", centre, patient_id).hex()[:20]


def centre_pseudonym(key: bytes, centre: str) -> str:
    return "centre-" + _mac(key, "centre", centre).hex()[:8]


def date_shift(key: bytes, centre: str, patient_id: str) -> int:
    """The patient's shift in days, -:data:`MAX_SHIFT_DAYS` … -1: a function of the key and the patient only."""
    draw = int.from_bytes(_mac(key, "shift", centre, patient_id), "big")
    return -(1 + draw % MAX_SHIFT_DAYS)


def whole_years(value: Any) -> int | None:
    """Whole years, :data:`AGE_CAP` and above as :data:`AGE_CAP`."""
    return None if value is None else min(math.floor(float(value)), AGE_CAP)


def _cohort(records: Iterable[Mapping[str, Any]], window: Window | None) -> tuple[list[Mapping[str, Any]], int]:
    kept, outside = [], 0
    for record in records:
        if window is None or window.holds(record.get(window.column)):
            kept.append(record)
        else:
            outside += 1
    return kept, outside


def _blank(column: str) -> Callable[[dict[str, Any]], None]:
    def blank(row: dict[str, Any]) -> None:
        row[column] = None
    return blank


def _pool_centre(row: dict[str, Any]) -> None:
    row["centre"] = "centre-pooled"


def _apply_k(mode: str, rows: list[dict[str, Any]], k: int | None, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    def qi_of(row: dict[str, Any]) -> dict[str, Any]:
        return kanon.quasi_identifiers(row, TIME_ZERO)

    manifest["k_anonymity"] = {"before": kanon.measure([qi_of(r) for r in rows])}
    if k is None:
        manifest["k_anonymity"]["note"] = "ages are released in whole years, finer than the 10-year band measured"
    else:
        for row in rows:
            age = row["age_at_cetuximab"]
            row["age_at_cetuximab"] = kanon.age_band(age) if mode == "safe-harbor" else kanon.band_floor(age)
        manifest["k_anonymity"]["age_generalised"] = (
            "10-year band ('60-69', '90+')" if mode == "safe-harbor" else
            "first year of the 10-year band (60 = 60-69; 18 = 18-19; 90 = 90 and above)")
        suppressible = {"age_band": _blank("age_at_cetuximab"), "primary_side": _blank("primary_side"),
                        "sex": _blank("sex"), "primary_site": _blank("primary_site"), "centre": _pool_centre}
        if mode == "safe-harbor":
            suppressible["year"] = _blank("start_year")
        rows, done = kanon.enforce(rows, qi_of, k, suppressible)
        manifest["k_anonymity"].update(done)
        manifest["k_anonymity"]["after"] = kanon.measure([qi_of(r) for r in rows])
    return rows


def base_manifest(mode: str, window: Window | None, total: int, outside: int) -> dict[str, Any]:
    """The manifest entries both modes (and the long release) share."""
    return {
        "mode": mode,
        "standard": ("HIPAA limited data set (45 CFR 164.514(e)): dates kept, shifted; use under a data use "
                     "agreement" if mode == "limited" else
                     "HIPAA Safe Harbor (45 CFR 164.514(b)(2)): no date element but the year, ages over 89 pooled"),
        "registry_patients": total,
        "cohort": None if window is None else {
            **window.describe(), "outside_window_not_released": outside,
            "note": "the window was applied to the true dates before de-identification; analyse the release "
                    "without it (the .protocol.toml written beside a limited release)"},
        "row_order": ("keyed (HMAC of the key and the patient): the same in every export with this key, unrelated "
                      "to the registry's order" if mode == "limited" else "random (a new order in every export)"),
        "not_in_the_export": "original identifiers, original dates, birth year, the key or any fingerprint of it, "
                             "and the mapping between pseudonyms and patients",
    }


def limited(records: Iterable[Mapping[str, Any]], key: bytes, *, window: Window | None = None,
            k: int | None = None) -> Release:
    """The ``limited`` release of flat ``records`` (their true values) under ``key``."""
    source = list(records)
    cohort, outside = _cohort(source, window)
    rows: list[tuple[bytes, dict[str, Any]]] = []
    capped = 0
    for record in cohort:
        centre, patient_id = str(record.get("centre") or ""), str(record["patient_id"])
        shift = dt.timedelta(days=date_shift(key, centre, patient_id))
        new = {c: record.get(c) for c in COLUMNS}
        new["patient_id"] = pseudonym(key, centre, patient_id)
        new["centre"] = centre_pseudonym(key, centre)
        for column in DATE_COLUMNS:
            if new[column] is not None:
                new[column] = new[column] + shift
        new["age_at_cetuximab"] = whole_years(record.get("age_at_cetuximab"))
        capped += new["age_at_cetuximab"] == AGE_CAP
        rows.append((_mac(key, "order", centre, patient_id), new))
    released = [row for _, row in sorted(rows, key=lambda pair: pair[0])]
    manifest = base_manifest("limited", window, len(source), outside)
    manifest["method"] = "keyed HMAC-SHA256 pseudonyms and one keyed date shift per patient"
    manifest["columns"] = [
        {"column": "patient_id", "action": "replaced",
         "detail": "'DI-' + 20 hex digits of HMAC-SHA256(key, centre, patient_id)"},
        {"column": "centre", "action": "replaced", "detail": "'centre-' + 8 hex digits of HMAC-SHA256(key, centre)"},
        {"column": "age_at_cetuximab", "action": "coarsened",
         "detail": f"whole years; {AGE_CAP} and above reported as {AGE_CAP}", "capped": capped},
        *({"column": c, "action": "shifted",
           "detail": f"one shift per patient, 1 to {MAX_SHIFT_DAYS} days earlier, from HMAC(key, patient) only; "
                     "intervals kept"} for c in DATE_COLUMNS),
    ]
    released = _apply_k("limited", released, k, manifest)
    manifest["records"] = len(released)
    return Release("limited", released, COLUMNS, manifest)


def safe_harbor(records: Iterable[Mapping[str, Any]], *, window: Window | None = None, k: int | None = None,
                rng: secrets.SystemRandom | None = None) -> Release:
    """The ``safe-harbor`` release of flat ``records``: random codes, no date but the year of time zero."""
    rng = rng or secrets.SystemRandom()
    source = list(records)
    cohort, outside = _cohort(source, window)
    centres = sorted({str(r.get("centre") or "") for r in cohort})
    rng.shuffle(centres)
    centre_code = {name: f"centre-{i:02d}" for i, name in enumerate(centres, start=1)}
    codes = rng.sample(range(10**7, 10**8), len(cohort))
    rows = []
    pooled = 0
    for code, record in zip(codes, cohort, strict=True):
        zero = record[TIME_ZERO]
        new: dict[str, Any] = {}
        for column in COLUMNS:
            value = record.get(column)
            if column == TIME_ZERO:
                new["start_year"] = zero.year
            elif column in DATE_COLUMNS:
                new["days_to_" + column.removesuffix("_date")] = None if value is None else (value - zero).days
            else:
                new[column] = value
        new["patient_id"] = f"SH-{code}"
        new["centre"] = centre_code[str(record.get("centre") or "")]
        years = whole_years(record.get("age_at_cetuximab"))
        new["age_at_cetuximab"] = "90+" if years == AGE_CAP else years
        pooled += years == AGE_CAP
        rows.append(new)
    rows.sort(key=lambda row: row["patient_id"])
    manifest = base_manifest("safe-harbor", window, len(source), outside)
    manifest["method"] = "random codes; dates as the year of time zero and days from time zero"
    manifest["columns"] = [
        {"column": "patient_id", "action": "replaced", "detail": "random 'SH-' code, new in every export, "
                                                                 "derived from nothing about the patient"},
        {"column": "centre", "action": "replaced", "detail": "centres numbered in a random order, new in every export"},
        {"column": "age_at_cetuximab", "action": "coarsened", "detail": "whole years; 90 and above as '90+'",
         "pooled": pooled},
        {"column": TIME_ZERO, "action": "reduced to year", "detail": "start_year"},
        *({"column": c, "action": "interval", "detail": f"days_to_{c.removesuffix('_date')}: days from "
                                                          f"{TIME_ZERO}"} for c in DATE_COLUMNS if c != TIME_ZERO),
    ]
    rows = _apply_k("safe-harbor", rows, k, manifest)
    manifest["records"] = len(rows)
    return Release("safe-harbor", rows, SAFE_HARBOR_COLUMNS, manifest)


def release_cohort(path: str | Path) -> dict[str, Any] | None:
    """The cohort of the ``limited`` release at ``path`` (its accrual window, applied on the true dates, and
    the protocol file to analyse it with) from the manifest written beside it (inside a FHIR folder), or
    ``None`` when ``path`` is not such a release."""
    path = Path(path)
    for manifest in (path.with_name(path.name + ".manifest.json"), path / "deidentification-manifest.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cohort = data.get("cohort") if isinstance(data, dict) and data.get("mode") == "limited" else None
        if not isinstance(cohort, dict) or not {"column", "start", "end"} <= cohort.keys():
            return None
        protocol = data.get("protocol_for_analysis")
        return {"manifest": manifest.name, "column": cohort["column"], "start": cohort["start"], "end": cohort["end"],
                "protocol": str(manifest.with_name(protocol)) if isinstance(protocol, str) else None}
    return None


def without_applied_window(protocol: Protocol, cohort: dict[str, Any]) -> Protocol:
    """``protocol`` without its accrual window when the release's cohort was selected with that same window
    (on the true dates; its shifted dates must not be filtered again); else ``protocol`` unchanged."""
    if protocol.accrual_start is None and protocol.accrual_end is None:
        return protocol
    window = Window(protocol.accrual_column, protocol.accrual_start, protocol.accrual_end).describe()
    if {k: cohort.get(k) for k in ("column", "start", "end")} != window:
        return protocol
    return dataclasses.replace(protocol, accrual_start=None, accrual_end=None)
