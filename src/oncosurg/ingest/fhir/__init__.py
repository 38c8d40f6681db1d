"""HL7 FHIR R4 Bundles (one per patient) → validated patient records with their episodes.

:func:`read_fhir_bundles` reads a directory of ``*.json`` Bundles (or one Bundle file), as written
by :mod:`oncosurg.export.fhir` or sent by another system, into
:class:`~oncosurg.pathway.flat.PatientRecord`\\ s: each resource is validated with the
``fhir.resources`` models (rule ``F107``), read by :class:`~oncosurg.ingest.fhir.reader.BundleReader`
(values through the registry's single-value rules, ``F111`` for what cannot be read safely), and
each patient is checked with the rules across episodes (:func:`oncosurg.pathway.rules.check_patient`,
``E6xx``).  ``oncosurg import --format fhir`` writes the records with
:func:`oncosurg.store.repository.import_patients` (all or nothing, the same import rules as every
format).

A bundle carries the tables and columns of the resources it holds (``PatientRecord.carried``): a
bundle without Procedures leaves the liver procedures of a registered patient unchanged on
``--update``; a resource that is present carries its columns, an element it leaves out is carried
empty.  Deletion bundles (only ``DELETE`` entries, written by a re-export for a patient no longer
registered) and resources of other types are ignored and counted (:attr:`FhirBundles.ignored`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncosurg.ingest.fhir.reader import BundleReader, Place
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import TABLE_BY_NAME, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.rules import E_ORPHAN, F_FHIR, X_DUPLICATE_ID, X_ID_CASE, Issue
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS

__all__ = ["FhirBundles", "bundle_paths", "read_bundle", "read_fhir_bundles"]

#: File names skipped in a bundle directory (the de-identification manifest lives beside the bundles).
SKIPPED = ("deidentification-manifest.json",)


@dataclass(slots=True)
class FhirBundles:
    """What a bundle directory holds: the valid records and every issue (refuse the import if any)."""

    source: str
    sha256: str = ""
    rows: int = 0  # bundle files read
    records: list[PatientRecord] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)
    deletion_bundles: int = 0

    @property
    def ok(self) -> bool:
        return not self.issues

    def locate(self, issues: Iterable[Issue]) -> list[Issue]:
        """Issues found later (by the import rules, on ``record.where`` positions) with their bundle,
        resource and element."""
        return [_located(issue, self.places) for issue in issues]

    def ignored_text(self) -> str:
        """``ignored: 3 MedicinalProduct (…), 1 …`` (empty when nothing was ignored)."""
        parts = [f"{n} {what}" for what, n in sorted(self.ignored.items(), key=lambda kv: (-kv[1], kv[0]))]
        if self.deletion_bundles:
            parts.append(f"{self.deletion_bundles} deletion bundle(s) (a re-export's DELETEs, for a FHIR server)")
        return "ignored: " + "; ".join(parts) if parts else ""


def _located(issue: Issue, places: list[Place]) -> Issue:
    if issue.line is None or not 0 <= issue.line < len(places) or issue.file not in (None, places[issue.line].bundle):
        return issue
    place = places[issue.line]
    prefix = f"{place.table.value}.{issue.column}: " if place.table is not None and issue.column else ""
    message = issue.message if issue.message.startswith(prefix) else prefix + issue.message
    return dataclasses.replace(issue, line=None, file=place.bundle, column=place.column(issue.column),
                               message=message)


def bundle_paths(path: str | Path) -> list[Path]:
    """The bundle files of a directory (``*.json`` in name order) or the one file given."""
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.glob("*.json") if p.is_file() and p.name not in SKIPPED)
    return [path]


def read_fhir_bundles(
    path: str | Path,
    *,
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> FhirBundles:
    """Read and check every bundle of a directory (or one bundle file); reads nothing else, writes nothing."""
    paths = bundle_paths(path)
    out = FhirBundles(source=str(path))
    digest = hashlib.sha256()
    exact: dict[tuple[str, str], str] = {}
    folded: dict[tuple[str, str], tuple[str, str]] = {}
    for file in paths:
        data = file.read_bytes()
        digest.update(file.name.encode() + b"\0" + data)
        out.rows += 1
        record = read_bundle(data, file.name, out, centre=centre, today=today, postop_window_days=postop_window_days)
        if record is None:
            continue
        index = record.where[(Table.PATIENT, (record.patient_id,))][1] or 0
        key, fold = (record.centre, record.patient_id), (record.centre, record.patient_id.casefold())
        column = out.places[index].column("patient_id")
        if key in exact:
            out.issues.append(Issue(X_DUPLICATE_ID.code, f"patient.patient_id: the patient is already in bundle "
                                    f"{exact[key]}", "give each patient one bundle", None, column, record.patient_id,
                                    file.name))
            continue
        other = folded.setdefault(fold, (record.patient_id, file.name))
        if other[0] != record.patient_id and not case_sensitive_ids:
            out.issues.append(Issue(X_ID_CASE.code, f"patient.patient_id: differs only in case from {other[0]!r} in "
                                    f"bundle {other[1]} (probably the same patient)",
                                    f"write {other[0]!r} if it is the same patient; if they are different patients, "
                                    "pass --case-sensitive-ids", None, column, record.patient_id, file.name))
            continue
        exact[key] = file.name
        out.files.append(file.name)
        out.records.append(record)
    if not paths:
        out.issues.append(Issue(F_FHIR.code, f"no *.json bundle in {path}",
                                "give the directory written by `oncosurg export --format fhir`"))
    out.sha256 = digest.hexdigest()
    return out


def read_bundle(data: bytes, name: str, out: FhirBundles, *, centre: str | None = None, today: dt.date | None = None,
                postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS) -> PatientRecord | None:
    """Read one bundle file's bytes into ``out`` (issues, ignored counts); the record when it has no issue."""
    bundle, problem = _load(data, name)
    if problem is not None:
        out.issues.append(problem)
        return None
    entries = bundle.get("entry", [])
    if isinstance(entries, list) and entries and all(
            isinstance(e, dict) and "resource" not in e and (e.get("request") or {}).get("method") == "DELETE"
            for e in entries):
        out.deletion_bundles += 1
        return None
    first_place = len(out.places)
    reader = BundleReader(bundle, name, out.places, centre=centre, today=today)
    record = reader.read()
    out.ignored.update(reader.ignored)
    issues = list(reader.issues)
    if record is not None:
        found = check_patient(record, where=lambda table, row: _where(record, table, row),
                              failed=reader.failed, postop_window_days=postop_window_days)
        carried = record.carried or {}
        for issue in found:
            place = out.places[issue.line] if issue.line is not None and issue.line >= first_place else None
            needs = set(_RULE_TABLES.get(issue.code, ()))
            if issue.code == E_ORPHAN.code:
                needs.add(Table.THERAPY_LINE if issue.column == "line_number" else Table.LIVER_PROCEDURE)
            if place is not None and place.table is not None:
                needs.discard(place.table)
            if not needs <= set(carried):
                continue  # the bundle leaves out what the rule compares with: checked on the merged record at import
            issues.append(_located(issue, out.places))
    out.issues += issues
    return record if record is not None and not issues else None


#: Tables each rule across episodes compares a row with.  A bundle need not carry every table (a
#: bundle without Procedures leaves the registered ones unchanged), so a finding that involves a
#: table the bundle leaves out waits for the import, which checks the record merged with the
#: registered one (new patients: the whole record).
_RULE_TABLES = {
    "E604": (Table.LIVER_PROCEDURE, Table.CONTACT), "E605": (Table.THERAPY_LINE,), "E606": (Table.LIVER_PROCEDURE,),
    "E607": (Table.PATIENT, Table.THERAPY_LINE), "E608": (Table.LIVER_PROCEDURE, Table.COMPLICATION, Table.CONTACT),
    "E609": (Table.CONTACT,), "E610": (Table.LIVER_PROCEDURE,),
}


def _where(record: PatientRecord, table: Table, row: dict[str, Any]) -> tuple[str | None, int | None]:
    spec = TABLE_BY_NAME[table]
    return record.where.get((table, tuple(row.get(k) for k in spec.key)), (None, None))


def _load(data: bytes, name: str) -> tuple[dict[str, Any], Issue | None]:
    try:
        bundle = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        return {}, Issue(F_FHIR.code, f"not UTF-8 JSON ({exc})", "write the bundle as UTF-8 JSON", file=name)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        kind = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        return {}, Issue(F_FHIR.code, f"expected a FHIR Bundle, found {kind!r}",
                         "give one Bundle per patient (as `oncosurg export --format fhir` writes)", file=name)
    if not isinstance(bundle.get("entry", []), list):
        return {}, Issue(F_FHIR.code, "Bundle.entry is not a list", "give the entries as a JSON array", file=name,
                         column="Bundle.entry")
    return bundle, None
