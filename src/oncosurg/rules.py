"""Clinical validation rules of the registry, each with a stable code, a message and a fix.

Every ingest path (registry CSV, later REDCap, FHIR and web forms) converts raw cells with
:func:`parse_cell` and checks whole records with :func:`check_record`, so the rules exist once.
A rule violation is an :class:`Issue`; callers collect all of them before deciding anything.

Codes are stable API (documented in ``docs/rules.md``):

* ``F1xx`` file-level problems (empty, encoding, binary, CSV syntax),
* ``H2xx`` header problems (unknown, missing or duplicate columns),
* ``V3xx`` single-value problems (type, enum, range, pattern, length, formula),
* ``X4xx`` cross-field and cross-record rules,
* ``E6xx`` rules across a patient's episodes (:mod:`oncosurg.pathway.rules`).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from oncosurg.schema import (
    CLAVIEN_DINDO,
    DEFAULT_POSTOP_WINDOW_DAYS,
    FIELD_BY_NAME,
    HEPATECTOMY_COLUMNS,
    SURGERY_COLUMNS,
    Field,
    Kind,
)


@dataclass(frozen=True, slots=True)
class Rule:
    """A validation rule: stable ``code``, short ``name``, what it checks and, for a cross-field rule,
    the ``columns`` it reads (it is skipped when one of them failed its own check: no cascades)."""

    code: str
    name: str
    description: str
    columns: tuple[str, ...] = ()


RULES: dict[str, Rule] = {}


def _rule(code: str, name: str, description: str, columns: tuple[str, ...] = ()) -> Rule:
    rule = Rule(code, name, description, columns)
    RULES[code] = rule
    return rule


F_EMPTY = _rule("F101", "empty-file", "The file has no header row.")
F_ENCODING = _rule("F102", "not-utf8", "The file must be UTF-8 text.")
F_BINARY = _rule("F103", "binary-file", "The file contains NUL bytes: it is not a CSV text file.")
F_SYNTAX = _rule("F104", "csv-syntax", "The CSV cannot be parsed (e.g. an unclosed quote).")
F_ROW_WIDTH = _rule("F105", "row-width", "A data row has more or fewer cells than the header.")
F_WORKBOOK = _rule("F106", "xlsx-workbook",
                   "An Excel file cannot be read as an .xlsx workbook, or holds a sheet the registry workbook does "
                   "not define.")
F_FHIR = _rule("F107", "fhir-invalid",
               "A FHIR file is not JSON, not a valid FHIR R4 Bundle, or its bundle has no Patient.")
F_FHIR_UNREADABLE = _rule("F111", "fhir-unreadable",
                          "A FHIR resource holds a value oncosurg cannot read safely: a patient identified only in "
                          "another system (e.g. a hospital MRN), a unit not convertible to the registry's, a gene "
                          "or drug outside the registry's vocabulary, an episode whose place cannot be told.")
F_LAYOUT = _rule("F108", "record-layout",
                 "The rows (REDCap) or resources (FHIR) of one record contradict each other or are misplaced.")
F_LONG_FILES = _rule("F109", "long-registry-files",
                     "A long registry (folder or .zip) lacks patients.csv, or holds a file it does not define "
                     "(misnamed, in a sub-folder, or not one of its CSV files).")
F_ARCHIVE = _rule("F110", "unsafe-archive",
                  "A .zip cannot be read safely: not a zip, encrypted, too large once unpacked (zip bomb), too "
                  "many members, or a member path that leaves the archive.")
H_UNKNOWN = _rule("H201", "unknown-column", "A header names a column the registry does not have.")
H_MISSING = _rule("H202", "missing-column", "A required column is absent from the header.")
H_DUPLICATE = _rule("H203", "duplicate-column", "A column appears twice in the header.")
H_BLANK = _rule("H204", "blank-column-name", "A header cell is empty.")
V_REQUIRED = _rule("V301", "required", "A required value is empty.")
V_DATE = _rule("V302", "date", "A date is not a valid ISO date YYYY-MM-DD.")
V_INTEGER = _rule("V303", "integer", "A value must be a whole number.")
V_NUMBER = _rule("V304", "number", "A value must be a finite number.")
V_BOOL = _rule("V305", "boolean", "A yes/no value is neither 'yes' nor 'no'.")
V_ENUM = _rule("V306", "enum", "A value is not one of the allowed codes.")
V_RANGE = _rule("V307", "range", "A number is outside its allowed range.")
V_PATTERN = _rule("V308", "identifier", "An identifier has characters outside A-Z a-z 0-9 _ . -.")
V_LENGTH = _rule("V309", "too-long", "A value is longer than the column allows.")
V_FORMULA = _rule("V310", "formula-like", "A text value starts with = + - @ (spreadsheet formula injection).")
V_SEGMENTS = _rule("V311", "segments", "Resected segments are not Couinaud 1-8 separated by ';'.")
V_FUTURE = _rule("V312", "future-date", "A date lies after today.")
V_CONTROL = _rule("V313", "control-characters", "A text value holds control characters.")
V_SPACES = _rule("V314", "identifier-spaces", "patient_id or centre starts or ends with a space.")
V_NUMERIC_ID = _rule("V315", "identifier-not-text",
                     "A workbook's patient_id or centre cell holds a number (or a date, or TRUE/FALSE), not text: "
                     "the spreadsheet converted the typed id and its written form may be lost (00124 → 124, "
                     "1E5 → 100000, 3-4 → a date).")
X_SURGERY_BEFORE_START = _rule("X401", "surgery-before-cetuximab", "surgery_date is before cetuximab_start.",
                               ("surgery_date", "cetuximab_start"))
X_CONTACT_BEFORE_SURGERY = _rule("X402", "contact-before-surgery", "last_contact_date is before surgery_date.",
                                 ("last_contact_date", "surgery_date"))
X_PROGRESSION_WINDOW = _rule(
    "X403", "progression-window", "progression_date is outside [cetuximab_start, last_contact_date].",
    ("progression_date", "cetuximab_start", "last_contact_date"))
X_DEATH_CONTACT = _rule("X404", "death-is-last-contact", "death_date differs from last_contact_date.",
                        ("death_date", "last_contact_date"))
X_SURGERY_FIELDS = _rule("X405", "surgery-fields-without-surgery",
                         "A surgery column is filled without surgery_date.", ("surgery_date",))
X_SURGERY_REQUIRED = _rule("X406", "surgery-field-required",
                           "surgery_type and clavien_dindo_max need a value when surgery_date is given.",
                           ("surgery_date",))
X_HEPATECTOMY_FIELDS = _rule("X407", "pathology-without-hepatectomy",
                             "Resected segments, margin and pathology are only for a hepatectomy.",
                             ("surgery_type", "surgery_date"))
X_GRADE_V = _rule("X408", "clavien-v-without-postop-death",
                  "Clavien-Dindo V needs a death within the postoperative window.",
                  ("clavien_dindo_max", "surgery_date", "death_date"))
X_CONTACT_BEFORE_START = _rule("X409", "contact-before-cetuximab", "last_contact_date is before cetuximab_start.",
                               ("last_contact_date", "cetuximab_start"))
X_DUPLICATE_ID = _rule("X410", "duplicate-patient", "The same patient_id appears twice for one centre in the file.")
X_ALREADY_REGISTERED = _rule("X411", "already-registered", "The patient_id is already registered in this centre.")
X_POSTOP_DEATH = _rule("X412", "postop-death-not-grade-v",
                       "A death within the postoperative window needs Clavien-Dindo V.",
                       ("death_date", "surgery_date", "clavien_dindo_max"))
X_ID_CASE = _rule("X413", "id-differs-in-case",
                  "A patient_id differs only in upper/lower case from another one of the centre, in the file or "
                  "registered (a probable duplicate; --case-sensitive-ids says they are different patients).")
X_ID_OTHER_CENTRE = _rule("X414", "id-in-other-centre",
                          "A new patient's patient_id is already registered in another centre "
                          "(--allow-id-in-other-centre says it is a different patient).")
X_NOT_REGISTERED = _rule("X415", "not-registered",
                         "With --update, a row names a patient that is not registered (--allow-new registers it).")
X_CENTRE_MISSING = _rule("X416", "centre-not-given",
                         "The registry holds named centres but the file names none (no --centre, no centre cell).")
X_CLEARS_VALUE = _rule("X417", "update-clears-value",
                       "An update would empty a registered value (a present, empty cell; needs --allow-clear).")
X_GRADE_BELOW_COMPLICATIONS = _rule(
    "X418", "grade-below-complications",
    "clavien_dindo_max is below a complication recorded one by one (the worst grade is derived from them).",
    ("clavien_dindo_max",))

# Rules across a patient's episodes (checked by oncosurg.pathway.rules).
E_ORPHAN = _rule("E601", "missing-parent",
                 "An episode names a parent (patient, procedure, therapy line) that the registry does not have.")
E_DUPLICATE_KEY = _rule("E602", "duplicate-episode-key", "Two episodes of one patient have the same key.")
E_DUPLICATE_EPISODE = _rule("E603", "duplicate-episode",
                            "Two episodes of one patient have the same date and the same content (a probable "
                            "duplicate entry).")
E_ORDER = _rule("E604", "episode-order",
                "Episode dates out of order: a second stage before its first stage, a complication before its "
                "procedure, anything after the death or after the last contact.")
E_LINES = _rule("E605", "therapy-line-order",
                "Therapy lines: numbers must increase with start dates, a line stops on or after its start and "
                "before the next line starts, and only an earlier line may be undated.")
E_RESECTION_ONLY = _rule("E606", "resection-only", "Pathology and margins are recorded only for a resection.")
E_REFERRAL = _rule("E607", "referral", "The referral date contradicts the referral or the therapy lines.")
E_POSTOP_DEATH = _rule("E608", "postoperative-death",
                       "A Clavien-Dindo grade V needs a death within the postoperative window of its procedure, and "
                       "a death within that window needs a grade V complication of the procedure.")
E_VITAL = _rule("E609", "vital-status",
                "Contacts: a patient needs at least one contact, at most one death, and the death is the last "
                "contact.")
E_RECURRENCE = _rule("E610", "recurrence-without-resection",
                     "A recurrence follows a resection or ablation; without one, the event is a progression.")


@dataclass(frozen=True, slots=True)
class Issue:
    """One validation finding. ``line`` counts the header as line 1; ``None`` = whole file."""

    code: str
    message: str
    hint: str
    line: int | None = None
    column: str | None = None
    value: str | None = None
    file: str | None = None  # the file within a multi-file source (the long registry format)

    @property
    def rule(self) -> Rule:
        return RULES[self.code]

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "rule": self.rule.name,
            **({"file": self.file} if self.file is not None else {}),
            "line": self.line,
            "column": self.column,
            "value": self.value,
            "message": self.message,
            "hint": self.hint,
        }

    def format(self, source: str = "") -> str:
        """``file:line: column 'x' = 'v': message [code rule] → hint``, one line."""
        where = f"{source}/{self.file}" if source and self.file else (self.file or source)
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        parts = [f"{where}:" if where else ""]
        if self.column is not None:
            col = f"column '{self.column}'"
            if self.value is not None:
                col += f" = {show_value(self.value)}"
            parts.append(col + ":")
        parts.append(f"{self.message} [{self.code} {self.rule.name}]")
        text = " ".join(p for p in parts if p)
        return f"{text} — fix: {self.hint}" if self.hint else text


def show_value(value: str, limit: int = 40) -> str:
    """Quote a cell for a message, shortened when long (a megabyte cell must not flood the terminal)."""
    if len(value) > limit:
        return repr(value[:limit]) + f"… ({len(value)} characters)"
    return repr(value)


_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT_RE = re.compile(r"[+-]?\d+")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def parse_cell(field: Field, raw: str, *, line: int | None, today: dt.date | None = None) -> tuple[Any, Issue | None]:
    """Convert one non-empty raw cell to its Python value, or return the :class:`Issue` found.

    Returns ``(value, None)`` on success.  Empty cells are handled by the caller.
    """
    name = field.name

    def issue(rule: Rule, message: str, hint: str) -> tuple[Any, Issue]:
        return None, Issue(rule.code, message, hint, line, name, raw)

    if len(raw) > max(field.max_length, 64):
        return issue(V_LENGTH, f"value is {len(raw)} characters long; at most {field.max_length} allowed",
                     f"shorten it to {field.max_length} characters or fewer")
    kind = field.kind
    if kind is Kind.TEXT:
        if raw.startswith(_FORMULA_START):
            return issue(V_FORMULA, "text starting with = + - @ is refused (spreadsheet formula injection)",
                         "remove the leading character; identifiers are plain pseudonyms")
        if _CONTROL_RE.search(raw):
            return issue(V_CONTROL, "text contains control characters", "remove the non-printing characters")
        if name in ("patient_id", "centre") and raw != raw.strip() and raw.strip() and (
                name == "centre" or _ID_RE.fullmatch(raw.strip())):
            return issue(V_SPACES, f"{name} {'starts' if raw[0].isspace() else 'ends'} with a space",
                         f"remove the space: write {raw.strip()!r}")
        if name == "patient_id" and not _ID_RE.fullmatch(raw):
            return issue(V_PATTERN, "patient_id may only use A-Z a-z 0-9 _ . - (1-64 characters)",
                         "use the centre's pseudonym without spaces or other symbols")
        return raw, None
    if kind is Kind.ENUM:
        if raw in field.choices:
            return raw, None
        near = [c for c in field.choices if c.lower() == raw.strip().lower()]
        hint = f"write '{near[0]}'" if near else f"use {field.describe_type()}"
        return issue(V_ENUM, f"'{raw}' is not an allowed code", hint)
    if kind is Kind.BOOL:
        if raw in ("yes", "no"):
            return raw == "yes", None
        hint = f"write '{raw.strip().lower()}'" if raw.strip().lower() in ("yes", "no") else "write 'yes' or 'no'"
        return issue(V_BOOL, "not a yes/no value", hint)
    if kind is Kind.DATE:
        try:
            if not _DATE_RE.fullmatch(raw):
                raise ValueError
            value = dt.date.fromisoformat(raw)
        except ValueError:
            return issue(V_DATE, *date_problem(raw))
        if today is not None and value > today:
            return issue(V_FUTURE, f"date is after today ({today.isoformat()})", "check the year and month")
        return value, None
    if kind is Kind.INTEGER:
        if not _INT_RE.fullmatch(raw):
            return issue(V_INTEGER, "not a whole number", f"use {field.describe_type()}")
        return _check_range(field, int(raw), raw, line)
    if kind is Kind.NUMBER:
        try:
            number = float(raw)
        except ValueError:
            hint = "use a point as decimal separator" if "," in raw else f"use {field.describe_type()}"
            return issue(V_NUMBER, "not a number", hint)
        if not math.isfinite(number) or raw.strip().lower() in ("nan", "inf", "-inf", "infinity"):
            return issue(V_NUMBER, "not a finite number", "leave the cell empty if the value is unknown")
        return _check_range(field, number, raw, line)
    if kind is Kind.SEGMENTS:
        parts = raw.split(";")
        if not all(p.strip() in {"1", "2", "3", "4", "5", "6", "7", "8"} for p in parts) or len(
            {p.strip() for p in parts}
        ) != len(parts):
            return issue(V_SEGMENTS, "not a list of distinct Couinaud segments 1-8",
                         "write segments separated by ';', e.g. 5;6;7;8")
        return ";".join(sorted((p.strip() for p in parts), key=int)), None
    if kind is Kind.CODES:
        codes = [p.strip() for p in raw.split(";")]
        unknown = [c for c in codes if c not in field.choices]
        if unknown or len(set(codes)) != len(codes):
            what = f"'{unknown[0]}' is not an allowed code" if unknown else "a code appears twice"
            return issue(V_ENUM, what, f"use {field.describe_type()}")
        return ";".join(c for c in field.choices if c in codes), None
    raise AssertionError(f"unhandled kind {kind}")  # pragma: no cover - schema and parser agree


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_EXCEL_EPOCH = dt.date(1899, 12, 30)  # serial 1 = 1900-01-01 for every serial after Excel's 1900-02-29
_ISO_LOOSE_RE = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})")
_DMY_RE = re.compile(r"(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})")
_SERIAL_RE = re.compile(r"\d{1,6}(\.\d+)?")
_DATETIME_RE = re.compile(r"(\d{4}-\d{2}-\d{2})[T ]\d{1,2}:\d{2}.*")


def _real_date(year: int, month: int, day: int) -> dt.date | None:
    try:
        return dt.date(year, month, day)
    except ValueError:
        return None


def date_problem(raw: str) -> tuple[str, str]:
    """Why ``raw`` is not a ``YYYY-MM-DD`` date, and the fix: ``(message, hint)``.

    Names the impossible day (``2004-02-30``: February 2004 has 29 days), the day/month order that
    cannot be decided (``03/02/2004``), an Excel serial number (``38047``) and a time of day.
    """
    generic = ("not a valid date", "write the date as YYYY-MM-DD, e.g. 2005-03-14")
    if m := _ISO_LOOSE_RE.fullmatch(raw):
        year, month, day = (int(g) for g in m.groups())
        if not 1 <= month <= 12:
            return f"there is no month {month}", "dates are YYYY-MM-DD: the month comes second (01-12)"
        last = calendar.monthrange(year, month)[1]
        if not 1 <= day <= last:
            return f"{_MONTHS[month - 1]} {year} has {last} days", f"check the day (1-{last}); dates are YYYY-MM-DD"
        iso = f"{year:04d}-{month:02d}-{day:02d}"
        return "dates are YYYY-MM-DD, with hyphens and a two-digit month and day", f"write {iso}"
    if m := _DMY_RE.fullmatch(raw):
        a, b, year = (int(g) for g in m.groups())
        day_first, month_first = _real_date(year, b, a), _real_date(year, a, b)
        if day_first and month_first and a != b:
            return (f"dates are YYYY-MM-DD; {raw} is ambiguous ({a} {_MONTHS[b - 1][:3]} or {b} {_MONTHS[a - 1][:3]})",
                    f"write {day_first.isoformat()} or {month_first.isoformat()}")
        if day_first or month_first:
            value = day_first or month_first
            assert value is not None
            order = "" if a == b else " DD/MM/YYYY" if day_first else " MM/DD/YYYY"
            return f"dates are YYYY-MM-DD{', not' + order if order else ''}", f"write {value.isoformat()}"
        return generic
    if m := _DATETIME_RE.fullmatch(raw):
        return "a date and a time of day; the registry records the date only", f"write {m.group(1)}"
    if _SERIAL_RE.fullmatch(raw):
        serial = float(raw)
        guess = _EXCEL_EPOCH + dt.timedelta(days=int(serial)) if 1 <= serial < 2958466 else None
        if guess is not None and 1950 <= guess.year <= 2100:  # a registry-era date
            return (f"looks like an Excel serial date ({guess.isoformat()}?)",
                    f"format the spreadsheet column as YYYY-MM-DD dates or text; write {guess.isoformat()} "
                    "if that is the date")
    return generic


def _check_range(field: Field, value: float, raw: str, line: int | None) -> tuple[Any, Issue | None]:
    lo, hi = field.minimum, field.maximum
    bad = (lo is not None and (value <= lo if field.exclusive_minimum else value < lo)) or (
        hi is not None and value > hi
    )
    if bad:
        return None, Issue(V_RANGE.code, f"{raw} is out of range", f"use {field.describe_type()}",
                           line, field.name, raw)
    return value, None


def parse_record(
    cells: dict[str, str], *, line: int | None, today: dt.date | None = None
) -> tuple[dict[str, Any], list[Issue]]:
    """Parse the cells of one row (column → raw text) into typed values, collecting every issue.

    Empty cells become ``None``; a required empty cell is a ``V301`` issue.
    """
    record: dict[str, Any] = {}
    issues: list[Issue] = []
    for name, raw in cells.items():
        field = FIELD_BY_NAME[name]
        text = raw.strip() if field.kind is not Kind.TEXT else raw
        if text.strip() == "":
            record[name] = None
            if field.required == "yes":
                issues.append(Issue(V_REQUIRED.code, "required value is empty",
                                    f"fill in {field.describe_type()}", line, name, raw))
            continue
        value, problem = parse_cell(field, text, line=line, today=today)
        record[name] = value
        if problem is not None:
            issues.append(problem)
    return record, issues


def check_record(
    record: dict[str, Any],
    *,
    line: int | None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    failed: Collection[str] = (),
) -> list[Issue]:
    """The cross-field rules (docs/rules.md) on one parsed record (values that failed to parse are ``None``).

    ``failed`` names the columns whose cell failed its own check: a rule reading one of them
    (:attr:`Rule.columns`) is skipped, so one wrong cell gives one error, not a cascade.  A column
    absent from ``record`` is not carried by the file (a partial file): a rule reading it is
    skipped too, and the import checks the whole record (the registered one merged with the file,
    or the file's values with every absent column empty for a new patient).
    """
    out: list[Issue] = []
    get = record.get
    failed = frozenset(failed)

    def applies(rule: Rule, column: str | None = None) -> bool:
        return all(c in record and c not in failed for c in rule.columns) and column not in failed

    def add(rule: Rule, column: str, message: str, hint: str) -> None:
        value = get(column)
        shown = None if value is None else (value.isoformat() if isinstance(value, dt.date) else str(value))
        out.append(Issue(rule.code, message, hint, line, column, shown))

    start, surgery, contact = get("cetuximab_start"), get("surgery_date"), get("last_contact_date")
    progression, death, grade = get("progression_date"), get("death_date"), get("clavien_dindo_max")
    if start and surgery and surgery < start and applies(X_SURGERY_BEFORE_START):
        add(X_SURGERY_BEFORE_START, "surgery_date", f"surgery is before cetuximab_start ({start})",
            "check both dates: surgery must follow the start of cetuximab")
    if surgery and contact and contact < surgery and applies(X_CONTACT_BEFORE_SURGERY):
        add(X_CONTACT_BEFORE_SURGERY, "last_contact_date", f"last contact is before surgery_date ({surgery})",
            "last_contact_date must be on or after the surgery")
    if start and contact and contact < start and applies(X_CONTACT_BEFORE_START):
        add(X_CONTACT_BEFORE_START, "last_contact_date", f"last contact is before cetuximab_start ({start})",
            "last_contact_date must be on or after cetuximab_start")
    if (progression and ((start and progression < start) or (contact and progression > contact))
            and applies(X_PROGRESSION_WINDOW)):
        add(X_PROGRESSION_WINDOW, "progression_date",
            f"progression is outside [cetuximab_start {start}, last_contact_date {contact}]",
            "progression must fall between the start of cetuximab and the last contact")
    if death and contact and death != contact and applies(X_DEATH_CONTACT):
        add(X_DEATH_CONTACT, "death_date", f"death_date differs from last_contact_date ({contact})",
            "when a patient has died, last_contact_date must equal death_date")
    if surgery is None:
        for column in SURGERY_COLUMNS:
            if get(column) is not None and applies(X_SURGERY_FIELDS, column):
                add(X_SURGERY_FIELDS, column, f"{column} is filled but surgery_date is empty",
                    "add the surgery_date or clear this cell")
    else:
        for column in ("surgery_type", "clavien_dindo_max"):
            if column in record and get(column) is None and applies(X_SURGERY_REQUIRED, column):
                add(X_SURGERY_REQUIRED, column, f"{column} is required when surgery_date is given",
                    f"fill in {FIELD_BY_NAME[column].describe_type()}")
    kind = get("surgery_type")
    if (surgery is None or kind is not None) and kind != "hepatectomy":  # no type yet: X406 says so
        for column in HEPATECTOMY_COLUMNS:
            already = surgery is None and column in SURGERY_COLUMNS  # reported as X405 above
            if get(column) is not None and not already and applies(X_HEPATECTOMY_FIELDS, column):
                add(X_HEPATECTOMY_FIELDS, column, f"{column} is only recorded for a hepatectomy",
                    "clear this cell, or set surgery_type to 'hepatectomy' if the liver was resected")
    postop_days = (death - surgery).days if death is not None and surgery is not None else None
    in_window = postop_days is not None and 0 <= postop_days <= postop_window_days
    if grade == "V" and not in_window and applies(X_GRADE_V):
        add(X_GRADE_V, "clavien_dindo_max",
            f"grade V (death) needs a death_date within {postop_window_days} days of surgery_date",
            "record the death_date, or correct the grade")
    if in_window and grade is not None and grade != "V" and applies(X_POSTOP_DEATH):
        add(X_POSTOP_DEATH, "clavien_dindo_max",
            f"death on {death} is {postop_days} day(s) after surgery_date ({surgery}), within the "
            f"{postop_window_days}-day postoperative window, but the worst complication is grade {grade}",
            "a postoperative death is Clavien-Dindo grade V: write 'V', or correct death_date or surgery_date")
    return out


def clavien_rank(grade: str | None) -> int | None:
    """Ordinal rank of a Clavien-Dindo grade (``none`` = 0 … ``V`` = 7)."""
    return None if grade is None else CLAVIEN_DINDO.index(grade)

