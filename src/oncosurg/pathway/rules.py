"""Rules across a patient's episodes (codes ``E6xx``), beside the registry's single-value rules.

Every ingest path of the episode model (the long registry format, REDCap repeating instruments,
FHIR resources, Excel sheets, the web forms) checks a whole patient with :func:`check_patient`
after each row passed its own single-value checks (:func:`oncosurg.rules.parse_cell`).  A rule
reports where the offending row is (file and line, when the record carries them) with the same
:class:`oncosurg.rules.Issue` as every other rule, and never reports a consequence of a value that
already failed its own check.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import (
    FIRST_STAGE_OF,
    OPERATIONS,
    TABLE_BY_NAME,
    Table,
    is_resection,
)
from oncosurg.rules import (
    E_DUPLICATE_EPISODE,
    E_DUPLICATE_KEY,
    E_LINES,
    E_ORDER,
    E_ORPHAN,
    E_POSTOP_DEATH,
    E_RECURRENCE,
    E_REFERRAL,
    E_RESECTION_ONLY,
    E_VITAL,
    Issue,
    Rule,
)
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS

Where = Callable[[Table, Mapping[str, Any]], tuple[str | None, int | None]]


def _no_location(table: Table, row: Mapping[str, Any]) -> tuple[str | None, int | None]:
    return (TABLE_BY_NAME[table].file, None)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def check_patient(
    record: PatientRecord,
    *,
    where: Where = _no_location,
    failed: Iterable[tuple[Table, str, int | None]] = (),
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
) -> list[Issue]:
    """Every ``E6xx`` finding on one patient.

    ``where(table, row)`` gives the (file, line) of a row; ``failed`` lists cells (table, column,
    line) that already failed their own single-value check, whose consequences are not reported.
    A value that failed (``None`` in the record) is unknown: no rule compares it, and while a
    parent's key is unknown no child of that table is called an orphan (it may name that parent).
    """
    out: list[Issue] = []
    bad_cells = {(table, column, line) for table, column, line in failed}

    def add(rule: Rule, table: Table, row: Mapping[str, Any], column: str, message: str, hint: str) -> None:
        file, line = where(table, row)
        if (table, column, line) in bad_cells:
            return
        out.append(Issue(rule.code, message, hint, line, column, _text(row.get(column)), file))

    rows = record.rows
    failed_lines = {(table, line) for table, _, line in bad_cells}
    _keys(record, add, lambda table, row: (table, where(table, row)[1]) in failed_lines)
    procedures = {p["procedure_no"]: p for p in rows(Table.LIVER_PROCEDURE) if p.get("procedure_no") is not None}
    line_numbers = {ln["line_number"] for ln in rows(Table.THERAPY_LINE)}
    unknown_procedure = len(procedures) < len(rows(Table.LIVER_PROCEDURE))
    for table in (Table.COMPLICATION, Table.PATHOLOGY):
        for row in rows(table):
            if row.get("procedure_no") not in procedures and not unknown_procedure:
                add(E_ORPHAN, table, row, "procedure_no",
                    f"procedure {row.get('procedure_no')} is not a liver procedure of this patient",
                    "add the procedure to liver_procedures, or correct procedure_no")
    for table in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT):
        for row in rows(table):
            number = row.get("line_number")
            if number is not None and number not in line_numbers and None not in line_numbers:
                add(E_ORPHAN, table, row, "line_number",
                    f"therapy line {row['line_number']} is not a line of this patient",
                    "add the line to therapy_lines, or correct line_number")
    _lines(record, add)
    _procedures(record, procedures, add)
    _contacts_and_order(record, {n: p for n, p in procedures.items() if p.get("procedure_date") is not None}, add,
                        postop_window_days)
    _referral(record, add)
    return out


#: Per episode table: its key columns and the columns compared for a duplicate (all but its own key).
_KEY_AND_BODY = {spec.table: (spec.key, tuple(f.name for f in spec.fields if f.name not in spec.key[-1:]))
                 for spec in TABLE_BY_NAME.values() if spec.table is not Table.PATIENT}


def _keys(record: PatientRecord, add: Callable[..., None], failed: Callable[[Table, Mapping[str, Any]], bool]
          ) -> None:
    for table, rows in record.episodes.items():
        spec = TABLE_BY_NAME[table]
        key_columns, body_columns = _KEY_AND_BODY[table]
        seen: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        content: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        for row in rows:
            key = tuple(map(row.get, key_columns))
            if None in key:
                continue
            if key in seen:
                add(E_DUPLICATE_KEY, spec.table, row, spec.own_key,
                    f"{spec.title.lower()} {'/'.join(map(str, key))} appears twice for this patient",
                    f"give each row its own {spec.own_key}, or remove the repeated row")
                continue
            seen[key] = row
            if spec.date is None:
                continue
            body = tuple(map(row.get, body_columns))
            if failed(table, row):
                continue  # a value that failed its own check is unknown: no duplicate to speak of
            if body in content and row.get(spec.date) is not None:
                first = content[body]
                add(E_DUPLICATE_EPISODE, spec.table, row, spec.own_key,
                    f"same date and content as {spec.own_key} {first.get(spec.own_key)}",
                    "remove the repeated entry, or correct the date if these are two episodes")
            content.setdefault(body, row)


def _lines(record: PatientRecord, add: Callable[..., None]) -> None:
    lines = sorted((ln for ln in record.rows(Table.THERAPY_LINE) if ln.get("line_number") is not None),
                   key=lambda ln: ln["line_number"])
    dated = [ln for ln in lines if ln.get("start_date") is not None]
    last_dated = dated[-1]["line_number"] if dated else None
    for ln in lines:
        start, stop = ln.get("start_date"), ln.get("stop_date")
        if start is None and (last_dated is None or ln["line_number"] > last_dated):
            add(E_LINES, Table.THERAPY_LINE, ln, "start_date",
                f"line {ln['line_number']} has no start date and no later line is dated",
                "fill in the start date (only earlier lines known by their number may be undated)")
        if start is not None and stop is not None and stop < start:
            add(E_LINES, Table.THERAPY_LINE, ln, "stop_date", f"the line stops before it starts ({start})",
                "check both dates")
    for before, after in itertools.pairwise(dated):
        if after["start_date"] < before["start_date"]:
            add(E_LINES, Table.THERAPY_LINE, after, "start_date",
                f"line {after['line_number']} starts before line {before['line_number']} ({before['start_date']})",
                "line numbers must follow the order of the start dates: renumber the lines or correct the date")
        elif before.get("stop_date") is not None and after["start_date"] < before["stop_date"]:
            add(E_LINES, Table.THERAPY_LINE, after, "start_date",
                f"line {after['line_number']} starts before line {before['line_number']} stopped "
                f"({before['stop_date']})",
                "correct the stop date of the earlier line or the start of this one")


def _procedures(record: PatientRecord, procedures: Mapping[int, Mapping[str, Any]],
                add: Callable[..., None]) -> None:
    dated = {n: p for n, p in procedures.items() if p.get("procedure_date") is not None}
    for p in procedures.values():
        if p.get("margin") is not None and p.get("procedure_type") is not None and not is_resection(
                p.get("procedure_type"), p.get("resected_segments")):
            add(E_RESECTION_ONLY, Table.LIVER_PROCEDURE, p, "margin",
                f"a margin is recorded for a procedure of type {p.get('procedure_type')}",
                "clear the margin, or correct the procedure type if liver was resected")
        second = p.get("procedure_type")
        if second in FIRST_STAGE_OF and p.get("procedure_date") is not None:
            firsts = [q for q in dated.values() if q.get("procedure_type") == FIRST_STAGE_OF[second]]
            if firsts and all(q["procedure_date"] >= p["procedure_date"] for q in firsts):
                add(E_ORDER, Table.LIVER_PROCEDURE, p, "procedure_date",
                    f"the {second.replace('_', ' ')} is not after its first stage "
                    f"({min(q['procedure_date'] for q in firsts)})",
                    "a second stage follows its first stage: check both dates and types")
    for row in record.rows(Table.PATHOLOGY):
        p = procedures.get(row.get("procedure_no"))
        if p is not None and p.get("procedure_type") is not None and not is_resection(
                p.get("procedure_type"), p.get("resected_segments")):
            add(E_RESECTION_ONLY, Table.PATHOLOGY, row, "procedure_no",
                f"pathology is recorded for procedure {row['procedure_no']}, a {p.get('procedure_type')}",
                "attach the pathology to the resection it comes from")
    for row in record.rows(Table.COMPLICATION):
        p = dated.get(row.get("procedure_no"))
        date = row.get("complication_date")
        if p is not None and date is not None and date < p["procedure_date"]:
            add(E_ORDER, Table.COMPLICATION, row, "complication_date",
                f"the complication is dated before its procedure ({p['procedure_date']})",
                "check the date, or attach the complication to the right procedure")
    resections = sorted(p["procedure_date"] for p in dated.values()
                        if is_resection(p.get("procedure_type"), p.get("resected_segments"))
                        or p.get("procedure_type") == "ablation")
    if len(dated) < len(record.rows(Table.LIVER_PROCEDURE)) or any(
            p.get("procedure_type") is None for p in dated.values()):
        return  # a procedure of unknown date or type may be the resection a recurrence follows
    for event in record.rows(Table.DISEASE_EVENT):
        if event.get("event_kind") == "recurrence" and event.get("event_date") is not None and not any(
                d <= event["event_date"] for d in resections):
            add(E_RECURRENCE, Table.DISEASE_EVENT, event, "event_kind",
                "a recurrence without an earlier resection or ablation",
                "record the event as 'progression', or add the resection it recurs after")


def _dated(record: PatientRecord) -> list[tuple[Table, Mapping[str, Any], str]]:
    out = []
    for spec in TABLE_BY_NAME.values():
        if spec.date is None or spec.table in (Table.CONTACT, Table.MDT_REVIEW):
            continue  # an MDT may discuss a patient it has not seen: reviews may follow the last contact
        for row in record.rows(spec.table):
            if row.get(spec.date) is not None:
                out.append((spec.table, row, spec.date))
    for ln in record.rows(Table.THERAPY_LINE):
        if ln.get("stop_date") is not None:
            out.append((Table.THERAPY_LINE, ln, "stop_date"))
    return out


def _contacts_and_order(record: PatientRecord, procedures: Mapping[int, Mapping[str, Any]],
                        add: Callable[..., None], window: int) -> None:
    contacts = [c for c in record.rows(Table.CONTACT) if c.get("contact_date") is not None]
    if not record.rows(Table.CONTACT):
        add(E_VITAL, Table.PATIENT, record.patient, "patient_id", "the patient has no contact (last known date)",
            "add a contact with the date the patient was last known alive, or the date of death")
        return
    deaths = [c for c in contacts if c.get("vital_status") == "dead"]
    last = max((c["contact_date"] for c in contacts), default=None)
    for extra in deaths[1:]:
        add(E_VITAL, Table.CONTACT, extra, "vital_status", f"a second death (first on {deaths[0]['contact_date']})",
            "keep one contact with vital_status 'dead'")
    death = deaths[0]["contact_date"] if deaths else None
    if death is not None and death < last:
        later = max(contacts, key=lambda c: c["contact_date"])
        add(E_VITAL, Table.CONTACT, later, "contact_date", f"a contact after the death ({death})",
            "the death is the last contact: correct this date or the date of death")
    for table, row, column in _dated(record):
        value = row[column]
        if death is not None and value > death:
            add(E_ORDER, table, row, column, f"dated after the death ({death})", "check the date")
        elif last is not None and value > last and len(contacts) == len(record.rows(Table.CONTACT)):
            add(E_ORDER, table, row, column, f"dated after the last contact ({last})",
                "add a contact on or after this date (the last contact is the last date the patient was known "
                "alive)")
    grades_v = {c.get("procedure_no") for c in record.rows(Table.COMPLICATION) if c.get("grade") == "V"}
    for row in record.rows(Table.COMPLICATION):
        p = procedures.get(row.get("procedure_no"))
        if row.get("grade") != "V" or p is None:
            continue
        if death is None or not 0 <= (death - p["procedure_date"]).days <= window:
            add(E_POSTOP_DEATH, Table.COMPLICATION, row, "grade",
                f"grade V (death) needs a death within {window} days of the procedure ({p['procedure_date']})",
                "record the death as a contact with vital_status 'dead', or correct the grade")
    if death is None:
        return
    operations = [p for p in procedures.values() if p.get("procedure_type") in OPERATIONS
                  and 0 <= (death - p["procedure_date"]).days <= window]
    if operations:
        last_op = max(operations, key=lambda p: p["procedure_date"])
        unknown_grade = any(c.get("grade") is None for c in record.rows(Table.COMPLICATION))
        if not unknown_grade and not any(p["procedure_no"] in grades_v for p in operations):
            add(E_POSTOP_DEATH, Table.LIVER_PROCEDURE, last_op, "procedure_date",
                f"death on {death}, {(death - last_op['procedure_date']).days} days after this procedure, "
                f"within the postoperative window ({window} days), but no grade V complication is recorded",
                "add a Clavien-Dindo grade V complication to the procedure, or check the dates")


def _referral(record: PatientRecord, add: Callable[..., None]) -> None:
    patient = record.patient
    date = patient.get("referral_date")
    if date is None:
        return
    if patient.get("referral") == "in_house":
        add(E_REFERRAL, Table.PATIENT, patient, "referral_date", "a referral date for a patient treated in-house",
            "clear referral_date, or set referral to 'referred'")
        return
    for ln in record.rows(Table.THERAPY_LINE):
        if ln.get("given_at") == "centre" and ln.get("start_date") is not None and ln["start_date"] < date:
            add(E_REFERRAL, Table.THERAPY_LINE, ln, "start_date",
                f"a line given at the centre starts before the referral ({date})",
                "lines before the referral were given elsewhere: set given_at to 'elsewhere' or correct the dates")
