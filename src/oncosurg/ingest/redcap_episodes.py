"""REDCap flat CSV record exports → checked patient records, for both oncosurg REDCap projects.

:func:`parse_redcap` reads an export of the episode project (:mod:`oncosurg.export.redcap_episodes`:
a patient instrument and one repeating instrument per episode table) into
:class:`~oncosurg.pathway.flat.PatientRecord`\\ s, and hands an export of the flat project of
earlier releases (one instrument per stage, :mod:`oncosurg.export.redcap`) to the flat reader
(:mod:`oncosurg.ingest.redcap`): the header says which project wrote the file.

Everything REDCap's export dialog can produce is read: raw data or labels (choices, yes/no,
instrument and event names), variable names or field labels as headers, checkbox columns
``field___code`` as 1/0, Checked/Unchecked or — REDCap's "export checkbox labels" option — the
option's label when checked and empty when not, any CSV delimiter (comma, semicolon, tab, pipe,
caret) and numbers with a decimal comma.  ``<form>_complete``, ``<form>_timestamp``,
``redcap_data_access_group`` and ``redcap_survey_identifier`` are ignored.

What the export does not carry stays unchanged on ``import --update``: an instrument whose
variables are not in the header (an export of *selected instruments*) is not carried, nor a
variable left out (*selected fields*); records left out (*selected records*) are not touched; an
instance that the export does not list is kept.  A column present with an empty cell is carried
empty (it clears, with ``--allow-clear``).  Issues name the line of the row the value came from,
the REDCap variable, the value, the rule and the fix, prefixed with the record and the instance.
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
from typing import Any

from oncosurg.export import redcap as flat_rc
from oncosurg.export import redcap_episodes as rc
from oncosurg.ingest.csv import _FIELD_LIMIT, ParsedFile, _decode
from oncosurg.ingest.episode_rows import EpisodeFile, RecordBuilder, StoredLookup
from oncosurg.pathway.model import TABLE_BY_NAME, Table
from oncosurg.rules import (
    F_EMPTY,
    F_LAYOUT,
    F_ROW_WIDTH,
    F_SYNTAX,
    H_BLANK,
    H_DUPLICATE,
    H_MISSING,
    H_UNKNOWN,
    V_BOOL,
    V_REQUIRED,
    V_SEGMENTS,
    Issue,
    parse_cell,
)
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS, FIELD_BY_NAME, Kind

_IGNORED = "<ignored>"
#: Delimiters REDCap's export offers.
DELIMITERS = (",", ";", "\t", "|", "^")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")
_SPECIAL_LABELS = {"Event Name": rc.EVENT, "Repeat Instrument": rc.REPEAT_INSTRUMENT,
                   "Repeat Instance": rc.REPEAT_INSTANCE, "Data Access Group": _IGNORED,
                   "Survey Identifier": _IGNORED, "Survey Timestamp": _IGNORED, "Complete?": _IGNORED}


def _header_names() -> tuple[dict[str, str], dict[str, str]]:
    """Raw column names and header labels → export column (``_IGNORED`` for columns we skip)."""
    raw: dict[str, str] = {rc.RECORD_ID: rc.RECORD_ID, rc.EVENT: rc.EVENT, rc.REPEAT_INSTRUMENT: rc.REPEAT_INSTRUMENT,
                           rc.REPEAT_INSTANCE: rc.REPEAT_INSTANCE, rc.DAG: _IGNORED,
                           "redcap_survey_identifier": _IGNORED}
    labels: dict[str, str] = {**_SPECIAL_LABELS, rc.LABELS[rc.RECORD_ID]: rc.RECORD_ID}
    for form in rc.FORMS:
        raw[f"{form}_complete"] = raw[f"{form}_timestamp"] = _IGNORED
    for v in rc.VARIABLES[1:]:
        for column in v.columns():
            raw[column] = column
            labels.setdefault(rc.header_label(column), column)
    return raw, labels


_RAW, _LABELS = _header_names()
#: Export column → (variable, variable name, checkbox option).
_COLUMN = {c: (rc.VARIABLE_MAP[c.partition("___")[0]], c.partition("___")[0], c.partition("___")[2])
           for c in _RAW if c.partition("___")[0] in rc.VARIABLE_MAP}
_NO_VARIABLE: tuple[Any, str, str] = (None, "", "")
_SPECIAL = {name for name, column in {**_RAW, **_SPECIAL_LABELS}.items() if column == _IGNORED
            or column in (rc.RECORD_ID, rc.EVENT, rc.REPEAT_INSTRUMENT, rc.REPEAT_INSTANCE)}
#: Header cells of the flat project of earlier releases (variables, labels, its instruments' status columns).
_FLAT = ({name for f in flat_rc.FIELDS for name in flat_rc.export_columns(f)} | {"patient_id"}
         | {flat_rc.header_label(c) for f in flat_rc.FIELDS for c in flat_rc.export_columns(f)
            if c != flat_rc.RECORD_ID}
         | {f"{form}_{suffix}" for form in flat_rc.FORMS for suffix in ("complete", "timestamp")})
_FORM_BY_NAME = {form: form for form in rc.FORMS} | {label: form for form, label in rc.FORM_LABELS.items()}
_FORM_BY_FOLDED = {name.casefold(): form for name, form in _FORM_BY_NAME.items()}
_EVENT_LABELS = {f"{label} (Arm 1: Arm 1)": event for event, (label, _) in rc.EVENTS.items()}


def sniff(first_line: str) -> tuple[str, str]:
    """(delimiter, project) of an export from its header line: the delimiter under which most cells
    name a column of either project; the flat project of earlier releases when the header names more
    columns only it has than columns only the episode project has, else the episode project."""
    best = (",", "episodes", -1)
    for delimiter in DELIMITERS:
        cells = [c.strip() for c in next(csv.reader([first_line], delimiter=delimiter), [])]
        episodes = {c for c in cells if c in _RAW or c in _LABELS}
        flat = {c for c in cells if c in _FLAT or c in _SPECIAL}
        score = len(episodes | flat)
        if score > best[2]:
            best = (delimiter, "flat" if len(flat - episodes) > len(episodes - flat) else "episodes", score)
    return best[0], best[1]


def read_redcap(path: str | Path, **options: Any) -> EpisodeFile | ParsedFile:
    """Read and validate a REDCap export of either project. See :func:`parse_redcap`."""
    path = Path(path)
    return parse_redcap(path.read_bytes(), source=str(path), **options)


def parse_redcap(
    data: bytes,
    *,
    source: str = "<input>",
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
    stored: StoredLookup | None = None,
) -> EpisodeFile | ParsedFile:
    """Validate the bytes of a REDCap flat CSV record export: an :class:`EpisodeFile` for the episode
    project, a flat :class:`~oncosurg.ingest.csv.ParsedFile` for the flat project of earlier releases.

    ``centre`` names the centre of records whose record id and ``centre`` field name none; ``stored``
    looks up registered patients for an update (rules across episodes on the merged record).
    """
    sha256 = hashlib.sha256(data).hexdigest()
    result = EpisodeFile(source=source, sha256=sha256)
    probe = ParsedFile(source=source, sha256=sha256)
    text = _decode(data, probe)
    if text is None:
        result.issues = probe.issues
        return result
    if not text.strip():
        result.issues.append(Issue(F_EMPTY.code, "the file is empty",
                                   "export the records from REDCap as 'CSV / Microsoft Excel (raw data)'"))
        return result
    delimiter, project = sniff(text.lstrip("\r\n").partition("\n")[0].rstrip("\r"))
    if project == "flat":
        from oncosurg.ingest.redcap import parse_redcap_export

        return parse_redcap_export(data, source=source, centre=centre, postop_window_days=postop_window_days,
                                   today=today, case_sensitive_ids=case_sensitive_ids, delimiter=delimiter)
    reader = _Reader(result, today=today or dt.date.today(), centre=centre, case_sensitive_ids=case_sensitive_ids)
    if not reader.read(text, delimiter):
        return result
    records, issues = reader.builder.build(stored=stored, postop_window_days=postop_window_days)
    result.issues += [reader.locate(i) for i in issues]
    if not result.issues:
        result.records = records
    result.issues.sort(key=lambda i: i.line or 0)
    return result


@dataclass(slots=True)
class _Instance:
    form: str
    number: int | None  # None: the patient instrument
    line: int
    event: str
    cells: dict[str, tuple[str, int]] = field(default_factory=dict)  # column → (text, line)


@dataclass(slots=True)
class _Record:
    line: int
    record_id: str
    base: _Instance | None = None
    instances: dict[tuple[str, int], _Instance] = field(default_factory=dict)


class _Reader:
    def __init__(self, result: EpisodeFile, *, today: dt.date, centre: str | None, case_sensitive_ids: bool) -> None:
        self.result = result
        self.issues = result.issues
        self.today = today
        self.centre = centre
        self.case_sensitive_ids = case_sensitive_ids
        self.contexts: dict[int, tuple[str, str, int | None]] = {}  # line → (record id, form, instance)
        self.builder = RecordBuilder({}, case_sensitive_ids=case_sensitive_ids, unit="line")
        self.cache: dict[str, dict[str, Any]] = {}  # variable → raw text → parsed value

    # -- the file ----------------------------------------------------------------------------------

    def read(self, text: str, delimiter: str) -> bool:
        """Read the rows into the record builder; ``False`` when the header is refused."""
        csv.field_size_limit(_FIELD_LIMIT)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        try:
            header = next(reader)
        except csv.Error as exc:
            self.issues.append(Issue(F_SYNTAX.code, f"the header row cannot be read as CSV ({exc})",
                                     "export the records again as CSV", 1))
            return False
        columns = self._header(header)
        if columns is None:
            return False
        records: dict[str, _Record] = {}
        picks = list(columns.items())
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self.issues.append(Issue(F_SYNTAX.code, f"CSV syntax error ({exc})",
                                         "close the quoted cell or remove the stray quote", reader.line_num + 1))
                break
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            self.result.rows += 1
            if len(row) != len(header):
                self.issues.append(Issue(F_ROW_WIDTH.code, f"row has {len(row)} cells, the header has {len(header)}",
                                         "export the records again; do not edit the export by hand", line))
                continue
            cells = {name: row[i] for name, i in picks if row[i]}  # the filled cells only
            rid = cells.get(rc.RECORD_ID, "").strip()
            if not rid:
                self.issues.append(Issue(V_REQUIRED.code, "the record id is empty", "every row needs its record id",
                                         line, rc.RECORD_ID, ""))
                continue
            record = records.setdefault(rid, _Record(line, rid))
            self._row(record, cells, line)
        carried = self._carried(columns)
        self.builder.carried = carried
        for record in records.values():
            self._record(record, carried)
        return True

    def _header(self, header: list[str]) -> dict[str, int] | None:
        columns: dict[str, int] = {}
        ok = True
        for i, cell in enumerate(header):
            name = cell.strip()
            column = _RAW.get(name) or _LABELS.get(name)
            if not name:
                self.issues.append(Issue(H_BLANK.code, f"header cell {i + 1} is empty", "export the records again", 1))
                ok = False
            elif column is None:
                guess = get_close_matches(name, list(_RAW), n=1)
                hint = (f"did you mean '{guess[0]}'?" if guess else
                        "build the REDCap project from `oncosurg redcap dictionary`, or remove the column")
                self.issues.append(Issue(H_UNKNOWN.code, f"'{name}' is not a variable of the oncosurg REDCap project",
                                         hint, 1, name[:64]))
                ok = False
            elif column == _IGNORED:
                continue
            elif column in columns:
                self.issues.append(Issue(H_DUPLICATE.code, f"column '{name}' appears twice",
                                         "keep one of the two columns", 1, column))
                ok = False
            else:
                columns[column] = i
        if rc.RECORD_ID not in columns:
            self.issues.append(Issue(H_MISSING.code, f"the record id column '{rc.RECORD_ID}' is missing",
                                     f"export the records with the record id field '{rc.RECORD_ID}'", 1, rc.RECORD_ID))
            return None
        forms = {rc.VARIABLE_MAP[c.partition("___")[0]].form for c in columns if c.partition("___")[0]
                 in rc.VARIABLE_MAP and c != rc.RECORD_ID}
        if forms - {rc.PATIENT_FORM} and rc.REPEAT_INSTRUMENT not in columns:
            self.issues.append(Issue(H_MISSING.code, "the export has repeating instruments but no "
                                     f"'{rc.REPEAT_INSTRUMENT}' column", "export the records again from REDCap "
                                     "(the repeat instrument and instance columns come with them)", 1,
                                     rc.REPEAT_INSTRUMENT))
            ok = False
        for form, key in (("therapy_line", "line_number"), ("complication", "procedure_no"),
                          ("complication", "complication_no"), ("pathology", "pathology_procedure_no")):
            if form in forms and key not in columns:
                self.issues.append(Issue(H_MISSING.code, f"the export has {form} instances but not their key "
                                         f"'{key}'", f"export '{key}' with the other fields of '{form}'", 1, key))
                ok = False
        return columns if ok else None

    @staticmethod
    def _carried(columns: dict[str, int]) -> dict[Table, frozenset[str]]:
        carried: dict[Table, set[str]] = {}
        for column in columns:
            v = rc.VARIABLE_MAP.get(column.partition("___")[0])
            if v is None or v.name == rc.RECORD_ID or v.column == "centre":
                continue
            spec = TABLE_BY_NAME[v.table]
            carried.setdefault(v.table, set(spec.key if v.table in rc.INSTANCE_KEYS else ())).add(v.column)
        return {t: frozenset(c) for t, c in carried.items()}

    # -- rows --------------------------------------------------------------------------------------

    def _layout(self, message: str, hint: str, line: int, column: str, value: str, record_id: str = "") -> None:
        where = f"record '{record_id}': " if record_id else ""
        self.issues.append(Issue(F_LAYOUT.code, where + message, hint, line, column, value))

    def _row(self, record: _Record, cells: dict[str, str], line: int) -> None:
        rid = record.record_id
        event = cells.get(rc.EVENT, "").strip()
        event = _EVENT_LABELS.get(event, event)
        named = cells.get(rc.REPEAT_INSTRUMENT, "").strip()
        number_text = cells.get(rc.REPEAT_INSTANCE, "").strip()
        form = rc.PATIENT_FORM
        number: int | None = None
        if named:
            form = _FORM_BY_NAME.get(named) or _FORM_BY_FOLDED.get(named.casefold(), "")
            if form not in rc.REPEATING_FORMS:
                self._layout(f"'{named}' is not a repeating instrument of the project",
                             "the repeating instruments are " + ", ".join(rc.REPEATING_FORMS), line,
                             rc.REPEAT_INSTRUMENT, named, rid)
                return
            if not number_text.isdigit() or int(number_text) < 1:
                self._layout("the repeat instance is not a positive whole number",
                             "export the records again; REDCap numbers instances 1, 2, 3…", line,
                             rc.REPEAT_INSTANCE, number_text, rid)
                return
            number = int(number_text)
        elif number_text:
            self._layout("a repeat instance without a repeating instrument (a repeating event)",
                         "the oncosurg project repeats instruments, not events: export from a project built "
                         "from `oncosurg redcap dictionary` and `oncosurg redcap repeating`", line,
                         rc.REPEAT_INSTANCE, number_text, rid)
            return
        self.contexts[line] = (rid, form, number)
        if number is None:
            if record.base is None:
                record.base = _Instance(form, None, line, event)
            target = record.base
        else:
            earlier = record.instances.get((form, number))
            if earlier is not None:
                self._layout(f"instance {number} of '{form}' appears twice (first on line {earlier.line})",
                             "keep one row per instance", line, rc.REPEAT_INSTANCE, number_text, rid)
                return
            target = record.instances[(form, number)] = _Instance(form, number, line, event)
        for column, text in cells.items():
            if not text or text.isspace():
                continue
            v, name, option = _COLUMN.get(column, _NO_VARIABLE)
            if v is None or name == rc.RECORD_ID:
                continue
            if v.form != form:
                if option and text.strip().lower() in ("0", "unchecked"):
                    continue
                where = "the patient row" if number is None else f"an instance of '{form}'"
                self._layout(f"'{name}' belongs to the instrument '{v.form}', but this row is {where}",
                             "export the records again; do not move values between rows", line, column, text, rid)
                continue
            earlier_cell = target.cells.get(column)
            if earlier_cell is None:
                target.cells[column] = (text, line)
            elif earlier_cell[0] != text:
                where = f" (event '{target.event}')" if target.event else ""
                self._layout(f"differs from {earlier_cell[0]!r} given on line {earlier_cell[1]}{where}",
                             "keep one value per record: enter the field in one event only", line, column, text, rid)

    # -- records -----------------------------------------------------------------------------------

    def _record(self, record: _Record, carried: dict[Table, frozenset[str]]) -> None:
        identity = self._identity(record)
        if identity is None:
            return
        centre, patient_id = identity
        if record.base is not None and Table.PATIENT in carried:
            values = self._values(record.base, centre, patient_id, Table.PATIENT, carried[Table.PATIENT])
            self.builder.patient_row(centre, patient_id, values, (None, record.base.line))
        for (form, number), instance in sorted(record.instances.items(), key=lambda kv: kv[1].line):
            table = rc.FORM_TABLE[form]
            values = self._values(instance, centre, patient_id, table, carried.get(table, frozenset()))
            own = rc.INSTANCE_KEYS.get(table)
            if own is not None:
                values[own] = number
            self.builder.episode_row(centre, patient_id, table, values, (None, instance.line))

    def _identity(self, record: _Record) -> tuple[str, str] | None:
        """``(centre, patient_id)``: the fields, else the record id ``centre::patient_id``, else ``--centre``."""
        id_centre, id_patient = rc.split_record_id(record.record_id)
        base = record.base.cells if record.base is not None else {}
        line = record.base.line if record.base is not None else record.line
        given = {c: base.get(c, ("", line)) for c in ("patient_id", "centre")}
        ok = True
        for column, from_id in (("patient_id", id_patient), ("centre", id_centre)):
            text, at = given[column]
            if text.strip() and from_id is not None and text != from_id:
                want = rc.record_id(given["centre"][0] or id_centre, given["patient_id"][0] or id_patient)
                self._layout(f"the record id {record.record_id!r} names {column} {from_id!r}",
                             f"keep the record id as centre::patient_id ({want!r})", at, column, text)
                ok = False
        patient_id = given["patient_id"][0] if given["patient_id"][0].strip() else id_patient
        centre = given["centre"][0] if given["centre"][0].strip() else (id_centre or self.centre or "")
        for column, value in (("patient_id", patient_id), ("centre", centre)):
            at = given[column][1]
            if not value:
                if column == "patient_id":
                    self.issues.append(Issue(V_REQUIRED.code, f"record '{record.record_id}': no patient_id",
                                             "write the record id as centre::patient_id", at, column, ""))
                    ok = False
                continue
            problem = parse_cell(FIELD_BY_NAME[column], value, line=at)[1]
            if problem is not None:
                self.issues.append(self._prefixed(problem, record.record_id, rc.PATIENT_FORM, None))
                ok = False
        return (centre, patient_id) if ok else None

    def _values(self, instance: _Instance, centre: str, patient_id: str, table: Table,
                columns: frozenset[str]) -> dict[str, Any]:
        """The model values of one row: every carried column, ``None`` when empty or when it failed."""
        values: dict[str, Any] = {}
        spec = TABLE_BY_NAME[table]
        for v in rc.FORM_VARIABLES[instance.form]:
            if v.column not in columns or v.column in ("patient_id", "centre"):
                continue
            if v.field_type == "checkbox":
                value, problem, line = self._checkbox(v, instance)
            else:
                text, line = instance.cells.get(v.name, ("", instance.line))
                value, problem = self._cell(v, text, line)
            if problem is not None:
                self.issues.append(self._prefixed(problem, rc.record_id(centre, patient_id) if centre else patient_id,
                                                  instance.form, instance.number))
                self.builder.failed(centre, patient_id, table, v.column, instance.line, key=v.column in spec.key)
            values[v.column] = value
        return values

    def _cell(self, v: rc.Variable, text: str, line: int) -> tuple[Any, Issue | None]:
        cache = self.cache.setdefault(v.name, {})
        if text in cache:
            return cache[text], None
        value, problem = self._parse(v, text, line)
        if problem is None and v.field.kind is not Kind.TEXT and len(cache) < 10_000:
            cache[text] = value  # dates, codes and small numbers repeat
        return value, problem

    def _parse(self, v: rc.Variable, text: str, line: int) -> tuple[Any, Issue | None]:
        f = v.field
        stripped = text.strip()
        if not stripped:
            return None, None
        if v.field_type == "yesno":
            value = {"1": True, "yes": True, "0": False, "no": False}.get(stripped.lower())
            if value is None:
                return None, Issue(V_BOOL.code, "not a yes/no value", "write 1 or 0 (Yes or No)", line, v.name, text)
            return value, None
        if v.field_type in ("radio", "dropdown") and stripped not in v.choices:
            by_label = {label.casefold(): code for code, label in v.choices.items()}
            stripped = by_label.get(stripped.casefold(), stripped)
        if f.kind is Kind.NUMBER and _DECIMAL_COMMA.fullmatch(stripped):
            stripped = stripped.replace(",", ".")  # REDCap's export option "decimal character: comma"
        value, problem = parse_cell(f, text if f.kind is Kind.TEXT else stripped, line=line, today=self.today)
        if problem is not None:
            hint = problem.hint
            if f.kind in (Kind.NUMBER, Kind.INTEGER) and "," in stripped:
                hint = (f"correct the value in REDCap ({f.describe_type()}); a decimal comma is read, but not "
                        "thousands separators or several commas")
            problem = Issue(problem.code, problem.message, hint, line, v.name, text)
        return value, problem

    def _checkbox(self, v: rc.Variable, instance: _Instance) -> tuple[Any, Issue | None, int]:
        chosen: list[str] = []
        line = instance.line
        for code, label in v.choices.items():
            column = f"{v.name}___{code}"
            text, at = instance.cells.get(column, ("", instance.line))
            state = text.strip().casefold()
            if state in ("", "0", "unchecked"):
                continue
            if state in ("1", "checked", label.casefold(), code.casefold()):  # label: 'export checkbox labels'
                chosen.append(code)
                continue
            return None, Issue(V_SEGMENTS.code if v.field.kind is Kind.SEGMENTS else V_BOOL.code,
                               f"a checkbox value must be 1/0, Checked/Unchecked or the option's label ({label!r})",
                               "export raw data or labels from REDCap unchanged", at, column, text), at
        if not chosen:
            return None, None, line
        return parse_cell(v.field, ";".join(chosen), line=line)[0], None, line

    # -- messages ----------------------------------------------------------------------------------

    @staticmethod
    def _prefixed(issue: Issue, record_id: str, form: str, number: int | None) -> Issue:
        where = f"record '{record_id}'" + (f", {form} instance {number}" if number is not None else "")
        return Issue(issue.code, f"{where}: {issue.message}", issue.hint, issue.line, issue.column, issue.value)

    def locate(self, issue: Issue) -> Issue:
        """An issue of the rules across rows, in REDCap's terms: the record, the instance, the variable."""
        context = self.contexts.get(issue.line or -1)
        if context is None:
            return issue
        record_id, form, number = context
        v = rc.VARIABLE_OF.get((rc.FORM_TABLE[form], issue.column or ""))
        column = v.name if v is not None else issue.column
        out = self._prefixed(issue, record_id, form, number)
        return Issue(out.code, out.message, out.hint, out.line, column, out.value)
