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
    ("X412", {**OPERATED, "clavien_dindo_max": "IIIa", "death_date": "2005-06-21", "last_contact_date": "2005-06-21"},
     "clavien_dindo_max"),
    ("X412", {**OPERATED, "clavien_dindo_max": "none", "death_date": "2005-06-01", "last_contact_date": "2005-06-01"},
     "clavien_dindo_max"),
    ("X407", {**OPERATED, "surgery_type": "exploration_only", "resected_segments": "5;6"}, "resected_segments"),
    ("V314", {"patient_id": "P2 "}, "patient_id"),
    ("V314", {"centre": " A"}, "centre"),
]


@pytest.mark.parametrize(("code", "overrides", "column"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_each_rule_fires_on_one_failing_row(code: str, overrides: dict[str, str], column: str) -> None:
    row = {**VALID, **overrides}
    row["patient_id"] = "P2" if row["patient_id"] == "P1" else row["patient_id"]
    issues = issues_of(csv_bytes(VALID, row))
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
    tested = {c[0] for c in CASES} | {"X410", "X413"} | {c for c in RULES if c[0] == "E"}  # E6xx: test_pathway_model
    tested |= {"V315"}  # a number in a workbook's id column: test_xlsx_episodes.py, test_interop_issue14.py
    file_level = {code for code in RULES if code[0] in "FH"}  # tests/test_ingest_hostile.py, test_interop_*.py
    against_the_registry = {"X411", "X413", "X414", "X415", "X416", "X417",  # tests/test_import_safety.py
                            "X418"}  # tests/test_store.py (the worst grade derived from the complications)
    assert set(RULES) == tested | file_level | against_the_registry


# ------------------------------------------------------------------ issue 9: messages that help

def test_one_wrong_cell_gives_one_error_not_a_cascade() -> None:
    row = {**OPERATED, "surgery_type": "Hepatectomy", "margin": "R0", "steatosis_pct": "20",
           "tumour_regression_grade": "2"}
    issues = issues_of(csv_bytes(row))
    assert [(i.code, i.column) for i in issues] == [("V306", "surgery_type")]
    assert issues[0].hint == "write 'hepatectomy'"
    bad_date = issues_of(csv_bytes({**OPERATED, "surgery_date": "2005-06-31", "margin": "R0"}))
    assert [(i.code, i.column) for i in bad_date] == [("V302", "surgery_date")]  # no X405 on margin, type, grade
    bad_death = issues_of(csv_bytes({**OPERATED, "clavien_dindo_max": "V", "death_date": "20/06/2005",
                                     "last_contact_date": "2005-06-20"}))
    assert [(i.code, i.column) for i in bad_death] == [("V302", "death_date")]  # no X408, no X404


def test_duplicate_ids_come_out_on_the_first_pass_with_the_other_errors() -> None:
    rows = [VALID, {**VALID, "referral": "inhouse"}, {**VALID, "patient_id": "P3", "cetuximab_start": "bad"}]
    issues = issues_of(csv_bytes(*rows))
    assert [(i.code, i.line, i.column) for i in issues] == [
        ("V306", 3, "referral"), ("X410", 3, "patient_id"), ("V302", 4, "cetuximab_start")]


@pytest.mark.parametrize(("value", "message", "hint"), [
    ("2004-02-30", "February 2004 has 29 days", "check the day (1-29)"),
    ("2005-02-29", "February 2005 has 28 days", "check the day (1-28)"),
    ("03/02/2004", "dates are YYYY-MM-DD; 03/02/2004 is ambiguous (3 Feb or 2 Mar)", "2004-02-03 or 2004-03-02"),
    ("25/02/2004", "dates are YYYY-MM-DD, not DD/MM/YYYY", "write 2004-02-25"),
    ("38047", "looks like an Excel serial date (2004-03-01?)", "write 2004-03-01"),
    ("2004-13-01", "there is no month 13", "YYYY-MM-DD"),
    ("2004-3-1", "dates are YYYY-MM-DD", "write 2004-03-01"),
])
def test_date_messages_say_what_is_wrong(value: str, message: str, hint: str) -> None:
    (issue,) = issues_of(csv_bytes({**VALID, "cetuximab_start": value, "last_contact_date": "2006-01-10"}))
    assert (issue.code, issue.column, issue.value) == ("V302", "cetuximab_start", value)
    assert issue.message.startswith(message) and hint in issue.hint, (issue.message, issue.hint)


def test_patient_id_with_a_space_has_its_own_message() -> None:
    (issue,) = issues_of(csv_bytes({**VALID, "patient_id": " PB-001"}))
    assert (issue.code, issue.message, issue.hint) == ("V314", "patient_id starts with a space",
                                                       "remove the space: write 'PB-001'")


def test_postoperative_death_window_is_the_import_window() -> None:
    day_61 = {**OPERATED, "death_date": "2005-08-01", "last_contact_date": "2005-08-01"}
    assert issues_of(csv_bytes(day_61)) == []
    wide = parse_registry_csv(csv_bytes(day_61), today=TODAY, postop_window_days=90).issues
    assert [(i.code, i.column) for i in wide] == [("X412", "clavien_dindo_max")]
    assert "61 day(s) after surgery_date" in wide[0].message and "'V'" in wide[0].hint
