"""FHIR R4 (mCODE-shaped) bundles: every resource validates, the round trip is lossless, errors are clear."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import HealthCheck, given, settings

from interop_helpers import csv_text, registries, typed_records
from oncosurg.cli import cli
from oncosurg.export import fhir as fx
from oncosurg.ingest._validate import validate_records
from oncosurg.ingest.csv import read_registry_csv
from oncosurg.ingest.fhir import bundle_record, read_fhir_bundles
from registry_factory import random_registry


@pytest.fixture(scope="module")
def reference_records(reference_csv: Path) -> list[dict[str, Any]]:
    return [r.values for r in read_registry_csv(reference_csv).records]


def round_trip(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records → bundles (JSON text) → records, without touching the disk."""
    raws = [bundle_record(json.loads(json.dumps(fx.record_bundle(r))), name=f"{i}.json", index=i)
            for i, r in enumerate(records, start=1)]
    parsed = validate_records(raws, source="mem", sha256="", centre="main")
    assert parsed.ok, [i.format() for i in parsed.issues[:5]]
    return [r.values for r in parsed.records]


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


# ------------------------------------------------------------------ what a bundle holds

def test_every_resource_validates_on_its_own(reference_records: list[dict[str, Any]]) -> None:
    kinds: set[str] = set()
    for record in reference_records:
        bundle = fx.record_bundle(record)
        fx.validate_bundle(bundle)
        assert bundle["type"] == "transaction"
        for entry in bundle["entry"]:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
            assert entry["request"] == {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
            kinds.add(resource["resourceType"])
    assert kinds == {"Patient", "Condition", "MedicationAdministration", "Procedure", "Observation"}


def test_an_operated_patient_bundle(reference_records: list[dict[str, Any]]) -> None:
    record = next(r for r in reference_records if r["surgery_type"] == "hepatectomy" and r["death_date"])
    bundle = fx.record_bundle(record)
    (patient,) = resources(bundle, "Patient")
    assert patient["deceasedDateTime"] == record["death_date"].isoformat()
    assert patient["identifier"][0]["value"] == record["patient_id"]
    primary, secondary = resources(bundle, "Condition")
    assert secondary["code"]["coding"][0]["code"] == "94381002"
    assert secondary["extension"][0]["valueReference"]["reference"] == f"urn:uuid:{primary['id']}"
    drugs = [m["medicationCodeableConcept"]["text"] for m in resources(bundle, "MedicationAdministration")]
    assert drugs[0] == "cetuximab" and len(drugs) == 1 + len(fx.PARTNER_DRUGS[record["cetuximab_partner"]])
    (surgery,) = resources(bundle, "Procedure")
    assert surgery["performedDateTime"] == record["surgery_date"].isoformat()
    assert [b["coding"][0]["code"] for b in surgery.get("bodySite", [])] == (
        record["resected_segments"].split(";") if record["resected_segments"] else [])
    status = [o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "97509-4"]
    assert max(o["effectiveDateTime"] for o in status) == record["last_contact_date"].isoformat()
    grade = [o for o in resources(bundle, "Observation")
             if any(c["code"] == "clavien_dindo_max" for c in o["code"]["coding"])]
    assert grade[0]["valueCodeableConcept"]["coding"][0]["code"] == record["clavien_dindo_max"]
    assert grade[0]["partOf"] == [{"reference": f"urn:uuid:{surgery['id']}"}]
    pathology = [o for o in resources(bundle, "Observation")
                 if any(c["code"] == "tumour_regression_grade" for c in o["code"]["coding"])]
    assert len(pathology) == (record["tumour_regression_grade"] is not None)


def test_alive_patient_and_complication_grades() -> None:
    (record,) = typed_records([{
        "patient_id": "P1", "referral": "referred", "prior_chemo_lines": "2", "cetuximab_start": "2005-01-10",
        "cetuximab_partner": "none", "surgery_date": "2005-04-01", "surgery_type": "hepatectomy",
        "clavien_dindo_max": "IIIb", "ras_status": "not_tested", "last_contact_date": "2006-01-10"}])
    bundle = fx.record_bundle(record)
    assert resources(bundle, "Patient")[0]["deceasedBoolean"] is False
    assert len(resources(bundle, "MedicationAdministration")) == 1  # cetuximab alone
    (surgery,) = resources(bundle, "Procedure")
    assert surgery["complication"][0]["coding"][0]["code"] == "IIIb"
    ras = [o for o in resources(bundle, "Observation") if o["code"]["coding"][0]["code"] == "69548-6"]
    assert ras[0]["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert round_trip([record]) == [record]


def test_resource_ids_are_stable(reference_records: list[dict[str, Any]]) -> None:
    assert fx.record_bundle(reference_records[0]) == fx.record_bundle(dict(reference_records[0]))


# ------------------------------------------------------------------ round trips

def test_reference_cohort_round_trip(reference_records: list[dict[str, Any]]) -> None:
    assert len(reference_records) == 151
    assert round_trip(reference_records) == reference_records


@pytest.mark.parametrize("seed", [3, 4])
def test_random_registry_round_trip(seed: int) -> None:
    records = typed_records(random_registry(300, seed))
    assert round_trip(records) == records


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(registries())
def test_generated_registries_round_trip_and_validate(rows: list[dict[str, str]]) -> None:
    records = typed_records(rows)
    for record in records:
        fx.validate_bundle(fx.record_bundle(record))
    assert csv_text(round_trip(records)) == csv_text(records)


def test_cli_csv_registry_fhir_registry_csv_is_lossless(reference_csv: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    assert runner.invoke(cli, ["import", str(reference_csv), "--db", a]).exit_code == 0
    first = runner.invoke(cli, ["export", "--db", a]).output
    folder = tmp_path / "fhir"
    result = runner.invoke(cli, ["export", "--db", a, "--format", "fhir", "--out", str(folder)])
    assert result.exit_code == 0, result.output
    assert len(list(folder.glob("*.json"))) == 151
    result = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", b])
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli, ["export", "--db", b]).output == first
    again = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", b])
    assert again.exit_code == 2 and "00001-REF-001.json" in again.output and "X411" in again.output
    stale = runner.invoke(cli, ["export", "--db", a, "--format", "fhir", "--out", str(folder)])
    assert stale.exit_code == 2 and "empty directory" in stale.output


# ------------------------------------------------------------------ errors

def write(folder: Path, name: str, content: Any) -> None:
    folder.mkdir(exist_ok=True)
    text = content if isinstance(content, str) else json.dumps(content)
    (folder / name).write_text(text, encoding="utf-8")


def a_bundle() -> dict[str, Any]:
    (record,) = typed_records([{
        "patient_id": "P1", "centre": "A", "referral": "in_house", "prior_chemo_lines": "2",
        "cetuximab_start": "2005-01-10", "cetuximab_partner": "irinotecan", "surgery_date": "2005-05-01",
        "surgery_type": "hepatectomy", "clavien_dindo_max": "II", "last_contact_date": "2006-01-10"}])
    return fx.record_bundle(record)


def test_not_json_not_a_bundle_and_invalid_resources(tmp_path: Path) -> None:
    write(tmp_path, "a.json", "{not json")
    write(tmp_path, "b.json", {"resourceType": "Patient"})
    bad = a_bundle()
    bad["entry"][0]["resource"]["deceasedDateTime"] = "2005-13-40"
    write(tmp_path, "c.json", bad)
    issues = read_fhir_bundles(tmp_path).issues
    assert [i.code for i in issues] == ["F107", "F107", "F107"]
    assert issues[0].message.startswith("a.json: not UTF-8 JSON")
    assert "b.json" in issues[1].message and "'Patient'" in issues[1].message
    assert "c.json: entry.0.resource" in issues[2].message and issues[2].value == "2005-13-40"


def test_registry_rules_name_file_resource_and_element(tmp_path: Path) -> None:
    bundle = a_bundle()
    (surgery,) = resources(bundle, "Procedure")
    surgery["performedDateTime"] = "2004-12-01"  # before cetuximab_start
    write(tmp_path, "p1.json", bundle)
    (issue,) = read_fhir_bundles(tmp_path).issues
    assert (issue.code, issue.column, issue.value) == ("X401", "surgery_date", "2004-12-01")
    assert issue.message.startswith(f"p1.json Procedure/{surgery['id']} performedDateTime: surgery is before")


def test_missing_patient_and_unknown_codes(tmp_path: Path) -> None:
    bundle = a_bundle()
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    write(tmp_path, "x.json", bundle)
    other = a_bundle()
    resources(other, "Procedure")[0]["code"]["coding"][0]["code"] = "liver_transplant"
    write(tmp_path, "y.json", other)
    issues = read_fhir_bundles(tmp_path).issues
    assert issues[0].code == "F107" and "0 Patient" in issues[0].message
    assert (issues[1].code, issues[1].column, issues[1].value) == ("V306", "surgery_type", "liver_transplant")


def test_conflicting_resources(tmp_path: Path) -> None:
    bundle = a_bundle()
    twin = copy.deepcopy(next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                              and e["resource"]["code"]["coding"][0]["code"] == "clavien_dindo_max"))
    twin["resource"]["id"] = "other"
    twin["resource"]["valueCodeableConcept"]["coding"][0]["code"] = "IVa"
    bundle["entry"].append(twin)
    write(tmp_path, "z.json", bundle)
    (issue,) = read_fhir_bundles(tmp_path).issues
    assert (issue.code, issue.column, issue.value) == ("F108", "clavien_dindo_max", "IVa")


def test_invalid_directory_imports_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write(folder, "1.json", a_bundle())
    write(folder, "2.json", "[]")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    result = runner.invoke(cli, ["import", "--format", "fhir", str(folder), "--db", db])
    assert result.exit_code == 2 and "2.json" in result.output
    assert runner.invoke(cli, ["export", "--db", db]).output.count("\n") == 1  # header only
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runner.invoke(cli, ["import", "--format", "fhir", str(empty), "--db", db]).exit_code == 2


def test_progression_is_the_first_worsening_after_cetuximab_start(tmp_path: Path) -> None:
    bundle = a_bundle()  # cetuximab_start 2005-01-10, no progression, last contact 2006-01-10
    status = copy.deepcopy(next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                                and e["resource"]["code"]["coding"][0]["code"] == "97509-4"))
    refractory, relapse = copy.deepcopy(status), copy.deepcopy(status)
    for entry, uid, day in ((refractory, "7d1f4c1e-0000-4000-8000-000000000001", "2004-11-02"),
                            (relapse, "7d1f4c1e-0000-4000-8000-000000000002", "2005-09-15")):
        entry["resource"].update(id=uid, effectiveDateTime=day, valueCodeableConcept={"coding": [fx.WORSENED]})
        entry["fullUrl"] = f"urn:uuid:{uid}"
        bundle["entry"].append(entry)
    write(tmp_path, "p.json", bundle)
    parsed = read_fhir_bundles(tmp_path)
    assert parsed.ok, [i.format() for i in parsed.issues]
    # the progression on prior chemotherapy (why cetuximab was given) is not the registry's progression
    assert parsed.records[0].values["progression_date"] == dt.date(2005, 9, 15)
