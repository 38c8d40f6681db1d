"""Every validation rule fires on one failing row, naming the line, column, value and code."""

from __future__ import annotations

import datetime as dt

import pytest

from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.rules import RULES
from oncosurg.schema import COLUMNS

TODAY = dt.date(2026, 11, 28)
VALID = {
    "patient_id": "P1", "centre": "A", "referral": "in_house", "prior_chemo_lines": "2",
    "cetuximab_start": "2005-01-10", "cetuximab_partner": "irinotecan", "last_contact_date": "2006-01-10",
}
OPERATED = {**VALID, "surgery_date": "2005-06-01", "surgery_type": "hepatectomy", "clavien_dindo_max": "II"}


def csv_bytes(*rows: dict[str, str], columns: tuple[str, ...] = COLUMNS) -> bytes:
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def issues_of(data: bytes):  # type: ignore[no-untyped-def]
    return parse_registry_csv(data, source="f.csv", today=TODAY).issues


def test_valid_rows_pass() -> None:
    parsed = parse_registry_csv(csv_bytes(VALID, {**OPERATED, "patient_id": "P2"}), today=TODAY)
    assert parsed.ok and len(parsed.records) == 2 and parsed.rows == 2


# (code, row overrides, column expected in the issue)
CASES = [
    ("V301", {"referral": ""}, "referral"),
    ("V302", {"cetuximab_start": "10/01/2005"}, "cetuximab_start"),
    ("V302", {"cetuximab_start": "2005-02-30"}, "cetuximab_start"),
    ("V303", {"prior_chemo_lines": "2.5"}, "prior_chemo_lines"),
    ("V304", {"age_at_cetuximab": "sixty"}, "age_at_cetuximab"),
    ("V304", {"age_at_cetuximab": "nan"}, "age_at_cetuximab"),
    ("V305", {"bilobar": "true"}, "bilobar"),
    ("V306", {"referral": "inhouse"}, "referral"),
    ("V307", {"age_at_cetuximab": "101"}, "age_at_cetuximab"),
    ("V307", {"prior_chemo_lines": "0"}, "prior_chemo_lines"),
    ("V307", {"largest_met_mm": "0"}, "largest_met_mm"),
    ("V308", {"patient_id": "P 1"}, "patient_id"),
    ("V309", {"centre": "x" * 5000}, "centre"),
    ("V310", {"patient_id": "=HYPERLINK(\"x\")"}, "patient_id"),
    ("V310", {"centre": "@SUM(A1)"}, "centre"),
    ("V311", {**OPERATED, "resected_segments": "4;9"}, "resected_segments"),
    ("V312", {"last_contact_date": "2031-01-01"}, "last_contact_date"),
    ("V313", {"centre": "A\x07B"}, "centre"),
    ("X401", {**OPERATED, "surgery_date": "2004-12-01"}, "surgery_date"),
    ("X402", {**OPERATED, "last_contact_date": "2005-05-01"}, "last_contact_date"),
    ("X403", {"progression_date": "2006-02-01"}, "progression_date"),
    ("X403", {"progression_date": "2004-02-01"}, "progression_date"),
    ("X404", {"death_date": "2005-12-01"}, "death_date"),
    ("X405", {"surgery_type": "hepatectomy"}, "surgery_type"),
    ("X405", {"margin": "R0"}, "margin"),
    ("X406", {**OPERATED, "surgery_type": ""}, "surgery_type"),
    ("X406", {**OPERATED, "clavien_dindo_max": ""}, "clavien_dindo_max"),
    ("X407", {**OPERATED, "surgery_type": "exploration_only", "steatosis_pct": "10"}, "steatosis_pct"),
    ("X407", {"tumour_regression_grade": "1"}, "tumour_regression_grade"),
    ("X408", {**OPERATED, "clavien_dindo_max": "V"}, "clavien_dindo_max"),
    ("X408", {**OPERATED, "clavien_dindo_max": "V", "death_date": "2005-09-01", "last_contact_date": "2005-09-01"},
     "clavien_dindo_max"),
    ("X409", {"last_contact_date": "2004-12-01"}, "last_contact_date"),
]


@pytest.mark.parametrize(("code", "overrides", "column"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_fires_on_one_failing_row(code: str, overrides: dict[str, str], column: str) -> None:
    issues = issues_of(csv_bytes(VALID, {**VALID, "patient_id": "P2", **overrides}))
    assert [(i.code, i.line, i.column) for i in issues] == [(code, 3, column)], [i.format() for i in issues]
    issue = issues[0]
    text = issue.format("f.csv")
    assert text.startswith("f.csv:3:") and column in text and code in text and "fix:" in text
    if overrides.get(column):
        assert issue.value is not None


def test_clavien_v_with_death_inside_window_passes() -> None:
    row = {**OPERATED, "clavien_dindo_max": "V", "death_date": "2005-06-20", "last_contact_date": "2005-06-20"}
    assert issues_of(csv_bytes(row)) == []


def test_duplicate_patient_in_file() -> None:
    issues = issues_of(csv_bytes(VALID, VALID))
    assert [(i.code, i.line) for i in issues] == [("X410", 3)]
    assert "line 2" in issues[0].message


def test_enum_case_hint() -> None:
    (issue,) = issues_of(csv_bytes({**VALID, "cetuximab_partner": "Irinotecan"}))
    assert issue.code == "V306" and "'irinotecan'" in issue.hint


def test_all_errors_reported_at_once() -> None:
    rows = [{**VALID, "patient_id": f"P{i}", "referral": "x", "cetuximab_start": "bad"} for i in range(300)]
    issues = issues_of(csv_bytes(*rows))
    assert len(issues) == 600
    assert {i.line for i in issues} == set(range(2, 302))


def test_every_rule_has_a_test_or_a_file_level_test() -> None:
    tested = {c[0] for c in CASES} | {"X410"} | {c for c in RULES if c[0] == "E"}  # E6xx: test_pathway_model.py
    tested |= {"X430", "X431"}  # updates of stored patients: test_store.py
    file_level = {code for code in RULES if code[0] in "FH"} | {"X411"}  # tests/test_ingest_hostile.py, test_store.py
    assert set(RULES) == tested | file_level
