"""REDCap and the episode model (issue 11 item 2; issue 14 item 5): the project's data dictionary,
exports as REDCap writes them, round trips, exports of selected instruments/fields/records, exports of
the flat project of earlier releases, checkbox labels and decimal commas."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from episode_factory import registries, same
from oncosurg.cli import cli
from oncosurg.export import redcap as flat_rc
from oncosurg.export import redcap_episodes as rc
from oncosurg.ingest.csv import ParsedFile, read_registry_csv
from oncosurg.ingest.episode_rows import EpisodeFile
from oncosurg.ingest.redcap import read_redcap_export
from oncosurg.ingest.redcap_episodes import parse_redcap, read_redcap
from oncosurg.pathway.flat import PatientRecord, from_flat, to_flat
from oncosurg.pathway.model import EPISODE_TABLES, TABLES, Table
from oncosurg.reference import random_registry, reference_records
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from oncosurg.store.episodes import iter_records
from oncosurg.store.repository import import_patients

FIXTURES = Path(__file__).parent / "fixtures" / "redcap"
LAYOUTS = [{}, {"labels": True}, {"labels": True, "label_headers": True, "longitudinal": True, "checkbox_labels": True},
           {"delimiter": ";", "decimal": ","}, {"delimiter": "\t", "longitudinal": True}]
LAYOUT_IDS = ["raw", "labels", "labels-headers-longitudinal-checkbox-labels", "semicolon-decimal-comma", "tab"]


def canonical(record: PatientRecord) -> tuple[Any, ...]:
    """A record as comparable data: every field of every row, rows in key order, no empty tables."""
    patient = {f.name: record.patient.get(f.name) for f in TABLES[0].fields}
    episodes = {}
    for spec in EPISODE_TABLES:
        rows = [{f.name: r.get(f.name) for f in spec.fields} for r in record.rows(spec.table)]
        if rows:
            episodes[spec.table] = sorted(rows, key=lambda r, s=spec: tuple(r[k] for k in s.key))
    return record.centre, patient, episodes


def by_patient(item: tuple[Any, ...]) -> tuple[str, str]:
    return item[0], item[1]["patient_id"]


def redcap_text(records: list[PatientRecord], **layout: Any) -> str:
    out = io.StringIO()
    rc.write_records(records, out, **layout)
    return out.getvalue()


def parsed(text: str, **options: Any) -> EpisodeFile:
    result = parse_redcap(text.encode("utf-8"), source="export.csv", **options)
    assert isinstance(result, EpisodeFile)
    return result


def dictionary() -> list[dict[str, str]]:
    result = CliRunner().invoke(cli, ["redcap", "dictionary"])
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def text_of(rows: list[dict[str, str]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


# ------------------------------------------------------------------ the data dictionary

def test_redcap_variable_names_are_at_most_26_characters() -> None:
    """Issue 14: REDCap advises variable names of at most 26 characters; two names of the flat project
    (sinusoidal_dilatation_grade, nodular_regenerative_hyperplasia) were longer."""
    names = [r["Variable / Field Name"] for r in dictionary()]
    too_long = [n for n in names if len(n) > 26]
    assert too_long == []
    assert {"sinusoid_dilatation_grade", "nodular_regen_hyperplasia"} <= set(names)
    assert len(set(names)) == len(names)
    labels = [r["Field Label"] for r in dictionary()]
    assert len(set(labels)) == len(labels)  # exports with labels as headers map back to one variable each
    assert all(n[0].isalpha() and n.replace("_", "").isalnum() and n == n.lower() for n in names)


def test_dictionary_has_a_patient_instrument_and_a_repeating_instrument_per_episode_table() -> None:
    rows = dictionary()
    assert rows[0]["Variable / Field Name"] == "record_id" and rows[0]["Form Name"] == "patient"
    forms = list(dict.fromkeys(r["Form Name"] for r in rows))
    assert forms == ["patient", *(spec.table.value for spec in EPISODE_TABLES)]
    setup = CliRunner().invoke(cli, ["redcap", "repeating"]).output.splitlines()
    assert setup[0] == "form_name,custom_form_label"
    assert [line.split(",")[0] for line in setup[1:]] == forms[1:]
    names = {r["Variable / Field Name"] for r in rows}
    for line in setup[1:]:  # the custom labels pipe variables of the project
        for piped in line.split(",", 1)[1].split("[")[1:]:
            assert piped.split("]")[0] in names


def test_dictionary_keys_checkboxes_types_and_branching() -> None:
    rows = {r["Variable / Field Name"]: r for r in dictionary()}
    form = {name: r["Form Name"] for name, r in rows.items()}
    # keys: the instance for numbered episodes, fields for lines and for the children's parents
    assert not {"review_no", "assessment_no", "event_no", "contact_no"} & set(rows)
    assert (form["line_number"], rows["line_number"]["Required Field?"]) == ("therapy_line", "y")
    assert form["procedure_no"] == "complication" and form["complication_no"] == "complication"
    assert rows["complication_no"]["Field Annotation"] == "@DEFAULT='[current-instance]'"
    assert form["pathology_procedure_no"] == "pathology"
    assert form["mdt_line_number"] == "mdt_review" and form["assessed_line_number"] == "response_assessment"
    # ';'-lists are checkboxes whose codes are the model's codes
    for name, codes in (("agents", "cetuximab"), ("sites", "liver"), ("resected_segments", "1")):
        assert rows[name]["Field Type"] == "checkbox"
        assert rows[name]["Choices, Calculations, OR Slider Labels"].startswith(f"{codes}, ")
    assert rows["procedure_type"]["Field Type"] == "dropdown" and rows["vital_status"]["Field Type"] == "radio"
    assert rows["bilobar"]["Field Type"] == "yesno" and rows["notes"]["Field Type"] == "notes"
    validation = "Text Validation Type OR Show Slider Number"
    assert (rows["contact_date"][validation], rows["fibrosis_stage"][validation]) == ("date_ymd", "integer")
    age = rows["age_at_rescue"]
    assert (age[validation], age["Text Validation Min"], age["Text Validation Max"]) == ("number", "18", "100")
    logic = "Branching Logic (Show field only if...)"
    assert rows["referral_date"][logic] == "[referral] = 'referred'"
    assert "[agents(cetuximab)] = '1'" in rows["dose_mg_m2"][logic]
    assert "[procedure_type] <> 'pve'" in rows["margin"][logic]


def test_every_model_column_has_a_variable() -> None:
    for spec in TABLES:
        for f in spec.fields:
            if f.name != rc.INSTANCE_KEYS.get(spec.table):
                assert (spec.table, f.name) in rc.VARIABLE_OF, (spec.table, f.name)


def test_longitudinal_layout_maps_every_instrument_to_one_event() -> None:
    runner = CliRunner()
    mapping = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["redcap", "events"]).output)))
    assert sorted(r["form"] for r in mapping) == sorted(rc.FORMS)
    assert {r["arm_num"] for r in mapping} == {"1"}
    events = runner.invoke(cli, ["redcap", "events", "--list"]).output.splitlines()
    assert events[0] == "event_name,arm_num,unique_event_name" and len(events) == 1 + len(rc.EVENTS)
    repeating = runner.invoke(cli, ["redcap", "repeating", "--longitudinal"]).output.splitlines()
    assert repeating[1].startswith("enrolment_arm_1,therapy_line,")
    assert len(repeating) == len(EPISODE_TABLES) + 1


# ------------------------------------------------------------------ round trips

@pytest.mark.parametrize("layout", LAYOUTS, ids=LAYOUT_IDS)
def test_reference_records_round_trip(layout: dict[str, Any]) -> None:
    records = reference_records()
    back = parsed(redcap_text(records, **layout))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [canonical(r) for r in back.records] == [canonical(r) for r in records]
    assert back.patients == len(records) == 151


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 100_000), st.integers(9, 17), st.sampled_from(LAYOUTS))
def test_random_registries_round_trip(seed: int, episodes: int, layout: dict[str, Any]) -> None:
    records = random_registry(6, seed, centres=("A", 'Hôpital "Nord", Lyon', "東京"), episodes=episodes)
    back = parsed(redcap_text(records, **layout))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert [canonical(r) for r in back.records] == sorted((canonical(r) for r in records), key=by_patient)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries(max_size=4), st.sampled_from(LAYOUTS))
def test_generated_registries_round_trip(records: list[PatientRecord], layout: dict[str, Any]) -> None:
    """records → REDCap → records, on valid patients drawn by ``tests/episode_factory.py`` (every field,
    free text with commas, quotes, accents and line breaks, instance numbers out of date order)."""
    back = parsed(redcap_text(records, **layout))
    assert back.ok, [i.format() for i in back.issues[:5]]
    assert len(back.records) == len(records)
    assert all(same(a, b) for a, b in zip(back.records, records, strict=True))


def test_flat_origin_records_are_unchanged(reference_csv: Path) -> None:
    flat = [r.values for r in read_registry_csv(reference_csv).records]
    back = parsed(redcap_text([from_flat(v) for v in flat], labels=True))
    assert [to_flat(r) for r in back.records] == flat


def test_cli_export_import_keeps_every_episode(tmp_path: Path, store_url: str) -> None:
    records = random_registry(40, 3, centres=3, episodes=16)
    a, b = f"sqlite:///{tmp_path / 'a.db'}", store_url  # into SQLite and PostgreSQL
    source = open_store(a)
    assert not import_patients(source, records, source="gen", sha256="0", rows=len(records)).issues
    out = tmp_path / "redcap.csv"
    runner = CliRunner()
    result = runner.invoke(cli, ["export", "--db", a, "--format", "redcap", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "40 patient(s)" in result.output
    result = runner.invoke(cli, ["import", "--format", "redcap", str(out), "--db", b])
    assert result.exit_code == 0, result.output
    assert stored(b) == stored(a)
    again = runner.invoke(cli, ["import", "--format", "redcap", str(out), "--db", a, "--update"])
    assert again.exit_code == 0 and "already registered with these values; nothing changed" in again.output
    source.dispose()


def stored(db: str) -> list[tuple[Any, ...]]:
    engine = open_store(db)
    with engine.connect() as conn:
        out = [canonical(r) for _, r in iter_records(conn, t.EPISODES, t.centre)]
    engine.dispose()
    return out


# ------------------------------------------------------------------ exports of selected instruments, fields, records

@pytest.fixture
def registry(store_url: str) -> tuple[str, str, list[PatientRecord]]:
    """A registry of 6 multi-episode patients (SQLite, PostgreSQL) and its full REDCap export."""
    records = random_registry(6, 11, centres=2, episodes=16)
    db = store_url
    engine = open_store(db)
    assert not import_patients(engine, records, source="gen", sha256="0", rows=6).issues
    engine.dispose()
    out = io.StringIO()
    engine = open_store(db)
    with engine.connect() as conn:
        rc.write_records((r for _, r in iter_records(conn, t.EPISODES, t.centre)), out)
    engine.dispose()
    return db, out.getvalue(), records


def keep(text: str, forms: set[str], *, columns: set[str] | None = None, record: str | None = None) -> str:
    """A REDCap export reduced as REDCap's dialog does: selected instruments (and fields), selected records."""
    rows = rows_of(text)
    special = {rc.RECORD_ID, rc.REPEAT_INSTRUMENT, rc.REPEAT_INSTANCE}

    def kept(column: str) -> bool:
        v = rc.VARIABLE_MAP.get(column.partition("___")[0])
        if column in special:
            return True
        if v is None:
            return column.removesuffix("_complete") in forms
        return v.form in forms and (columns is None or v.name in columns)

    header = [c for c in rows[0] if kept(c)]
    rows = [r for r in rows if (r[rc.REPEAT_INSTRUMENT] or "patient") in forms
            and (record is None or r[rc.RECORD_ID] == record)]
    return text_of(rows, header)


def run_import(db: str, text: str, tmp_path: Path, *args: str) -> Any:
    path = tmp_path / "selected.csv"
    path.write_text(text, encoding="utf-8")
    return CliRunner().invoke(cli, ["import", "--format", "redcap", str(path), "--db", db, *args])


def changed(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    out = []
    for (_, p1, e1), (_, p2, e2) in zip(before, after, strict=True):
        if p1 != p2:
            out.append((p1["patient_id"], "patient"))
        out += [(p1["patient_id"], table.value) for table in set(e1) | set(e2) if e1.get(table) != e2.get(table)]
    return sorted(out)


def test_export_of_selected_instruments_changes_only_what_it_carries(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    before = stored(db)
    selected = keep(text, {"contact"})
    rows = rows_of(selected)
    assert set(rows[0]) == {"record_id", "redcap_repeat_instrument", "redcap_repeat_instance", "contact_date",
                            "vital_status", "contact_complete"}
    dates = {(r[rc.RECORD_ID], r["contact_date"]) for r in rows}
    last = {rid: max(d for i, d in dates if i == rid) for rid, _ in dates}

    def later(r: dict[str, str]) -> str:
        return str(dt.date.fromisoformat(r["contact_date"]) + dt.timedelta(days=1))

    target = next(r for r in rows if r["vital_status"] == "alive" and later(r) < last[r[rc.RECORD_ID]]
                  and (r[rc.RECORD_ID], later(r)) not in dates)
    target["contact_date"] = later(target)  # a follow-up visit one day later than recorded
    result = run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update")
    assert result.exit_code == 0, result.output
    after = stored(db)
    who = target[rc.RECORD_ID].partition("::")[2]
    assert changed(before, after) == [(who, "contact")]
    assert "contact.contact_date" in result.output


def test_export_of_selected_fields_and_records(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    before = stored(db)
    record = rows_of(text)[0][rc.RECORD_ID]
    selected = keep(text, {"therapy_line"}, columns={"line_number", "cycles"}, record=record)
    rows = rows_of(selected)
    assert set(rows[0]) == {"record_id", "redcap_repeat_instrument", "redcap_repeat_instance", "line_number",
                            "cycles", "therapy_line_complete"}
    rows[0]["cycles"] = str(int(rows[0]["cycles"] or 0) + 1)
    result = run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update")
    assert result.exit_code == 0, result.output
    assert changed(before, stored(db)) == [(record.partition("::")[2], "therapy_line")]
    assert "therapy_line.cycles" in result.output and result.output.count("→") == 1


def test_instances_the_export_leaves_out_are_kept_and_new_ones_added(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    before = stored(db)
    contacts = [r for r in rows_of(text) if r[rc.REPEAT_INSTRUMENT] == "contact"]
    rows = [r for r in rows_of(text) if r[rc.REPEAT_INSTRUMENT] != "contact"]  # every contact left out
    patient = rows[0]
    last = max(r["contact_date"] for r in contacts if r[rc.RECORD_ID] == patient[rc.RECORD_ID])
    rows.append({rc.RECORD_ID: patient[rc.RECORD_ID], rc.REPEAT_INSTRUMENT: "disease_event",
                 rc.REPEAT_INSTANCE: "77", "event_date": last, "event_kind": "progression",
                 "sites___lung": "1", "disease_event_complete": "2"})
    result = run_import(db, text_of(rows, list(rows_of(text)[0])), tmp_path, "--update")
    assert result.exit_code == 0, result.output
    after = stored(db)
    assert changed(before, after) == [(patient["patient_id"], "disease_event")]
    events = after[0][2][Table.DISEASE_EVENT]
    assert events[-1]["event_no"] == 77 and events[-1]["sites"] == "lung"


def test_an_empty_cell_clears_only_with_allow_clear(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    rows = rows_of(text)
    filled = next(r for r in rows if r[rc.REPEAT_INSTRUMENT] == "therapy_line" and r["cycles"])
    filled["cycles"] = ""
    refused = run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update")
    assert refused.exit_code == 2 and "X417" in refused.output and "therapy_line.cycles" in refused.output
    assert run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update", "--allow-clear").exit_code == 0


def test_a_partial_export_cannot_create_a_patient(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    rows = [r for r in rows_of(keep(text, {"contact"}))]
    for r in rows:
        r[rc.RECORD_ID] = r[rc.RECORD_ID].replace("::", "::NEW-")
    result = run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update", "--allow-new")
    assert result.exit_code == 2 and "E601" in result.output and "no patient row" in result.output


def test_an_update_is_checked_against_the_registered_episodes(registry: Any, tmp_path: Path) -> None:
    db, text, _ = registry
    rows = rows_of(keep(text, {"complication"}))
    rows = rows[:1] or pytest.skip("no complication drawn")
    rows[0]["procedure_no"] = "99"  # names a procedure the registry does not hold
    result = run_import(db, text_of(rows, list(rows[0])), tmp_path, "--update")
    assert result.exit_code == 2 and "E601" in result.output
    assert "column 'procedure_no' = '99'" in result.output and "complication instance" in result.output


# ------------------------------------------------------------------ clear errors

HEADER = rc.export_columns()


def export_of(*rows: dict[str, str]) -> str:
    return text_of([{"record_id": "A::P1", **r} for r in rows], HEADER)


PATIENT = {"patient_id": "P1", "centre": "A", "referral": "in_house", "patient_complete": "2"}
LINE = {"redcap_repeat_instrument": "therapy_line", "redcap_repeat_instance": "2", "line_number": "2",
        "start_date": "2005-01-10", "agents___cetuximab": "1", "intent": "conversion"}
CONTACT = {"redcap_repeat_instrument": "contact", "redcap_repeat_instance": "1", "contact_date": "2006-01-01",
           "vital_status": "alive"}


def test_a_valid_hand_written_export() -> None:
    result = parsed(export_of(PATIENT, LINE, CONTACT))
    assert result.ok, [i.format() for i in result.issues]
    (record,) = result.records
    assert record.rows(Table.THERAPY_LINE)[0]["agents"] == "cetuximab"
    assert record.rows(Table.CONTACT)[0]["contact_no"] == 1


def test_values_are_checked_with_the_line_record_instance_and_variable() -> None:
    result = parsed(export_of(PATIENT, {**LINE, "intent": "rescue", "agents___cetuximab": "maybe"},
                              {**CONTACT, "vital_status": "Alive and well"},
                              {"redcap_repeat_instrument": "pathology", "redcap_repeat_instance": "1",
                               "pathology_procedure_no": "1", "nodular_regen_hyperplasia": "2"}))
    found = {(i.code, i.line, i.column, i.value) for i in result.issues}
    assert ("V306", 3, "intent", "rescue") in found
    assert ("V305", 3, "agents___cetuximab", "maybe") in found
    assert ("V306", 4, "vital_status", "Alive and well") in found
    assert ("V305", 5, "nodular_regen_hyperplasia", "2") in found
    message = next(i for i in result.issues if i.column == "intent").format("export.csv")
    assert message.startswith("export.csv:3: column 'intent' = 'rescue': record 'A::P1', therapy_line instance 2:")


def test_layout_errors() -> None:
    found = {(i.code, i.line, i.column) for i in parsed(export_of(
        PATIENT, CONTACT, {**CONTACT, "contact_date": "2006-02-01"},  # instance 1 twice
        {"redcap_repeat_instrument": "cetuximab_cycle", "redcap_repeat_instance": "1"},
        {"redcap_repeat_instrument": "contact", "redcap_repeat_instance": "x", "contact_date": "2006-03-01"},
        {"redcap_repeat_instrument": "contact", "redcap_repeat_instance": "5", "contact_date": "2006-03-01",
         "vital_status": "alive", "sex": "F"},  # a patient field on an instance row
    )).issues}
    assert ("F108", 4, "redcap_repeat_instance") in found
    assert ("F108", 5, "redcap_repeat_instrument") in found
    assert ("F108", 6, "redcap_repeat_instance") in found
    assert ("F108", 7, "sex") in found


def test_rules_across_episodes_speak_redcap() -> None:
    procedure = {"redcap_repeat_instrument": "liver_procedure", "redcap_repeat_instance": "1",
                 "procedure_date": "2005-06-01", "procedure_type": "ablation"}
    result = parsed(export_of(PATIENT, LINE, CONTACT, procedure,
                              {"redcap_repeat_instrument": "pathology", "redcap_repeat_instance": "1",
                               "pathology_procedure_no": "1", "steatosis_pct": "10"},
                              {"redcap_repeat_instrument": "complication", "redcap_repeat_instance": "1",
                               "procedure_no": "3", "complication_no": "1", "complication_grade": "II"}))
    found = {(i.code, i.line, i.column) for i in result.issues}
    assert ("E606", 6, "pathology_procedure_no") in found
    assert ("E601", 7, "procedure_no") in found
    e601 = next(i for i in result.issues if i.code == "E601")
    assert e601.message.startswith("record 'A::P1', complication instance 1: procedure 3")


def test_a_header_without_an_instruments_key_is_refused() -> None:
    text = "record_id,redcap_repeat_instrument,redcap_repeat_instance,cycles\nA::P1,therapy_line,1,6\n"
    (issue,) = parsed(text).issues
    assert (issue.code, issue.column) == ("H202", "line_number")


def test_record_id_and_identity_fields_must_agree() -> None:
    found = {(i.code, i.column) for i in parsed(export_of({**PATIENT, "centre": "B"}, CONTACT)).issues}
    assert ("F108", "centre") in found


def test_bad_export_imports_nothing(tmp_path: Path) -> None:
    text = redcap_text(random_registry(10, 5, centres=1))
    bad = text.replace(",conversion,", ",rescue,", 1)
    path = tmp_path / "bad.csv"
    path.write_text(bad, encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["import", "--format", "redcap", str(path), "--db", db])
    assert result.exit_code == 2 and "nothing was imported" in result.output and "V306" in result.output
    engine = open_store(db)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one() == 0
    engine.dispose()


# ------------------------------------------------------------------ the flat project of earlier releases

@pytest.mark.parametrize("name", ["export-raw-longitudinal.csv", "export-labels-longitudinal.csv"])
def test_exports_of_the_flat_project_still_import(name: str) -> None:
    result = read_redcap(FIXTURES / name)
    assert isinstance(result, ParsedFile) and result.ok
    assert [r.values for r in result.records] == [r.values for r in read_redcap_export(FIXTURES / name).records]


def test_selected_instrument_exports_of_the_flat_project_are_recognised() -> None:
    out = io.StringIO()
    flat = [r.values for r in read_redcap_export(FIXTURES / "export-raw-longitudinal.csv").records]
    flat_rc.write_records(flat, out)
    rows = rows_of(out.getvalue())
    forms = {"patient", "follow_up"}
    header = [c for c in rows[0] if c in (rc.RECORD_ID, rc.REPEAT_INSTRUMENT, rc.REPEAT_INSTANCE) or (
        c.partition("___")[0] in flat_rc.FIELD_MAP and flat_rc.FIELD_MAP[c.partition("___")[0]].form in forms)]
    result = parse_redcap(text_of([r for r in rows if not r[rc.REPEAT_INSTRUMENT]], header).encode())
    assert isinstance(result, ParsedFile) and result.ok
    assert "last_contact_date" in result.records[0].carried and "surgery_date" not in result.records[0].carried


# ------------------------------------------------------------------ issue 14: REDCap's export options

@pytest.mark.parametrize("name", ["export-labels-checkbox-labels-longitudinal.csv",
                                  "export-raw-semicolon-decimal-comma.csv", "export-raw-decimal-comma.csv"])
def test_redcap_export_options_import_like_the_default_export(name: str, tmp_path: Path) -> None:
    """Issue 14: exports with REDCap's 'export checkbox labels' option, or with numbers written with a
    decimal comma (and the semicolon delimiter that usually comes with it), were refused."""
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    result = runner.invoke(cli, ["validate", "--format", "redcap", str(FIXTURES / name)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["import", "--format", "redcap", str(FIXTURES / name), "--db", db])
    assert result.exit_code == 0, result.output
    reference = f"sqlite:///{tmp_path / 'ref.db'}"
    raw = FIXTURES / ("export-labels-longitudinal.csv" if "labels" in name else "export-raw-longitudinal.csv")
    assert runner.invoke(cli, ["import", "--format", "redcap", str(raw), "--db", reference]).exit_code == 0
    exported = [runner.invoke(cli, ["export", "--db", d]).output for d in (db, reference)]
    assert exported[0] == exported[1] and "61.5" in exported[0]


def test_a_number_that_is_still_not_a_number_says_so() -> None:
    result = parsed(export_of({**PATIENT, "age_at_rescue": "61,5,1"}, CONTACT))
    (issue,) = result.issues
    assert (issue.code, issue.column, issue.value) == ("V304", "age_at_rescue", "61,5,1")
    assert "correct the value in REDCap" in issue.hint and "point" not in issue.hint


def test_the_flat_projects_dictionary_remains_available() -> None:
    """De-identified exports write the flat project (``--deidentify --format redcap``): its dictionary."""
    runner = CliRunner()
    rows = list(csv.DictReader(io.StringIO(runner.invoke(cli, ["redcap", "dictionary", "--flat"]).output)))
    assert {r["Form Name"] for r in rows} == set(flat_rc.FORMS) and "cetuximab_start" in {
        r["Variable / Field Name"] for r in rows}
    assert runner.invoke(cli, ["redcap", "repeating", "--flat"]).output.splitlines()[1] == (
        "complication,[complication_grade]")
