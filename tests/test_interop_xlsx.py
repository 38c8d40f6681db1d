"""Excel workbooks: registry sheet with cell validation lists, dictionary sheet, lossless round trip, clear errors."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from openpyxl import Workbook, load_workbook

from interop_helpers import csv_text, registries, typed_records
from oncosurg.cli import cli
from oncosurg.export.xlsx import SPARE_ROWS, write_workbook
from oncosurg.ingest.csv import read_registry_csv
from oncosurg.ingest.xlsx import parse_workbook, read_workbook
from oncosurg.schema import COLUMNS, FIELDS
from registry_factory import random_registry


def workbook_bytes(records: list[dict[str, Any]], tmp_path: Path) -> Path:
    path = tmp_path / "registry.xlsx"
    write_workbook(records, path)
    return path


def sheet(rows: list[list[Any]]) -> bytes:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "registry"
    for row in rows:
        ws.append(row)
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def test_workbook_layout_validations_and_dictionary(reference_csv: Path, tmp_path: Path) -> None:
    records = [r.values for r in read_registry_csv(reference_csv).records]
    wb = load_workbook(workbook_bytes(records, tmp_path))
    assert wb.sheetnames == ["registry", "dictionary"]
    ws = wb["registry"]
    assert [c.value for c in ws[1]] == list(COLUMNS)
    assert ws.max_row == 152 + SPARE_ROWS  # the spare rows carry the validations and the ids' text format
    start = COLUMNS.index("cetuximab_start") + 1
    assert isinstance(ws.cell(row=2, column=start).value, dt.datetime)
    assert ws.cell(row=2, column=start).number_format == "yyyy-mm-dd"
    lists = {dv.formula1: str(dv.sqref) for dv in ws.data_validations.dataValidation if dv.type == "list"}
    assert '"in_house,referred"' in lists and '"yes,no"' in lists
    assert '"none,I,II,IIIa,IIIb,IVa,IVb,V"' in lists
    ranges = {(dv.type, dv.formula1, dv.formula2) for dv in ws.data_validations.dataValidation}
    assert ("whole", "0", "4") in ranges and ("decimal", "18", "100") in ranges
    dictionary = [[c.value for c in row] for row in wb["dictionary"].iter_rows()]
    assert dictionary[0] == ["column", "stage", "accepted values", "required", "unit", "notes"]
    assert [r[0] for r in dictionary[1:]] == [f.name for f in FIELDS]


def test_reference_cohort_round_trip(reference_csv: Path, tmp_path: Path) -> None:
    records = [r.values for r in read_registry_csv(reference_csv).records]
    back = read_workbook(workbook_bytes(records, tmp_path))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [r.values for r in back.records] == records and len(records) == 151


def test_random_registry_round_trip(tmp_path: Path) -> None:
    records = typed_records(random_registry(400, 7))
    assert [r.values for r in read_workbook(workbook_bytes(records, tmp_path)).records] == records


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(registries())
def test_generated_registries_round_trip(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    records = typed_records(rows)
    back = read_workbook(workbook_bytes(records, tmp_path), centre="main")
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert csv_text([r.values for r in back.records]) == csv_text(records)


def test_cli_csv_registry_xlsx_registry_csv_is_lossless(reference_csv: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert runner.invoke(cli, ["import", str(reference_csv), "--db", a]).exit_code == 0
    first = runner.invoke(cli, ["export", "--db", a]).output
    out = tmp_path / "registry.xlsx"
    assert runner.invoke(cli, ["export", "--db", a, "--format", "xlsx", "--out", str(out)]).exit_code == 0
    assert runner.invoke(cli, ["import", "--format", "xlsx", str(out), "--db", b]).exit_code == 0
    assert runner.invoke(cli, ["export", "--db", b]).output == first
    assert runner.invoke(cli, ["export", "--db", b, "--format", "xlsx"]).exit_code == 2  # needs --out


def test_excel_typed_cells_become_registry_text() -> None:
    header = ["patient_id", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner", "bilobar",
              "age_at_cetuximab", "last_contact_date"]
    data = sheet([header, ["1001", "in_house", 2.0, dt.datetime(2005, 1, 10), "irinotecan", True, 61.5,
                           dt.date(2006, 1, 10)]])
    parsed = parse_workbook(data, source="x.xlsx", centre="A")
    assert parsed.ok, [i.format() for i in parsed.issues]
    (record,) = parsed.records
    assert record.values["patient_id"] == "1001" and record.values["prior_chemo_lines"] == 2
    assert record.values["cetuximab_start"] == dt.date(2005, 1, 10) and record.values["bilobar"] is True
    assert record.carried == set(header) | {"centre"}  # a partial sheet carries only its columns, like a CSV


def test_errors_name_the_sheet_row_and_column() -> None:
    header = ["patient_id", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner",
              "last_contact_date"]
    good = ["P1", "in_house", 2, dt.date(2005, 1, 10), "irinotecan", dt.date(2006, 1, 10)]
    data = sheet([header, good, [], ["P2", "inhouse", 2, dt.datetime(2005, 1, 10, 14, 30), "irinotecan",
                                     dt.date(2006, 1, 10)], [*good[:5], dt.date(2004, 1, 1)]])
    found = [(i.code, i.line, i.column, i.value) for i in parse_workbook(data, source="x.xlsx").issues]
    assert ("V306", 4, "referral", "inhouse") in found
    assert ("V302", 4, "cetuximab_start", "2005-01-10T14:30:00") in found
    assert ("X409", 5, "last_contact_date", "2004-01-01") in found


def test_header_problems_and_not_a_workbook() -> None:
    issues = parse_workbook(sheet([["patient_id", "referal", None, None]]), source="x.xlsx").issues
    assert [(i.code, i.column) for i in issues][:1] == [("H201", "referal")]
    assert {i.code for i in issues} >= {"H201", "H202"}
    (issue,) = parse_workbook(b"patient_id,referral\n", source="x.xlsx").issues
    assert issue.code == "F106" and "not an .xlsx workbook" in issue.message
    (empty,) = parse_workbook(sheet([]), source="x.xlsx").issues
    assert empty.code == "F101"


def test_values_beyond_the_named_columns() -> None:
    header = ["patient_id", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner",
              "last_contact_date"]
    data = sheet([header, ["P1", "in_house", 2, dt.date(2005, 1, 10), "irinotecan", dt.date(2006, 1, 10), "x"]])
    parsed = parse_workbook(data, source="x.xlsx")
    assert [(i.code, i.line) for i in parsed.issues] == [("F105", 2)] and parsed.rows == 1


@pytest.mark.parametrize("text", ["=HYPERLINK(\"x\")", "@SUM(A1)"])
def test_formula_like_text_is_refused_on_import(text: str) -> None:
    header = ["patient_id", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner",
              "last_contact_date"]
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(header)
    ws.append(["P1", "in_house", 2, dt.date(2005, 1, 10), "irinotecan", dt.date(2006, 1, 10)])
    ws["A2"].value = text
    ws["A2"].data_type = "s"
    out = io.BytesIO()
    wb.save(out)
    (issue,) = parse_workbook(out.getvalue(), source="x.xlsx").issues
    assert (issue.code, issue.line, issue.column) == ("V310", 2, "patient_id")
