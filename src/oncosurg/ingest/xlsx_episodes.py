"""Excel workbooks (.xlsx) → checked patient records: the episode workbook, and dispatch to the flat one.

:func:`parse_workbook` reads a workbook whose sheets are the episode tables
(:mod:`oncosurg.export.xlsx_episodes`: ``patients``, ``therapy_lines``, … ``contacts``, the long
registry format's files as sheets, same columns); a workbook without such sheets is the flat
one-sheet workbook of earlier releases, read by :mod:`oncosurg.ingest.xlsx`.  Row 1 of a sheet
names its columns; every further row is one row of the table.  Excel's cell types are turned into
registry text first (a date cell → ``YYYY-MM-DD``, ``6.0`` → ``6``, TRUE/FALSE → yes/no); the id
columns (``centre``, ``patient_id``) must be text: a number, date or TRUE/FALSE there lost its
written form (``00124`` typed into a General cell is 124, ``1E5`` is 100000, ``3-4`` a date) and is
refused (``V315``) with the fix.

A sheet the workbook does not have is not carried: ``import --update`` leaves that table unchanged;
in a sheet, a column it does not have is not carried either, and a row it does not list is kept.
Issues name the sheet (``Issue.file``), the row (the header is row 1), the column and the value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import zipfile
from collections.abc import Iterable
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from oncosurg.export.xlsx_episodes import DICTIONARY_SHEET, ID_COLUMNS, SHEETS, column_field, sheet_columns
from oncosurg.ingest.csv import ParsedFile
from oncosurg.ingest.episode_rows import EpisodeFile, RecordBuilder, StoredLookup
from oncosurg.ingest.xlsx import cell_text, converted_id, numeric_id_issue
from oncosurg.pathway.model import EpisodeTable, Table
from oncosurg.rules import (
    F_ROW_WIDTH,
    F_WORKBOOK,
    H_BLANK,
    H_DUPLICATE,
    H_MISSING,
    H_UNKNOWN,
    V_REQUIRED,
    Issue,
    parse_cell,
)
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS, Kind

_ORDER = {name: i for i, name in enumerate(SHEETS)}


def read_workbook(path: str | Path, **options: Any) -> EpisodeFile | ParsedFile:
    """Read and validate a registry workbook of either form. See :func:`parse_workbook`."""
    path = Path(path)
    return parse_workbook(path.read_bytes(), source=str(path), **options)


def parse_workbook(
    data: bytes,
    *,
    source: str = "<input>",
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    case_sensitive_ids: bool = False,
    stored: StoredLookup | None = None,
) -> EpisodeFile | ParsedFile:
    """Validate the bytes of an .xlsx workbook: an :class:`EpisodeFile` for the episode workbook, a flat
    :class:`~oncosurg.ingest.csv.ParsedFile` for a one-sheet registry workbook.

    ``centre`` fills empty centre cells; ``stored`` looks up registered patients for an update.
    """
    from openpyxl import load_workbook

    sha256 = hashlib.sha256(data).hexdigest()
    result = EpisodeFile(source=source, sha256=sha256)
    try:
        wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, TypeError) as exc:
        result.issues.append(Issue(F_WORKBOOK.code, f"not an .xlsx workbook ({type(exc).__name__}: {exc})"[:300],
                                   "save the file in Excel as 'Excel Workbook (.xlsx)'"))
        return result
    try:
        if not any(name in SHEETS for name in wb.sheetnames):
            wb.close()
            from oncosurg.ingest.xlsx import parse_workbook as parse_flat

            return parse_flat(data, source=source, centre=centre, postop_window_days=postop_window_days,
                              today=today, case_sensitive_ids=case_sensitive_ids)
        reader = _Reader(result, centre=centre, today=today or dt.date.today(), case_sensitive_ids=case_sensitive_ids)
        for name in wb.sheetnames:
            if name in SHEETS:
                reader.sheet(SHEETS[name], name, wb[name].iter_rows(values_only=True))
            elif name != DICTIONARY_SHEET:
                guess = get_close_matches(name.lower(), list(SHEETS), n=1)
                reader.refused = True
                result.issues.append(Issue(
                    F_WORKBOOK.code, f"sheet '{name}' is not a sheet of the registry workbook",
                    (f"rename it '{guess[0]}'" if guess else "delete or rename it") + "; the sheets are "
                    + ", ".join(SHEETS) + " (and the dictionary)", None, None, None, name))
    finally:
        wb.close()
    if not reader.refused:
        records, issues = reader.builder.build(stored=stored, postop_window_days=postop_window_days)
        result.issues += issues
        if not result.issues:
            result.records = records
    result.issues.sort(key=lambda i: (_ORDER.get(i.file or "", -1), i.line or 0))
    return result


class _Reader:
    def __init__(self, result: EpisodeFile, *, centre: str | None, today: dt.date, case_sensitive_ids: bool) -> None:
        self.result = result
        self.issues = result.issues
        self.centre = centre
        self.today = today
        self.builder = RecordBuilder({}, case_sensitive_ids=case_sensitive_ids, unit="row")
        self.refused = False  # a sheet or a header is refused: no rule across rows is checked

    def sheet(self, spec: EpisodeTable, name: str, rows: Iterable[tuple[Any, ...]]) -> None:
        iterator = iter(rows)
        header = [cell_text(v).strip() for v in next(iterator, ())]
        while header and not header[-1]:
            header.pop()  # Excel often reports formatted but empty columns
        columns = self._header(spec, name, header)
        if columns is None:
            self.refused = True
            return
        self.builder.carried[spec.table] = frozenset(c for c in columns if c != "centre")
        for number, row in enumerate(iterator, start=2):
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in row):
                continue
            self.result.rows += 1
            if any(v is not None and cell_text(v).strip() for v in row[len(header):]):
                self.issues.append(Issue(F_ROW_WIDTH.code, f"row has values beyond the {len(header)} named columns",
                                         "delete the values outside the table's columns or name their column",
                                         number, None, None, name))
                continue
            cells = {c: row[i] if i < len(row) else None for c, i in columns.items()}
            self._row(spec, name, number, cells)

    def _header(self, spec: EpisodeTable, sheet: str, header: list[str]) -> dict[str, int] | None:
        columns: dict[str, int] = {}
        ok = True
        for i, column in enumerate(header):
            if not column:
                self.issues.append(Issue(H_BLANK.code, f"header cell {i + 1} is empty", "name the column or delete it",
                                         1, None, None, sheet))
                ok = False
            elif column in columns:
                self.issues.append(Issue(H_DUPLICATE.code, f"column '{column}' appears twice",
                                         "keep one of the two columns", 1, column, None, sheet))
                ok = False
            elif column not in sheet_columns(spec):
                elsewhere = [s for s, other in SHEETS.items() if column in sheet_columns(other)]
                guess = get_close_matches(column.lower(), sheet_columns(spec), n=1)
                hint = (f"did you mean '{guess[0]}'?" if guess else
                        f"'{column}' is a column of sheet '{elsewhere[0]}'" if elsewhere else
                        "remove it, or rename it to a column of the sheet: " + ", ".join(sheet_columns(spec)))
                self.issues.append(Issue(H_UNKNOWN.code, f"unknown column '{column}' in sheet '{sheet}'", hint,
                                         1, column[:64], None, sheet))
                ok = False
            else:
                columns[column] = i
        for column in ("patient_id", *spec.key):
            if column not in columns and not any(i.column == column and i.file == sheet for i in self.issues):
                self.issues.append(Issue(H_MISSING.code, f"required column '{column}' is missing from sheet '{sheet}'",
                                         f"add a '{column}' column", 1, column, None, sheet))
                ok = False
        return columns if ok else None

    def _row(self, spec: EpisodeTable, sheet: str, number: int, cells: dict[str, Any]) -> None:
        identity: dict[str, str] = {}
        for column in ID_COLUMNS:
            value = cells.get(column)
            if converted_id(value):
                self.issues.append(numeric_id_issue(column, value, number, sheet))
                return
            text = cell_text(value)
            if column == "centre" and not text.strip():
                text = self.centre or ""
            if not text.strip():
                if column == "patient_id":
                    self.issues.append(Issue(V_REQUIRED.code, "required value is empty",
                                             "fill in the patient's pseudonym", number, column, text, sheet))
                    return
            else:
                problem = parse_cell(column_field(spec, column), text, line=number)[1]
                if problem is not None:
                    self.issues.append(_in(problem, sheet))
                    return
            identity[column] = text
        centre, patient_id = identity["centre"], identity["patient_id"]
        values: dict[str, Any] = {}
        for column, raw in cells.items():
            if column in ID_COLUMNS:
                continue
            f = spec.field_by_name[column]
            text = cell_text(raw)
            if not text.strip():
                values[column] = None
                continue
            value, problem = parse_cell(f, text if f.kind is Kind.TEXT else text.strip(), line=number,
                                        today=self.today)
            if problem is not None:
                self.issues.append(_in(problem, sheet))
                self.builder.failed(centre, patient_id, spec.table, column, number, key=column in spec.key)
            values[column] = value
        if spec.table is Table.PATIENT:
            self.builder.patient_row(centre, patient_id, values, (sheet, number))
        else:
            self.builder.episode_row(centre, patient_id, spec.table, values, (sheet, number))


def _in(issue: Issue, sheet: str) -> Issue:
    return Issue(issue.code, issue.message, issue.hint, issue.line, issue.column, issue.value, sheet)
