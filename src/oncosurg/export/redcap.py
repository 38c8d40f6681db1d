"""The flat REDCap project of earlier releases: data dictionary, repeating-instrument setup, record export.

Today's project describes the episode model (:mod:`oncosurg.export.redcap_episodes`); this one,
one row per patient, remains for the projects built from it (their exports still import) and for
de-identified exports, which carry the flat projection (``oncosurg redcap dictionary --flat``).
Its names keep the flat registry's, two of them longer than REDCap's 26-character advice
(``sinusoidal_dilatation_grade``, ``nodular_regenerative_hyperplasia``): renaming them would break
the projects built from it.

The project has one instrument per pathway stage (:class:`oncosurg.schema.Stage`) and keeps the
registry column names as REDCap variable names.  The REDCap record id is ``record_id``, written
``<centre>::<patient_id>`` (just ``<patient_id>`` for a patient without a centre), so the same
pseudonym in two centres gives two REDCap records; ``patient_id`` and ``centre`` are ordinary
fields of the ``patient`` instrument.  Three more differences:

* ``resected_segments`` is a checkbox (REDCap exports it as ``resected_segments___1`` …
  ``resected_segments___8``);
* ``clavien_dindo_max`` is not a field: the surgery instrument asks ``any_complication`` (yes/no)
  and each complication is one instance of the repeating ``complication`` instrument with its
  Clavien-Dindo grade; the registry keeps the worst grade (``none`` when ``any_complication`` is no);
* yes/no columns are REDCap ``yesno`` fields (raw 1/0).

Choice codes are the registry codes, so a raw REDCap export holds the registry's values.  The
reader of REDCap exports (:mod:`oncosurg.ingest.redcap`) uses the same definitions.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from oncosurg.export import cell_text
from oncosurg.schema import CLAVIEN_DINDO, FIELD_BY_NAME, HEPATECTOMY_COLUMNS, SURGERY_COLUMNS, Kind, Stage

#: Data-dictionary header, in REDCap's order.
DICTIONARY_HEADER = (
    "Variable / Field Name", "Form Name", "Section Header", "Field Type", "Field Label",
    "Choices, Calculations, OR Slider Labels", "Field Note", "Text Validation Type OR Show Slider Number",
    "Text Validation Min", "Text Validation Max", "Identifier?", "Branching Logic (Show field only if...)",
    "Required Field?", "Custom Alignment", "Question Number (surveys only)", "Matrix Group Name",
    "Matrix Ranking?", "Field Annotation",
)

RECORD_ID = "record_id"
#: Separates the centre from the patient_id in a record id (a patient_id never holds ':').
RECORD_ID_SEPARATOR = "::"
EVENT = "redcap_event_name"
REPEAT_INSTRUMENT = "redcap_repeat_instrument"
REPEAT_INSTANCE = "redcap_repeat_instance"
DAG = "redcap_data_access_group"
COMPLICATION_FORM = Stage.COMPLICATIONS.value
GRADES = tuple(g for g in CLAVIEN_DINDO if g != "none")
SEGMENTS = tuple(str(i) for i in range(1, 9))

#: Instrument labels, in pathway order (the instrument name is the stage name).
FORM_LABELS: dict[str, str] = {
    Stage.PATIENT.value: "Patient", Stage.BASELINE.value: "Baseline tumour",
    Stage.PRIOR_CHEMO.value: "Prior chemotherapy", Stage.CETUXIMAB.value: "Cetuximab course",
    Stage.SURGERY.value: "Surgery", COMPLICATION_FORM: "Complication",
    Stage.PATHOLOGY_NONTUMORAL.value: "Pathology non-tumoral liver",
    Stage.PATHOLOGY_TUMORAL.value: "Pathology tumour", Stage.FOLLOW_UP.value: "Follow-up",
}

#: Events of the longitudinal layout: unique event name → (label, instruments).
EVENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "enrolment_arm_1": ("Enrolment", (Stage.PATIENT.value, Stage.BASELINE.value, Stage.PRIOR_CHEMO.value,
                                      Stage.CETUXIMAB.value)),
    "surgery_arm_1": ("Surgery", (Stage.SURGERY.value, COMPLICATION_FORM, Stage.PATHOLOGY_NONTUMORAL.value,
                                  Stage.PATHOLOGY_TUMORAL.value)),
    "follow_up_arm_1": ("Follow-up", (Stage.FOLLOW_UP.value,)),
}

LABELS: dict[str, str] = {
    RECORD_ID: "Record ID (centre::patient_id)", "patient_id": "Patient pseudonym", "centre": "Centre",
    "referral": "Where was cetuximab given?", "sex": "Sex", "age_at_cetuximab": "Age at cetuximab start",
    "primary_site": "Primary tumour site", "primary_side": "Primary tumour side", "ras_status": "RAS status",
    "liver_mets_count": "Number of liver metastases", "largest_met_mm": "Largest liver metastasis",
    "bilobar": "Bilobar liver metastases", "extrahepatic_disease": "Extrahepatic disease",
    "prior_chemo_lines": "Chemotherapy lines failed before cetuximab", "cetuximab_start": "Cetuximab start date",
    "cetuximab_partner": "Chemotherapy given with cetuximab", "cetuximab_cycles": "Cetuximab cycles",
    "best_response": "Best response (RECIST)", "surgery_date": "Date of surgery", "surgery_type": "Type of surgery",
    "resected_segments": "Resected Couinaud segments", "two_stage": "Two-stage hepatectomy",
    "portal_vein_embolization": "Portal vein embolization", "margin": "Resection margin",
    "any_complication": "Any postoperative complication?", "complication_grade": "Clavien-Dindo grade",
    "complication_description": "Complication description",
    "steatosis_pct": "Steatosis of the non-tumoral liver", "steatohepatitis": "Steatohepatitis",
    "sinusoidal_dilatation_grade": "Sinusoidal dilatation grade (Rubbia-Brandt)",
    "fibrosis_stage": "Fibrosis stage", "nodular_regenerative_hyperplasia": "Nodular regenerative hyperplasia",
    "tumour_regression_grade": "Tumour regression grade (Rubbia-Brandt)",
    "progression_date": "Date of first progression or recurrence", "death_date": "Date of death",
    "last_contact_date": "Date of last contact",
}

CHOICE_LABELS: dict[str, dict[str, str]] = {
    "referral": {"in_house": "In-house (at this centre)", "referred": "Referred (cetuximab given elsewhere)"},
    "sex": {"F": "Female", "M": "Male"},
    "primary_site": {"colon": "Colon", "rectum": "Rectum"},
    "primary_side": {"left": "Left", "right": "Right"},
    "ras_status": {"wild_type": "Wild type", "mutant": "Mutant", "not_tested": "Not tested"},
    "cetuximab_partner": {"irinotecan": "Irinotecan", "oxaliplatin": "Oxaliplatin",
                          "both": "Irinotecan and oxaliplatin", "none": "None (cetuximab alone)", "other": "Other"},
    "best_response": {"CR": "Complete response", "PR": "Partial response", "SD": "Stable disease",
                      "PD": "Progressive disease", "NE": "Not evaluable"},
    "surgery_type": {"hepatectomy": "Hepatectomy", "exploration_only": "Exploration only",
                     "ablation_only": "Ablation only"},
    "margin": {"R0": "R0", "R1": "R1", "R2": "R2"},
    "complication_grade": {g: f"Grade {g}" for g in GRADES},
    "resected_segments": {s: f"Segment {r}" for s, r in zip(SEGMENTS, ("I", "II", "III", "IV", "V", "VI", "VII",
                                                                     "VIII"), strict=True)},
}
YESNO_LABELS = {"1": "Yes", "0": "No"}
CHECKBOX_LABELS = {"1": "Checked", "0": "Unchecked"}

_ON_SURGERY = "[surgery_date] <> ''"
_ON_HEPATECTOMY = "[surgery_type] = 'hepatectomy'"


@dataclass(frozen=True, slots=True)
class RedcapField:
    """One REDCap variable of the project."""

    name: str
    form: str
    field_type: str  # text | notes | dropdown | radio | yesno | checkbox
    validation: str = ""
    minimum: str = ""
    maximum: str = ""
    note: str = ""
    branching: str = ""
    required: bool = False

    @property
    def choices(self) -> dict[str, str]:
        return CHOICE_LABELS.get(self.name, {})

    @property
    def label(self) -> str:
        return LABELS[self.name]


def _number(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _registry_field(name: str) -> RedcapField:
    f = FIELD_BY_NAME[name]
    branching = _ON_HEPATECTOMY if name in HEPATECTOMY_COLUMNS else _ON_SURGERY if name in SURGERY_COLUMNS else ""
    note = "; ".join(x for x in (f.description, f"unit: {f.unit}" if f.unit else "",
                                 f"> {_number(f.minimum)}" if f.exclusive_minimum else "") if x)
    common = {"name": name, "form": f.stage.value, "note": note, "branching": branching,
              "required": f.required != "no"}  # with_surgery: REDCap enforces it only when shown
    if f.kind is Kind.ENUM:
        return RedcapField(field_type="radio" if len(f.choices) <= 3 else "dropdown", **common)
    if f.kind is Kind.BOOL:
        return RedcapField(field_type="yesno", **common)
    if f.kind is Kind.SEGMENTS:
        return RedcapField(field_type="checkbox", **common)
    if f.kind is Kind.DATE:
        return RedcapField(field_type="text", validation="date_ymd", **common)
    if f.kind in (Kind.INTEGER, Kind.NUMBER):
        return RedcapField(field_type="text", validation="integer" if f.kind is Kind.INTEGER else "number",
                           minimum=_number(f.minimum), maximum=_number(f.maximum), **common)
    return RedcapField(field_type="text", **common)


def record_id(record: Mapping[str, Any]) -> str:
    """The REDCap record id of a registry record: ``centre::patient_id`` (``patient_id`` without a centre)."""
    centre, patient_id = cell_text(record.get("centre")), cell_text(record.get("patient_id"))
    return f"{centre}{RECORD_ID_SEPARATOR}{patient_id}" if centre else patient_id


def split_record_id(value: str) -> tuple[str | None, str]:
    """``(centre, patient_id)`` of a record id written by :func:`record_id` (centre ``None`` when absent)."""
    centre, separator, patient_id = value.rpartition(RECORD_ID_SEPARATOR)
    return (centre, patient_id) if separator else (None, value)


def _project_fields() -> tuple[RedcapField, ...]:
    out: list[RedcapField] = [RedcapField(RECORD_ID, Stage.PATIENT.value, "text", required=True,
                                          note="centre::patient_id (unique across centres)")]
    for f in FIELD_BY_NAME.values():
        if f.name == "clavien_dindo_max":
            continue
        out.append(_registry_field(f.name))
        if f.name == "margin":  # surgery instrument ends with the complication question
            out.append(RedcapField("any_complication", Stage.SURGERY.value, "yesno", branching=_ON_SURGERY,
                                   required=True,
                                   note="Clavien-Dindo grades go in the repeating 'complication' instrument"))
            out.append(RedcapField("complication_grade", COMPLICATION_FORM, "dropdown",
                                   branching="[any_complication] = '1'", required=True,
                                   note="Dindo et al., Ann Surg 2004"))
            out.append(RedcapField("complication_description", COMPLICATION_FORM, "notes",
                                   branching="[any_complication] = '1'"))
    order = list(FORM_LABELS)
    return tuple(sorted(out, key=lambda r: order.index(r.form)))  # stable: keeps field order in a form


FIELDS: tuple[RedcapField, ...] = _project_fields()
FIELD_MAP: dict[str, RedcapField] = {f.name: f for f in FIELDS}
FORMS: tuple[str, ...] = tuple(dict.fromkeys(f.form for f in FIELDS))


def export_columns(f: RedcapField) -> list[str]:
    """The columns a field takes in a flat record export (one per option for a checkbox)."""
    if f.field_type == "checkbox":
        return [f"{f.name}___{code}" for code in f.choices]
    return [f.name]


def dictionary_rows() -> list[dict[str, str]]:
    """The data dictionary, one row per variable, keyed by :data:`DICTIONARY_HEADER`."""
    rows = []
    for f in FIELDS:
        choices = " | ".join(f"{code}, {label}" for code, label in f.choices.items())
        values = (f.name, f.form, "", f.field_type, f.label, choices, f.note, f.validation, f.minimum, f.maximum,
                  "", f.branching, "y" if f.required else "", "", "", "", "", "")
        rows.append(dict(zip(DICTIONARY_HEADER, values, strict=True)))
    return rows


def write_dictionary(handle: IO[str]) -> None:
    """Write the REDCap data dictionary CSV (upload it in Project Setup → Data Dictionary)."""
    writer = csv.DictWriter(handle, fieldnames=list(DICTIONARY_HEADER), lineterminator="\n")
    writer.writeheader()
    writer.writerows(dictionary_rows())


def write_repeating_setup(handle: IO[str], *, longitudinal: bool = False) -> None:
    """The 'repeating instruments and events' upload: the complication instrument repeats."""
    writer = csv.writer(handle, lineterminator="\n")
    if longitudinal:
        writer.writerow(["event_name", "form_name", "custom_form_label"])
        event = next(e for e, (_, forms) in EVENTS.items() if COMPLICATION_FORM in forms)
        writer.writerow([event, COMPLICATION_FORM, "[complication_grade]"])
    else:
        writer.writerow(["form_name", "custom_form_label"])
        writer.writerow([COMPLICATION_FORM, "[complication_grade]"])


def _redcap_values(record: Mapping[str, Any]) -> dict[str, str]:
    """A registry record as raw REDCap values of the non-repeating fields."""
    out: dict[str, str] = {}
    for f in FIELDS:
        if f.form == COMPLICATION_FORM:
            continue
        if f.name == RECORD_ID:
            out[f.name] = record_id(record)
        elif f.name == "any_complication":
            grade = record.get("clavien_dindo_max")
            out[f.name] = "" if grade is None else ("0" if grade == "none" else "1")
        elif f.field_type == "checkbox":
            chosen = set(cell_text(record.get(f.name)).split(";")) - {""}
            for code in f.choices:
                out[f"{f.name}___{code}"] = "1" if code in chosen else "0"
        elif f.field_type == "yesno":
            value = record.get(f.name)
            out[f.name] = "" if value is None else ("1" if value else "0")
        else:
            out[f.name] = cell_text(record.get(f.name))
    return out


def _label(column: str, raw: str) -> str:
    """The label REDCap's 'labels' export shows for a raw value."""
    if raw == "":
        return ""
    name, _, code = column.partition("___")
    f = FIELD_MAP.get(name)
    if f is None:
        return raw
    if code:
        return CHECKBOX_LABELS[raw]
    if f.field_type == "yesno":
        return YESNO_LABELS[raw]
    return f.choices.get(raw, raw)


def header_label(column: str) -> str:
    """The header REDCap writes for a column when exporting labels as headers."""
    special = {EVENT: "Event Name", REPEAT_INSTRUMENT: "Repeat Instrument", REPEAT_INSTANCE: "Repeat Instance",
               DAG: "Data Access Group"}
    if column in special:
        return special[column]
    if column.endswith("_complete") and column.removesuffix("_complete") in FORMS:
        return "Complete?"
    name, _, code = column.partition("___")
    f = FIELD_MAP[name]
    return f"{f.label} (choice={f.choices[code]})" if code else f.label


def write_records(
    records: Iterable[Mapping[str, Any]],
    handle: IO[str],
    *,
    labels: bool = False,
    label_headers: bool = False,
    longitudinal: bool = False,
) -> int:
    """Write registry records as REDCap's flat CSV record export (also REDCap's import format).

    One row per record (per event when ``longitudinal``), plus one row per complication instance.
    ``labels`` writes choice labels instead of raw codes; ``label_headers`` writes field labels as
    headers (REDCap's "CSV labels" export).  Returns the number of rows written.
    """
    columns = [RECORD_ID] + ([EVENT] if longitudinal else []) + [REPEAT_INSTRUMENT, REPEAT_INSTANCE]
    for form in FORMS:
        columns += [c for f in FIELDS if f.form == form for c in export_columns(f) if c != RECORD_ID]
        columns.append(f"{form}_complete")
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow([header_label(c) if label_headers and c != RECORD_ID else
                     (LABELS[RECORD_ID] if label_headers else c) for c in columns])
    events = EVENTS if longitudinal else {"": ("", FORMS)}
    count = 0
    for record in records:
        values = _redcap_values(record)
        grade = record.get("clavien_dindo_max")
        for event, (event_label, forms) in events.items():
            row = dict.fromkeys(columns, "")
            row[RECORD_ID] = values[RECORD_ID]
            if longitudinal:
                row[EVENT] = f"{event_label} (Arm 1: Arm 1)" if labels else event
            filled = False
            for form in forms:
                if form == COMPLICATION_FORM:
                    continue
                form_columns = [c for f in FIELDS if f.form == form for c in export_columns(f) if c != RECORD_ID]
                has_data = any(values[c] == "1" if "___" in c else values[c] != "" for c in form_columns)
                if form == Stage.PATIENT.value or has_data:
                    row.update({c: _label(c, values[c]) if labels else values[c] for c in form_columns})
                    row[f"{form}_complete"] = "Complete" if labels else "2"
                    filled = True
            if filled:
                writer.writerow([row[c] for c in columns])
                count += 1
            if COMPLICATION_FORM in forms and grade not in (None, "none"):
                rep = dict.fromkeys(columns, "")
                rep[RECORD_ID] = values[RECORD_ID]
                if longitudinal:
                    rep[EVENT] = row[EVENT]
                rep[REPEAT_INSTRUMENT] = FORM_LABELS[COMPLICATION_FORM] if labels else COMPLICATION_FORM
                rep[REPEAT_INSTANCE] = "1"
                rep["complication_grade"] = _label("complication_grade", grade) if labels else grade
                rep["complication_description"] = "worst complication (registry)"
                rep[f"{COMPLICATION_FORM}_complete"] = "Complete" if labels else "2"
                writer.writerow([rep[c] for c in columns])
                count += 1
    return count
