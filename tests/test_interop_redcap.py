"""REDCap's flat project of earlier releases (one instrument per stage): its data dictionary, its record
export as REDCap writes it, round trips, clear errors.  Its exports must keep importing; today's
project describes the episode model (``test_redcap_episodes.py``)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

from interop_helpers import csv_text, registries, registry_csv, typed_records
from oncosurg.cli import cli
from oncosurg.export import redcap as rc
from oncosurg.ingest.csv import read_registry_csv
from oncosurg.ingest.redcap import parse_redcap_export, read_redcap_export
from oncosurg.schema import COLUMNS, FLAT_STAGES, HEPATECTOMY_COLUMNS, SURGERY_COLUMNS
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from registry_factory import random_registry

FIXTURES = Path(__file__).parent / "fixtures" / "redcap"


def redcap_bytes(records: list[dict], **layout: bool) -> bytes:
    out = io.StringIO()
    rc.write_records(records, out, **layout)
    return out.getvalue().encode("utf-8")


def dictionary() -> list[dict[str, str]]:
    out = io.StringIO()
    rc.write_dictionary(out)
    return list(csv.DictReader(io.StringIO(out.getvalue())))


# ------------------------------------------------------------------ the data dictionary

def test_dictionary_header_is_redcaps() -> None:
    out = io.StringIO()
    rc.write_dictionary(out)
    assert out.getvalue().splitlines()[0].split(",")[:4] == [
        "Variable / Field Name", "Form Name", "Section Header", "Field Type"]
    assert len(next(csv.reader(io.StringIO(out.getvalue())))) == 18


def test_dictionary_has_one_instrument_per_stage_and_the_record_id_first() -> None:
    rows = dictionary()
    assert [r["Variable / Field Name"] for r in rows[:2]] == ["record_id", "patient_id"]
    forms = list(dict.fromkeys(r["Form Name"] for r in rows))
    assert forms == [s.value for s in FLAT_STAGES]
    for r in rows:
        name = r["Variable / Field Name"]
        assert name.islower() and name[0].isalpha() and len(name) <= 100


def test_dictionary_covers_every_registry_column() -> None:
    names = {r["Variable / Field Name"] for r in dictionary()}
    assert set(COLUMNS) - {"clavien_dindo_max"} <= names
    assert {"any_complication", "complication_grade"} <= names


def test_dictionary_validation_types_choices_and_yesno() -> None:
    rows = {r["Variable / Field Name"]: r for r in dictionary()}
    assert rows["cetuximab_start"]["Text Validation Type OR Show Slider Number"] == "date_ymd"
    age = rows["age_at_cetuximab"]
    assert (age["Text Validation Type OR Show Slider Number"], age["Text Validation Min"],
            age["Text Validation Max"]) == ("number", "18", "100")
    fib = rows["fibrosis_stage"]
    assert (fib["Text Validation Type OR Show Slider Number"], fib["Text Validation Min"],
            fib["Text Validation Max"]) == ("integer", "0", "4")
    assert rows["referral"]["Choices, Calculations, OR Slider Labels"].startswith("in_house, ")
    assert " | " in rows["cetuximab_partner"]["Choices, Calculations, OR Slider Labels"]
    assert rows["bilobar"]["Field Type"] == "yesno"
    assert rows["resected_segments"]["Field Type"] == "checkbox"
    assert rows["patient_id"]["Required Field?"] == "y"


def test_dictionary_branching_logic() -> None:
    rows = {r["Variable / Field Name"]: r for r in dictionary()}
    logic = "Branching Logic (Show field only if...)"
    for name in HEPATECTOMY_COLUMNS:
        assert rows[name][logic] == "[surgery_type] = 'hepatectomy'"
    for name in set(SURGERY_COLUMNS) - set(HEPATECTOMY_COLUMNS) - {"clavien_dindo_max"}:
        assert rows[name][logic] == "[surgery_date] <> ''"
    assert rows["complication_grade"][logic] == "[any_complication] = '1'"
    assert rows["surgery_date"][logic] == ""


def test_complication_is_a_repeating_instrument() -> None:
    assert {r["Form Name"] for r in dictionary() if r["Variable / Field Name"].startswith("complication_")} == {
        "complication"}
    out = io.StringIO()
    rc.write_repeating_setup(out)
    assert out.getvalue().splitlines() == ["form_name,custom_form_label", "complication,[complication_grade]"]


def test_cli_redcap_dictionary(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["redcap", "dictionary"])
    assert result.exit_code == 0 and result.output.startswith("Variable / Field Name,Form Name")
    assert runner.invoke(cli, ["redcap", "dictionary", "--out", str(tmp_path / "d.csv")]).exit_code == 0
    assert (tmp_path / "d.csv").read_text(encoding="utf-8") == result.output
    out = io.StringIO()
    rc.write_repeating_setup(out, longitudinal=True)  # the flat project's; the CLI writes the episode project's
    assert out.getvalue().splitlines()[1] == "surgery_arm_1,complication,[complication_grade]"


# ------------------------------------------------------------------ REDCap's own export layout

EXPECTED_PB1 = {
    "patient_id": "PB-0001", "centre": "Paul Brousse", "referral": "in_house", "sex": "F",
    "age_at_cetuximab": 61.5, "resected_segments": "5;6;7;8", "clavien_dindo_max": "IIIa", "bilobar": True,
    "extrahepatic_disease": False, "portal_vein_embolization": True, "two_stage": False,
    "surgery_date": dt.date(2004, 6, 15), "tumour_regression_grade": 3, "progression_date": dt.date(2005, 2, 1),
}


@pytest.mark.parametrize("name", ["export-raw-longitudinal.csv", "export-labels-longitudinal.csv"])
def test_fixture_as_redcap_writes_it_imports(name: str) -> None:
    parsed = read_redcap_export(FIXTURES / name)
    assert parsed.ok, [i.format() for i in parsed.issues]
    by_id = {r.values["patient_id"]: r for r in parsed.records}
    assert set(by_id) == {"PB-0001", "PB-0002", "PB-0003"}
    assert {k: by_id["PB-0001"].values[k] for k in EXPECTED_PB1} == EXPECTED_PB1
    assert by_id["PB-0001"].line == 2  # the record's first row
    assert by_id["PB-0002"].values["surgery_date"] is None and by_id["PB-0002"].values["clavien_dindo_max"] is None
    assert by_id["PB-0003"].values["clavien_dindo_max"] == "none"  # any_complication = no
    assert by_id["PB-0003"].values["cetuximab_partner"] == "both"


def test_fixture_raw_and_labels_give_the_same_records() -> None:
    raw = read_redcap_export(FIXTURES / "export-raw-longitudinal.csv")
    labels = read_redcap_export(FIXTURES / "export-labels-longitudinal.csv")
    assert [r.values for r in raw.records] == [r.values for r in labels.records]


def test_cli_import_fixture_into_the_store(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["import", "--format", "redcap", str(FIXTURES / "export-raw-longitudinal.csv"),
                                      "--db", db])
    assert result.exit_code == 0, result.output
    engine = open_store(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one() == 3
    engine.dispose()


# ------------------------------------------------------------------ round trips

LAYOUTS = [{}, {"labels": True}, {"longitudinal": True}, {"labels": True, "label_headers": True,
                                                            "longitudinal": True}]


@pytest.mark.parametrize("layout", LAYOUTS, ids=["raw", "labels", "longitudinal", "labels-headers-longitudinal"])
def test_reference_cohort_round_trip(reference_csv: Path, layout: dict[str, bool]) -> None:
    records = [r.values for r in read_registry_csv(reference_csv).records]
    assert len(records) == 151
    back = parse_redcap_export(redcap_bytes(records, **layout), source="rc.csv")
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [r.values for r in back.records] == records


@pytest.mark.parametrize("seed", [1, 2])
def test_random_registry_round_trip(seed: int) -> None:
    records = typed_records(random_registry(300, seed))
    back = parse_redcap_export(redcap_bytes(records, longitudinal=True), source="rc.csv")
    assert [r.values for r in back.records] == records


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_generated_registries_round_trip(rows: list[dict[str, str]]) -> None:
    records = typed_records(rows)
    for layout in LAYOUTS:
        back = parse_redcap_export(redcap_bytes(records, **layout), source="rc.csv", centre="main")
        assert back.ok, [i.format() for i in back.issues[:5]]
        assert csv_text([r.values for r in back.records]) == csv_text(records)


def test_cli_csv_registry_redcap_registry_csv_is_lossless(reference_csv: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert runner.invoke(cli, ["import", str(reference_csv), "--db", a]).exit_code == 0
    first = runner.invoke(cli, ["export", "--db", a]).output
    out = tmp_path / "redcap.csv"
    assert runner.invoke(cli, ["export", "--db", a, "--format", "redcap", "--out", str(out)]).exit_code == 0
    assert runner.invoke(cli, ["import", "--format", "redcap", str(out), "--db", b]).exit_code == 0
    assert runner.invoke(cli, ["export", "--db", b]).output == first


# ------------------------------------------------------------------ errors: same rules, same atomicity

HEADER = ("patient_id,redcap_event_name,redcap_repeat_instrument,redcap_repeat_instance,referral,prior_chemo_lines,"
          "cetuximab_start,cetuximab_partner,surgery_date,surgery_type,any_complication,complication_grade,"
          "resected_segments___5,last_contact_date,patient_complete")


def issues_of(*rows: str) -> list[tuple[str, int | None, str | None, str | None]]:
    data = ("\n".join([HEADER, *rows]) + "\n").encode()
    return [(i.code, i.line, i.column, i.value) for i in parse_redcap_export(data, source="x.csv").issues]


def test_values_go_through_the_registry_rules_with_the_line_of_their_row() -> None:
    found = issues_of("P1,enrolment_arm_1,,,inhouse,2,2005-01-10,irinotecan,,,,,,,2",
                      "P1,follow_up_arm_1,,,,,,,,,,,,2004-01-01,")
    assert ("V306", 2, "referral", "inhouse") in found
    assert ("X409", 3, "last_contact_date", "2004-01-01") in found


def test_conflicting_values_across_events() -> None:
    found = issues_of("P1,enrolment_arm_1,,,in_house,2,2005-01-10,irinotecan,,,,,,2006-01-01,2",
                      "P1,follow_up_arm_1,,,,,2005-02-10,,,,,,,,")
    assert found == [("F108", 3, "cetuximab_start", "2005-02-10")]


def test_complication_answer_contradicting_instances() -> None:
    found = issues_of("P1,,,,in_house,2,2005-01-10,irinotecan,2005-03-01,hepatectomy,0,,1,2006-01-01,2",
                      "P1,,complication,1,,,,,,,,II,,,")
    assert ("F108", 2, "any_complication", "no") in found
    yes_no_grade = issues_of("P1,,,,in_house,2,2005-01-10,irinotecan,2005-03-01,hepatectomy,1,,1,2006-01-01,2")
    assert yes_no_grade == [("F108", 2, "any_complication", "yes")]


def test_worst_grade_of_repeating_instances_and_unknown_grade() -> None:
    data = ("\n".join([HEADER, "P1,,,,in_house,2,2005-01-10,irinotecan,2005-03-01,hepatectomy,1,,1,2006-01-01,2",
                       "P1,,complication,1,,,,,,,,IVa,,,", "P1,,complication,2,,,,,,,,II,,,"]) + "\n").encode()
    (record,) = parse_redcap_export(data, source="x.csv").records
    assert record.values["clavien_dindo_max"] == "IVa" and record.values["resected_segments"] == "5"
    found = issues_of("P1,,,,in_house,2,2005-01-10,irinotecan,2005-03-01,hepatectomy,1,,1,2006-01-01,2",
                      "P1,,complication,1,,,,,,,,grade 3,,,")
    assert ("V306", 3, "complication_grade", "grade 3") in found


def test_unknown_repeating_instrument_bad_checkbox_and_unknown_column() -> None:
    found = issues_of("P1,,,,in_house,2,2005-01-10,irinotecan,,,,,2,2006-01-01,2",
                      "P1,,cetuximab_cycle,1,,,,,,,,,,,")
    assert ("V311", 2, "resected_segments___5", "2") in found
    assert ("F108", 3, "redcap_repeat_instrument", "cetuximab_cycle") in found
    data = (HEADER.replace("referral", "referal") + "\n").encode()
    (issue,) = parse_redcap_export(data, source="x.csv").issues
    assert (issue.code, issue.column) == ("H201", "referal") and "referral" in issue.hint


def test_bad_file_imports_nothing(tmp_path: Path) -> None:
    records = typed_records(random_registry(20, 5))
    text = redcap_bytes(records).decode()
    at = text.rfind(",in_house,")  # one bad value in the last patient: the 19 good ones are not imported either
    bad = tmp_path / "bad.csv"
    bad.write_text(text[:at] + ",inhouse," + text[at + len(",in_house,"):], encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["import", "--format", "redcap", str(bad), "--db", db])
    assert result.exit_code == 2 and "nothing was imported" in result.output
    engine = open_store(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one() == 0
    engine.dispose()


def test_empty_and_non_utf8_exports() -> None:
    assert [i.code for i in parse_redcap_export(b"", source="x.csv").issues] == ["F101"]
    assert [i.code for i in parse_redcap_export("patient_id\nRÉF\n".encode("latin-1"), source="x").issues] == ["F102"]
    assert registry_csv([]).startswith(b"patient_id")
