"""The episode model's domain layer: the flat projection both ways and the rules across episodes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from oncosurg.ingest.csv import read_registry_csv
from oncosurg.pathway.flat import PatientRecord, dropped_by_flat, from_flat, partner_of, to_flat
from oncosurg.pathway.model import AGENTS, TABLES, Table, join_list
from oncosurg.pathway.rules import check_patient
from oncosurg.rules import RULES, parse_cell

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = sorted((ROOT / "tests" / "reference" / "registries").glob("*.csv"))
D = dt.date


@pytest.mark.parametrize("path", REGISTRIES, ids=lambda p: p.stem)
def test_flat_round_trip_is_exact(path: Path) -> None:
    parsed = read_registry_csv(path, centre="C")
    assert parsed.ok
    for record in parsed.records:
        episodes = from_flat(record.values)
        assert to_flat(episodes) == record.values
        assert dropped_by_flat(episodes) == []


def _patient(**episodes: list[dict]) -> PatientRecord:
    record = PatientRecord("C", {"patient_id": "P1", "referral": "in_house"})
    record.episodes = {Table(k): v for k, v in episodes.items()}
    record.episodes.setdefault(Table.CONTACT, [{"contact_no": 1, "contact_date": D(2008, 1, 1),
                                                "vital_status": "alive"}])
    return record


def _codes(record: PatientRecord) -> list[tuple[str, str | None]]:
    return [(i.code, i.column) for i in check_patient(record)]


def test_a_clean_multi_episode_patient_passes() -> None:
    record = _patient(
        therapy_line=[
            {"line_number": 1, "start_date": None, "agents": "oxaliplatin;fluoropyrimidine"},
            {"line_number": 2, "start_date": D(2005, 1, 1), "stop_date": D(2005, 5, 1),
             "agents": "cetuximab;irinotecan", "intent": "conversion", "given_at": "centre"},
            {"line_number": 3, "start_date": D(2006, 3, 1), "agents": "panitumumab", "intent": "palliative"},
        ],
        liver_procedure=[
            {"procedure_no": 1, "procedure_date": D(2005, 6, 1), "procedure_type": "two_stage_first",
             "resected_segments": "2;3"},
            {"procedure_no": 2, "procedure_date": D(2005, 8, 1), "procedure_type": "two_stage_second",
             "resected_segments": "5;6;7;8", "margin": "R0"},
        ],
        complication=[{"procedure_no": 2, "complication_no": 1, "grade": "II", "complication_date": D(2005, 8, 3)},
                      {"procedure_no": 2, "complication_no": 2, "grade": "IIIa"}],
        pathology=[{"procedure_no": 1, "steatosis_pct": 10}, {"procedure_no": 2, "tumour_regression_grade": 2}],
        disease_event=[{"event_no": 1, "event_date": D(2006, 2, 1), "event_kind": "recurrence", "sites": "liver"}],
        contact=[{"contact_no": 1, "contact_date": D(2007, 1, 1), "vital_status": "alive"}],
    )
    assert _codes(record) == []
    flat = to_flat(record)
    assert flat["prior_chemo_lines"] == 1 and flat["cetuximab_partner"] == "irinotecan"
    assert flat["surgery_type"] == "hepatectomy" and flat["two_stage"] is True  # the second stage is the operation
    assert flat["clavien_dindo_max"] == "IIIa" and flat["progression_date"] == D(2006, 2, 1)
    assert any("other therapy line" in n for n in dropped_by_flat(record))


@pytest.mark.parametrize(("episodes", "expected"), [
    ({"complication": [{"procedure_no": 9, "complication_no": 1, "grade": "I"}]}, ("E601", "procedure_no")),
    ({"mdt_review": [{"review_no": 1, "review_date": D(2005, 1, 1), "decision": "resectable", "line_number": 4}]},
     ("E601", "line_number")),
    ({"disease_event": [{"event_no": 1, "event_date": D(2005, 1, 1), "event_kind": "progression"},
                        {"event_no": 1, "event_date": D(2005, 2, 1), "event_kind": "progression"}]},
     ("E602", "event_no")),
    ({"disease_event": [{"event_no": 1, "event_date": D(2005, 1, 1), "event_kind": "progression"},
                        {"event_no": 2, "event_date": D(2005, 1, 1), "event_kind": "progression"}]},
     ("E603", "event_no")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2005, 9, 1), "procedure_type": "two_stage_first"},
                          {"procedure_no": 2, "procedure_date": D(2005, 8, 1),
                           "procedure_type": "two_stage_second"}]}, ("E604", "procedure_date")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2005, 9, 1), "procedure_type": "hepatectomy"}],
      "complication": [{"procedure_no": 1, "complication_no": 1, "grade": "I",
                        "complication_date": D(2005, 8, 1)}]}, ("E604", "complication_date")),
    ({"disease_event": [{"event_no": 1, "event_date": D(2009, 1, 1), "event_kind": "progression"}]},
     ("E604", "event_date")),
    ({"therapy_line": [{"line_number": 1, "start_date": D(2005, 1, 1), "agents": "cetuximab"},
                       {"line_number": 2, "start_date": D(2004, 1, 1), "agents": "irinotecan"}]},
     ("E605", "start_date")),
    ({"therapy_line": [{"line_number": 1, "start_date": D(2005, 1, 1), "stop_date": D(2004, 1, 1),
                        "agents": "cetuximab"}]}, ("E605", "stop_date")),
    ({"therapy_line": [{"line_number": 1, "start_date": None, "agents": "cetuximab"}]}, ("E605", "start_date")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2005, 9, 1), "procedure_type": "ablation",
                           "margin": "R0"}]}, ("E606", "margin")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2005, 9, 1), "procedure_type": "pve"}],
      "pathology": [{"procedure_no": 1, "steatosis_pct": 5}]}, ("E606", "procedure_no")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2005, 9, 1), "procedure_type": "hepatectomy"}],
      "complication": [{"procedure_no": 1, "complication_no": 1, "grade": "V"}]}, ("E608", "grade")),
    ({"liver_procedure": [{"procedure_no": 1, "procedure_date": D(2007, 12, 1), "procedure_type": "hepatectomy"}],
      "complication": [{"procedure_no": 1, "complication_no": 1, "grade": "IIIa"}],
      "contact": [{"contact_no": 1, "contact_date": D(2007, 12, 21), "vital_status": "dead"}]},
     ("E608", "procedure_date")),
    ({"contact": [{"contact_no": 1, "contact_date": D(2007, 1, 1), "vital_status": "dead"},
                  {"contact_no": 2, "contact_date": D(2007, 6, 1), "vital_status": "alive"}]},
     ("E609", "contact_date")),
    ({"contact": []}, ("E609", "patient_id")),
    ({"disease_event": [{"event_no": 1, "event_date": D(2005, 1, 1), "event_kind": "recurrence"}]},
     ("E610", "event_kind")),
])
def test_each_rule_across_episodes(episodes: dict, expected: tuple[str, str]) -> None:
    assert expected in _codes(_patient(**episodes))


def test_referral_date_rules() -> None:
    record = _patient(therapy_line=[{"line_number": 1, "start_date": D(2005, 1, 1), "agents": "cetuximab",
                                     "given_at": "centre"}])
    record.patient.update(referral="referred", referral_date=D(2005, 3, 1))
    assert ("E607", "start_date") in _codes(record)
    record.patient.update(referral="in_house")
    assert ("E607", "referral_date") in _codes(record)


def test_a_failed_cell_does_not_cascade() -> None:
    record = _patient(disease_event=[{"event_no": 1, "event_date": D(2009, 1, 1), "event_kind": "progression"}])
    where = lambda table, row: ("disease_events.csv", 7)  # noqa: E731
    assert check_patient(record, where=where) != []
    assert check_patient(record, where=where, failed=[(Table.DISEASE_EVENT, "event_date", 7)]) == []


def test_partner_and_agent_lists() -> None:
    assert partner_of(("cetuximab", "irinotecan", "oxaliplatin")) == "both"
    assert partner_of(("cetuximab", "fluoropyrimidine")) == "none"
    assert join_list({"irinotecan", "cetuximab"}, AGENTS) == "cetuximab;irinotecan"
    agents = next(f for f in TABLES[1].fields if f.name == "agents")
    assert parse_cell(agents, "irinotecan; cetuximab", line=2) == ("cetuximab;irinotecan", None)
    value, issue = parse_cell(agents, "cetuximab;folfox", line=2)
    assert value is None and issue is not None and issue.code == "V306"


def test_every_episode_rule_is_documented_in_the_registry_of_rules() -> None:
    assert {f"E60{i}" for i in range(1, 10)} | {"E610"} <= set(RULES)
