"""The episode model as a REDCap project: data dictionary, repeating instruments, events, record export.

The project has a non-repeating ``patient`` instrument and one **repeating instrument per episode
table** (:mod:`oncosurg.pathway.model`): ``therapy_line``, ``mdt_review``, ``response_assessment``,
``liver_procedure``, ``complication``, ``pathology``, ``disease_event``, ``contact``.  The record id
is ``record_id`` = ``<centre>::<patient_id>`` (as in :mod:`oncosurg.export.redcap`).

Keys.  An episode's key is its **repeat instance** where the model numbers episodes by instance
(``review_no``, ``assessment_no``, ``procedure_no``, ``event_no``, ``contact_no``).  A therapy line
is keyed by its clinical ``line_number`` (a field; the export writes it as the instance too).  A
child names its parent's key as a field: ``procedure_no`` of a complication (whose own key is the
field ``complication_no``, defaulting to the instance) and ``pathology_procedure_no`` of the
pathology (one per procedure; written as the instance too).  A review or an assessment names its
therapy line by ``mdt_line_number`` / ``assessed_line_number``.

Variable names are the model's column names except where REDCap needs them unique across the
project or at most 26 characters long (:data:`RENAMES`); ``;``-lists (agents, sites, resected
segments) are checkbox fields, yes/no columns ``yesno`` fields, coded columns radio or dropdown
fields whose raw codes are the model's codes.  The reader is :mod:`oncosurg.ingest.redcap_episodes`.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import IO, Any

from oncosurg.export.redcap import (
    DAG,
    DICTIONARY_HEADER,
    EVENT,
    RECORD_ID,
    RECORD_ID_SEPARATOR,
    REPEAT_INSTANCE,
    REPEAT_INSTRUMENT,
    YESNO_LABELS,
    split_record_id,
)
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import (
    AGENT_LABELS,
    EPISODE_TABLES,
    PATIENT,
    PROCEDURE_LABELS,
    TABLE_BY_NAME,
    EpisodeTable,
    Table,
    split_list,
)
from oncosurg.schema import FIELD_BY_NAME, Field, Kind

__all__ = ["DAG", "EVENT", "RECORD_ID", "REPEAT_INSTANCE", "REPEAT_INSTRUMENT", "split_record_id"]

PATIENT_FORM = "patient"
#: REDCap variable names that differ from the model's column names (unique across the project, ≤ 26 characters).
RENAMES: dict[tuple[Table, str], str] = {
    (Table.MDT_REVIEW, "line_number"): "mdt_line_number",
    (Table.RESPONSE_ASSESSMENT, "line_number"): "assessed_line_number",
    (Table.PATHOLOGY, "procedure_no"): "pathology_procedure_no",
    (Table.COMPLICATION, "grade"): "complication_grade",
    (Table.COMPLICATION, "description"): "complication_description",
    (Table.PATHOLOGY, "sinusoidal_dilatation_grade"): "sinusoid_dilatation_grade",
    (Table.PATHOLOGY, "nodular_regenerative_hyperplasia"): "nodular_regen_hyperplasia",
}
#: Tables whose key is REDCap's repeat instance (no field).
INSTANCE_KEYS: dict[Table, str] = {Table.MDT_REVIEW: "review_no", Table.RESPONSE_ASSESSMENT: "assessment_no",
                                   Table.LIVER_PROCEDURE: "procedure_no", Table.DISEASE_EVENT: "event_no",
                                   Table.CONTACT: "contact_no"}
#: REDCap's advice for variable names; longer positional numbers keep their exponent.
MAX_NAME = 26
MAX_POSITIONAL = 32

FORM_LABELS: dict[str, str] = {
    PATIENT_FORM: "Patient", "therapy_line": "Therapy line", "mdt_review": "MDT review",
    "response_assessment": "Response assessment", "liver_procedure": "Liver procedure",
    "complication": "Complication", "pathology": "Pathology", "disease_event": "Disease event", "contact": "Contact",
}
#: Custom labels of the repeating instruments' instances (REDCap pipes the fields in brackets).
INSTANCE_LABELS: dict[str, str] = {
    "therapy_line": "Line [line_number], [start_date]", "mdt_review": "[review_date] [decision]",
    "response_assessment": "[assessment_date] [category]", "liver_procedure": "[procedure_date] [procedure_type]",
    "complication": "Procedure [procedure_no], grade [complication_grade]",
    "pathology": "Procedure [pathology_procedure_no]", "disease_event": "[event_date] [event_kind]",
    "contact": "[contact_date] [vital_status]",
}
#: Events of the longitudinal layout (one arm): unique event name → (label, instruments).
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "enrolment_arm_1": ("Enrolment", (PATIENT_FORM, "therapy_line", "mdt_review", "response_assessment")),
    "surgery_arm_1": ("Surgery", ("liver_procedure", "complication", "pathology")),
    "follow_up_arm_1": ("Follow-up", ("disease_event", "contact")),
}
EVENT_OF: dict[str, str] = {form: event for event, (_, forms) in EVENTS.items() for form in forms}

LABELS: dict[str, str] = {
    RECORD_ID: "Record ID (centre::patient_id)", "patient_id": "Patient pseudonym", "centre": "Centre",
    "sex": "Sex", "birth_year": "Year of birth", "age_at_rescue": "Age at the start of the rescue line",
    "primary_site": "Primary tumour site", "primary_side": "Primary tumour side", "ras_status": "RAS status",
    "braf_status": "BRAF V600E status", "msi_status": "MSI / MMR status", "referral": "Referral",
    "referral_date": "Date of referral",
    "line_number": "Line number", "start_date": "Start of the line", "stop_date": "End of the line",
    "agents": "Agents", "intent": "Intent", "given_at": "Given at", "cycles": "Cycles given",
    "best_response": "Best response of the line (RECIST)", "stop_reason": "Reason the line stopped",
    "schedule": "Targeted-agent schedule", "dose_mg_m2": "Targeted-agent dose", "bsa_m2": "Body-surface area",
    "liver_mets_count": "Number of liver metastases at the line's start",
    "largest_met_mm": "Largest liver metastasis at the line's start", "bilobar": "Bilobar liver metastases",
    "extrahepatic_disease": "Extrahepatic disease",
    "review_date": "Date of the MDT review", "decision": "MDT decision", "mdt_line_number": "Therapy line under review",
    "cycles_at_review": "Cycles given at the review", "notes": "MDT notes",
    "assessment_date": "Date of the response assessment", "assessed_line_number": "Therapy line assessed",
    "category": "RECIST category", "baseline_sum_mm": "Sum of diameters at baseline",
    "current_sum_mm": "Sum of diameters now", "nadir_sum_mm": "Smallest sum of diameters so far",
    "new_lesions": "New lesions",
    "procedure_date": "Date of the procedure", "procedure_type": "Procedure",
    "resected_segments": "Resected Couinaud segments", "margin": "Resection margin", "approach": "Approach",
    "two_stage": "Part of a two-stage strategy", "portal_vein_embolization": "Preceded by portal vein embolisation",
    "complications_assessed": "Complications assessed",
    "procedure_no": "Procedure (instance number of the liver procedure)",
    "complication_no": "Complication number", "complication_grade": "Clavien-Dindo grade",
    "complication_date": "Date of the complication", "complication_description": "Complication description",
    "pathology_procedure_no": "Resection (instance number of the liver procedure)",
    "steatosis_pct": "Steatosis of the non-tumoral liver", "steatohepatitis": "Steatohepatitis",
    "sinusoid_dilatation_grade": "Sinusoidal dilatation grade (Rubbia-Brandt)", "fibrosis_stage": "Fibrosis stage",
    "nodular_regen_hyperplasia": "Nodular regenerative hyperplasia",
    "tumour_regression_grade": "Tumour regression grade (Rubbia-Brandt)",
    "lesion_count": "Metastases in the specimen", "largest_lesion_mm": "Largest metastasis in the specimen",
    "margin_mm": "Closest margin",
    "event_date": "Date of the event", "event_kind": "Event", "sites": "Sites",
    "contact_date": "Date of the contact", "vital_status": "Vital status",
}

_STATUS = {"wild_type": "Wild type", "mutant": "Mutant", "not_tested": "Not tested"}
CHOICE_LABELS: dict[str, dict[str, str]] = {
    "sex": {"F": "Female", "M": "Male"},
    "ras_status": _STATUS, "braf_status": _STATUS,
    "msi_status": {"mss": "MSS / MMR proficient", "msi_high": "MSI-high / MMR deficient", "not_tested": "Not tested"},
    "referral": {"in_house": "In-house (the pathway began at this centre)",
                 "referred": "Referred by another hospital"},
    "agents": dict(AGENT_LABELS), "procedure_type": dict(PROCEDURE_LABELS),
    "intent": {"palliative": "Palliative", "conversion": "Conversion (rescue)", "neoadjuvant": "Neoadjuvant",
               "adjuvant": "Adjuvant"},
    "given_at": {"centre": "At this centre", "elsewhere": "Elsewhere"},
    "best_response": {"CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                      "PD": "Progressive disease", "NE": "Not evaluable"},
    "schedule": {"weekly": "Weekly (250 mg/m², 400 loading)", "biweekly": "Every two weeks (500 mg/m²)"},
    "decision": {"resectable": "Resectable", "potentially_resectable": "Potentially resectable",
                 "unresectable_continue": "Unresectable, continue therapy",
                 "unresectable_stop": "Unresectable, stop therapy"},
    "margin": {"R0": "R0", "R1": "R1", "R2": "R2"},
    "complication_grade": {g: f"Grade {g}" for g in ("I", "II", "IIIa", "IIIb", "IVa", "IVb", "V")},
    "resected_segments": {str(i): f"Segment {r}" for i, r in enumerate(
        ("I", "II", "III", "IV", "V", "VI", "VII", "VIII"), start=1)},
    "sites": {"liver": "Liver", "lung": "Lung", "peritoneum": "Peritoneum", "nodes": "Lymph nodes", "bone": "Bone",
              "brain": "Brain", "other": "Other"},
}
CHOICE_LABELS["category"] = CHOICE_LABELS["best_response"]
CHECKBOX_LABELS = {"1": "Checked", "0": "Unchecked"}

_RESECTION_TYPES = "[procedure_type] <> 'pve' and [procedure_type] <> 'ablation' and " \
                   "[procedure_type] <> 'exploration_only'"
BRANCHING: dict[str, str] = {
    "referral_date": "[referral] = 'referred'",
    "stop_reason": "[stop_date] <> ''",
    "schedule": "[agents(cetuximab)] = '1' or [agents(panitumumab)] = '1'",
    "dose_mg_m2": "[agents(cetuximab)] = '1' or [agents(panitumumab)] = '1'",
    "resected_segments": _RESECTION_TYPES,
    "margin": _RESECTION_TYPES,
}
ANNOTATIONS: dict[str, str] = {"complication_no": "@DEFAULT='[current-instance]'"}


@dataclass(frozen=True, slots=True)
class Variable:
    """One REDCap variable: its instrument and the model column it holds."""

    name: str
    form: str
    table: Table
    column: str  # model column ('centre' and 'record_id' are the record's)
    field: Field
    field_type: str  # text | notes | dropdown | radio | yesno | checkbox
    validation: str = ""
    minimum: str = ""
    maximum: str = ""
    note: str = ""
    required: bool = False

    @property
    def choices(self) -> dict[str, str]:
        if self.name in CHOICE_LABELS:
            return CHOICE_LABELS[self.name]
        return {c: c.replace("_", " ").capitalize() for c in self.field.choices}

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def branching(self) -> str:
        return BRANCHING.get(self.name, "")

    def columns(self) -> list[str]:
        """The columns the variable takes in a flat record export (one per option for a checkbox)."""
        if self.field_type == "checkbox":
            return [f"{self.name}___{code}" for code in self.choices]
        return [self.name]


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _variable(spec: EpisodeTable, f: Field) -> Variable:
    name = RENAMES.get((spec.table, f.name), f.name)
    note = "; ".join(x for x in (f.description, f"unit: {f.unit}" if f.unit else "",
                                 f"> {_number(f.minimum)}" if f.exclusive_minimum else "") if x)
    common: dict[str, Any] = {"name": name, "form": spec.table.value if spec is not PATIENT else PATIENT_FORM,
                              "table": spec.table, "column": f.name, "field": f, "note": note,
                              "required": f.required == "yes"}
    if f.kind is Kind.ENUM:
        return Variable(field_type="radio" if len(f.choices) <= 3 else "dropdown", **common)
    if f.kind is Kind.BOOL:
        return Variable(field_type="yesno", **common)
    if f.kind in (Kind.SEGMENTS, Kind.CODES):
        return Variable(field_type="checkbox", **common)
    if f.kind is Kind.DATE:
        return Variable(field_type="text", validation="date_ymd", **common)
    if f.kind in (Kind.INTEGER, Kind.NUMBER):
        return Variable(field_type="text", validation="integer" if f.kind is Kind.INTEGER else "number",
                        minimum=_number(f.minimum), maximum=_number(f.maximum), **common)
    return Variable(field_type="notes" if f.max_length >= 200 else "text", **common)


def _project() -> tuple[Variable, ...]:
    out = [Variable(RECORD_ID, PATIENT_FORM, Table.PATIENT, RECORD_ID, FIELD_BY_NAME["patient_id"], "text",
                    note="centre::patient_id (unique across centres)", required=True)]
    for f in PATIENT.fields:
        out.append(_variable(PATIENT, f))
        if f.name == "patient_id":
            out.append(Variable("centre", PATIENT_FORM, Table.PATIENT, "centre", FIELD_BY_NAME["centre"], "text",
                                note="the centre's name (also the record id's part before '::')"))
    for spec in EPISODE_TABLES:
        own = INSTANCE_KEYS.get(spec.table)
        out += [_variable(spec, f) for f in spec.fields if f.name != own]
    names = [v.name for v in out]
    assert len(set(names)) == len(names), "REDCap variable names must be unique"
    assert max(map(len, names)) <= MAX_NAME, "REDCap advises variable names of at most 26 characters"
    return tuple(out)


VARIABLES: tuple[Variable, ...] = _project()
VARIABLE_MAP: dict[str, Variable] = {v.name: v for v in VARIABLES}
FORMS: tuple[str, ...] = tuple(dict.fromkeys(v.form for v in VARIABLES))
REPEATING_FORMS: tuple[str, ...] = FORMS[1:]
FORM_TABLE: dict[str, Table] = {PATIENT_FORM: Table.PATIENT, **{s.table.value: s.table for s in EPISODE_TABLES}}
FORM_VARIABLES: dict[str, tuple[Variable, ...]] = {
    form: tuple(v for v in VARIABLES if v.form == form and v.name != RECORD_ID) for form in FORMS}
#: (table, model column) → REDCap variable.
VARIABLE_OF: dict[tuple[Table, str], Variable] = {(v.table, v.column): v for v in VARIABLES if v.name != RECORD_ID}


def dictionary_rows() -> list[dict[str, str]]:
    """The data dictionary, one row per variable, keyed by REDCap's :data:`DICTIONARY_HEADER`."""
    rows = []
    for v in VARIABLES:
        choices = " | ".join(f"{code}, {label}" for code, label in v.choices.items()) if v.field_type in (
            "radio", "dropdown", "checkbox") else ""
        values = (v.name, v.form, "", v.field_type, v.label, choices, v.note, v.validation, v.minimum, v.maximum,
                  "", v.branching, "y" if v.required else "", "", "", "", "", ANNOTATIONS.get(v.name, ""))
        rows.append(dict(zip(DICTIONARY_HEADER, values, strict=True)))
    return rows


def write_dictionary(handle: IO[str]) -> None:
    """Write the REDCap data dictionary CSV (upload it in Project Setup → Data Dictionary)."""
    writer = csv.DictWriter(handle, fieldnames=list(DICTIONARY_HEADER), lineterminator="\n")
    writer.writeheader()
    writer.writerows(dictionary_rows())


def write_repeating_setup(handle: IO[str], *, longitudinal: bool = False) -> None:
    """REDCap's 'repeating instruments and events' upload: every episode instrument repeats."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["event_name", "form_name", "custom_form_label"] if longitudinal else
                    ["form_name", "custom_form_label"])
    for form in REPEATING_FORMS:
        writer.writerow([EVENT_OF[form], form, INSTANCE_LABELS[form]] if longitudinal else
                        [form, INSTANCE_LABELS[form]])


def write_event_mapping(handle: IO[str]) -> None:
    """REDCap's instrument-event mapping upload (Designate instruments for my events) of the longitudinal layout."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["arm_num", "unique_event_name", "form"])
    for event, (_, forms) in EVENTS.items():
        writer.writerows([1, event, form] for form in forms)


def write_events(handle: IO[str]) -> None:
    """REDCap's event list upload (Define my events) of the longitudinal layout."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["event_name", "arm_num", "unique_event_name"])
    writer.writerows([label, 1, event] for event, (label, _) in EVENTS.items())


# ------------------------------------------------------------------------------------------ records

def record_id(centre: str | None, patient_id: str) -> str:
    """``centre::patient_id`` (``patient_id`` alone without a centre)."""
    return f"{centre}{RECORD_ID_SEPARATOR}{patient_id}" if centre else patient_id


def number_text(value: float | int) -> str:
    """A number as REDCap's ``number`` validation accepts it: positional, no exponent (``0.00001``, not
    ``1e-05``), a whole number without a decimal point; the digits round-trip exactly.  A number whose
    positional form would be longer than :data:`MAX_POSITIONAL` characters (no measurement is) keeps
    its exponent."""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    text = format(Decimal(repr(number)), "f")
    return text if len(text) <= MAX_POSITIONAL else repr(number)


def raw_values(v: Variable, value: Any) -> dict[str, str]:
    """The raw export cells of one variable for a model value (checkbox: one cell per option)."""
    if v.field_type == "checkbox":
        chosen = set(split_list(value)) if value is not None else set()
        return {f"{v.name}___{code}": "1" if code in chosen else "0" for code in v.choices}
    if value is None:
        return {v.name: ""}
    if v.field_type == "yesno":
        return {v.name: "1" if value else "0"}
    if isinstance(value, dt.date):
        return {v.name: value.isoformat()}
    if v.field.kind in (Kind.INTEGER, Kind.NUMBER):
        return {v.name: number_text(value)}
    return {v.name: str(value)}


def label_of(column: str, raw: str, *, checkbox_labels: bool = False) -> str:
    """The value REDCap's 'labels' export shows for a raw value (``checkbox_labels``: REDCap's 'export
    checkbox labels' option, the option's label when checked and empty when not)."""
    name, _, code = column.partition("___")
    v = VARIABLE_MAP.get(name)
    if v is None or raw == "":
        return raw
    if code:
        if checkbox_labels:
            return v.choices[code] if raw == "1" else ""
        return CHECKBOX_LABELS[raw]
    if v.field_type == "yesno":
        return YESNO_LABELS[raw]
    if v.field_type in ("radio", "dropdown"):
        return v.choices.get(raw, raw)
    return raw


def header_label(column: str) -> str:
    """The header REDCap writes for a column when exporting labels as headers."""
    special = {EVENT: "Event Name", REPEAT_INSTRUMENT: "Repeat Instrument", REPEAT_INSTANCE: "Repeat Instance",
               DAG: "Data Access Group"}
    if column in special:
        return special[column]
    if column.endswith("_complete") and column.removesuffix("_complete") in FORMS:
        return "Complete?"
    name, _, code = column.partition("___")
    v = VARIABLE_MAP[name]
    return f"{v.label} (choice={v.choices[code]})" if code else v.label


def export_columns(*, longitudinal: bool = False) -> list[str]:
    """The columns of a flat record export of the whole project, in REDCap's order."""
    columns = [RECORD_ID] + ([EVENT] if longitudinal else []) + [REPEAT_INSTRUMENT, REPEAT_INSTANCE]
    for form in FORMS:
        columns += [c for v in FORM_VARIABLES[form] for c in v.columns()]
        columns.append(f"{form}_complete")
    return columns


def instances(record: PatientRecord, table: Table) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(repeat instance, row) of a patient's rows of one episode table, in key order.

    Instance-keyed tables use their key; therapy lines their line number; pathology its procedure's
    number; complications their number when it is unique within the patient, else their rank.
    """
    spec = TABLE_BY_NAME[table]
    rows = sorted(record.rows(table), key=lambda r: tuple(r[k] for k in spec.key))
    if table in INSTANCE_KEYS:
        yield from ((r[INSTANCE_KEYS[table]], r) for r in rows)
    elif table is Table.THERAPY_LINE:
        yield from ((r["line_number"], r) for r in rows)
    elif table is Table.PATHOLOGY:
        yield from ((r["procedure_no"], r) for r in rows)
    else:
        numbers = [r["complication_no"] for r in rows]
        unique = len(set(numbers)) == len(numbers)
        yield from ((r["complication_no"] if unique else i, r) for i, r in enumerate(rows, start=1))


def record_rows(record: PatientRecord) -> Iterator[tuple[str, int | None, dict[str, str]]]:
    """(instrument, instance, raw cells) of every export row of one patient; the patient row first."""
    rid = record_id(record.centre, record.patient_id)
    cells = {RECORD_ID: rid}
    for v in FORM_VARIABLES[PATIENT_FORM]:
        value = record.centre if v.column == "centre" else record.patient.get(v.column)
        cells.update(raw_values(v, value))
    yield PATIENT_FORM, None, cells
    for spec in EPISODE_TABLES:
        form = spec.table.value
        for instance, row in instances(record, spec.table):
            cells = {RECORD_ID: rid}
            for v in FORM_VARIABLES[form]:
                cells.update(raw_values(v, row.get(v.column)))
            yield form, instance, cells


def write_records(
    records: Iterable[PatientRecord],
    handle: IO[str],
    *,
    labels: bool = False,
    label_headers: bool = False,
    checkbox_labels: bool = False,
    longitudinal: bool = False,
    delimiter: str = ",",
    decimal: str = ".",
) -> int:
    """Write patients as REDCap's flat CSV record export (also REDCap's data-import format).

    One row for the patient instrument and one per episode instance.  ``labels``, ``label_headers``,
    ``checkbox_labels``, ``delimiter`` and ``decimal`` reproduce REDCap's export options (raw data or
    labels; field labels as headers; 'export checkbox labels'; the CSV delimiter; the decimal
    character of numbers).  Returns the number of rows written.
    """
    columns = export_columns(longitudinal=longitudinal)
    writer = _Writer(handle, delimiter)
    writer.writerow([header_label(c) if label_headers and c != RECORD_ID else
                     (LABELS[RECORD_ID] if label_headers else c) for c in columns])
    numbers = {c for v in VARIABLES if v.validation == "number" for c in v.columns()}
    count = 0
    for record in records:
        for form, instance, cells in record_rows(record):
            row = dict.fromkeys(columns, "")
            row.update(cells)
            if longitudinal:
                event = EVENT_OF[form]
                row[EVENT] = f"{EVENTS[event][0]} (Arm 1: Arm 1)" if labels else event
            if instance is not None:
                row[REPEAT_INSTRUMENT] = FORM_LABELS[form] if labels else form
                row[REPEAT_INSTANCE] = str(instance)
            row[f"{form}_complete"] = "Complete" if labels else "2"
            if labels:
                row.update({c: label_of(c, cells[c], checkbox_labels=checkbox_labels) for c in cells
                            if c != RECORD_ID})
            if decimal != ".":
                row.update({c: row[c].replace(".", decimal) for c in numbers & cells.keys()})
            writer.writerow([row[c] for c in columns])
            count += 1
    return count


class _Writer:
    """CSV rows ending in ``\n``; a row holding a carriage return is written fully quoted (minimal quoting
    quotes only the line terminator's characters, and a bare ``\r`` ends a line for CSV readers too)."""

    def __init__(self, handle: IO[str], delimiter: str) -> None:
        self.minimal = csv.writer(handle, lineterminator="\n", delimiter=delimiter)
        self.quoted = csv.writer(handle, lineterminator="\n", delimiter=delimiter, quoting=csv.QUOTE_ALL)

    def writerow(self, cells: list[str]) -> None:
        (self.quoted if any("\r" in c for c in cells) else self.minimal).writerow(cells)
