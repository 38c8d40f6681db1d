"""REDCap flat record export (CSV) of the flat project of earlier releases → validated registry records.

Reads the export of a project built from the flat dictionary of earlier releases
(:mod:`oncosurg.export.redcap`; today's ``oncosurg redcap dictionary`` describes the episode model,
read by :mod:`oncosurg.ingest.redcap_episodes`, which hands exports of the flat project here), as
REDCap writes it: one row per record × event × repeat
instance; ``redcap_event_name`` (longitudinal projects), ``redcap_repeat_instrument`` and
``redcap_repeat_instance``; checkbox options as ``field___code`` columns (1/0, Checked/Unchecked or
the option's label: "export checkbox labels"); raw values or labels, and variable names or labels as
headers; any CSV delimiter; numbers with a decimal comma.  ``<form>_complete``, ``<form>_timestamp``,
``redcap_survey_identifier`` and ``redcap_data_access_group`` columns are ignored.

The rows of one record are merged (a field given twice with different values is an error), the
repeating ``complication`` instances give ``clavien_dindo_max`` (the worst grade), and the result
is validated by the registry's rules (:mod:`oncosurg.ingest._validate`).  Issues name the line of
the row the value came from.

The record id is ``record_id`` (``centre::patient_id``, see :mod:`oncosurg.export.redcap`); exports
of older projects whose record id is ``patient_id`` are read too.  ``patient_id`` and ``centre``
come from their fields, else from the record id.  A field whose column the export does not have
(an export of *selected instruments or fields*) is not carried: an update leaves it unchanged; a
column present with an empty cell is carried empty.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path

from oncosurg.export import redcap as rc
from oncosurg.ingest._validate import RawRecord, validate_records
from oncosurg.ingest.csv import _FIELD_LIMIT, ParsedFile, _decode
from oncosurg.rules import (
    F_EMPTY,
    F_LAYOUT,
    F_ROW_WIDTH,
    F_SYNTAX,
    H_BLANK,
    H_DUPLICATE,
    H_MISSING,
    H_UNKNOWN,
    V_ENUM,
    V_REQUIRED,
    V_SEGMENTS,
    Issue,
)
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS

_IGNORED = "<ignored>"
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")
_SPECIAL_LABELS = {"Event Name": rc.EVENT, "Repeat Instrument": rc.REPEAT_INSTRUMENT,
                   "Repeat Instance": rc.REPEAT_INSTANCE, "Data Access Group": _IGNORED,
                   "Survey Identifier": _IGNORED, "Survey Timestamp": _IGNORED, "Complete?": _IGNORED}


def _header_names() -> tuple[dict[str, str], dict[str, str]]:
    """Raw column names and header labels → export column (``_IGNORED`` for columns we skip)."""
    raw: dict[str, str] = {rc.EVENT: rc.EVENT, rc.REPEAT_INSTRUMENT: rc.REPEAT_INSTRUMENT,
                           rc.REPEAT_INSTANCE: rc.REPEAT_INSTANCE, rc.DAG: _IGNORED,
                           "redcap_survey_identifier": _IGNORED}
    labels: dict[str, str] = dict(_SPECIAL_LABELS)
    for form in rc.FORMS:
        raw[f"{form}_complete"] = raw[f"{form}_timestamp"] = _IGNORED
    for f in rc.FIELDS:
        for column in rc.export_columns(f):
            raw[column] = column
            labels.setdefault(rc.header_label(column), column)
    return raw, labels


_RAW_HEADERS, _LABEL_HEADERS = _header_names()


@dataclass(slots=True)
class _Record:
    """The rows of one REDCap record, merged."""

    line: int
    record_id: str
    values: dict[str, tuple[str, int, str]] = field(default_factory=dict)  # name → (value, line, event)
    checked: dict[str, dict[str, int]] = field(default_factory=dict)  # checkbox → {code: line}
    grades: list[tuple[str, int]] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)


def read_redcap_export(
    path: str | Path,
    *,
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> ParsedFile:
    """Read and validate a REDCap flat CSV export. See :func:`parse_redcap_export`."""
    path = Path(path)
    return parse_redcap_export(path.read_bytes(), source=str(path), centre=centre,
                               postop_window_days=postop_window_days, today=today,
                               case_sensitive_ids=case_sensitive_ids)


def parse_redcap_export(
    data: bytes,
    *,
    source: str = "<input>",
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
    delimiter: str = ",",
) -> ParsedFile:
    """Validate the bytes of a REDCap flat CSV record export (raw or labels; ``delimiter``: the CSV
    delimiter chosen in REDCap's export options)."""
    sha256 = hashlib.sha256(data).hexdigest()
    probe = ParsedFile(source=source, sha256=sha256)
    text = _decode(data, probe)
    if text is None:
        return probe
    if not text.strip():
        probe.issues.append(Issue(F_EMPTY.code, "the file is empty",
                                  "export the records from REDCap as 'CSV / Microsoft Excel (raw data)'"))
        return probe
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, delimiter=delimiter)
    try:
        header = next(reader)
    except csv.Error as exc:
        probe.issues.append(Issue(F_SYNTAX.code, f"the header row cannot be read as CSV ({exc})",
                                  "export the records again as CSV", 1))
        return probe
    columns = _check_header(header, probe.issues)
    if columns is None:
        return probe
    key = rc.RECORD_ID if rc.RECORD_ID in columns else "patient_id"  # older projects: patient_id
    carried = _carried(columns)
    records: dict[str, _Record] = {}
    file_issues = probe.issues
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            file_issues.append(Issue(F_SYNTAX.code, f"CSV syntax error ({exc})",
                                     "close the quoted cell or remove the stray quote", reader.line_num + 1))
            break
        line = reader.line_num
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            file_issues.append(Issue(F_ROW_WIDTH.code, f"row has {len(row)} cells, the header has {len(header)}",
                                     "export the records again; do not edit the export by hand", line))
            continue
        cells = {name: row[i] for name, i in columns.items()}
        record_id = cells[key].strip()
        if not record_id:
            file_issues.append(Issue(V_REQUIRED.code, "the record id is empty", "every row needs its record id",
                                     line, key, ""))
            continue
        record = records.setdefault(record_id, _Record(line, cells[key]))
        _merge_row(record, cells, line)
    grades = "complication_grade" in columns  # an export without the complication instrument has no grades
    raws = [_raw_record(rid, rec, carried, grades_exported=grades) for rid, rec in records.items()]
    return validate_records(raws, source=source, sha256=sha256, centre=centre, today=today,
                            postop_window_days=postop_window_days, file_issues=file_issues,
                            case_sensitive_ids=case_sensitive_ids, unit="line")


def _carried(columns: dict[str, int]) -> set[str]:
    """The registry columns an export's header carries (``clavien_dindo_max`` through ``any_complication``;
    the complication instances alone carry it only for records that have some, see :func:`_complications`)."""
    carried = {"patient_id"}
    for column in columns:
        name = column.partition("___")[0]
        if name in COLUMNS:
            carried.add(name)
        elif name == "any_complication":
            carried.add("clavien_dindo_max")
    return carried


def _check_header(header: list[str], issues: list[Issue]) -> dict[str, int] | None:
    columns: dict[str, int] = {}
    ok = True
    for i, cell in enumerate(header):
        name = cell.strip()
        column = _RAW_HEADERS.get(name) or _LABEL_HEADERS.get(name)
        if not name:
            issues.append(Issue(H_BLANK.code, f"header cell {i + 1} is empty", "export the records again", 1))
            ok = False
        elif column is None:
            guess = get_close_matches(name, list(_RAW_HEADERS), n=1)
            hint = (f"did you mean '{guess[0]}'?" if guess else
                    "build the REDCap project from `oncosurg redcap dictionary`, or remove the column")
            issues.append(Issue(H_UNKNOWN.code, f"'{name}' is not a variable of the oncosurg REDCap project",
                                hint, 1, name[:64]))
            ok = False
        elif column == _IGNORED:
            continue
        elif column in columns:
            issues.append(Issue(H_DUPLICATE.code, f"column '{name}' appears twice", "keep one of the two columns",
                                1, column))
            ok = False
        else:
            columns[column] = i
    if rc.RECORD_ID not in columns and "patient_id" not in columns and not any(
            i.column == rc.RECORD_ID for i in issues):
        issues.append(Issue(H_MISSING.code, f"the record id column '{rc.RECORD_ID}' is missing",
                            f"export the records with the record id field '{rc.RECORD_ID}'", 1, rc.RECORD_ID))
        ok = False
    return columns if ok else None


def _code(f: rc.RedcapField, value: str) -> str:
    """A raw or label value of a choice/yes-no field → the registry's text (unknown values unchanged)."""
    text = value.strip()
    if f.field_type == "yesno":
        return {"1": "yes", "0": "no", "yes": "yes", "no": "no"}.get(text.lower(), value)
    if f.choices:
        if text in f.choices:
            return text
        by_label = {label.casefold(): code for code, label in f.choices.items()}
        return by_label.get(text.casefold(), value)
    return value


def _merge_row(record: _Record, cells: dict[str, str], line: int) -> None:
    event = cells.get(rc.EVENT, "").strip()
    instrument = cells.get(rc.REPEAT_INSTRUMENT, "").strip()
    if instrument and instrument not in (rc.COMPLICATION_FORM, rc.FORM_LABELS[rc.COMPLICATION_FORM]):
        record.issues.append(Issue(F_LAYOUT.code, f"'{instrument}' is not a repeating instrument of the project",
                                   f"only '{rc.COMPLICATION_FORM}' repeats", line, rc.REPEAT_INSTRUMENT, instrument))
        return
    for column, value in cells.items():
        name, _, option = column.partition("___")
        f = rc.FIELD_MAP.get(name)
        if f is None or name == rc.RECORD_ID or value.strip() == "":
            continue
        if option:
            label = f.choices.get(option, option).casefold()  # REDCap's option "export checkbox labels"
            state = {"1": True, "checked": True, label: True, "0": False, "unchecked": False}.get(
                value.strip().casefold())
            if state is None:
                record.issues.append(Issue(V_SEGMENTS.code, "a checkbox value must be 1/0, Checked/Unchecked or the "
                                           f"option's label ({f.choices.get(option, option)!r})",
                                           "export raw data or labels from REDCap unchanged", line, column, value))
            elif state:
                record.checked.setdefault(name, {}).setdefault(option, line)
            continue
        if f.form == rc.COMPLICATION_FORM:
            if name == "complication_grade":
                record.grades.append((_code(f, value), line))
            continue
        converted = _code(f, value)
        if f.validation == "number" and _DECIMAL_COMMA.fullmatch(converted.strip()):
            converted = converted.strip().replace(",", ".")  # REDCap's export option "decimal character: comma"
        previous = record.values.get(name)
        if previous is None:
            record.values[name] = (converted, line, event)
        elif previous[0] != converted:
            where = f" (event '{previous[2]}')" if previous[2] else ""
            record.issues.append(Issue(F_LAYOUT.code,
                                       f"differs from {previous[0]!r} given on line {previous[1]}{where}",
                                       "keep one value per record: enter the field in one event only",
                                       line, name, value))


def _raw_record(record_id: str, rec: _Record, carried: set[str], *, grades_exported: bool = True) -> RawRecord:
    raw = RawRecord(line=rec.line, cells={}, record_where=f"record '{record_id}'", issues=list(rec.issues))
    for name, (value, line, event) in rec.values.items():
        if name == "any_complication":
            continue
        raw.cells[name] = value
        raw.lines[name] = line
        if event:
            raw.where[name] = f"record '{record_id}', event '{event}'"
    for name, options in rec.checked.items():
        raw.cells[name] = ";".join(sorted(options, key=int))
        raw.lines[name] = min(options.values())
    grade_known = _complications(raw, rec, grades_exported=grades_exported)
    _identity(raw, rec)
    for name in carried - (set() if grade_known else {"clavien_dindo_max"}):
        raw.cells.setdefault(name, "")  # the export has the column, this record leaves it empty
    return raw


def _identity(raw: RawRecord, rec: _Record) -> None:
    """``patient_id`` and ``centre`` from their fields, else from the record id ``centre::patient_id``."""
    id_centre, id_patient = rc.split_record_id(rec.record_id)
    given = {"patient_id": raw.cells.get("patient_id", ""), "centre": raw.cells.get("centre", "")}
    for column, from_id in (("patient_id", id_patient), ("centre", id_centre)):
        if from_id is None:
            continue
        if not given[column].strip():
            raw.cells[column] = from_id
            raw.lines[column] = rec.line
        elif given[column] != from_id:
            raw.issues.append(Issue(F_LAYOUT.code, f"the record id {rec.record_id!r} names {column} {from_id!r}",
                                    f"keep the record id as centre::patient_id ({rc.record_id(given)!r})",
                                    raw.lines.get(column, rec.line), column, given[column]))
            raw.covered.add(column)


def _complications(raw: RawRecord, rec: _Record, *, grades_exported: bool = True) -> bool:
    """``any_complication`` and the repeating complication grades → ``clavien_dindo_max``; ``False`` when
    the export cannot tell the grade (a 'yes' answer in an export without the complication instrument)."""
    answer = rec.values.get("any_complication")
    line = answer[1] if answer else (rec.grades[0][1] if rec.grades else rec.line)
    raw.lines["clavien_dindo_max"] = line
    grades = []
    for grade, grade_line in rec.grades:
        if grade in rc.GRADES:
            grades.append(grade)
        else:
            raw.issues.append(Issue(V_ENUM.code, f"'{grade}' is not a Clavien-Dindo grade",
                                    "use one of " + ", ".join(rc.GRADES), grade_line, "complication_grade", grade))
    if answer and answer[0] == "no" and rec.grades:
        raw.issues.append(Issue(F_LAYOUT.code, f"any_complication is 'no' but {len(rec.grades)} complication "
                                "instance(s) are recorded", "answer 'yes' or delete the complication instances",
                                line, "any_complication", "no"))
    elif answer and answer[0] == "yes" and not grades and not grades_exported:
        return False
    elif answer and answer[0] == "yes" and not grades and not raw.issues:
        raw.issues.append(Issue(F_LAYOUT.code, "any_complication is 'yes' but no complication grade is recorded",
                                "add a 'complication' instance with its Clavien-Dindo grade", line,
                                "any_complication", "yes"))
    elif answer and answer[0] not in ("yes", "no"):
        raw.issues.append(Issue(V_ENUM.code, "not a yes/no value", "write 1 or 0 (Yes or No)", line,
                                "any_complication", answer[0]))
    if len(raw.issues) > len(rec.issues):
        raw.covered.add("clavien_dindo_max")  # already explained by the complication answer or grades
    if grades:
        raw.cells["clavien_dindo_max"] = max(grades, key=CLAVIEN_DINDO.index)
    elif answer and answer[0] == "no":
        raw.cells["clavien_dindo_max"] = "none"
    return True
