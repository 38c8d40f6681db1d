"""One FHIR Bundle → one patient's record (:class:`~oncosurg.pathway.flat.PatientRecord`), every value checked.

:class:`BundleReader` reads the resources :mod:`oncosurg.export.fhir` writes — one per episode, each
tagged with its episode key — and the common shapes other systems send: medication administrations
without a line number (grouped into lines: a line ends when an agent it did not have appears),
tumour sizes without one (the baseline of the first line starting on or after their date), disease
status "worsened" (a recurrence after a resection, else a progression), a death given only as
``Patient.deceasedDateTime``.  It refuses what it cannot read safely (rule ``F111``): a patient
identified only in another system (a hospital MRN is never a pseudonym), a quantity whose unit does
not convert to the registry's, a drug outside the agent vocabulary, a genetic test of an unstated
gene.  Supportive medication (premedication, antiemetics, folinic acid), resources of other types
and observations the registry does not hold are ignored and counted.

Every value goes through the registry's single-value check (:func:`oncosurg.rules.parse_cell`);
every issue names the bundle (``Issue.file``) and the resource and element (``Issue.column``,
e.g. ``Observation/…component[0].valueQuantity``), its message starting with the registry field.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from oncosurg.export.fhir import element_path
from oncosurg.export.fhir import terminology as tx
from oncosurg.export.fhir.resources import COMPONENTS, VALUE_SYSTEM
from oncosurg.ingest.fhir import values as fv
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import AGENTS, PATIENT, TABLE_BY_NAME, Table, is_resection, join_list
from oncosurg.rules import F_FHIR, F_FHIR_UNREADABLE, F_LAYOUT, V_REQUIRED, Issue, parse_cell
from oncosurg.schema import Field, Kind

#: Days from a line's first administration within which other agents still join that line (the
#: regimen window of rule-based line-of-therapy algorithms; a new agent later starts a new line).
REGIMEN_WINDOW_DAYS = 28
#: Resource types the reader reads; every other type (valid R4 or not) is ignored and counted.
READ = ("Patient", "Condition", "Procedure", "Observation", "MedicationAdministration", "MedicationStatement",
        "Medication", "BodyStructure")
_MAX_SCHEMA_ERRORS = 20
_KEYED = {"mdt_review": (Table.MDT_REVIEW, "review_no", "decision"),
          "response_assessment": (Table.RESPONSE_ASSESSMENT, "assessment_no", "category"),
          "contact": (Table.CONTACT, "contact_no", "vital_status")}
_SITE_CODES = {(tx.SNOMED, "363406005"): "colon", (tx.SNOMED, "363351006"): "rectum", (tx.ICD10, "C20"): "rectum",
               (tx.ICD10_CM, "C20"): "rectum"}


@dataclass(slots=True)
class Place:
    """Where the values of one row came from: the bundle, the resource that opened it, and each
    column's resource and element (``Condition/c1.code``: a row's values may come from several resources)."""

    bundle: str
    label: str
    table: Table | None = None
    elements: dict[str, str] = field(default_factory=dict)

    def column(self, name: str | None) -> str:
        return self.elements.get(name or "") or self.label


def _day(text: str) -> dt.date | None:
    """A full ISO date (``None`` for a partial or bad one)."""
    try:
        return dt.date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        return None


def _label(resource: Mapping[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id', '?')}"


def _ext(resource: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    url = tx.extension(name) if "/" not in name else name
    return [e for e in resource.get("extension", []) if isinstance(e, Mapping) and e.get("url") == url]


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


class BundleReader:
    """Reads one bundle; ``places`` is shared by every bundle of a source (a row points into it)."""

    def __init__(self, bundle: Mapping[str, Any], name: str, places: list[Place], *,
                 centre: str | None = None, today: dt.date | None = None) -> None:
        self.name = name
        self.places = places
        self.default_centre = centre
        self.today = today
        self.issues: list[Issue] = []
        self.ignored: Counter[str] = Counter()
        self.deletions = 0
        self.rows: dict[Table, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in Table}
        self.row_place: dict[tuple[Table, tuple[Any, ...]], int] = {}
        self.carried: dict[Table, set[str]] = {}
        self.failed: list[tuple[Table, str, int | None]] = []
        self.resources: list[Mapping[str, Any]] = []
        self.by_ref: dict[str, Mapping[str, Any]] = {}
        self.patient_key: tuple[Any, ...] = ()
        self.invalid: set[str] = set()  # resource types of which a resource failed validation
        self.foreign: list[Mapping[str, Any]] = []  # disease statuses without an event number
        self._load(bundle.get("entry", []))

    # -- issues and values -------------------------------------------------------------------------

    def refuse(self, resource: Mapping[str, Any] | None, element: str, message: str, hint: str,
               value: Any = None, rule: Any = F_FHIR_UNREADABLE) -> None:
        column = f"{_label(resource)}.{element}" if resource is not None and element else (
            _label(resource) if resource is not None else element or None)
        self.issues.append(Issue(rule.code, message, hint, None, column, None if value is None else str(value),
                                 self.name))

    def row(self, table: Table, key: tuple[Any, ...], resource: Mapping[str, Any]) -> dict[str, Any]:
        rows = self.rows[table]
        if key not in rows:
            spec = TABLE_BY_NAME[table]
            rows[key] = {f.name: None for f in spec.fields} | dict(zip(spec.key, key, strict=True))
            self.places.append(Place(self.name, _label(resource), table))
            self.row_place[(table, key)] = len(self.places) - 1
            self.carried.setdefault(table, set()).update(spec.key)
        return rows[key]

    def put(self, table: Table, key: tuple[Any, ...], column: str, text: str | None,
            resource: Mapping[str, Any], element: str) -> None:
        """Set one registry value from its text (``None`` = carried empty), checked by the registry's rules."""
        row = self.row(table, key, resource)
        place_index = self.row_place[(table, key)]
        place = self.places[place_index]
        self.carried.setdefault(table, set()).add(column)
        where = f"{_label(resource)}.{element}"
        if text is None or text == "":
            place.elements.setdefault(column, where)
            return
        fld = TABLE_BY_NAME[table].field_by_name[column]
        value, problem = parse_cell(fld, text, line=None, today=self.today)
        if problem is not None:
            self.failed.append((table, column, place_index))
            self.issues.append(dataclasses.replace(problem, message=f"{table.value}.{column}: {problem.message}",
                                                   column=where, file=self.name))
            return
        if row.get(column) is not None and row[column] != value:
            first = place.column(column)
            self.issues.append(Issue(F_LAYOUT.code, f"{table.value}.{column}: differs from {row[column]!r} given by "
                                     f"{first}", "keep one value per registry field (check both resources)", None,
                                     where, text, self.name))
            return
        row[column] = value
        place.elements.setdefault(column, where)

    def put_value(self, table: Table, key: tuple[Any, ...], fld: Field, holder: Mapping[str, Any],
                  resource: Mapping[str, Any], element: str, prefix: str = "value") -> None:
        """Read ``holder``'s ``value[x]`` as the registry field ``fld`` (units converted, codes mapped)."""
        kind = fld.kind
        path = f"{element}.{prefix}" if element else prefix
        if kind is Kind.NUMBER:
            q = holder.get(f"{prefix}Quantity")
            if q is None:
                return self._wrong_type(table, key, fld, holder, resource, path, "Quantity", prefix)
            text, problem = fv.quantity_text(q, tx.UCUM_OF_UNIT.get(fld.unit, "1"))
            if problem:
                self.row(table, key, resource)
                self.failed.append((table, fld.name, self.row_place[(table, key)]))
                self.carried.setdefault(table, set()).add(fld.name)
                return self.refuse(resource, f"{path}Quantity", f"{table.value}.{fld.name}: the quantity {problem}",
                                   f"give the value with a UCUM unit convertible to {fld.unit}",
                                   f"{q.get('value')} {q.get('code') or q.get('unit') or ''}".strip()
                                   if isinstance(q, Mapping) else q)
            return self.put(table, key, fld.name, text, resource, f"{path}Quantity")
        if kind is Kind.INTEGER:
            v = holder.get(f"{prefix}Integer")
            if v is None:
                return self._wrong_type(table, key, fld, holder, resource, path, "Integer", prefix)
            return self.put(table, key, fld.name, str(v), resource, f"{path}Integer")
        if kind is Kind.BOOL:
            v = holder.get(f"{prefix}Boolean")
            if v is None:
                return self._wrong_type(table, key, fld, holder, resource, path, "Boolean", prefix)
            return self.put(table, key, fld.name, "yes" if v else "no", resource, f"{path}Boolean")
        if kind is Kind.ENUM:
            v = holder.get(f"{prefix}CodeableConcept")
            if v is None:
                return self._wrong_type(table, key, fld, holder, resource, path, "CodeableConcept", prefix)
            answers = fv.MUTATION_ANSWERS if fld.name in ("ras_status", "braf_status") else None
            return self.put(table, key, fld.name, fv.coded_text(v, VALUE_SYSTEM[fld.name], answers), resource,
                            f"{path}CodeableConcept")
        v = holder.get(f"{prefix}String")
        return self.put(table, key, fld.name, None if v is None else str(v), resource, f"{path}String")

    def _wrong_type(self, table: Table, key: tuple[Any, ...], fld: Field, holder: Mapping[str, Any],
                    resource: Mapping[str, Any], path: str, want: str, prefix: str) -> None:
        given = [k for k in holder if k.startswith(prefix) and k != prefix]
        self.row(table, key, resource)
        self.carried.setdefault(table, set()).add(fld.name)
        if not given:
            return  # no value: carried empty
        self.failed.append((table, fld.name, self.row_place[(table, key)]))
        self.refuse(resource, f"{path}{given[0][len(prefix):]}", f"{table.value}.{fld.name}: expected "
                    f"{prefix}{want}, found {given[0]}", f"give {fld.name} as {prefix}{want}")

    def key_of(self, resource: Mapping[str, Any], name: str, what: str) -> int | None:
        """The integer of one of oncosurg's key extensions (``None``, with an issue, when absent or bad)."""
        found = _ext(resource, name)
        value = found[0].get("valueInteger") if found else None
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 10_000:
            return value
        self.refuse(resource, f"extension({name})", f"{what}: the {name} extension is "
                    f"{'missing' if not found else 'not an integer from 1 to 10000'}",
                    f"give the extension {tx.extension(name)} with valueInteger", value)
        return None

    # -- loading -----------------------------------------------------------------------------------

    def _load(self, entries: Any) -> None:
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, Mapping):
                continue
            resource = entry.get("resource")
            method = (entry.get("request") or {}).get("method") if isinstance(entry.get("request"), Mapping) else None
            if resource is None and method == "DELETE":
                self.deletions += 1
                continue
            if not isinstance(resource, Mapping):
                self.issues.append(Issue(F_FHIR.code, f"entry {index} has no resource", "give each entry a resource "
                                         "(or a DELETE request)", None, f"entry[{index}]", None, self.name))
                continue
            kind = resource.get("resourceType")
            if kind not in READ:
                self.ignored[f"{kind} (resource type not read)"] += 1
                continue
            try:
                get_fhir_model_class(kind).model_validate(resource)
            except ValidationError as exc:
                self.invalid.add(str(kind))
                for err in exc.errors()[:_MAX_SCHEMA_ERRORS]:
                    where = element_path(err["loc"])
                    shown = err.get("input")
                    self.issues.append(Issue(F_FHIR.code, f"{err['msg']} (FHIR R4 validation)", "correct the "
                                             "resource so that it is valid FHIR R4", None,
                                             f"{_label(resource)}.{where}",
                                             None if isinstance(shown, dict | list) else str(shown), self.name))
                continue
            resource = _without_nulls(resource)  # JSON null is not FHIR; the models accept it as absent
            self.resources.append(resource)
            if entry.get("fullUrl"):
                self.by_ref[str(entry["fullUrl"])] = resource
            self.by_ref[_label(resource)] = resource

    def of_type(self, *kinds: str) -> list[Mapping[str, Any]]:
        return [r for r in self.resources if r.get("resourceType") in kinds]

    # -- the record --------------------------------------------------------------------------------

    def read(self) -> PatientRecord | None:
        """The patient's record (``None`` when the bundle names no patient oncosurg can identify)."""
        if fv.uses_legacy(self.resources):
            self.refuse(None, "", "the bundle was written by an earlier oncosurg release (flat layout, "
                        f"{tx.LEGACY} code systems), which this release does not read",
                        "export the patients again from the registry they came from, then import that export",
                        rule=F_FHIR)
            return None
        patients = self.of_type("Patient")
        if not patients and "Patient" in self.invalid:
            return None  # reported by the validation
        if len(patients) != 1:
            self.refuse(None, "", f"the bundle holds {len(patients)} Patient resources; exactly one is needed",
                        "write one bundle per patient", rule=F_FHIR)
            return None
        identity = self.patient(patients[0])
        if identity is None:
            return None
        centre, patient_id = identity
        self.conditions()
        for body in self.of_type("BodyStructure"):  # oncosurg's Tumor holds no registry value
            if not any(i.get("system") == tx.TUMOUR_ID_SYSTEM for i in body.get("identifier", [])):
                self.ignored["BodyStructure (not oncosurg's tumour)"] += 1
        self.medications()
        for o in self.of_type("Observation"):
            self.observation(o)
        self.procedures()
        self.death(patients[0])
        self.foreign_events()
        self.required()
        return self.record(centre, patient_id)

    def record(self, centre: str, patient_id: str) -> PatientRecord:
        patient = self.rows[Table.PATIENT].get((patient_id,), {"patient_id": patient_id})
        record = PatientRecord(centre, dict(patient))
        for table, rows in self.rows.items():
            if table is not Table.PATIENT and rows:
                spec = TABLE_BY_NAME[table]
                record.episodes[table] = sorted(rows.values(), key=lambda r, k=spec.key: tuple(r[c] for c in k))
        record.carried = {t: frozenset(c) for t, c in self.carried.items()}
        record.where = {(t, key): (self.name, index) for (t, key), index in self.row_place.items()}
        return record

    def patient(self, p: Mapping[str, Any]) -> tuple[str, str] | None:
        pseudonym, record_id = None, None
        for i, ident in enumerate(p.get("identifier", [])):
            system = str(ident.get("system", ""))
            if tx.centre_of_system(system) is not None and pseudonym is None:
                pseudonym = (tx.centre_of_system(system), str(ident.get("value", "")), i)
            elif system == tx.RECORD_ID_SYSTEM:
                record_id = str(ident.get("value", ""))
        if pseudonym is None and record_id is not None:
            centre, _, pid = record_id.rpartition("::")
            pseudonym = (centre, pid, None)
        if pseudonym is None:
            systems = sorted({str(i.get("system", "(no system)")) for i in p.get("identifier", [])}) or ["none"]
            self.refuse(p, "identifier", "the Patient has no oncosurg pseudonym; its identifiers are in "
                        f"{', '.join(systems)} (a hospital record number is never imported as patient_id)",
                        f"give the centre's pseudonym as an identifier with system {tx.PATIENT_ID_SYSTEM}/<centre> "
                        f"(or {tx.RECORD_ID_SYSTEM} with value <centre>::<patient_id>)")
            return None
        centre, pid, index = pseudonym
        element = "identifier" if index is None else f"identifier[{index}].value"
        centre = centre or self.default_centre or ""
        key = (pid,)
        self.put(Table.PATIENT, key, "patient_id", pid, p, element)
        if self.rows[Table.PATIENT][key]["patient_id"] is None:  # the pseudonym failed its check
            return None
        ours = record_id is not None
        gender = p.get("gender")
        if gender is not None or ours:
            sex = {"female": "F", "male": "M", "unknown": None}.get(gender, gender) if gender else None
            self.put(Table.PATIENT, key, "sex", sex, p, "gender")
        if p.get("birthDate") is not None or ours:
            birth = str(p.get("birthDate") or "")
            self.put(Table.PATIENT, key, "birth_year", birth[:4] if len(birth) >= 4 and birth[:4].isdigit() else birth
                     or None, p, "birthDate")
        referral = _ext(p, "referral")
        if referral or ours:
            self.put(Table.PATIENT, key, "referral",
                     fv.coded_text(referral[0].get("valueCoding"), "referral") if referral else None,
                     p, "extension(referral).valueCoding")
            dated = _ext(p, "referral-date")
            self.put(Table.PATIENT, key, "referral_date", str(dated[0].get("valueDate")) if dated else None, p,
                     "extension(referral-date).valueDate")
        self.patient_key = key
        return centre, pid

    def conditions(self) -> None:
        key = self.patient_key
        for c in self.of_type("Condition"):
            code = c.get("code")
            if fv.local(code, "element") == "complication":
                self.complication(c)
                continue
            found = fv.codings(code)
            sites = {_SITE_CODES.get(pair) or ("colon" if pair[0] in (tx.ICD10, tx.ICD10_CM)
                                               and pair[1].startswith("C18") else None) for pair in found} - {None}
            primary = tx.PROFILE["primary"] in (c.get("meta") or {}).get("profile", [])
            if not sites and not primary:
                if tx.PROFILE["secondary"] not in (c.get("meta") or {}).get("profile", []):
                    self.ignored["Condition (not the primary cancer nor a complication)"] += 1
                continue
            if len(sites) > 1:
                self.refuse(c, "code", "patient.primary_site: the codes name both colon and rectum",
                            "code the primary site once")
                continue
            self.put(Table.PATIENT, key, "primary_site", sites.pop() if sites else None, c, "code")
            sides = [fv.local(b, "primary-side") for b in c.get("bodySite", [])]
            self.put(Table.PATIENT, key, "primary_side", next((s for s in sides if s), None), c, "bodySite")

    # -- therapy lines -----------------------------------------------------------------------------

    def medications(self) -> None:
        foreign: list[tuple[str, str | None, str, Mapping[str, Any]]] = []  # (start, end, agent, resource)
        for m in self.of_type("MedicationAdministration", "MedicationStatement"):
            if m.get("status") in ("not-done", "entered-in-error", "not-taken"):
                self.ignored[f"{m['resourceType']} (status {m['status']})"] += 1
                continue
            concept, element = self.medication_concept(m)
            if concept is None:
                continue
            found = fv.drug(concept)
            if found.kind == "supportive":
                self.ignored["supportive medication (premedication, antiemetic, folinic acid…)"] += 1
                continue
            if found.kind == "unknown":
                self.refuse(m, element, f"therapy_line.agents: the medication {found.shown} is not an agent of the "
                            f"registry ({', '.join(AGENTS)}) nor supportive care",
                            f"code it as agent 'other' ({tx.code_system('agent')}|other) or leave it out",
                            found.shown)
                continue
            line = _ext(m, "therapy-line")
            if line:
                number = self.key_of(m, "therapy-line", "therapy_line.line_number")
                if number is not None:
                    self.line_resource(m, number, str(found.agent), element)
                continue
            period = m.get("effectivePeriod") or {}
            start = period.get("start") or m.get("effectiveDateTime")
            if not start:
                self.refuse(m, "effective[x]", "therapy_line.start_date: a medication without a date and without the "
                            "therapy-line extension cannot be placed in a line",
                            "give effectiveDateTime or effectivePeriod.start")
                continue
            end = period.get("end") or m.get("effectiveDateTime")
            foreign.append((fv.date_text(start), fv.date_text(end) if end else None, str(found.agent), m))
        self.foreign_lines(foreign)

    def medication_concept(self, m: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str]:
        if m.get("medicationCodeableConcept") is not None:
            return m["medicationCodeableConcept"], "medicationCodeableConcept"
        ref = str((m.get("medicationReference") or {}).get("reference", ""))
        target = self.by_ref.get(ref)
        if target is None and ref.startswith("#"):
            target = next((c for c in m.get("contained", []) if f"#{c.get('id')}" == ref), None)
        if target is None or target.get("resourceType") != "Medication":
            self.refuse(m, "medicationReference", f"therapy_line.agents: the medication {ref!r} is not in the bundle",
                        "include the Medication resource, or give medicationCodeableConcept", ref)
            return None, ""
        return target.get("code") or {}, "medicationReference→Medication.code"

    def line_resource(self, m: Mapping[str, Any], n: int, agent: str, element: str) -> None:
        """One agent of an oncosurg-written line: the line's fields, repeated on each of its agents."""
        t, key = Table.THERAPY_LINE, (n,)
        row = self.row(t, key, m)
        agents = set((row.get("agents") or "").split(";")) - {""} | {agent}
        row["agents"] = join_list(agents, AGENTS)
        self.carried[t].add("agents")
        self.places[self.row_place[(t, key)]].elements.setdefault("agents", f"{_label(m)}.{element}")
        period = m.get("effectivePeriod") or {}
        self.put(t, key, "start_date", fv.date_text(period["start"]) if period.get("start") else None, m,
                 "effectivePeriod.start")
        self.put(t, key, "stop_date", fv.date_text(period["end"]) if period.get("end") else None, m,
                 "effectivePeriod.end")
        intent = _ext(m, tx.EXT_TREATMENT_INTENT)
        self.put(t, key, "intent", fv.coded_text(intent[0].get("valueCodeableConcept"), "intent") if intent else None,
                 m, "extension(treatmentIntent)")
        given = _ext(m, "given-at")
        self.put(t, key, "given_at", fv.coded_text(given[0].get("valueCoding"), "given-at") if given else None, m,
                 "extension(given-at)")
        cycles = _ext(m, "cycles")
        self.put(t, key, "cycles", str(cycles[0].get("valueInteger")) if cycles else None, m, "extension(cycles)")
        reasons = m.get("statusReason") or []
        self.put(t, key, "stop_reason", fv.coded_text(reasons[0], "stop-reason") if reasons else None, m,
                 "statusReason")
        fields = TABLE_BY_NAME[t].field_by_name
        schedule = _ext(m, "schedule")
        if schedule:
            self.put(t, key, "schedule", fv.coded_text(schedule[0].get("valueCoding"), "schedule"), m,
                     "extension(schedule)")
        bsa = _ext(m, "body-surface-area")
        if bsa:
            self.put_value(t, key, fields["bsa_m2"], bsa[0], m, "extension(body-surface-area)")
        dose = (m.get("dosage") or {}).get("dose")
        if dose is not None:
            self.put_value(t, key, fields["dose_mg_m2"], {"valueQuantity": dose}, m, "dosage.dose", "value")
        self.carried[t].update(("schedule", "bsa_m2", "dose_mg_m2"))

    def foreign_lines(self, administrations: list[tuple[str, str | None, str, Mapping[str, Any]]]) -> None:
        """Administrations without a line number, taken date by date: the agents given on one date join
        the current line when it has them all or when the date is within :data:`REGIMEN_WINDOW_DAYS`
        of the line's start (a loading dose a week before the chemotherapy), else they start a new
        line (so FOLFOX then FOLFIRI is two lines although both give a fluoropyrimidine)."""
        lines: list[list[tuple[str, str | None, str, Mapping[str, Any]]]] = []
        by_date: dict[str, list[tuple[str, str | None, str, Mapping[str, Any]]]] = {}
        for item in sorted(administrations, key=lambda a: (a[0], a[2])):
            by_date.setdefault(item[0], []).append(item)
        for date, items in by_date.items():
            current = lines[-1] if lines else None
            start, day = (_day(current[0][0]) if current else None), _day(date)
            if current is not None and ({a[2] for a in items} <= {a[2] for a in current} or (
                    start is not None and day is not None and (day - start).days < REGIMEN_WINDOW_DAYS)):
                current += items
            else:
                lines.append(items)
        first = max((k[0] for k in self.rows[Table.THERAPY_LINE]), default=0) + 1
        t = Table.THERAPY_LINE
        for n, items in enumerate(lines, start=first):
            m = items[0][3]
            row = self.row(t, (n,), m)
            row["agents"] = join_list({a[2] for a in items}, AGENTS)
            self.carried[t].add("agents")
            self.places[self.row_place[(t, (n,))]].elements.setdefault("agents", f"{_label(m)}.medication[x]")
            self.put(t, (n,), "start_date", min(a[0] for a in items), m, "effective[x]")
            ends = [a[1] for a in items]
            self.put(t, (n,), "stop_date", max(e for e in ends if e) if all(ends) else None, m, "effective[x]")

    def line_of_date(self, resource: Mapping[str, Any], date: str | None, what: str) -> int | None:
        """The therapy line a dated baseline measurement belongs to: the first line starting on or after it."""
        starts = sorted((row["start_date"], key[0]) for key, row in self.rows[Table.THERAPY_LINE].items()
                        if row.get("start_date") is not None)
        day = None
        if date:
            try:
                day = dt.date.fromisoformat(fv.date_text(date))
            except ValueError:
                day = None
        number = next((n for start, n in starts if day is not None and start >= day), None)
        if number is None:
            self.refuse(resource, "effective[x]", f"therapy_line.{what}: cannot tell which therapy line this "
                        "measurement is the baseline of (no line starts on or after its date)",
                        f"give the extension {tx.extension('therapy-line')} with the line number, or date the "
                        "measurement before the line's start", date)
        return number

    # -- observations ------------------------------------------------------------------------------

    def observation(self, o: Mapping[str, Any]) -> None:
        if o.get("status") == "entered-in-error":
            self.ignored["Observation (entered in error)"] += 1
            return
        code = o.get("code")
        el = fv.local(code, "element")
        genes = fv.gene_ids(o.get("component", []))
        patient_fields = PATIENT.field_by_name
        if el in ("ras_status", "braf_status", "msi_status") or fv.has(code, tx.VARIANT_ASSESSMENT) or genes:
            self.marker(o, el, genes)
        elif el == "age_at_rescue":
            self.put_value(Table.PATIENT, self.patient_key, patient_fields["age_at_rescue"], o, o, "")
        elif el == "tumour_burden":
            n = self.key_of(o, "therapy-line", "therapy_line.line_number")
            if n is not None:
                self.components(Table.THERAPY_LINE, (n,), o, COMPONENTS[Table.THERAPY_LINE])
        elif el == "largest_met_mm" or fv.has(code, tx.TUMOR_SIZE) or fv.has(code, tx.LONGEST_DIMENSION):
            self.tumour_size(o)
        elif el == "best_response":
            n = self.key_of(o, "therapy-line", "therapy_line.line_number")
            if n is not None:
                self.put_value(Table.THERAPY_LINE, (n,), TABLE_BY_NAME[Table.THERAPY_LINE].field_by_name[
                    "best_response"], o, o, "")
        elif el in _KEYED:
            self.keyed(o, *_KEYED[el])
        elif el == "pathology":
            n = self.key_of(o, "procedure-number", "pathology.procedure_no")
            if n is not None:
                self.components(Table.PATHOLOGY, (n,), o, COMPONENTS[Table.PATHOLOGY])
        elif el == "disease_event" or fv.has(code, tx.DISEASE_STATUS):
            self.disease_status(o)
        else:
            shown = ", ".join(f"{s}|{c}" for s, c in fv.codings(code)[:2]) or "no code"
            self.ignored[f"Observation ({shown})"] += 1

    def components(self, table: Table, key: tuple[Any, ...], o: Mapping[str, Any], columns: tuple[str, ...]) -> None:
        fields = TABLE_BY_NAME[table].field_by_name
        self.row(table, key, o)
        self.carried[table].update(columns)
        by_code = {}
        for i, component in enumerate(o.get("component", [])):
            name = fv.local(component.get("code"), "element")
            if name in columns:
                by_code[name] = (i, component)
            else:
                self.refuse(o, f"component[{i}].code", f"{table.value}: a component oncosurg does not define "
                            f"({', '.join(f'{s}|{c}' for s, c in fv.codings(component.get('code')))})",
                            f"use the components {', '.join(columns)} of {tx.code_system('element')}")
        for name in columns:
            if name in by_code:
                i, component = by_code[name]
                self.put_value(table, key, fields[name], component, o, f"component[{i}]")

    def keyed(self, o: Mapping[str, Any], table: Table, key_column: str, value_column: str) -> None:
        n = self.key_of(o, "episode-number", f"{table.value}.{key_column}")
        if n is None:
            return
        spec = TABLE_BY_NAME[table]
        key = (n,)
        self.put(table, key, spec.date or "", fv.date_text(o["effectiveDateTime"]) if o.get("effectiveDateTime")
                 else None, o, "effectiveDateTime")
        self.put_value(table, key, spec.field_by_name[value_column], o, o, "")
        if "line_number" in spec.field_by_name:
            line = _ext(o, "therapy-line")
            self.put(table, key, "line_number", str(line[0].get("valueInteger")) if line else None, o,
                     "extension(therapy-line)")
        if "notes" in spec.field_by_name:
            notes = [n.get("text") for n in o.get("note", []) if n.get("text")]
            self.put(table, key, "notes", "\n".join(notes) if notes else None, o, "note.text")
        if table in COMPONENTS:
            self.components(table, key, o, COMPONENTS[table])

    def marker(self, o: Mapping[str, Any], el: str | None, genes: list[str]) -> None:
        if "?" in genes:
            (i, shown), *_ = fv.genes_unread(o.get("component", []))
            what = f"patient.{el}" if el else "a genetic variant assessment"
            self.refuse(o, f"component[{i}].valueCodeableConcept", f"{what}: the gene studied is not given as an "
                        "HGNC id, so oncosurg cannot tell which gene was tested", "give the gene studied as a code "
                        f"of {tx.HGNC} (KRAS HGNC:6407, NRAS HGNC:7989, BRAF HGNC:1097)", shown)
            return
        columns = {tx.GENE_COLUMN.get(g) for g in genes}
        if el is None:
            if not genes:
                self.refuse(o, "component", "a genetic variant assessment without the gene studied: oncosurg cannot "
                            "tell a RAS result from a BRAF one", "add a component 48018-6 (gene studied) with the "
                            "HGNC id of the gene (KRAS HGNC:6407, NRAS HGNC:7989, BRAF HGNC:1097)")
                return
            if None in columns and len(columns) == 1:
                self.ignored["Observation (variant assessment of a gene the registry does not record)"] += 1
                return
            if len(columns) != 1:
                self.refuse(o, "component", "a variant assessment of genes the registry records apart "
                            f"({', '.join(genes)}): one result cannot be both", "give one observation per gene "
                            "group (KRAS/NRAS, BRAF)", ", ".join(genes))
                return
            el = columns.pop()
        elif genes and columns != {el}:
            self.refuse(o, "component", f"patient.{el}: the gene studied ({', '.join(genes)}) is not the one this "
                        "observation's code records", "give the gene of the test (KRAS/NRAS for ras_status, BRAF "
                        "for braf_status)", ", ".join(genes))
            return
        assert el is not None
        key, fld = self.patient_key, PATIENT.field_by_name[el]
        absent = fv.codings(o.get("dataAbsentReason"))
        if "valueCodeableConcept" not in o and (o.get("status") == "cancelled" or (tx.DATA_ABSENT, "not-performed")
                                                in absent):
            self.put(Table.PATIENT, key, el, "not_tested", o, "dataAbsentReason")
        else:
            self.put_value(Table.PATIENT, key, fld, o, o, "")

    def tumour_size(self, o: Mapping[str, Any]) -> None:
        fld = TABLE_BY_NAME[Table.THERAPY_LINE].field_by_name["largest_met_mm"]
        if _ext(o, "therapy-line"):
            n = self.key_of(o, "therapy-line", "therapy_line.line_number")
        else:
            n = self.line_of_date(o, o.get("effectiveDateTime"), "largest_met_mm")
        if n is None:
            return
        components = o.get("component", [])
        index = next((i for i, c in enumerate(components) if fv.has(c.get("code"), tx.LONGEST_DIMENSION)), None)
        if index is not None:
            self.put_value(Table.THERAPY_LINE, (n,), fld, components[index], o, f"component[{index}]")
        else:
            self.put_value(Table.THERAPY_LINE, (n,), fld, o, o, "")

    def disease_status(self, o: Mapping[str, Any]) -> None:
        value = o.get("valueCodeableConcept")
        kind = fv.local(value, "event-kind")
        if kind is None and not fv.has(value, tx.WORSENED):
            self.ignored["disease status other than worsened"] += 1
            return
        if _ext(o, "episode-number"):
            n = self.key_of(o, "episode-number", "disease_event.event_no")
            if n is None:
                return
            t, key = Table.DISEASE_EVENT, (n,)
            self.put(t, key, "event_date", fv.date_text(o["effectiveDateTime"]) if o.get("effectiveDateTime")
                     else None, o, "effectiveDateTime")
            self.put(t, key, "event_kind", kind or fv.coded_text(value, "event-kind"), o, "valueCodeableConcept")
            sites = [fv.coded_text(e.get("valueCoding"), "disease-site") for e in _ext(o, "disease-site")]
            self.put(t, key, "sites", ";".join(sites) or None, o, "extension(disease-site)")
            return
        self.foreign.append(o)

    def foreign_events(self) -> None:
        """Worsened statuses without an event number: numbered after the others, in date order; a
        recurrence when a resection (or ablation) precedes them, else a progression."""
        events = sorted(self.foreign, key=lambda o: str(o.get("effectiveDateTime", "")))
        first = max((k[0] for k in self.rows[Table.DISEASE_EVENT]), default=0) + 1
        treated = [p["procedure_date"] for p in self.rows[Table.LIVER_PROCEDURE].values()
                   if p.get("procedure_date") is not None and (is_resection(p.get("procedure_type"),
                                                                            p.get("resected_segments"))
                                                               or p.get("procedure_type") == "ablation")]
        for n, o in enumerate(events, start=first):
            date = fv.date_text(o["effectiveDateTime"]) if o.get("effectiveDateTime") else None
            self.put(Table.DISEASE_EVENT, (n,), "event_date", date, o, "effectiveDateTime")
            day = self.rows[Table.DISEASE_EVENT][(n,)].get("event_date")
            kind = "recurrence" if day is not None and any(d <= day for d in treated) else "progression"
            self.put(Table.DISEASE_EVENT, (n,), "event_kind", kind, o, "valueCodeableConcept")

    # -- procedures --------------------------------------------------------------------------------

    def procedures(self) -> None:
        t = Table.LIVER_PROCEDURE
        for p in self.of_type("Procedure"):
            kind = fv.local(p.get("code"), "procedure-type")
            if kind is None:
                self.ignored["Procedure (not a liver procedure of the registry)"] += 1
                continue
            n = self.key_of(p, "episode-number", "liver_procedure.procedure_no")
            if n is None:
                continue
            key = (n,)
            self.put(t, key, "procedure_type", kind, p, "code")
            performed = p.get("performedDateTime") or (p.get("performedPeriod") or {}).get("start")
            self.put(t, key, "procedure_date", fv.date_text(performed) if performed else None, p, "performed[x]")
            segments = [fv.coded_text(b, "couinaud-segment") for b in p.get("bodySite", [])]
            self.put(t, key, "resected_segments", ";".join(segments) or None, p, "bodySite")
            self.put(t, key, "margin", fv.coded_text(p["outcome"], "margin") if p.get("outcome") else None, p,
                     "outcome")
            approach = _ext(p, "approach")
            self.put(t, key, "approach", fv.coded_text(approach[0].get("valueCoding"), "approach") if approach
                     else None, p, "extension(approach)")
            for column, name in (("two_stage", "two-stage"), ("portal_vein_embolization", "portal-vein-embolization"),
                                 ("complications_assessed", "complications-assessed")):
                found = _ext(p, name)
                value = found[0].get("valueBoolean") if found else None
                self.put(t, key, column, None if value is None else ("yes" if value else "no"), p,
                         f"extension({name})")

    def complication(self, c: Mapping[str, Any]) -> None:
        p = self.key_of(c, "procedure-number", "complication.procedure_no")
        n = self.key_of(c, "episode-number", "complication.complication_no")
        if p is None or n is None:
            return
        t, key = Table.COMPLICATION, (p, n)
        self.put(t, key, "grade", fv.coded_text(c["severity"], "clavien-dindo") if c.get("severity") else None, c,
                 "severity")
        onset = c.get("onsetDateTime")
        self.put(t, key, "complication_date", fv.date_text(onset) if onset else None, c, "onsetDateTime")
        notes = [n.get("text") for n in c.get("note", []) if n.get("text")]
        self.put(t, key, "description", "\n".join(notes) if notes else None, c, "note.text")

    # -- death and required values -----------------------------------------------------------------

    def death(self, p: Mapping[str, Any]) -> None:
        contacts = self.rows[Table.CONTACT]
        dead = [(k, r) for k, r in contacts.items() if r.get("vital_status") == "dead"]
        if p.get("deceasedDateTime"):
            date = fv.date_text(p["deceasedDateTime"])
            if not dead:
                n = max((k[0] for k in contacts), default=0) + 1
                self.put(Table.CONTACT, (n,), "contact_date", date, p, "deceasedDateTime")
                self.put(Table.CONTACT, (n,), "vital_status", "dead", p, "deceasedDateTime")
            elif all(r.get("contact_date") is not None and r["contact_date"].isoformat() != date for _, r in dead):
                self.refuse(p, "deceasedDateTime", f"contact: the death date differs from the contact that records "
                            f"the death ({dead[0][1]['contact_date']})", "give one date of death", date,
                            rule=F_LAYOUT)
        elif p.get("deceasedBoolean") is True and not dead:
            self.refuse(p, "deceasedBoolean", "contact: the patient is deceased but the date of death is unknown",
                        "give Patient.deceasedDateTime", "true", rule=V_REQUIRED)
        elif p.get("deceasedBoolean") is False and dead:
            self.refuse(p, "deceasedBoolean", "contact: the patient is said alive but a contact records the death",
                        "remove deceasedBoolean, or correct the contact", "false", rule=F_LAYOUT)

    def required(self) -> None:
        """A required field of a row the bundle holds, carried empty, is an error (``V301``)."""
        failed = {(t, c, line) for t, c, line in self.failed}
        for table, rows in self.rows.items():
            spec = TABLE_BY_NAME[table]
            carried = self.carried.get(table, set())
            for key, row in rows.items():
                index = self.row_place[(table, key)]
                for fld in spec.fields:
                    if fld.required == "yes" and fld.name in carried and row.get(fld.name) is None and (
                            table, fld.name, index) not in failed:
                        self.failed.append((table, fld.name, index))
                        self.issues.append(Issue(V_REQUIRED.code, f"{table.value}.{fld.name}: required value is "
                                                 "missing", f"give {fld.describe_type()}", None,
                                                 self.places[index].column(fld.name), None, self.name))
