"""Registry CSV reader: bytes in → typed, validated records and every issue found.

Nothing here touches the store.  The reader never stops at the first problem: it collects all
file, header, value and cross-field issues so a data manager can fix a file in one pass.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from oncosurg.rules import (
    F_BINARY,
    F_EMPTY,
    F_ENCODING,
    F_ROW_WIDTH,
    F_SYNTAX,
    H_BLANK,
    H_DUPLICATE,
    H_MISSING,
    H_UNKNOWN,
    V_FORMULA,
    V_LENGTH,
    X_DUPLICATE_ID,
    X_ID_CASE,
    Issue,
    check_record,
    parse_record,
)
from oncosurg.schema import COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS, REQUIRED

#: Largest cell we read at all; longer cells are refused by the per-column length rule.
_FIELD_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """A registry row that passed every rule. ``line`` is its line in the file (header = 1).

    ``values`` holds every registry column; ``carried`` names the columns the file carries for this
    record.  A carried column that is ``None`` was *present and empty* (an update clears it); a
    column not carried is *absent* (its value here is ``None`` and an update leaves it unchanged).
    Every reader (registry CSV, REDCap, FHIR, Excel) fills both the same way.
    """

    line: int
    values: dict[str, Any]
    carried: frozenset[str] = frozenset(COLUMNS)

    @classmethod
    def of(cls, line: int, parsed: dict[str, Any]) -> ParsedRecord:
        """A record from the parsed values of the columns the file carries (centre ``None`` → ``""``)."""
        carried = frozenset(parsed) | {"centre"}
        values = {c: parsed.get(c) for c in COLUMNS}
        values["centre"] = values["centre"] or ""
        return cls(line, values, carried)

    @property
    def key(self) -> tuple[str, str]:
        return (self.values["centre"], self.values["patient_id"])


class SeenIds:
    """Duplicate patient ids within one file: the same id twice for a centre (``X410``), or two ids
    that differ only in case (``X413``, unless ``case_sensitive``).  Every row whose patient_id
    parsed is checked, whatever its other errors, so duplicates come out on the first pass."""

    def __init__(self, *, case_sensitive: bool = False, unit: str = "line") -> None:
        self.case_sensitive = case_sensitive
        self.unit = unit
        self.exact: dict[tuple[str, str], int] = {}
        self.folded: dict[tuple[str, str], tuple[str, int]] = {}

    def check(self, line: int, centre: str | None, patient_id: Any) -> Issue | None:
        if not isinstance(patient_id, str):
            return None
        centre = centre or ""
        key, folded = (centre, patient_id), (centre, patient_id.casefold())
        if key in self.exact:
            return Issue(X_DUPLICATE_ID.code, f"patient_id already used on {self.unit} {self.exact[key]}",
                         "give each patient of a centre one row (record)",
                         line, "patient_id", patient_id)
        self.exact[key] = line
        other = self.folded.setdefault(folded, (patient_id, line))
        if other[0] != patient_id and not self.case_sensitive:
            return Issue(X_ID_CASE.code, f"differs only in case from {other[0]!r} on {self.unit} {other[1]} "
                         "(probably the same patient)",
                         f"write {other[0]!r} if it is the same patient; if they are different patients, "
                         "pass --case-sensitive-ids", line, "patient_id", patient_id)
        return None


@dataclass(slots=True)
class ParsedFile:
    """Result of reading one file: the valid records and every issue (refuse the file if any)."""

    source: str
    sha256: str
    rows: int = 0
    records: list[ParsedRecord] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


def read_registry_csv(
    path: str | Path,
    *,
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> ParsedFile:
    """Read and validate a registry CSV file. See :func:`parse_registry_csv`."""
    path = Path(path)
    return parse_registry_csv(path.read_bytes(), source=str(path), centre=centre,
                              postop_window_days=postop_window_days, today=today,
                              case_sensitive_ids=case_sensitive_ids)


def parse_registry_csv(
    data: bytes,
    *,
    source: str = "<input>",
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> ParsedFile:
    """Validate registry CSV bytes.

    ``centre`` fills empty ``centre`` cells (and the column when absent).  ``today`` refuses
    dates in the future (defaults to the current date).  Ids that differ only in case are refused
    as probable duplicates unless ``case_sensitive_ids``.
    """
    today = today or dt.date.today()
    result = ParsedFile(source=source, sha256=hashlib.sha256(data).hexdigest())
    text = _decode(data, result)
    if text is None:
        return result
    if not text.strip():
        result.issues.append(Issue(F_EMPTY.code, "the file is empty",
                                   "export the registry with a header row: " + ", ".join(REQUIRED)))
        return result
    csv.field_size_limit(_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        result.issues.append(Issue(F_SYNTAX.code, f"the header row cannot be read as CSV ({exc})",
                                   "save the file as comma-separated values", 1))
        return result
    columns = _check_header(header, result)
    if columns is None:
        return result
    seen = SeenIds(case_sensitive=case_sensitive_ids)
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            result.issues.append(Issue(F_SYNTAX.code, f"CSV syntax error ({exc})",
                                       "close the quoted cell or remove the stray quote", line))
            break
        line = reader.line_num  # a quoted cell may span lines: report where the row ends
        if not row or all(not c.strip() for c in row):
            continue  # blank lines are harmless
        result.rows += 1
        if len(row) != len(header):
            result.issues.append(Issue(F_ROW_WIDTH.code, f"row has {len(row)} cells, the header has {len(header)}",
                                       "check for an unquoted comma or a missing cell", line))
            continue
        cells = {name: row[i] for name, i in columns.items()}
        if centre is not None and not cells.get("centre", "").strip():
            cells["centre"] = centre
        record, issues = parse_record(cells, line=line, today=today)
        issues += check_record(record, line=line, postop_window_days=postop_window_days,
                               failed={i.column for i in issues if i.column})
        if not any(i.column == "patient_id" for i in issues):
            duplicate = seen.check(line, record.get("centre"), record.get("patient_id"))
            issues += [duplicate] if duplicate else []
        if issues:
            result.issues += issues
        else:
            result.records.append(ParsedRecord.of(line, record))
    return result


def _decode(data: bytes, result: ParsedFile) -> str | None:
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        result.issues.append(Issue(F_BINARY.code, "the file contains NUL bytes: it is binary, not CSV text",
                                   "export the registry as a UTF-8 CSV file", line))
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        result.issues.append(Issue(
            F_ENCODING.code,
            f"byte 0x{data[exc.start]:02x} at character {column} is not valid UTF-8 (expected encoding: UTF-8)",
            "re-save the file as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')", line))
        return None


def _check_header(header: list[str], result: ParsedFile) -> dict[str, int] | None:
    columns: dict[str, int] = {}
    ok = True
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        sep = next(s for s in (";", "\t", "|") if s in header[0])
        result.issues.append(Issue(F_SYNTAX.code, f"the header is one cell holding {sep!r}: the file is not "
                                   "comma-separated", "save as comma-separated values (in Excel: 'CSV UTF-8')", 1))
        return None
    for i, raw in enumerate(header):
        name = raw.strip()
        if len(name) > 64:
            result.issues.append(Issue(V_LENGTH.code, f"header cell {i + 1} is {len(name)} characters long",
                                       "use the registry column names", 1, None, name))
            ok = False
        elif not name:
            result.issues.append(Issue(H_BLANK.code, f"header cell {i + 1} is empty",
                                       "name the column or delete it", 1))
            ok = False
        elif name.startswith(("=", "+", "@")):
            result.issues.append(Issue(V_FORMULA.code, "header cell looks like a spreadsheet formula",
                                       "use the registry column names", 1, name, name))
            ok = False
        elif name in columns:
            result.issues.append(Issue(H_DUPLICATE.code, f"column '{name}' appears twice",
                                       "keep one of the two columns", 1, name))
            ok = False
        elif name not in COLUMNS:
            guess = get_close_matches(name.lower(), COLUMNS, n=1)
            hint = f"did you mean '{guess[0]}'?" if guess else "remove it or rename it to a registry column"
            result.issues.append(Issue(H_UNKNOWN.code, f"unknown column '{name}'", hint, 1, name))
            ok = False
        else:
            columns[name] = i
    for name in REQUIRED:
        if name not in columns and not any(i.column == name for i in result.issues):
            result.issues.append(Issue(H_MISSING.code, f"required column '{name}' is missing",
                                       f"add a '{name}' column", 1, name))
            ok = False
    return columns if ok else None
