"""Hostile and malformed files: clear errors (file, line, column, rule), exit status 2, nothing imported."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.schema import COLUMNS
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store

VALID = {
    "patient_id": "P1", "centre": "A", "referral": "in_house", "prior_chemo_lines": "2",
    "cetuximab_start": "2005-01-10", "cetuximab_partner": "irinotecan", "last_contact_date": "2006-01-10",
}
HEADER = ",".join(COLUMNS)
GOOD_ROW = ",".join(VALID.get(c, "") for c in COLUMNS)


def codes(data: bytes) -> list[tuple[str, int | None, str | None]]:
    return [(i.code, i.line, i.column) for i in parse_registry_csv(data, source="f.csv").issues]


def test_empty_file() -> None:
    assert codes(b"") == [("F101", None, None)]
    assert codes(b"\n  \n") == [("F101", None, None)]


def test_binary_file() -> None:
    assert codes(b"PK\x03\x04\x00\x00binary") == [("F103", 1, None)]


def test_latin1_file_names_line_and_expected_encoding() -> None:
    data = (HEADER + "\n" + GOOD_ROW.replace("A", "Hôpital", 1) + "\n").encode("latin-1")
    (issue,) = parse_registry_csv(data, source="f.csv").issues
    assert issue.code == "F102" and issue.line == 2 and "UTF-8" in issue.message and "0xf4" in issue.message


def test_utf8_bom_is_accepted() -> None:
    assert codes(("\ufeff" + HEADER + "\n" + GOOD_ROW + "\n").encode()) == []


def test_megabyte_field_is_refused_briefly() -> None:
    huge = "x" * (1 << 20)
    data = (HEADER + "\n" + GOOD_ROW.replace("P1", huge, 1) + "\n").encode()
    (issue,) = parse_registry_csv(data).issues
    assert (issue.code, issue.line, issue.column) == ("V309", 2, "patient_id")
    assert len(issue.format()) < 400  # the value is shortened in messages


def test_unknown_and_missing_columns_all_reported() -> None:
    header = HEADER.replace("referral", "referal").replace(",last_contact_date", "") + ",notes"
    found = codes((header + "\n").encode())
    assert ("H201", 1, "referal") in found and ("H201", 1, "notes") in found
    assert ("H202", 1, "referral") in found and ("H202", 1, "last_contact_date") in found
    issue = next(i for i in parse_registry_csv((header + "\n").encode()).issues if i.column == "referal")
    assert "did you mean 'referral'" in issue.hint


def test_duplicate_and_blank_header() -> None:
    found = codes((HEADER + ",referral,\n").encode())
    assert ("H203", 1, "referral") in found and ("H204", 1, None) in found


def test_formula_in_header() -> None:
    assert ("V310", 1, "=cmd") in codes((HEADER + ",=cmd\n").encode())


def test_row_width_and_unclosed_quote() -> None:
    assert codes((HEADER + "\n" + GOOD_ROW + ",extra\n").encode()) == [("F105", 2, None)]
    found = codes((HEADER + "\n" + GOOD_ROW + '\n"P2,in_house\n').encode())
    assert found[-1][0] == "F104"


def test_header_only_is_valid_and_empty() -> None:
    parsed = parse_registry_csv((HEADER + "\n").encode())
    assert parsed.ok and parsed.rows == 0


def test_column_order_is_free_and_optional_columns_may_be_absent() -> None:
    required = ["last_contact_date", "patient_id", "referral", "prior_chemo_lines", "cetuximab_partner",
                "cetuximab_start"]
    data = ",".join(required) + "\n" + ",".join(VALID[c] for c in required) + "\n"
    parsed = parse_registry_csv(data.encode(), centre="Z")
    assert parsed.ok and parsed.records[0].values["centre"] == "Z"


@pytest.mark.parametrize("content", [
    b"",
    b"\x00\x01\x02",
    b"patient_id\nP1\n",
    (HEADER + "\n" + GOOD_ROW + "\n" + GOOD_ROW.replace("P1", "P2").replace("in_house", "bogus") + "\n").encode(),
    (HEADER + "\n" + GOOD_ROW + "\n").encode("utf-16"),
])
def test_cli_refuses_bad_files_without_traceback_and_changes_nothing(tmp_path: Path, content: bytes) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "\n" + GOOD_ROW.replace("P1", "P0") + "\n", encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["import", str(good), "--db", db]).exit_code == 0
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    for command in (["validate", str(bad)], ["import", str(bad), "--db", db]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert ("Traceback" not in result.output and result.exception is None) or isinstance(result.exception,
                                                                                             SystemExit)
        assert str(bad) in result.output
    engine = open_store(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.patient.c.patient_id)).scalars().all() == ["P0"]


def test_cli_caps_the_listing_and_gives_the_total(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    rows = [GOOD_ROW.replace("P1", f"P{i}").replace("in_house", "x") for i in range(120)]
    bad.write_text(HEADER + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(bad), "--max-errors", "10"])
    assert result.exit_code == 2
    assert "120 error(s)" in result.output and "110 more (120 in total" in result.output
    assert result.output.count("[V306 enum]") == 10


def test_cli_json_errors(tmp_path: Path) -> None:
    import json

    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "\n" + GOOD_ROW.replace("2005-01-10", "2005-13-01") + "\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(bad), "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.output)
    assert payload["error_count"] == 1
    assert payload["errors"][0] | {} == {"code": "V302", "rule": "date", "line": 2, "column": "cetuximab_start",
                                         "value": "2005-13-01", "message": "there is no month 13",
                                         "hint": payload["errors"][0]["hint"]}


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "no such file" in result.output


def test_semicolon_separated_file_is_named_as_such() -> None:
    data = (HEADER.replace(",", ";") + "\n" + GOOD_ROW.replace(",", ";") + "\n").encode()
    (issue,) = parse_registry_csv(data).issues
    assert issue.code == "F104" and "';'" in issue.message and issue.line == 1


def test_validate_reads_the_interop_formats(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "\n" + GOOD_ROW + "\n", encoding="utf-8")
    out = tmp_path / "book.xlsx"
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert runner.invoke(cli, ["import", str(good), "--db", db]).exit_code == 0
    assert runner.invoke(cli, ["export", "--db", db, "--format", "xlsx", "--out", str(out)]).exit_code == 0
    result = runner.invoke(cli, ["validate", "--format", "xlsx", str(out)])
    assert result.exit_code == 0 and "1 patient(s)" in result.output and "no errors" in result.output
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(b"not a workbook")
    result = runner.invoke(cli, ["validate", "--format", "xlsx", str(bad)])
    assert result.exit_code == 2 and "F106" in result.output
