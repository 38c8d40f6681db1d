"""Excel and the episode model (issue 11 item 2): one sheet per table with validation lists and a
dictionary, id columns as text in every row, lossless round trips, partial workbooks, errors that
name the sheet, the row and the column, and the flat one-sheet workbooks of earlier releases."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from episode_factory import registries, same
from oncosurg.cli import cli
from oncosurg.export.xlsx import SPARE_ROWS
from oncosurg.export.xlsx import write_workbook as write_flat_workbook
from oncosurg.export.xlsx_episodes import SHEETS, sheet_columns, write_workbook
from oncosurg.ingest.csv import ParsedFile, read_registry_csv
from oncosurg.ingest.episode_rows import EpisodeFile
from oncosurg.ingest.xlsx_episodes import parse_workbook, read_workbook
from oncosurg.pathway.flat import PatientRecord, from_flat, to_flat
from oncosurg.pathway.model import TABLES, Table
from oncosurg.reference import random_registry, reference_records
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_patients
from test_redcap_episodes import by_patient, canonical, stored


def workbook(records: list[PatientRecord], tmp_path: Path, name: str = "registry.xlsx") -> Path:
    path = tmp_path / name
    write_workbook(records, path)
    return path


def episodes(path: Path, **options: Any) -> EpisodeFile:
    result = read_workbook(path, **options)
    assert isinstance(result, EpisodeFile)
    return result


def saved(wb: Workbook) -> bytes:
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


# ------------------------------------------------------------------ layout

def test_one_sheet_per_table_with_the_long_formats_columns(tmp_path: Path) -> None:
    records = reference_records()
    wb = load_workbook(workbook(records, tmp_path))
    assert wb.sheetnames == [*(spec.file.removesuffix(".csv") for spec in TABLES), "dictionary"]
    for name, spec in SHEETS.items():
        ws = wb[name]
        assert tuple(c.value for c in ws[1]) == sheet_columns(spec)
        assert sheet_columns(spec)[:2] == ("centre", "patient_id") and spec.key[-1] in sheet_columns(spec)
    assert wb["patients"]["B2"].value == records[0].patient_id
    lines = wb["therapy_lines"]
    start = sheet_columns(SHEETS["therapy_lines"]).index("start_date") + 1
    assert isinstance(lines.cell(row=2, column=start).value, dt.datetime)
    assert lines.cell(row=2, column=start).number_format == "yyyy-mm-dd"
    rows = sum(len(r.rows(Table.THERAPY_LINE)) for r in records)
    assert lines.max_row == 1 + rows + SPARE_ROWS


def test_validation_lists_per_coded_column(tmp_path: Path) -> None:
    wb = load_workbook(workbook(reference_records()[:3], tmp_path))

    def lists(sheet: str) -> dict[str, str]:
        return {dv.formula1: str(dv.sqref) for dv in wb[sheet].data_validations.dataValidation if dv.type == "list"}

    assert '"hepatectomy,ablation,exploration_only,pve,two_stage_first,two_stage_second,alpps_1,alpps_2"' in lists(
        "liver_procedures")
    assert '"alive,dead"' in lists("contacts") and '"yes,no"' in lists("therapy_lines")
    assert '"I,II,IIIa,IIIb,IVa,IVb,V"' in lists("complications")
    assert '"in_house,referred"' in lists("patients")
    ranges = {(dv.type, dv.formula1, dv.formula2) for dv in wb["pathology"].data_validations.dataValidation}
    assert ("whole", "0", "4") in ranges and ("decimal", "0", "100") in ranges
    coded = [(name, c) for name, spec in SHEETS.items() for c in sheet_columns(spec)
             if c in spec.field_by_name and spec.field_by_name[c].kind.value in ("enum", "bool")]
    for name, column in coded:  # every coded column has its list, down to the last spare row
        letter = chr(ord("A") + sheet_columns(SHEETS[name]).index(column))
        assert any(letter in str(dv.sqref) and dv.type == "list" for dv in wb[name].data_validations.dataValidation)


def test_id_columns_are_text_in_every_row_spare_rows_included(tmp_path: Path) -> None:
    records = reference_records()[:5]
    wb = load_workbook(workbook(records, tmp_path))
    for name in SHEETS:
        ws = wb[name]
        for column in ("A", "B"):  # centre, patient_id
            formats = {ws[f"{column}{row}"].number_format for row in range(2, ws.max_row + 1)}
            assert formats == {"@"}, (name, column)
        assert ws.max_row >= 1 + SPARE_ROWS


def test_dictionary_sheet(tmp_path: Path) -> None:
    wb = load_workbook(workbook(reference_records()[:1], tmp_path))
    rows = [[c.value for c in row] for row in wb["dictionary"].iter_rows()]
    assert rows[0] == ["sheet", "column", "key", "accepted values", "required", "unit", "notes"]
    assert len(rows) - 1 == sum(len(sheet_columns(spec)) for spec in TABLES)
    by = {(r[0], r[1]): r for r in rows[1:]}
    assert by[("complications", "procedure_no")][2] == "yes" and "parent" in by[("complications", "procedure_no")][6]
    assert by[("liver_procedures", "procedure_date")][4] == "yes"
    assert "hepatectomy" in by[("liver_procedures", "procedure_type")][3]


# ------------------------------------------------------------------ round trips

def test_reference_records_round_trip(tmp_path: Path) -> None:
    records = reference_records()
    back = episodes(workbook(records, tmp_path))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [canonical(r) for r in back.records] == [canonical(r) for r in records]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(st.integers(0, 100_000), st.integers(9, 17))
def test_random_registries_round_trip(tmp_path: Path, seed: int, episodes_per_patient: int) -> None:
    records = random_registry(5, seed, centres=("A", "Zürich  (two spaces)", "東京"), episodes=episodes_per_patient)
    back = episodes(workbook(records, tmp_path, f"r{seed}.xlsx"))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [canonical(r) for r in back.records] == sorted((canonical(r) for r in records), key=by_patient)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(registries(max_size=4))
def test_generated_registries_round_trip(tmp_path: Path, records: list[PatientRecord]) -> None:
    """records → Excel → records, on valid patients drawn by ``tests/episode_factory.py``."""
    back = episodes(workbook(records, tmp_path, "generated.xlsx"))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert len(back.records) == len(records)
    assert all(same(a, b) for a, b in zip(back.records, records, strict=True))


def test_flat_origin_records_are_unchanged(reference_csv: Path, tmp_path: Path) -> None:
    flat = [r.values for r in read_registry_csv(reference_csv).records]
    back = episodes(workbook([from_flat(v) for v in flat], tmp_path))
    assert [to_flat(r) for r in back.records] == flat


def test_cli_export_import_keeps_every_episode(tmp_path: Path) -> None:
    records = random_registry(30, 4, centres=2, episodes=16)
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    engine = open_store(a)
    assert not import_patients(engine, records, source="gen", sha256="0", rows=30).issues
    engine.dispose()
    out = tmp_path / "registry.xlsx"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--db", a, "--format", "xlsx", "--out", str(out)])
    assert result.exit_code == 0 and "30 patient(s)" in result.output
    valid = runner.invoke(cli, ["validate", "--format", "xlsx", str(out)])
    assert valid.exit_code == 0 and "30 patient(s)" in valid.output
    assert runner.invoke(cli, ["import", "--format", "xlsx", str(out), "--db", b]).exit_code == 0
    assert stored(b) == stored(a)


# ------------------------------------------------------------------ partial workbooks

@pytest.fixture
def registry(tmp_path: Path, store_url: str) -> tuple[str, Path]:
    """A registry of 5 multi-episode patients (SQLite, PostgreSQL) and its full workbook."""
    records = random_registry(5, 21, centres=1, episodes=16)
    db = store_url
    engine = open_store(db)
    assert not import_patients(engine, records, source="gen", sha256="0", rows=5).issues
    engine.dispose()
    out = tmp_path / "full.xlsx"
    assert CliRunner().invoke(cli, ["export", "--db", db, "--format", "xlsx", "--out", str(out)]).exit_code == 0
    return db, out


def update(db: str, wb: Workbook, tmp_path: Path, *args: str) -> Any:
    path = tmp_path / "partial.xlsx"
    wb.save(path)
    return CliRunner().invoke(cli, ["import", "--format", "xlsx", str(path), "--db", db, "--update", *args])


def test_missing_sheets_and_columns_change_nothing(registry: tuple[str, Path], tmp_path: Path) -> None:
    db, full = registry
    before = stored(db)
    wb = load_workbook(full)
    for name in wb.sheetnames:
        if name != "therapy_lines":
            del wb[name]
    ws = wb["therapy_lines"]
    keep = ("centre", "patient_id", "line_number", "cycles")
    for index in reversed(range(1, ws.max_column + 1)):
        if ws.cell(row=1, column=index).value not in keep:
            ws.delete_cols(index)
    assert [c.value for c in ws[1]] == list(keep)
    ws.cell(row=2, column=4).value = (ws.cell(row=2, column=4).value or 0) + 1
    result = update(db, wb, tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.count("→") == 1 and "therapy_line.cycles" in result.output
    after = stored(db)
    assert [a for a, b in zip(after, before, strict=True) if a != b] == [after[0]]
    assert after[0][1] == before[0][1]  # the patient row is untouched
    assert {k: v for k, v in after[0][2].items() if k is not Table.THERAPY_LINE} == {
        k: v for k, v in before[0][2].items() if k is not Table.THERAPY_LINE}


def test_rows_a_sheet_does_not_list_are_kept_and_new_rows_added(registry: tuple[str, Path], tmp_path: Path) -> None:
    db, full = registry
    before = stored(db)
    wb = load_workbook(full)
    for name in wb.sheetnames:
        if name not in ("contacts", "dictionary"):
            del wb[name]
    ws = wb["contacts"]
    first = [c.value for c in ws[2]]
    ws.delete_rows(3, ws.max_row)  # every contact but the first left out
    ws.append([first[0], first[1], 50, first[3], "alive"])  # a new contact on the same day as the first
    result = update(db, wb, tmp_path)
    assert result.exit_code == 0, result.output
    after = stored(db)
    contacts = after[0][2][Table.CONTACT]
    assert len(contacts) == len(before[0][2][Table.CONTACT]) + 1 and contacts[-1]["contact_no"] == 50
    assert after[1:] == before[1:]


def test_an_empty_cell_clears_only_with_allow_clear(registry: tuple[str, Path], tmp_path: Path) -> None:
    db, full = registry
    wb = load_workbook(full)
    ws = wb["therapy_lines"]
    column = sheet_columns(SHEETS["therapy_lines"]).index("cycles") + 1
    row = next(r for r in range(2, ws.max_row + 1) if ws.cell(row=r, column=column).value is not None)
    ws.cell(row=row, column=column).value = None
    refused = update(db, wb, tmp_path)
    assert refused.exit_code == 2 and "X417" in refused.output and "therapy_line.cycles" in refused.output
    assert update(db, wb, tmp_path, "--allow-clear").exit_code == 0


# ------------------------------------------------------------------ errors name the sheet, the row and the column

def minimal() -> Workbook:
    wb = Workbook()
    first = wb.active
    assert first is not None
    wb.remove(first)
    for name, rows in {
        "patients": [["centre", "patient_id", "referral"], ["A", "P1", "in_house"]],
        "therapy_lines": [["centre", "patient_id", "line_number", "start_date", "agents", "intent"],
                          ["A", "P1", 2, dt.date(2005, 1, 10), "cetuximab;irinotecan", "conversion"]],
        "contacts": [["centre", "patient_id", "contact_no", "contact_date", "vital_status"],
                     ["A", "P1", 1, dt.date(2006, 1, 1), "alive"]],
    }.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    return wb


def issues_of(wb: Workbook) -> list[tuple[str, str | None, int | None, str | None, str | None]]:
    result = parse_workbook(saved(wb), source="book.xlsx")
    assert isinstance(result, EpisodeFile)
    return [(i.code, i.file, i.line, i.column, i.value) for i in result.issues]


def test_a_minimal_workbook_is_valid() -> None:
    result = parse_workbook(saved(minimal()), source="book.xlsx")
    assert isinstance(result, EpisodeFile) and result.ok, [i.format() for i in result.issues]
    (record,) = result.records
    assert record.rows(Table.THERAPY_LINE)[0]["agents"] == "cetuximab;irinotecan"
    assert Table.LIVER_PROCEDURE not in (record.carried or {})


def test_value_errors_name_sheet_row_column_and_value() -> None:
    wb = minimal()
    wb["therapy_lines"].append(["A", "P1", 3, dt.datetime(2005, 6, 1, 14, 30), "cetuximab;aspirin", "rescue"])
    wb["contacts"].append(["A", "P1", "two", dt.date(2006, 2, 1), "alive"])
    found = issues_of(wb)
    assert ("V302", "therapy_lines", 3, "start_date", "2005-06-01T14:30:00") in found
    assert ("V306", "therapy_lines", 3, "agents", "cetuximab;aspirin") in found
    assert ("V306", "therapy_lines", 3, "intent", "rescue") in found
    assert ("V303", "contacts", 3, "contact_no", "two") in found
    text = next(i for i in parse_workbook(saved(wb), source="book.xlsx").issues if i.column == "intent").format(
        "book.xlsx")
    assert text.startswith("book.xlsx/therapy_lines:3: column 'intent' = 'rescue':")


def test_rules_across_rows_name_the_sheet_and_row() -> None:
    wb = minimal()
    ws = wb.create_sheet("complications")
    ws.append(["centre", "patient_id", "procedure_no", "complication_no", "grade"])
    ws.append(["A", "P1", 4, 1, "II"])
    wb["contacts"].append(["A", "P1", 2, dt.date(2005, 1, 1), "dead"])
    found = issues_of(wb)
    assert ("E601", "complications", 2, "procedure_no", "4") in found
    assert any(code == "E609" and sheet == "contacts" for code, sheet, *_ in found)


def test_layout_errors() -> None:
    wb = minimal()
    wb.create_sheet("Sheet1").append(["notes"])
    wb["contacts"].cell(row=1, column=5).value = "vital"
    wb["therapy_lines"].delete_cols(3)  # line_number, the key
    found = {(code, sheet, column) for code, sheet, _, column, _ in issues_of(wb)}
    assert ("F106", "Sheet1", None) in found
    assert ("H201", "contacts", "vital") in found
    assert ("H202", "therapy_lines", "line_number") in found
    hint = next(i.hint for i in parse_workbook(saved(wb), source="b.xlsx").issues if i.column == "vital")
    assert "vital_status" in hint


def test_episodes_of_a_patient_without_a_patient_row() -> None:
    wb = minimal()
    wb["contacts"].append(["A", "P2", 1, dt.date(2006, 1, 1), "alive"])
    assert ("E601", "contacts", 3, "patient_id", "P2") in issues_of(wb)


def test_a_new_row_needs_its_required_columns() -> None:
    wb = minimal()
    wb["contacts"].delete_cols(5)  # vital_status left out: a new contact cannot be created without it
    found = issues_of(wb)
    assert ("V301", "contacts", 2, "vital_status", None) in found


def test_numeric_ids_are_refused_with_the_fix() -> None:
    wb = minimal()
    wb["contacts"].append(["A", 124, 1, dt.date(2006, 1, 1), "alive"])
    wb["patients"].append([7, "P7", "in_house"])
    result = parse_workbook(saved(wb), source="book.xlsx")
    found = [(i.code, i.file, i.line, i.column, i.value) for i in result.issues]
    assert ("V315", "contacts", 3, "patient_id", "124") in found and ("V315", "patients", 3, "centre", "7") in found
    issue = next(i for i in result.issues if i.code == "V315")
    assert "Text" in issue.hint and "00124" in issue.message


def test_ids_a_spreadsheet_made_dates_or_truth_values_are_refused() -> None:
    """``3-4`` or ``1/2`` typed into a General cell becomes a date, ``TRUE`` a truth value: the id is lost."""
    wb = minimal()
    wb["contacts"].append(["A", dt.datetime(2026, 3, 4), 1, dt.date(2006, 1, 1), "alive"])
    wb["patients"].append([True, "P8", "in_house"])
    wb["patients"].append(["A", dt.time(12, 30), "in_house"])
    result = parse_workbook(saved(wb), source="book.xlsx")
    found = [(i.code, i.file, i.line, i.column, i.value) for i in result.issues]
    assert ("V315", "contacts", 3, "patient_id", "2026-03-04") in found
    assert ("V315", "patients", 3, "centre", "TRUE") in found
    assert ("V315", "patients", 4, "patient_id", "12:30:00") in found
    assert not result.records
    assert "a date" in next(i.message for i in result.issues if i.file == "contacts")


# ------------------------------------------------------------------ the flat workbook of earlier releases

def test_flat_workbooks_are_still_read(reference_csv: Path, tmp_path: Path) -> None:
    flat = [r.values for r in read_registry_csv(reference_csv).records]
    path = tmp_path / "flat.xlsx"
    write_flat_workbook(flat, path)
    result = read_workbook(path)
    assert isinstance(result, ParsedFile) and [r.values for r in result.records] == flat
    wb = load_workbook(path)
    formats = {wb["registry"][f"A{row}"].number_format for row in range(2, wb["registry"].max_row + 1)}
    assert formats == {"@"}  # patient_id is text in every row, spare rows included
    ws = wb["registry"]
    last = len(flat) + 2  # the first spare row
    for n, converted in enumerate((124, dt.datetime(2026, 3, 4), True)):
        for column, cell in enumerate(ws[2], start=1):  # a copy of the first patient's row ...
            ws.cell(row=last + n, column=column).value = cell.value
        ws.cell(row=last + n, column=1).value = converted  # ... whose patient_id a spreadsheet converted
    bad = tmp_path / "typed.xlsx"
    wb.save(bad)
    result = read_workbook(bad)
    assert [(i.code, i.line, i.column, i.value) for i in result.issues] == [
        ("V315", last + n, "patient_id", shown) for n, shown in enumerate(("124", "2026-03-04", "TRUE"))]


@pytest.mark.libreoffice
def test_a_workbook_re_saved_by_libreoffice_imports_the_same_episodes(tmp_path: Path) -> None:
    """A data manager opens the exported workbook in LibreOffice Calc and saves it: nothing changes."""
    from libreoffice import require, type_cells

    require()
    records = random_registry(12, 9, centres=("A", 'Hôpital "Nord", Lyon', "東京"), episodes=16)
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    engine = open_store(a)
    assert not import_patients(engine, records, source="gen", sha256="0", rows=len(records)).issues
    engine.dispose()
    out, resaved = tmp_path / "registry.xlsx", tmp_path / "resaved.xlsx"
    runner = CliRunner()
    assert runner.invoke(cli, ["export", "--db", a, "--format", "xlsx", "--out", str(out)]).exit_code == 0
    type_cells(out, resaved, [], tmp_path)
    assert resaved.read_bytes() != out.read_bytes()  # LibreOffice wrote its own file
    result = runner.invoke(cli, ["import", "--format", "xlsx", str(resaved), "--db", b])
    assert result.exit_code == 0, result.output
    assert stored(b) == stored(a)
