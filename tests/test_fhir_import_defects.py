"""Issue 14 item 2: FHIR import refuses what it cannot read, and reads plausible bundles of other systems right.

Each defect of the issue has its test: a tumour size in cm read as mm, a BRAF variant read as a RAS
mutation, an earlier oxaliplatin line merged into the cetuximab line, dexamethasone premedication
read as an "other" agent, a hospital MRN taken as the patient_id, and resource types outside R4B
(or unknown) crashing the import.  The bundles are shaped like another system's: standard codes
only (ATC, RxNorm, LOINC, HGNC, UCUM), no oncosurg extensions except the pseudonym and the referral.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_helpers import write
from oncosurg.cli import cli
from oncosurg.export.fhir import patient_bundle
from oncosurg.export.fhir import terminology as tx
from oncosurg.ingest.fhir import FhirBundles, read_bundle, read_fhir_bundles
from oncosurg.ingest.fhir.reader import BundleReader
from oncosurg.pathway.flat import partner_of
from oncosurg.pathway.model import Table
from oncosurg.reference import random_registry

PATIENT_URL = "urn:uuid:0b4f8a56-1f0e-4f5b-9d0e-000000000001"
MRN = {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
       "system": "http://hospital.example.org/mrn", "value": "00123456"}


def entry(resource: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    rid = resource.setdefault("id", str(uuid.uuid4()))
    return {"fullUrl": url or f"urn:uuid:{rid}", "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{rid}"}}


def patient(*identifiers: dict[str, Any]) -> dict[str, Any]:
    return entry({"resourceType": "Patient", "id": PATIENT_URL.rsplit(":", 1)[1],
                  "identifier": list(identifiers) or [MRN, {"system": tx.patient_id_system("A"), "value": "F1"}],
                  "gender": "female", "extension": [{"url": tx.extension("referral"),
                                                     "valueCoding": tx.local("referral", "in_house")}]}, PATIENT_URL)


def medication(system: str, code: str, start: str, end: str | None = None, text: str = "") -> dict[str, Any]:
    period = {"start": start, **({"end": end} if end else {})}
    return entry({"resourceType": "MedicationAdministration", "status": "completed",
                  "medicationCodeableConcept": {"coding": [{"system": system, "code": code}],
                                                **({"text": text} if text else {})},
                  "subject": {"reference": PATIENT_URL}, "effectivePeriod": period})


def observation(code: dict[str, str], **body: Any) -> dict[str, Any]:
    return entry({"resourceType": "Observation", "status": "final", "code": {"coding": [code]},
                  "subject": {"reference": PATIENT_URL}, **body})


def gene(symbol: str) -> dict[str, Any]:
    return {"code": {"coding": [tx.GENE_STUDIED]},
            "valueCodeableConcept": {"coding": [{"system": tx.HGNC, "code": tx.GENES[symbol], "display": symbol}]}}


CETUXIMAB_IRINOTECAN = [medication(tx.ATC, "L01FE01", "2005-01-10", "2005-04-01", "cetuximab"),
                        medication(tx.ATC, "L01CE02", "2005-01-10", "2005-04-01", "irinotecan")]


def read(tmp_path: Path, *entries: dict[str, Any], name: str = "other-system.json") -> FhirBundles:
    folder = tmp_path / "bundles"
    write(folder, name, {"resourceType": "Bundle", "type": "collection", "entry": list(entries)})
    return read_fhir_bundles(folder)


def one_record(read_back: FhirBundles) -> Any:
    assert read_back.ok, [i.format() for i in read_back.issues]
    (record,) = read_back.records
    return record


def lines(record: Any) -> list[tuple[int, str]]:
    return [(ln["line_number"], ln["agents"]) for ln in record.rows(Table.THERAPY_LINE)]


# ------------------------------------------------------------------ a tumour size in cm is not read as mm

def tumour_size(value: float, unit: dict[str, str], day: str = "2005-01-03") -> dict[str, Any]:
    return observation(tx.TUMOR_SIZE, effectiveDateTime=day, component=[
        {"code": {"coding": [tx.LONGEST_DIMENSION]}, "valueQuantity": {"value": value, **unit}}])


def test_a_tumour_size_in_cm_is_converted_to_mm(tmp_path: Path) -> None:
    ucum_cm = {"unit": "cm", "system": tx.UCUM, "code": "cm"}
    record = one_record(read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, tumour_size(4.9, ucum_cm)))
    (line,) = record.rows(Table.THERAPY_LINE)
    assert line["largest_met_mm"] == 49  # not 4.9: the baseline of the line that starts after it


@pytest.mark.parametrize(("unit", "said"), [
    ({"unit": "in", "system": tx.UCUM, "code": "[in_i]"}, "is in '[in_i]', which oncosurg does not convert to 'mm'"),
    ({"unit": "cm"}, "gives no UCUM unit code"),
    ({"unit": "cm", "code": "cm"}, "gives the unit code 'cm' without its system"),  # FHIR qty-3
    ({"unit": "cm", "system": "http://example.org/units", "code": "cm"}, "not UCUM"),
])
def test_a_tumour_size_in_another_unit_is_refused(tmp_path: Path, unit: dict[str, str], said: str) -> None:
    size = tumour_size(4.9, unit)
    (issue,) = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, size).issues
    assert (issue.code, issue.file) == ("F111", "other-system.json")
    assert issue.column == f"Observation/{size['resource']['id']}.component[0].valueQuantity"
    assert issue.message.startswith("therapy_line.largest_met_mm: the quantity ") and said in issue.message


def test_a_tumour_size_before_no_line_is_refused(tmp_path: Path) -> None:
    size = tumour_size(49, {"system": tx.UCUM, "code": "mm"}, day="2006-01-01")  # after every line's start
    (issue,) = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, size).issues
    assert issue.code == "F111" and "cannot tell which therapy line" in issue.message


def test_a_refused_quantity_that_opens_its_row_records_the_rows_place() -> None:
    """A cell refused before anything else opened its row was listed as failed at place ``None``, so the
    rules across episodes could not tell that this row's value had failed its own check."""
    bundle = patient_bundle(random_registry(1, 3, episodes=8)[0])
    size = next(e["resource"] for e in bundle["entry"] if tx.TUMOR_SIZE["code"] in
                [c.get("code") for c in (e["resource"].get("code") or {}).get("coding", [])])
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
                       or e["resource"] is size]  # the size is its line's only resource
    size["component"][0]["valueQuantity"] |= {"code": "kg", "unit": "kg"}
    places: list[Any] = []
    reader = BundleReader(json.loads(json.dumps(bundle)), "p.json", places)
    reader.read()
    assert "F111" in [i.code for i in reader.issues]
    (failed,) = [f for f in reader.failed if f[1] == "largest_met_mm"]
    assert failed[2] is not None and places[failed[2]].table is Table.THERAPY_LINE


# ------------------------------------------------------------------ a BRAF variant is not a RAS mutation

def variant(*genes: str, present: bool = True) -> dict[str, Any]:
    return observation(tx.VARIANT_ASSESSMENT, valueCodeableConcept={"coding": [tx.PRESENT if present else tx.ABSENT]},
                       component=[gene(g) for g in genes])


def test_a_braf_variant_is_read_as_braf(tmp_path: Path) -> None:
    record = one_record(read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, variant("BRAF"),
                             variant("KRAS", "NRAS", present=False)))
    assert (record.patient["braf_status"], record.patient["ras_status"]) == ("mutant", "wild_type")


def test_a_variant_of_an_unstated_or_mixed_gene_is_refused(tmp_path: Path) -> None:
    unstated, mixed = variant(), variant("KRAS", "BRAF")
    issues = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, unstated, mixed).issues
    assert [(i.code, i.column) for i in issues] == [("F111", f"Observation/{unstated['resource']['id']}.component"),
                                                    ("F111", f"Observation/{mixed['resource']['id']}.component")]
    assert "cannot tell a RAS result from a BRAF one" in issues[0].message


def test_a_variant_of_another_gene_is_ignored_and_counted(tmp_path: Path) -> None:
    tp53 = observation(tx.VARIANT_ASSESSMENT, valueCodeableConcept={"coding": [tx.PRESENT]}, component=[
        {"code": {"coding": [tx.GENE_STUDIED]}, "valueCodeableConcept": {"coding": [
            {"system": tx.HGNC, "code": "HGNC:11998", "display": "TP53"}]}}])
    read_back = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, tp53)
    record = one_record(read_back)
    assert record.patient.get("ras_status") is None and record.patient.get("braf_status") is None
    assert read_back.ignored == {"Observation (variant assessment of a gene the registry does not record)": 1}



def studied(value: dict[str, Any]) -> dict[str, Any]:
    return observation(tx.VARIANT_ASSESSMENT, valueCodeableConcept={"coding": [tx.PRESENT]},
                       component=[{"code": {"coding": [tx.GENE_STUDIED]}, "valueCodeableConcept": value}])


@pytest.mark.parametrize(("gene_given", "shown"), [
    ({"text": "BRAF"}, "'BRAF'"),
    ({"coding": [{"system": "http://www.genenames.org", "code": "BRAF"}]}, "http://www.genenames.org|BRAF"),
    ({"coding": [{"system": tx.HGNC, "code": "BRAF"}]}, f"{tx.HGNC}|BRAF"),
])
def test_a_gene_not_given_as_an_hgnc_id_is_refused_not_ignored(tmp_path: Path, gene_given: dict[str, Any],
                                                               shown: str) -> None:
    """A BRAF mutation whose gene is a symbol or text was ignored as "a gene the registry does not record"."""
    braf = studied(gene_given)
    read_back = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, braf)
    (issue,) = read_back.issues
    assert (issue.code, issue.file, issue.value) == ("F111", "other-system.json", shown)
    assert issue.column == f"Observation/{braf['resource']['id']}.component[0].valueCodeableConcept"
    assert "not given as an HGNC id" in issue.message and "HGNC:1097" in issue.hint
    assert not read_back.ignored


def test_an_hgnc_id_without_its_prefix_is_read(tmp_path: Path) -> None:
    record = one_record(read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN,
                             studied({"coding": [{"system": tx.HGNC, "code": "1097", "display": "BRAF"}]})))
    assert (record.patient["braf_status"], record.patient.get("ras_status")) == ("mutant", None)


# ------------------------------------------------------------------ an earlier oxaliplatin line stays its own line

def test_an_earlier_oxaliplatin_line_does_not_join_the_cetuximab_line(tmp_path: Path) -> None:
    folfox = [medication(tx.ATC, "L01XA03", "2004-03-01", "2004-09-01"),
              medication(tx.RXNORM, "4492", "2004-03-01", "2004-09-01")]  # oxaliplatin + fluorouracil
    record = one_record(read(tmp_path, patient(), *folfox, *CETUXIMAB_IRINOTECAN))
    assert lines(record) == [(1, "oxaliplatin;fluoropyrimidine"), (2, "cetuximab;irinotecan")]
    rescue = record.rows(Table.THERAPY_LINE)[1]
    assert partner_of(rescue["agents"].split(";")) == "irinotecan"  # not "both"
    assert (rescue["start_date"], rescue["stop_date"]) == (dt.date(2005, 1, 10), dt.date(2005, 4, 1))



def test_a_later_line_sharing_the_fluoropyrimidine_is_its_own_line(tmp_path: Path) -> None:
    """FOLFOX then FOLFIRI: the later fluorouracil joined the FOLFOX line (sorted before irinotecan), which
    then overlapped an irinotecan-only line; cycle by cycle, each line keeps its agents."""
    def cycles(*agents: tuple[str, str], days: tuple[str, ...]) -> list[dict[str, Any]]:
        return [medication(system, code, day, day) for day in days for system, code in agents]

    folfox = cycles((tx.ATC, "L01XA03"), (tx.RXNORM, "4492"), days=("2004-03-01", "2004-03-15", "2004-03-29"))
    folfiri = cycles((tx.ATC, "L01CE02"), (tx.ATC, "L01BC02"), days=("2005-01-10", "2005-01-24"))
    record = one_record(read(tmp_path, patient(), *folfiri, *folfox))
    assert [(n, agents, str(ln["start_date"]), str(ln["stop_date"])) for (n, agents), ln in
            zip(lines(record), record.rows(Table.THERAPY_LINE), strict=True)] == [
        (1, "oxaliplatin;fluoropyrimidine", "2004-03-01", "2004-03-29"),
        (2, "irinotecan;fluoropyrimidine", "2005-01-10", "2005-01-24")]



def test_agents_started_within_the_regimen_window_join_the_line(tmp_path: Path) -> None:
    """A cetuximab loading dose a week before FOLFIRI split the rescue line into cetuximab alone and
    cetuximab + FOLFIRI; bevacizumab added after 28 days still starts a new line."""
    meds = [medication(tx.ATC, "L01FE01", "2005-01-03", "2005-01-03"),  # cetuximab 400 mg/m2 loading dose
            *(medication(system, code, day, day) for day in ("2005-01-10", "2005-01-24")
              for system, code in ((tx.ATC, "L01FE01"), (tx.ATC, "L01CE02"), (tx.ATC, "L01BC02"))),
            medication(tx.ATC, "L01FG01", "2005-03-07", "2005-04-04")]  # bevacizumab, 63 days later
    record = one_record(read(tmp_path, patient(), *meds))
    assert lines(record) == [(1, "cetuximab;irinotecan;fluoropyrimidine"), (2, "bevacizumab")]
    assert [(str(ln["start_date"]), str(ln["stop_date"])) for ln in record.rows(Table.THERAPY_LINE)] == [
        ("2005-01-03", "2005-01-24"), ("2005-03-07", "2005-04-04")]


# ------------------------------------------------------------------ premedication is not an agent

def test_premedication_is_ignored_by_its_code_class(tmp_path: Path) -> None:
    premedication = [medication(tx.ATC, "H02AB02", "2005-01-10", text="dexamethasone"),
                     medication(tx.RXNORM, "26225", "2005-01-10", text="ondansetron"),
                     medication(tx.ATC, "V03AF03", "2005-01-10", text="calcium folinate")]
    read_back = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, *premedication)
    record = one_record(read_back)
    assert lines(record) == [(1, "cetuximab;irinotecan")]  # not "other"
    assert read_back.ignored == {"supportive medication (premedication, antiemetic, folinic acid…)": 3}


@pytest.mark.parametrize(("system", "code", "shown"), [(tx.ATC, "L01EX05", "ATC L01EX05 (regorafenib)"),
                                                       (tx.RXNORM, "1312397", "RxNorm 1312397 (regorafenib)")])
def test_a_drug_outside_the_agent_vocabulary_is_refused(tmp_path: Path, system: str, code: str, shown: str) -> None:
    other = medication(system, code, "2005-06-01", text="regorafenib")
    (issue,) = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, other).issues
    assert (issue.code, issue.file, issue.value) == ("F111", "other-system.json", shown)
    assert issue.column == f"MedicationAdministration/{other['resource']['id']}.medicationCodeableConcept"
    assert "'other'" in issue.hint


def test_a_medication_by_reference_is_read_from_the_bundle(tmp_path: Path) -> None:
    drug = entry({"resourceType": "Medication", "code": {"coding": [{"system": tx.RXNORM, "code": "318341"}]}})
    given = medication(tx.ATC, "L01FE01", "2005-01-10")
    del given["resource"]["medicationCodeableConcept"]
    given["resource"]["medicationReference"] = {"reference": drug["fullUrl"]}
    record = one_record(read(tmp_path, patient(), drug, given))
    assert lines(record) == [(1, "cetuximab")]


# ------------------------------------------------------------------ a hospital MRN is never the patient_id

def test_a_patient_with_only_an_mrn_is_refused(tmp_path: Path) -> None:
    read_back = read(tmp_path, patient(MRN), *CETUXIMAB_IRINOTECAN)
    (issue,) = read_back.issues
    assert (issue.code, issue.file, issue.column) == ("F111", "other-system.json",
                                                      f"Patient/{PATIENT_URL.rsplit(':', 1)[1]}.identifier")
    assert "http://hospital.example.org/mrn" in issue.message and "never imported as patient_id" in issue.message
    assert read_back.records == []


def test_the_pseudonym_is_read_whatever_the_identifier_order(tmp_path: Path) -> None:
    record = one_record(read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN))  # the MRN comes first
    assert (record.centre, record.patient_id) == ("A", "F1")


# ------------------------------------------------------------------ resource types outside R4B never crash

def test_unknown_and_r4_only_resource_types_are_ignored_with_a_count(tmp_path: Path) -> None:
    extra = [entry({"resourceType": "MedicinalProduct", "name": [{"productName": "Erbitux"}]}),  # R4, not in R4B
             entry({"resourceType": "EffectEvidenceSynthesis", "status": "active"}),  # R4 only
             entry({"resourceType": "NotAResource", "foo": 1}),
             entry({"resourceType": "Encounter", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}})]
    dead = patient()
    dead["resource"]["deceasedDateTime"] = "2006-01-10"  # a new patient needs a contact: the death is one
    read_back = read(tmp_path, dead, *CETUXIMAB_IRINOTECAN, *extra)
    assert one_record(read_back).rows(Table.CONTACT) == [
        {"contact_no": 1, "contact_date": dt.date(2006, 1, 10), "vital_status": "dead"}]
    assert read_back.ignored == {"MedicinalProduct (resource type not read)": 1,
                                 "EffectEvidenceSynthesis (resource type not read)": 1,
                                 "NotAResource (resource type not read)": 1, "Encounter (resource type not read)": 1}
    db = f"sqlite:///{tmp_path / 'r.db'}"
    result = CliRunner().invoke(cli, ["import", "--format", "fhir", str(tmp_path / "bundles"), "--db", db])
    assert result.exit_code == 0, result.output
    assert "ignored: 1 EffectEvidenceSynthesis (resource type not read)" in result.output
    assert "Traceback" not in result.output


def test_a_resource_without_a_type_or_an_entry_without_resource_is_reported_not_raised(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    write(folder, "b.json", {"resourceType": "Bundle", "type": "collection",
                             "entry": [patient(), *CETUXIMAB_IRINOTECAN, {"resource": {"id": "x"}}, {"fullUrl": "u"}]})
    result = CliRunner().invoke(cli, ["validate", "--format", "fhir", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "b.json: column 'entry[4]'" in result.output and "entry 4 has no resource" in result.output



def test_a_conflict_names_the_resource_that_gave_the_first_value(tmp_path: Path) -> None:
    """Two Conditions disagreeing on the primary site: the message named the Patient (the resource that
    opened the row) as the source of the first value, not the Condition that gave it."""
    def condition(code: str) -> dict[str, Any]:
        return entry({"resourceType": "Condition", "code": {"coding": [{"system": tx.ICD10_CM, "code": code}]},
                      "subject": {"reference": PATIENT_URL}})

    rectum, colon = condition("C20"), condition("C18.7")
    (issue,) = read(tmp_path, patient(), *CETUXIMAB_IRINOTECAN, rectum, colon).issues
    assert (issue.code, issue.column, issue.value) == ("F108", f"Condition/{colon['resource']['id']}.code", "colon")
    assert issue.message.endswith(f"differs from 'rectum' given by Condition/{rectum['resource']['id']}.code")


# ------------------------------------------------------------------ the reader reports, never raises

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_bundles_give_issues_never_exceptions(data: st.DataObject) -> None:
    record = random_registry(1, data.draw(st.integers(0, 50)), episodes=16)[0]
    bundle = json.loads(json.dumps(patient_bundle(record)))
    for _ in range(data.draw(st.integers(1, 4))):
        paths = [p for p in _paths(bundle) if p]
        path = data.draw(st.sampled_from(paths))
        parent = bundle
        for step in path[:-1]:
            parent = parent[step]
        if data.draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    out = FhirBundles(source="fuzz")
    read_bundle(json.dumps(bundle).encode(), "fuzz.json", out)  # must not raise
    assert all(i.file == "fuzz.json" for i in out.issues)
