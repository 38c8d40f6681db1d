"""FHIR R4 (mCODE STU4) bundles per episode: every resource validates, round trips are exact, errors are clear."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from episode_factory import registries as episode_registries
from episode_factory import same
from fhir_helpers import canonical, read_one, resources, through_fhir, write
from interop_helpers import csv_text, registries, typed_records
from oncosurg.cli import cli
from oncosurg.export import fhir as fx
from oncosurg.export.fhir import terminology as tx
from oncosurg.ingest.fhir import read_fhir_bundles
from oncosurg.pathway.flat import from_flat, to_flat
from oncosurg.pathway.model import Table, split_list
from oncosurg.reference import random_registry, reference_records
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from oncosurg.store.episodes import read_records
from registry_factory import random_registry as random_flat_registry


@pytest.fixture(scope="module")
def cohort() -> list[Any]:
    return reference_records()


def flat_round_trip(flat: list[dict[str, Any]]) -> list[dict[str, Any]]:
    back, _ = through_fhir([from_flat(r) for r in flat])
    return [to_flat(r) for r in back]


# ------------------------------------------------------------------ what a bundle holds

def test_every_resource_validates_and_is_put_under_a_stable_id(cohort: list[Any]) -> None:
    kinds: Counter[str] = Counter()
    for record in cohort:
        bundle = fx.patient_bundle(record)
        fx.validate_bundle(bundle)
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
            assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
            kinds[resource["resourceType"]] += 1
    assert set(kinds) == {"Patient", "Condition", "MedicationAdministration", "Procedure", "Observation",
                          "BodyStructure"}
    assert fx.patient_bundle(cohort[0]) == fx.patient_bundle(copy.deepcopy(cohort[0]))


def test_one_resource_per_episode(cohort: list[Any]) -> None:
    for record in cohort:
        bundle = fx.patient_bundle(record)
        agents = sum(len(split_list(ln["agents"])) for ln in record.rows(Table.THERAPY_LINE))
        assert len(resources(bundle, "MedicationAdministration")) == agents
        assert len(resources(bundle, "Procedure")) == len(record.rows(Table.LIVER_PROCEDURE))
        assert len(resources(bundle, "Condition", "complication")) == len(record.rows(Table.COMPLICATION))
        for table, code in ((Table.MDT_REVIEW, "mdt_review"), (Table.RESPONSE_ASSESSMENT, "response_assessment"),
                            (Table.PATHOLOGY, "pathology"), (Table.CONTACT, "contact"),
                            (Table.DISEASE_EVENT, "disease_event")):
            assert len(resources(bundle, "Observation", code)) == len(record.rows(table)), table
        (patient,) = resources(bundle, "Patient")
        death = [c["contact_date"] for c in record.rows(Table.CONTACT) if c["vital_status"] == "dead"]
        assert patient.get("deceasedDateTime") == (death[0].isoformat() if death else None)


def test_a_therapy_line_is_one_administration_per_agent_with_atc_and_rxnorm(cohort: list[Any]) -> None:
    record = next(r for r in cohort if any("oxaliplatin" in (ln["agents"] or "") and "cetuximab" in ln["agents"]
                                           for ln in r.rows(Table.THERAPY_LINE)))
    line = next(ln for ln in record.rows(Table.THERAPY_LINE) if "cetuximab" in ln["agents"]
                and "oxaliplatin" in ln["agents"])
    bundle = fx.patient_bundle(record)
    mine = [m for m in resources(bundle, "MedicationAdministration")
            if m["extension"][0] == {"url": tx.extension("therapy-line"), "valueInteger": line["line_number"]}]
    assert len(mine) == len(split_list(line["agents"]))
    cetuximab = next(m for m in mine if m["medicationCodeableConcept"]["text"] == "cetuximab")
    systems = {c["system"]: c["code"] for c in cetuximab["medicationCodeableConcept"]["coding"]}
    assert systems == {tx.code_system("agent"): "cetuximab", tx.ATC: "L01FE01", tx.RXNORM: "318341"}
    assert cetuximab["meta"]["profile"] == [tx.PROFILE["administration"]]
    assert cetuximab["effectivePeriod"]["start"] == line["start_date"].isoformat()


# ------------------------------------------------------------------ round trips

def test_reference_cohort_round_trip_is_exact(cohort: list[Any]) -> None:
    back, read = through_fhir(cohort)
    assert [canonical(r) for r in back] == [canonical(r) for r in cohort]
    assert not read.ignored


@pytest.mark.parametrize("seed", [3, 11])
def test_random_registry_round_trip_is_exact(seed: int) -> None:
    records = random_registry(150, seed, centres=3, episodes=14)
    back, _ = through_fhir(records)
    assert [canonical(r) for r in back] == [canonical(r) for r in records]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(episode_registries())
def test_generated_episode_records_round_trip(records: list[Any]) -> None:
    back, read = through_fhir(records)
    assert all(same(a, b) for a, b in zip(records, back, strict=True))
    assert not read.ignored


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(9, 17))
def test_generated_random_registries_round_trip(seed: int, episodes: int) -> None:
    records = random_registry(4, seed, centres=["Hôpital « Nord », Lyon", "東京", "A/B centre"], episodes=episodes)
    back, _ = through_fhir(records)
    assert [canonical(r) for r in back] == [canonical(r) for r in records]


def test_flat_reference_cohort_round_trip(reference_csv: Path) -> None:
    from oncosurg.ingest.csv import read_registry_csv

    flat = [r.values for r in read_registry_csv(reference_csv).records]
    assert len(flat) == 151
    assert flat_round_trip(flat) == flat


@pytest.mark.parametrize("seed", [3, 4])
def test_flat_random_registry_round_trip(seed: int) -> None:
    flat = typed_records(random_flat_registry(300, seed))
    assert flat_round_trip(flat) == flat


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_flat_generated_registries_round_trip_and_validate(rows: list[dict[str, str]]) -> None:
    flat = typed_records(rows)
    for record in flat:
        fx.validate_bundle(fx.record_bundle(record))
    assert csv_text(flat_round_trip(flat)) == csv_text(flat)


def test_cli_csv_registry_fhir_registry_is_lossless(reference_csv: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert runner.invoke(cli, ["import", str(reference_csv), "--db", a]).exit_code == 0
    first = runner.invoke(cli, ["export", "--db", a]).output
    folder = tmp_path / "fhir"
    result = runner.invoke(cli, ["export", "--db", a, "--format", "fhir", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(list(folder.glob("*.json"))) == 151
    assert runner.invoke(cli, ["validate", "--format", "fhir", str(folder)]).exit_code == 0
    result = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", b])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["export", "--db", b]).output == first
    again = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", b])
    assert again.exit_code == 2 and "00001-REF-001.json" in again.output and "X411" in again.output
    stale = runner.invoke(cli, ["export", "--db", a, "--format", "fhir", "--out", str(folder)])
    assert stale.exit_code == 2 and "not empty" in stale.output


def test_cli_episodes_round_trip_through_the_store(tmp_path: Path, cohort: list[Any]) -> None:
    from oncosurg.store.repository import import_patients

    a, b = open_store(f"sqlite:///{tmp_path / 'a.db'}"), open_store(f"sqlite:///{tmp_path / 'b.db'}")
    records = random_registry(60, 5, centres=2, episodes=15)
    assert import_patients(a, records, source="mem", sha256="", rows=len(records)).created == 60
    folder = tmp_path / "fhir"
    assert CliRunner().invoke(cli, ["export", "--db", str(a.url), "--format", "fhir", "--out", str(folder)]
                              ).exit_code == 0
    result = CliRunner().invoke(cli, ["import", "--format", "fhir", str(folder), "--db", str(b.url)])
    assert result.exit_code == 0, result.output
    with a.connect() as ca, b.connect() as cb:
        left = read_records(ca, t.EPISODES, t.centre, list(range(1, 61)))
        right = read_records(cb, t.EPISODES, t.centre, list(range(1, 61)))
    key = lambda c: (c[0], c[1]["patient_id"])  # noqa: E731
    assert sorted(map(canonical, left.values()), key=key) == sorted(map(canonical, right.values()), key=key)


# ------------------------------------------------------------------ partial bundles

def test_a_bundle_carries_the_tables_of_the_resources_it_holds(cohort: list[Any]) -> None:
    record = next(r for r in cohort if r.rows(Table.LIVER_PROCEDURE) and r.rows(Table.COMPLICATION))
    bundle = fx.patient_bundle(record)
    got, _ = read_one(bundle)
    assert got is not None and Table.LIVER_PROCEDURE in got.carried
    partial = copy.deepcopy(bundle)
    partial["entry"] = [e for e in partial["entry"] if e["resource"]["resourceType"] not in ("Procedure",)
                        and not e["resource"].get("partOf")]
    got, read = read_one(partial)
    assert got is not None, [i.format() for i in read.issues]
    assert Table.LIVER_PROCEDURE not in got.carried and Table.PATHOLOGY not in got.carried
    assert Table.COMPLICATION in got.carried  # whose procedures are registered: checked at import


# ------------------------------------------------------------------ errors

def a_record() -> Any:
    (flat,) = typed_records([{
        "patient_id": "P1", "centre": "A", "referral": "in_house", "prior_chemo_lines": "2",
        "cetuximab_start": "2005-01-10", "cetuximab_partner": "irinotecan", "surgery_date": "2005-05-01",
        "surgery_type": "hepatectomy", "clavien_dindo_max": "II", "last_contact_date": "2006-01-10"}])
    return from_flat(flat)


def test_not_json_not_a_bundle_and_invalid_resources(tmp_path: Path) -> None:
    write(tmp_path, "a.json", "{not json")
    write(tmp_path, "b.json", {"resourceType": "Patient"})
    bad = fx.patient_bundle(a_record())
    resources(bad, "Patient")[0]["deceasedDateTime"] = "2005-13-40"
    write(tmp_path, "c.json", bad)
    issues = read_fhir_bundles(tmp_path).issues
    assert [(i.code, i.file) for i in issues] == [("F107", "a.json"), ("F107", "b.json"), ("F107", "c.json")]
    assert issues[0].message.startswith("not UTF-8 JSON")
    assert "'Patient'" in issues[1].message
    patient = resources(bad, "Patient")[0]
    assert issues[2].column == f"Patient/{patient['id']}.deceasedDateTime" and issues[2].value == "2005-13-40"


def test_rules_across_episodes_name_bundle_resource_and_element(tmp_path: Path) -> None:
    bundle = fx.patient_bundle(a_record())
    (complication,) = resources(bundle, "Condition", "complication")
    complication["onsetDateTime"] = "2005-04-01"  # before its procedure (2005-05-01)
    write(tmp_path, "p1.json", bundle)
    (issue,) = read_fhir_bundles(tmp_path).issues
    assert (issue.code, issue.file, issue.value) == ("E604", "p1.json", "2005-04-01")
    assert issue.column == f"Condition/{complication['id']}.onsetDateTime"
    assert issue.message.startswith("complication.complication_date: the complication is dated before")
    assert issue.format("DIR").startswith(f"DIR/p1.json: column 'Condition/{complication['id']}.onsetDateTime'")


def test_unknown_codes_and_conflicting_resources(tmp_path: Path) -> None:
    bundle = fx.patient_bundle(a_record())
    resources(bundle, "Procedure")[0]["code"]["coding"][0]["code"] = "liver_transplant"
    write(tmp_path, "y.json", bundle)
    other = fx.patient_bundle(a_record())
    cetuximab, irinotecan = resources(other, "MedicationAdministration")
    irinotecan["effectivePeriod"]["start"] = "2005-01-11"  # the line's two agents disagree on its start
    write(tmp_path, "z.json", other)
    issues = read_fhir_bundles(tmp_path).issues
    assert (issues[0].code, issues[0].file, issues[0].value) == ("V306", "y.json", "liver_transplant")
    assert issues[0].message.startswith("liver_procedure.procedure_type:")
    assert (issues[1].code, issues[1].file, issues[1].value) == ("F108", "z.json", "2005-01-11")
    assert f"MedicationAdministration/{cetuximab['id']}.effectivePeriod.start" in issues[1].message


def test_invalid_directory_imports_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder, "1.json", fx.patient_bundle(a_record()))
    write(folder, "2.json", "[]")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", db])
    assert result.exit_code == 2 and "2.json" in result.output
    assert runner.invoke(cli, ["export", "--db", db]).output.count("\n") == 1  # header only
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(cli, ["import", "--format", "fhir", str(empty), "--db", db]).exit_code == 2


def test_two_bundles_of_one_patient_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "1.json", fx.patient_bundle(a_record()))
    write(tmp_path, "2.json", fx.patient_bundle(a_record()))
    (issue,) = read_fhir_bundles(tmp_path).issues
    assert (issue.code, issue.file) == ("X410", "2.json") and "1.json" in issue.message


def test_progression_is_the_first_event_after_the_rescue_start(tmp_path: Path) -> None:
    record = a_record()  # rescue start 2005-01-10, no progression, last contact 2006-01-10
    bundle = fx.patient_bundle(record)
    foreign = []
    for uid, day in (("7d1f4c1e-0000-4000-8000-000000000001", "2004-11-02"),
                     ("7d1f4c1e-0000-4000-8000-000000000002", "2005-09-15")):
        foreign.append({"fullUrl": f"urn:uuid:{uid}", "resource": {
            "resourceType": "Observation", "id": uid, "status": "final", "code": {"coding": [tx.DISEASE_STATUS]},
            "subject": {"reference": "urn:uuid:" + resources(bundle, "Patient")[0]["id"]},
            "effectiveDateTime": day, "valueCodeableConcept": {"coding": [tx.WORSENED]}},
            "request": {"method": "PUT", "url": f"Observation/{uid}"}})
    bundle["entry"] += foreign
    write(tmp_path, "p.json", bundle)
    parsed = read_fhir_bundles(tmp_path)
    assert parsed.ok, [i.format() for i in parsed.issues]
    events = parsed.records[0].rows(Table.DISEASE_EVENT)
    assert [(e["event_date"], e["event_kind"]) for e in events] == [
        (dt.date(2004, 11, 2), "progression"), (dt.date(2005, 9, 15), "recurrence")]  # after the 2005-05 resection
    # the progression on prior chemotherapy (why cetuximab was given) is not the registry's progression
    assert to_flat(parsed.records[0])["progression_date"] == dt.date(2005, 9, 15)


def test_json_output_of_validate(tmp_path: Path) -> None:
    write(tmp_path, "1.json", fx.patient_bundle(a_record()))
    result = CliRunner().invoke(cli, ["validate", "--format", "fhir", str(tmp_path), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["ok"] is True


def test_update_from_a_bundle_without_procedures_keeps_them(tmp_path: Path) -> None:
    from oncosurg.store.repository import ImportOptions, import_patients

    record = next(r for r in random_registry(30, 8, episodes=16) if len(r.rows(Table.LIVER_PROCEDURE)) >= 2)
    engine = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    assert import_patients(engine, [record], source="mem", sha256="", rows=1).created == 1
    bundle = fx.patient_bundle(record)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Procedure"
                       and not e["resource"].get("partOf")]  # no Procedure, no pathology
    tag = resources(bundle, "MedicationAdministration")[0]["extension"][0]  # the first line's number
    before = next(ln["cycles"] for ln in record.rows(Table.THERAPY_LINE) if ln["line_number"] == tag["valueInteger"])
    for m in resources(bundle, "MedicationAdministration"):
        if m["extension"][0] == tag:
            m["extension"] = [e for e in m["extension"] if e["url"] != tx.extension("cycles")]
            m["extension"].append({"url": tx.extension("cycles"), "valueInteger": 77})
    got, read = read_one(bundle)
    assert got is not None, [i.format() for i in read.issues]
    result = import_patients(engine, [got], source="b.json", sha256="", rows=1, options=ImportOptions(update=True))
    assert result.updated == 1 and not result.issues
    assert [c[2:] for c in result.changes] == [("therapy_line.cycles", before, 77)]
    with engine.connect() as conn:
        (stored,) = read_records(conn, t.EPISODES, t.centre, [1]).values()
    for table in (Table.LIVER_PROCEDURE, Table.PATHOLOGY, Table.COMPLICATION):
        assert canonical(stored)[2].get(table) == canonical(record)[2].get(table)
