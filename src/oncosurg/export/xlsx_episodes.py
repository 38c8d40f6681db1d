"""Patients' records → an Excel workbook of the episode model, one sheet per table.

The sheets are the long registry format's files (``patients``, ``therapy_lines``, ``mdt_reviews``,
``response_assessments``, ``liver_procedures``, ``complications``, ``pathology``,
``disease_events``, ``contacts``) with the same columns (:attr:`oncosurg.pathway.model.EpisodeTable.columns`):
``centre``, ``patient_id``, the episode's key, then its fields.  Dates are Excel dates shown
``yyyy-mm-dd``, numbers numbers, ``;``-lists and text text (never a formula).  Every coded column
carries a drop-down list, numeric columns whole-number or decimal ranges, date columns a date check,
for the data rows and :data:`~oncosurg.export.xlsx.SPARE_ROWS` more.  The id columns (``centre``,
``patient_id``) are formatted as text in every row, spare rows included, so an id typed into the
workbook keeps its form (``00124`` stays ``00124``; ``1E5`` is not read as 100000).  Sheet
``dictionary`` describes every column.  :mod:`oncosurg.ingest.xlsx_episodes` reads the workbook back.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from oncosurg.export.xlsx import SPARE_ROWS, TEXT_FORMAT, _cell_value, _validation
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import PATIENT, TABLES, EpisodeTable, Table
from oncosurg.schema import FIELD_BY_NAME, Field, Kind

DICTIONARY_SHEET = "dictionary"
DICTIONARY_HEADER = ("sheet", "column", "key", "accepted values", "required", "unit", "notes")
#: Columns formatted as text in every row (identifiers: their written form matters).
ID_COLUMNS = ("centre", "patient_id")
SHEETS: dict[str, EpisodeTable] = {spec.file.removesuffix(".csv"): spec for spec in TABLES}


def sheet_name(spec: EpisodeTable) -> str:
    return spec.file.removesuffix(".csv")


def sheet_columns(spec: EpisodeTable) -> tuple[str, ...]:
    """The columns of a table's sheet: the long format's columns (centre, patient_id, the key, the fields)."""
    return tuple(dict.fromkeys(spec.columns))


def column_field(spec: EpisodeTable, column: str) -> Field:
    """The field of a sheet column (``centre`` is the registry's centre column)."""
    if column in ID_COLUMNS:
        return FIELD_BY_NAME["centre"] if column == "centre" else PATIENT.field_by_name["patient_id"]
    return spec.field_by_name[column]


def _sheet(ws: Worksheet, spec: EpisodeTable, records: list[PatientRecord]) -> int:
    columns = sheet_columns(spec)
    fields = [column_field(spec, c) for c in columns]
    ws.append(list(columns))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    count = 0
    for record in records:
        rows = [record.patient] if spec.table is Table.PATIENT else sorted(
            record.rows(spec.table), key=lambda r: tuple((r.get(k) is None, r.get(k)) for k in spec.key))
        for row in rows:
            values = {**row, "centre": record.centre, "patient_id": record.patient_id}
            ws.append([_cell_value(f, values.get(c)) for f, c in zip(fields, columns, strict=True)])
            count += 1
            for f, cell in zip(fields, ws[count + 1], strict=True):
                if f.kind is Kind.DATE:
                    cell.number_format = "yyyy-mm-dd"
                elif isinstance(cell.value, str):
                    cell.data_type = "s"  # never a formula, whatever the text starts with
                    if f.name in ID_COLUMNS:
                        cell.number_format = TEXT_FORMAT
    last = count + 1 + SPARE_ROWS
    for i, (f, column) in enumerate(zip(fields, columns, strict=True), start=1):
        letter = get_column_letter(i)
        ws.column_dimensions[letter].width = max(12, min(len(column) + 2, 40))
        dv = _validation(f)
        if dv is not None:
            ws.add_data_validation(dv)
            dv.add(f"{letter}2:{letter}{last}")
        if f.kind is Kind.DATE:
            ws.column_dimensions[letter].number_format = "yyyy-mm-dd"
        if column in ID_COLUMNS:  # typed ids stay text (LibreOffice and Excel keep a text cell's input as typed)
            ws.column_dimensions[letter].number_format = TEXT_FORMAT
            for r in range(count + 2, last + 1):
                ws.cell(row=r, column=i).number_format = TEXT_FORMAT
    ws.freeze_panes = "C2"
    return count


def _required(spec: EpisodeTable, column: str) -> str:
    if column == "patient_id" or column in spec.key:
        return "yes"
    if column == "centre":
        return ""
    return "yes" if spec.field_by_name[column].required == "yes" else ""


def _dictionary(ws: Worksheet) -> None:
    ws.append(list(DICTIONARY_HEADER))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for spec in TABLES:
        for column in sheet_columns(spec):
            f = column_field(spec, column)
            key = "yes" if column in spec.key and spec.table is not Table.PATIENT else ""
            notes = ("the parent's key: " if spec.parent is not None and column in spec.key[:-1] else "") + (
                f.description if column != "centre" else "the centre's name (default given at import)")
            ws.append([sheet_name(spec), column, key, f.describe_type(), _required(spec, column), f.unit, notes])
    for letter, width in zip("ABCDEFG", (22, 32, 6, 60, 10, 8, 60), strict=True):
        ws.column_dimensions[letter].width = width
    ws.freeze_panes = "A2"


def write_workbook(records: Iterable[PatientRecord], path: str | Path) -> int:
    """Write the episode workbook of ``records``; returns the number of patients written."""
    patients = list(records)
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for spec in TABLES:
        _sheet(wb.create_sheet(sheet_name(spec)), spec, patients)
    _dictionary(wb.create_sheet(DICTIONARY_SHEET))
    wb.save(Path(path))
    return len(patients)
