"""HL7 FHIR R4 Bundles (one per patient) → validated registry records.

Reads a directory of ``*.json`` Bundles (or one Bundle file) as written by
:mod:`oncosurg.export.fhir`; each Bundle is first validated with the ``fhir.resources`` models
(rule ``F107``), then its resources are mapped back to registry columns and validated by the
registry's rules, like a registry CSV row.  The mapping also accepts common variants from other
systems: the earliest of several cetuximab administrations, partner drugs by ATC code, the primary
site by ICD-10 or SNOMED CT, disease-status observations in any number (first "worsened" =
progression, latest = last contact).  A resource the mapping does not use is ignored.

"Record N" in messages is the N-th bundle file in name order; every message names the file and,
where a value came from a resource, the resource and element.

A bundle carries the registry columns of the resources it holds (:meth:`_Reader.carry`): the
Patient carries sex and, with ``deceased[x]``, death_date; the primary-cancer Condition the primary
site and side; the cetuximab MedicationAdministration the cetuximab columns and referral; the
liver Procedure every surgery column; an Observation its column (an Observation with only a
``dataAbsentReason`` carries it empty); disease-status Observations progression and last contact.
A column of a resource the bundle does not hold is not carried, so an update leaves it unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from oncosurg.export import fhir as fx
from oncosurg.ingest._validate import RawRecord, locate, validate_records
from oncosurg.ingest.csv import ParsedFile
from oncosurg.rules import F_FHIR, F_LAYOUT, V_REQUIRED, Issue
from oncosurg.schema import CLAVIEN_DINDO, DEFAULT_POSTOP_WINDOW_DAYS, FIELD_BY_NAME, SURGERY_COLUMNS

#: File names skipped in a bundle directory (the de-identification manifest lives beside the bundles).
SKIPPED = ("deidentification-manifest.json",)
_ATC_DRUGS = {"L01FE01": "cetuximab", "L01XC06": "cetuximab", "L01CE02": "irinotecan", "L01XA03": "oxaliplatin"}
_SITE_CODES = {(fx.SNOMED, "363406005"): "colon", (fx.SNOMED, "363351006"): "rectum", (fx.ICD10, "C20"): "rectum"}
_MAX_SCHEMA_ERRORS = 20


@dataclass(slots=True)
class BundleFile(ParsedFile):
    """A :class:`ParsedFile` whose record N came from ``files[N - 1]``."""

    files: list[str] = field(default_factory=list)

    def locate(self, issues: Iterable[Issue]) -> list[Issue]:
        """Name the bundle file in issues found later (e.g. already-registered patients)."""
        out = []
        for issue in issues:
            if issue.line is not None and 0 < issue.line <= len(self.files):
                issue = dataclasses.replace(locate(issue, self.files[issue.line - 1]), line=None)
            out.append(issue)
        return out


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
) -> BundleFile:
    """Read and validate every bundle of a directory (or one bundle file)."""
    paths = bundle_paths(path)
    digest = hashlib.sha256()
    raws: list[RawRecord] = []
    file_issues: list[Issue] = []
    names: list[str] = []
    for path_ in paths:
        data = path_.read_bytes()
        digest.update(path_.name.encode() + b"\0" + data)
        bundle, problems = _load(data, path_.name)
        if problems:
            file_issues += problems
            continue
        raw = bundle_record(bundle, name=path_.name, index=len(names) + 1)
        if any(i.code == F_FHIR.code for i in raw.issues):  # no patient to validate
            file_issues += raw.issues
            continue
        names.append(path_.name)
        raws.append(raw)
    if not paths:
        file_issues.append(Issue(F_FHIR.code, f"no *.json bundle in {path}",
                                 "give the directory written by `oncosurg export --format fhir`"))
    parsed = validate_records(raws, source=str(path), sha256=digest.hexdigest(), centre=centre, today=today,
                              postop_window_days=postop_window_days, file_issues=file_issues,
                              case_sensitive_ids=case_sensitive_ids)
    return BundleFile(source=parsed.source, sha256=parsed.sha256, rows=parsed.rows + len(paths) - len(names),
                      records=parsed.records, issues=parsed.issues, files=names)


def _load(data: bytes, name: str) -> tuple[dict[str, Any], list[Issue]]:
    try:
        bundle = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return {}, [Issue(F_FHIR.code, f"{name}: not UTF-8 JSON ({exc})", "write the bundle as UTF-8 JSON")]
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        kind = bundle.get("resourceType") if isinstance(bundle, dict) else type(bundle).__name__
        return {}, [Issue(F_FHIR.code, f"{name}: expected a FHIR Bundle, found {kind!r}",
                          "give one Bundle per patient (as `oncosurg export --format fhir` writes)")]
    try:
        fx.validate_bundle(bundle)
    except ValidationError as exc:
        issues = []
        for err in exc.errors()[:_MAX_SCHEMA_ERRORS]:
            path = ".".join(str(p) for p in err["loc"])
            shown = err.get("input")
            value = None if isinstance(shown, dict | list) else str(shown)
            issues.append(Issue(F_FHIR.code, f"{name}: {path}: {err['msg']} (FHIR R4 validation)",
                                "correct the resource so that it is valid FHIR R4", None, path[:64], value))
        if exc.error_count() > _MAX_SCHEMA_ERRORS:
            issues.append(Issue(F_FHIR.code, f"{name}: … and {exc.error_count() - _MAX_SCHEMA_ERRORS} more "
                                "FHIR validation errors", "correct the resources"))
        return {}, issues
    return bundle, []


def _codings(concept: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c.get("code", "")) for c in (concept or {}).get("coding", [])]


def _local(concept: Mapping[str, Any] | None, name: str) -> str | None:
    return next((code for sys_, code in _codings(concept) if sys_ == fx.system(name)), None)


def _pseudonym_system(uri: str) -> bool:
    """A centre's pseudonym naming system (:func:`oncosurg.export.fhir.patient_id_system`)."""
    return uri == fx.PATIENT_ID_SYSTEM or uri.startswith(fx.PATIENT_ID_SYSTEM + ":")


def _date(value: Any) -> str:
    return value[:10] if isinstance(value, str) and len(value) > 10 and value[10] == "T" else str(value)


class _Reader:
    """Maps the resources of one bundle to registry cells."""

    def __init__(self, bundle: Mapping[str, Any], name: str, index: int) -> None:
        self.name = name
        self.raw = RawRecord(line=index, cells={}, record_where=name)
        self.resources = [e.get("resource") or {} for e in bundle.get("entry", [])]
        self.complication_grade: tuple[str, Mapping[str, Any]] | None = None
        self.operated = False

    def set(self, column: str, value: str, resource: Mapping[str, Any], element: str) -> None:
        where = f"{self.name} {resource.get('resourceType')}/{resource.get('id', '?')} {element}"
        if column in self.raw.cells and self.raw.cells[column] != value:
            self.raw.issues.append(Issue(F_LAYOUT.code, f"{where}: differs from {self.raw.cells[column]!r} given by "
                                         f"{self.raw.where[column]}", "keep one resource per registry value",
                                         None, column, value))
            return
        self.raw.cells[column] = value
        self.raw.where[column] = where

    def carry(self, *columns: str) -> None:
        """The bundle holds the resource of ``columns``: those it gives no value are carried empty."""
        for column in columns:
            self.raw.cells.setdefault(column, "")

    def of_type(self, kind: str) -> list[Mapping[str, Any]]:
        return [r for r in self.resources if r.get("resourceType") == kind]

    def read(self) -> RawRecord:
        patients = self.of_type("Patient")
        if len(patients) != 1:
            self.raw.issues.append(Issue(F_FHIR.code, f"{self.name}: the bundle holds {len(patients)} Patient "
                                         "resources; exactly one is needed", "write one bundle per patient"))
            return self.raw
        self.patient(patients[0])
        self.conditions()
        self.medications()
        self.procedure()
        self.observations()
        return self.raw

    def patient(self, p: Mapping[str, Any]) -> None:
        identifiers = p.get("identifier", [])
        ident = next((i for i in identifiers if _pseudonym_system(str(i.get("system", "")))),
                     identifiers[0] if identifiers else None)
        self.set("patient_id", ident.get("value", "") if ident else str(p.get("id", "")), p, "identifier")
        centre = ((p.get("managingOrganization") or {}).get("display")
                  or ((ident or {}).get("assigner") or {}).get("display")
                  or fx.centre_of_system(str((ident or {}).get("system", ""))))
        if centre:
            self.set("centre", centre, p, "managingOrganization")
        gender = p.get("gender")
        if gender:
            self.set("sex", {"female": "F", "male": "M"}.get(gender, gender), p, "gender")
        if p.get("deceasedDateTime"):
            self.set("death_date", _date(p["deceasedDateTime"]), p, "deceasedDateTime")
        elif p.get("deceasedBoolean") is True:
            self.raw.issues.append(Issue(V_REQUIRED.code, f"{self.name} Patient: deceasedBoolean is true but the date "
                                         "of death is unknown", "give Patient.deceasedDateTime", None, "death_date"))
        if "deceasedBoolean" in p:
            self.carry("death_date")
        self.carry("sex")

    def conditions(self) -> None:
        related = {ext.get("valueReference", {}).get("reference") for c in self.of_type("Condition")
                   for ext in c.get("extension", []) if ext.get("url") == fx.MCODE_RELATED_PRIMARY}
        for c in self.of_type("Condition"):
            codes = _codings(c.get("code"))
            sites = {_SITE_CODES.get((s, code)) or ("colon" if s == fx.ICD10 and code.startswith("C18") else None)
                     for s, code in codes} - {None}
            if not sites and f"urn:uuid:{c.get('id')}" not in related and f"Condition/{c.get('id')}" not in related:
                continue  # not the primary cancer (e.g. the liver metastases or another disease)
            if sites:
                self.set("primary_site", "/".join(sorted(str(s) for s in sites)), c, "code")
            for site in c.get("bodySite", []):
                side = _local(site, "primary_side")
                if side:
                    self.set("primary_side", side, c, "bodySite")
            self.carry("primary_site", "primary_side")

    def medications(self) -> None:
        starts: list[tuple[str, Mapping[str, Any]]] = []
        partners: set[str] = set()
        for m in self.of_type("MedicationAdministration"):
            concept = m.get("medicationCodeableConcept") or {}
            drug = next((_ATC_DRUGS[code] for s, code in _codings(concept) if s == fx.ATC and code in _ATC_DRUGS),
                        None) or ("cetuximab" if "cetuximab" in str(concept.get("text", "")).lower() else "other")
            if drug != "cetuximab":
                partners.add(drug)
                continue
            period = m.get("effectivePeriod") or {}
            start = period.get("start") or m.get("effectiveDateTime")
            if start:
                starts.append((_date(start), m))
            for ext in m.get("extension", []):
                if ext.get("url") == fx.EXT_CYCLES:
                    self.set("cetuximab_cycles", str(ext.get("valueInteger", "")), m, "extension(cetuximab-cycles)")
                elif ext.get("url") == fx.EXT_REFERRAL:
                    self.set("referral", str(ext.get("valueCode", "")), m, "extension(referral)")
        if starts:
            date, m = min(starts, key=lambda s: s[0])
            self.set("cetuximab_start", date, m, "effectivePeriod.start")
            partner = ("both" if {"irinotecan", "oxaliplatin"} <= partners else "other" if "other" in partners
                       else next(iter(partners), "none"))
            self.set("cetuximab_partner", partner, m, "(partner MedicationAdministration)")
            self.carry("cetuximab_cycles", "referral")

    def procedure(self) -> None:
        surgeries = [p for p in self.of_type("Procedure") if _local(p.get("code"), "surgery_type")
                     or any(s == fx.system("resected_segments") for b in p.get("bodySite", [])
                            for s, _ in _codings(b))]
        if len(surgeries) > 1:
            self.raw.issues.append(Issue(F_LAYOUT.code, f"{self.name}: {len(surgeries)} liver surgery Procedures; the "
                                         "registry records one operation", "keep the first operation only"))
            return
        for p in surgeries:
            performed = p.get("performedDateTime") or (p.get("performedPeriod") or {}).get("start")
            if performed:
                self.set("surgery_date", _date(performed), p, "performedDateTime")
            self.set("surgery_type", _local(p.get("code"), "surgery_type") or "", p, "code")
            segments = [_local(b, "resected_segments") for b in p.get("bodySite", [])]
            if segments:
                self.set("resected_segments", ";".join(str(s) for s in segments), p, "bodySite")
            if _local(p.get("outcome"), "margin"):
                self.set("margin", str(_local(p.get("outcome"), "margin")), p, "outcome")
            for ext in p.get("extension", []):
                column = {fx.EXT_TWO_STAGE: "two_stage", fx.EXT_PVE: "portal_vein_embolization"}.get(ext.get("url"))
                if column:
                    self.set(column, "yes" if ext.get("valueBoolean") else "no", p, f"extension({column})")
            grades = [g for c in p.get("complication", []) if (g := _local(c, "clavien_dindo_max"))]
            if grades and all(g in CLAVIEN_DINDO for g in grades):
                self.complication_grade = (max(grades, key=CLAVIEN_DINDO.index), p)
            self.operated = True

    def observations(self) -> None:
        statuses: list[tuple[str, bool, Mapping[str, Any]]] = []
        for o in self.of_type("Observation"):
            codes = _codings(o.get("code"))
            if (fx.LOINC, "97509-4") in codes:
                if o.get("effectiveDateTime"):
                    worse = (fx.SNOMED, "271299001") in _codings(o.get("valueCodeableConcept"))
                    statuses.append((_date(o["effectiveDateTime"]), worse, o))
                continue
            column = next((code for s, code in codes if s == fx.REGISTRY_FIELD_SYSTEM), None)
            if column is None:
                column = next((c for c, std in fx.OBSERVED.items() if std and (std["system"], std["code"]) in codes),
                              None)
            if column in FIELD_BY_NAME and column in fx.OBSERVED:
                self.set(column, self.value(column, o), o, "value")
        if "clavien_dindo_max" not in self.raw.cells and self.complication_grade:
            grade, p = self.complication_grade
            self.set("clavien_dindo_max", grade, p, "complication")
        if self.operated:
            self.carry("surgery_date", *SURGERY_COLUMNS)
        start = self.raw.cells.get("cetuximab_start", "")
        # progression_date is the first worsening on or after cetuximab_start: the progression that
        # made the disease chemo-refractory, before cetuximab, is not this registry's progression
        worsened = [s for s in statuses if s[1] and s[0] >= start]
        if worsened:
            date, _, o = min(worsened, key=lambda s: s[0])
            self.set("progression_date", date, o, "effectiveDateTime (first worsening)")
        if statuses:
            date, _, o = max(statuses, key=lambda s: s[0])
            self.set("last_contact_date", date, o, "effectiveDateTime (latest disease status)")
            self.carry("progression_date")

    def value(self, column: str, o: Mapping[str, Any]) -> str:
        """The registry text of an observation's value (unknown codes as given, so the rules name them)."""
        if "valueCodeableConcept" in o:
            concept = o["valueCodeableConcept"]
            code = _local(concept, column)
            if code is None:
                answers = {(v["system"], v["code"]): k[1] for k, v in fx.VALUE_CODINGS.items() if k[0] == column}
                code = next((answers[c] for c in _codings(concept) if c in answers), None)
            return code if code is not None else str(concept.get("text") or _codings(concept))
        if "valueBoolean" in o:
            return "yes" if o["valueBoolean"] else "no"
        if "valueInteger" in o:
            return str(o["valueInteger"])
        if "valueQuantity" in o:
            return str(o["valueQuantity"].get("value", ""))
        if column == "ras_status" and o.get("dataAbsentReason"):
            return "not_tested"
        return next((str(v) for k, v in o.items() if k.startswith("value")), "")


def bundle_record(bundle: Mapping[str, Any], *, name: str, index: int) -> RawRecord:
    """The registry cells of one validated bundle (record ``index``)."""
    return _Reader(bundle, name, index).read()
