"""Excel workbook (.xlsx) → validated registry records.

Reads the sheet named ``registry`` (else the first sheet): row 1 holds registry column names,
each further row one patient, exactly as the registry CSV — the same header rules (unknown,
missing, duplicate columns), the same value and cross-field rules, and issues name the sheet row
(the header is row 1).  Excel's own cell types are turned into registry text first: a date cell
becomes ``YYYY-MM-DD``, a whole-number cell ``6`` (not ``6.0``), a TRUE/FALSE cell ``yes``/``no``.
A number, a date or TRUE/FALSE in the ``patient_id`` or ``centre`` column is refused (``V315``):
the spreadsheet converted the typed id and its form may be lost.
Formulas are read as their cached values.  Other sheets (the ``dictionary``) are ignored.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

from oncosurg.export.xlsx import ID_COLUMNS, REGISTRY_SHEET
from oncosurg.ingest._validate import RawRecord, validate_records
from oncosurg.ingest.csv import ParsedFile, _check_header
from oncosurg.rules import F_EMPTY, F_ROW_WIDTH, F_WORKBOOK, V_NUMERIC_ID, Issue
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS, REQUIRED


def cell_text(value: Any) -> str:
    """An Excel cell value as registry text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return value.date().isoformat() if value.time() == dt.time() else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def converted_id(value: Any) -> bool:
    """Whether an id cell holds what a spreadsheet made of a typed id: a number (``00124`` → 124), a date
    or time (``3-4`` → 4 March), or TRUE/FALSE — anything but text."""
    return value is not None and not isinstance(value, str)


def numeric_id_issue(column: str, value: Any, row: int, sheet: str | None = None) -> Issue:
    """``V315``: an id cell holds a number, a date or TRUE/FALSE (a spreadsheet converted the typed id;
    its form may be lost)."""
    shown = "TRUE" if value is True else "FALSE" if value is False else cell_text(value)
    kind = ("a truth value" if isinstance(value, bool) else "a date" if isinstance(value, (dt.date, dt.time))
            else "a number")
    return Issue(V_NUMERIC_ID.code, f"the cell holds {kind} ({shown}), not text: the spreadsheet turned the typed "
                 f"{column} into {kind}, and its written form may be lost (00124 becomes 124, 1E5 becomes 100000, "
                 "3-4 becomes a date)",
                 f"format the {column} column as Text (Format → Cells → Text), type the {column} again as written in "
                 "the centre's records (or start it with an apostrophe: '00124), save and import again",
                 row, column, shown, sheet)


def read_workbook(
    path: str | Path,
    *,
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> ParsedFile:
    """Read and validate a registry workbook. See :func:`parse_workbook`."""
    path = Path(path)
    return parse_workbook(path.read_bytes(), source=str(path), centre=centre,
                          postop_window_days=postop_window_days, today=today,
                          case_sensitive_ids=case_sensitive_ids)


def parse_workbook(
    data: bytes,
    *,
    source: str = "<input>",
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
) -> ParsedFile:
    """Validate the bytes of an .xlsx registry workbook (a column the sheet does not have is not
    carried: an update leaves it unchanged)."""
    from openpyxl import load_workbook

    sha256 = hashlib.sha256(data).hexdigest()
    result = ParsedFile(source=source, sha256=sha256)
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        result.issues.append(Issue(F_WORKBOOK.code, f"not an .xlsx workbook ({type(exc).__name__}: {exc})"[:300],
                                   "save the file in Excel as 'Excel Workbook (.xlsx)'"))
        return result
    try:
        ws = wb[REGISTRY_SHEET] if REGISTRY_SHEET in wb.sheetnames else wb.worksheets[0]
        values = [list(row) for row in ws.iter_rows(values_only=True)]
    finally:
        wb.close()
    rows = [[cell_text(v) for v in row] for row in values]
    while rows and not any(c.strip() for c in rows[-1]):
        rows.pop()
    if not rows:
        result.issues.append(Issue(F_EMPTY.code, "the registry sheet is empty",
                                   "put the registry columns in row 1: " + ", ".join(REQUIRED)))
        return result
    header = rows[0]
    while header and not header[-1].strip():
        header = header[:-1]  # Excel often reports formatted but empty columns
    columns = _check_header(header, result)
    if columns is None:
        return result
    raws = []
    refused = 0
    for number, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        extra = [c for c in row[len(header):] if c.strip()]
        if extra:
            result.issues.append(Issue(F_ROW_WIDTH.code, f"row has values beyond the {len(header)} named columns",
                                       "delete the values outside the registry columns or name their column",
                                       number))
            refused += 1
            continue
        numeric = [(c, values[number - 1][i]) for c, i in columns.items() if c in ID_COLUMNS
                   and i < len(values[number - 1]) and converted_id(values[number - 1][i])]
        if numeric:
            result.issues += [numeric_id_issue(c, v, number) for c, v in numeric]
            refused += 1
            continue
        row = row + [""] * (len(header) - len(row))
        raws.append(RawRecord(line=number, cells={name: row[i] for name, i in columns.items()}))
    parsed = validate_records(raws, source=source, sha256=sha256, centre=centre, today=today,
                              postop_window_days=postop_window_days, file_issues=result.issues,
                              case_sensitive_ids=case_sensitive_ids, unit="row")
    parsed.rows += refused
    return parsed
