"""Form fields and their validation: the registry's own rules (:mod:`oncosurg.rules`) for every field.

Registry fields are checked with :func:`oncosurg.rules.parse_record` and
:func:`oncosurg.rules.check_record`, exactly as a CSV row is; the web-only fields (the cetuximab
regimen, MDT reviews, response assessments, complications) are :class:`oncosurg.schema.Field`
declarations checked with the same :func:`oncosurg.rules.parse_cell`.  Cross-field rules that
exist only in the web app have ``W5xx`` codes (:data:`WEB_RULES`).  An error is a dict with
``code, rule, column, value, message, hint``, shown beside the field it names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from oncosurg.rules import V_REQUIRED, Issue, check_record, parse_cell, parse_record
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, FIELD_BY_NAME, FIELDS, RESPONSES, Field, Kind, Stage
from oncosurg.store.audit import text

#: Web-only cross-field rules (code → name, description); listed in docs/web.md.
WEB_RULES: dict[str, tuple[str, str]] = {
    "W501": ("before-cetuximab", "A review, assessment or stop date is before cetuximab_start."),
    "W502": ("after-last-contact", "A response assessment or stop date is after last_contact_date."),
    "W503": ("recist-mismatch", "The RECIST category given disagrees with the one computed from the sums."),
    "W504": ("recist-input", "Neither a RECIST category nor the target-lesion sums are given."),
    "W505": ("reason-required", "The record is older than the lock period: a reason is required."),
    "W506": ("surgery-required", "A complication needs a surgery on record."),
}

S = Stage
SCHEDULES = ("weekly", "biweekly")
MDT_DECISIONS = ("resectable", "potentially_resectable", "unresectable_continue", "unresectable_stop")
REGIMEN_FIELDS: tuple[Field, ...] = (
    Field("schedule", Kind.ENUM, S.CETUXIMAB, choices=SCHEDULES,
          description="weekly 250 mg/m² (400 loading) or every two weeks 500 mg/m²"),
    Field("dose_mg_m2", Kind.NUMBER, S.CETUXIMAB, minimum=0, maximum=1000, exclusive_minimum=True, unit="mg/m²",
          description="dose per administration"),
    Field("bsa_m2", Kind.NUMBER, S.CETUXIMAB, minimum=0.5, maximum=3.5, unit="m²", description="body-surface area"),
    Field("stop_date", Kind.DATE, S.CETUXIMAB, description="empty while on cetuximab"),
)
REVIEW_FIELDS: tuple[Field, ...] = (
    Field("review_date", Kind.DATE, S.CETUXIMAB, "yes"),
    Field("decision", Kind.ENUM, S.CETUXIMAB, "yes", MDT_DECISIONS, description="MDT resectability decision"),
    Field("cycles_at_review", Kind.INTEGER, S.CETUXIMAB, minimum=0, description="cetuximab cycles given so far"),
    Field("notes", Kind.TEXT, S.CETUXIMAB, max_length=2000),
)
RESPONSE_FIELDS: tuple[Field, ...] = (
    Field("assessment_date", Kind.DATE, S.CETUXIMAB, "yes"),
    Field("category", Kind.ENUM, S.CETUXIMAB, choices=RESPONSES, description="RECIST; computed from the sums if given"),
    Field("baseline_sum_mm", Kind.NUMBER, S.CETUXIMAB, minimum=0, maximum=2000, unit="mm",
          description="sum of target-lesion diameters at cetuximab start"),
    Field("current_sum_mm", Kind.NUMBER, S.CETUXIMAB, minimum=0, maximum=2000, unit="mm"),
    Field("new_lesions", Kind.BOOL, S.CETUXIMAB, choices=("yes", "no")),
)
COMPLICATION_FIELDS: tuple[Field, ...] = (
    Field("grade", Kind.ENUM, S.COMPLICATIONS, "yes", CLAVIEN_DINDO[1:], description="Clavien-Dindo"),
    Field("description", Kind.TEXT, S.COMPLICATIONS, max_length=200),
)
del S


@dataclass(frozen=True, slots=True)
class StageForm:
    """One editable card of the patient page."""

    key: str
    title: str
    fields: tuple[Field, ...]

    @property
    def registry_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.name in FIELD_BY_NAME)


def _of(*stages: Stage, skip: tuple[str, ...] = ()) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.stage in stages and f.name not in skip)


STAGE_FORMS: dict[str, StageForm] = {s.key: s for s in (
    StageForm("patient", "Patient and referral", _of(Stage.PATIENT, skip=("centre",))),
    StageForm("baseline", "Baseline tumour burden", _of(Stage.BASELINE)),
    StageForm("prior_chemo", "Prior chemotherapy", _of(Stage.PRIOR_CHEMO)),
    StageForm("cetuximab", "Cetuximab course", _of(Stage.CETUXIMAB) + REGIMEN_FIELDS),
    StageForm("surgery", "Surgery", _of(Stage.SURGERY, Stage.COMPLICATIONS)),
    StageForm("pathology", "Liver pathology", _of(Stage.PATHOLOGY_NONTUMORAL, Stage.PATHOLOGY_TUMORAL)),
    StageForm("follow_up", "Follow-up", _of(Stage.FOLLOW_UP)),
)}
#: Fields of the registration form: every required field, the patient, baseline and cetuximab cards.
REGISTER_FIELDS: tuple[Field, ...] = tuple(
    f for f in FIELDS
    if f.name != "centre" and (f.required == "yes" or f.stage in (Stage.PATIENT, Stage.BASELINE, Stage.CETUXIMAB)))


def issue_dict(issue: Issue) -> dict[str, Any]:
    d = issue.to_dict()
    d.pop("line", None)
    return d


def web_error(code: str, column: str, value: Any, message: str, hint: str) -> dict[str, Any]:
    return {"code": code, "rule": WEB_RULES[code][0], "column": column, "value": text(value), "message": message,
            "hint": hint}


def cells_of(record: Mapping[str, Any]) -> dict[str, str]:
    """Typed registry values → the raw cells a CSV row would have."""
    return {c: text(record.get(c)) or "" for c in COLUMNS}


def validate_registry(current: Mapping[str, Any], form: Mapping[str, str], names: Sequence[str], *,
                      today: dt.date, postop_window_days: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Overlay the submitted ``names`` (absent = unchanged, empty = cleared) on ``current`` and run
    every registry rule on the whole record, as an import would."""
    cells = cells_of(current)
    for name in names:
        if name in form:
            cells[name] = str(form[name])
    record, issues = parse_record(cells, line=None, today=today)
    issues += check_record(record, line=None, postop_window_days=postop_window_days,
                           failed={i.column for i in issues if i.column})
    return record, [issue_dict(i) for i in issues]


def parse_fields(fields: Sequence[Field], form: Mapping[str, str], *, today: dt.date,
                 current: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Web-only fields with the registry's cell rules (``current`` supplies absent keys)."""
    values: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    for field in fields:
        if field.name not in form and current is not None:
            values[field.name] = current.get(field.name)
            continue
        raw = str(form.get(field.name, ""))
        if field.kind is Kind.TEXT and field.max_length > 64:
            # free text (notes, descriptions): length and control characters only; never exported as CSV cells
            value = raw.replace("\r\n", "\n").strip()
            if len(value) > field.max_length:
                errors.append({"code": "V309", "rule": "too-long", "column": field.name, "value": value[:40],
                               "message": f"at most {field.max_length} characters",
                               "hint": f"shorten it to {field.max_length} characters or fewer"})
            elif any(ord(ch) < 32 and ch not in "\n\t" for ch in value):
                errors.append({"code": "V313", "rule": "control-characters", "column": field.name,
                               "value": None, "message": "text contains control characters",
                               "hint": "remove the non-printing characters"})
            values[field.name] = value or None
            continue
        text_value = raw.strip()
        if not text_value:
            values[field.name] = None
            if field.required == "yes":
                errors.append(issue_dict(Issue(V_REQUIRED.code, "required value is empty",
                                               f"fill in {field.describe_type()}", None, field.name, raw)))
            continue
        value, problem = parse_cell(field, text_value, line=None, today=today)
        values[field.name] = value
        if problem is not None:
            errors.append(issue_dict(problem))
    return values, errors


def check_dates_within(record: Mapping[str, Any], column: str, value: dt.date | None, *, until_contact: bool = True
                       ) -> list[dict[str, Any]]:
    """``value`` must lie in [cetuximab_start, last_contact_date] (W501, W502; W502 only ``until_contact``)."""
    out: list[dict[str, Any]] = []
    start, contact = record.get("cetuximab_start"), record.get("last_contact_date")
    if value is None:
        return out
    if start and value < start:
        out.append(web_error("W501", column, value, f"{column} is before cetuximab_start ({start})",
                             "check the date: it must follow the start of cetuximab"))
    if until_contact and contact and value > contact:
        out.append(web_error("W502", column, value, f"{column} is after last_contact_date ({contact})",
                             "update the follow-up (last contact) first, or correct this date"))
    return out


#: Per field, what a form row holds whatever the value (widget, choices, label, help…), by ``id`` of the
#: field (kept in the entry, so an id is never reused): a patient page draws ~75 fields, and building
#: these parts again for each (``describe_type`` above all) was a tenth of the page's rendering.
_STATIC: dict[int, tuple[Field, dict[str, Any], dict[str, Any]]] = {}


def _static_row(f: Field) -> tuple[dict[str, Any], dict[str, Any]]:
    """The row's keys before the value and after it (the order rows always had)."""
    found = _STATIC.get(id(f))
    if found is not None and found[0] is f:
        return found[1], found[2]
    if f.kind is Kind.BOOL:
        widget, choices = "select", ("yes", "no")
    elif f.kind is Kind.ENUM:
        widget, choices = "select", f.choices
    elif f.kind is Kind.DATE:
        widget, choices = "date", ()
    elif f.kind in (Kind.INTEGER, Kind.NUMBER):
        widget, choices = "number", ()
    elif f.kind is Kind.TEXT and f.max_length > 200:
        widget, choices = "textarea", ()
    else:
        widget, choices = "text", ()
    head = {"name": f.name, "label": f.name.replace("_", " "), "widget": widget, "choices": choices}
    tail = {"required": f.required == "yes", "help": f.describe_type() + (f" ({f.unit})" if f.unit else ""),
            "description": f.description, "step": "1" if f.kind is Kind.INTEGER else "any"}
    if len(_STATIC) > 4096:  # fields built at run time (none today): stay bounded
        _STATIC.clear()
    _STATIC[id(f)] = (f, head, tail)
    return head, tail


def form_rows(fields: Sequence[Field], values: Mapping[str, Any], errors: Sequence[Mapping[str, Any]]
              ) -> list[dict[str, Any]]:
    """What a template needs to draw each field: name, label, input kind, choices, value, its errors."""
    rows = []
    for f in fields:
        head, tail = _static_row(f)
        value = values.get(f.name)
        rows.append({**head, "value": value if isinstance(value, str) else (text(value) or ""), **tail,
                     "errors": [e for e in errors if e.get("column") == f.name] if errors else []})
    return rows
