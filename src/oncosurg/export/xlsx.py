"""Flat registry records → an Excel workbook a data manager can fill in and import back.

The flat workbook, one row per patient (``oncosurg export --format xlsx`` writes the episode
workbook of :mod:`oncosurg.export.xlsx_episodes`; this one remains for de-identified exports).
Sheet ``registry``: the registry columns in registry order, dates as Excel dates shown
``yyyy-mm-dd``, ``patient_id`` and ``centre`` formatted as text in every row (spare rows included,
so typed ids keep their form), numbers as numbers (a number with more than the 15 significant
digits an Excel number keeps is written as text, so nothing is lost), everything else as text;
every column carries a cell validation (a drop-down list for coded and yes/no columns, whole-number or decimal ranges,
dates), with an input message naming the accepted values.  Sheet ``dictionary``: one row per column
(stage, accepted values, required, unit, notes) — the same content as ``docs/registry-columns.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from oncosurg.schema import FIELDS, Field, Kind

REGISTRY_SHEET = "registry"
DICTIONARY_SHEET = "dictionary"
DICTIONARY_HEADER = ("column", "stage", "accepted values", "required", "unit", "notes")
#: Rows below the data that still carry the validations (room for new patients).
SPARE_ROWS = 1000
#: Excel's "Text" number format: what is typed into such a cell stays text (``00124`` is not 124).
TEXT_FORMAT = "@"
#: Columns formatted as text in every row, spare rows included (identifiers: their written form matters).
ID_COLUMNS = ("patient_id", "centre")


def _required(f: Field) -> str:
    return {"yes": "yes", "no": "", "with_surgery": "iff surgery_date"}[f.required]


def _validation(f: Field) -> DataValidation | None:
    if f.kind in (Kind.ENUM, Kind.BOOL):
        choices = f.choices if f.kind is Kind.ENUM else ("yes", "no")
        dv = DataValidation(type="list", formula1='"' + ",".join(choices) + '"', allow_blank=True)
    elif f.kind in (Kind.INTEGER, Kind.NUMBER):
        kind = "whole" if f.kind is Kind.INTEGER else "decimal"
        lo, hi = f.minimum, f.maximum
        if lo is not None and hi is not None:
            dv = DataValidation(type=kind, operator="between", formula1=str(lo), formula2=str(hi), allow_blank=True)
        elif lo is not None:
            dv = DataValidation(type=kind, operator="greaterThan" if f.exclusive_minimum else "greaterThanOrEqual",
                                formula1=str(lo), allow_blank=True)
        else:
            return None
    elif f.kind is Kind.DATE:
        dv = DataValidation(type="date", operator="greaterThan", formula1="1", allow_blank=True)
    else:
        return None
    dv.showErrorMessage = True
    dv.errorTitle = f.name
    dv.error = f"{f.name}: use {f.describe_type()}"[:255]
    dv.showInputMessage = True
    dv.promptTitle = f.name[:32]
    dv.prompt = f.describe_type()[:255]
    return dv


def _cell_value(f: Field, value: Any) -> Any:
    if value is None:
        return None
    if f.kind is Kind.BOOL:
        return "yes" if value else "no"
    if f.kind is Kind.DATE:
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    if f.kind is Kind.NUMBER and float(f"{value:.15g}") != value:
        return repr(float(value))  # more digits than an Excel number keeps: text, so nothing is lost
    if f.kind in (Kind.INTEGER, Kind.NUMBER):
        return value
    return str(value)


def _registry_sheet(ws: Worksheet, records: Iterable[Mapping[str, Any]]) -> int:
    ws.append([f.name for f in FIELDS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    count = 0
    for count, record in enumerate(records, start=1):
        ws.append([_cell_value(f, record.get(f.name)) for f in FIELDS])
        for f, cell in zip(FIELDS, ws[count + 1], strict=True):
            if f.kind is Kind.DATE:
                cell.number_format = "yyyy-mm-dd"
            elif isinstance(cell.value, str):
                cell.data_type = "s"  # never a formula, whatever the text starts with
            if f.name in ID_COLUMNS:
                cell.number_format = TEXT_FORMAT
    last = count + 1 + SPARE_ROWS
    for i, f in enumerate(FIELDS, start=1):
        letter = get_column_letter(i)
        ws.column_dimensions[letter].width = max(12, min(len(f.name) + 2, 40))
        dv = _validation(f)
        if dv is not None:
            ws.add_data_validation(dv)
            dv.add(f"{letter}2:{letter}{last}")
        if f.kind is Kind.DATE:  # new rows typed in Excel show dates as the registry writes them
            ws.column_dimensions[letter].number_format = "yyyy-mm-dd"
        if f.name in ID_COLUMNS:  # ids typed into new rows stay text (Excel and LibreOffice keep them as typed)
            ws.column_dimensions[letter].number_format = TEXT_FORMAT
            for row in range(count + 2, last + 1):
                ws.cell(row=row, column=i).number_format = TEXT_FORMAT
    ws.freeze_panes = "B2"
    return count


def _dictionary_sheet(ws: Worksheet) -> None:
    ws.append(list(DICTIONARY_HEADER))
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for f in FIELDS:
        ws.append([f.name, f.stage.value, f.describe_type(), _required(f), f.unit, f.description])
    for letter, width in zip("ABCDEF", (32, 22, 60, 16, 8, 50), strict=True):
        ws.column_dimensions[letter].width = width
    ws.freeze_panes = "A2"


def write_workbook(records: Iterable[Mapping[str, Any]], path: str | Path) -> int:
    """Write the registry workbook; returns the number of patients written."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = REGISTRY_SHEET
    count = _registry_sheet(ws, records)
    _dictionary_sheet(wb.create_sheet(DICTIONARY_SHEET))
    wb.save(Path(path))
    return count
