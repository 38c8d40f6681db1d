"""The reference cohort as episodes, and random multi-episode registries.

The flat projection of every reference patient is the pinned flat row (so every published figure
still comes out: tests/test_reference_cohort.py), every record passes the rules across episodes,
the single-value checks of its text form and the flat rules on its projection, and the episodes
tell a coherent clinical story.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.export import cell_text
from oncosurg.pathway.flat import PatientRecord, dropped_by_flat, project, to_flat
from oncosurg.pathway.model import OPERATIONS, TABLES, Table, is_resection, split_list
from oncosurg.pathway.rules import check_patient
from oncosurg.reference import (
    build_reference_rows,
    flat_texts,
    iter_random_registry,
    random_registry,
    reference_records,
)
from oncosurg.reference.cohort import build_rows
from oncosurg.reference.episodes import recist
from oncosurg.reference.random_registry import iter_random_pairs
from oncosurg.reference.summary import DOC, episode_summary, reference_table, repeat_resections, with_table
from oncosurg.rules import check_record, parse_cell, parse_record
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "tests" / "reference" / "registries" / "reference-cohort.csv"
SEEDS = [2007, 1, 424242]
TODAY = dt.date.today()


@pytest.fixture(scope="module", params=SEEDS)
def cohort(request: pytest.FixtureRequest) -> tuple[int, list[PatientRecord]]:
    return request.param, reference_records(request.param)


@pytest.fixture(scope="module")
def randoms() -> list[PatientRecord]:
    return [r for seed in (0, 1, 2) for r in random_registry(1000, seed)]


def text_form_problems(record: PatientRecord) -> list[str]:
    """Every value, written as registry text, reads back to itself with the field's own check."""
    out = []
    for spec in TABLES:
        rows = [record.patient] if spec.table is Table.PATIENT else record.rows(spec.table)
        fields = spec.field_by_name
        for row in rows:
            out += [f"{spec.table}: unknown column {c}" for c in row if c not in fields]
            for f in spec.fields:
                value = row.get(f.name)
                if value is None:
                    if f.required == "yes":
                        out.append(f"{spec.table}.{f.name} required")
                    continue
                parsed, issue = parse_cell(f, cell_text(value), line=None, today=TODAY)
                if issue is not None or parsed != value or type(parsed) is not type(value):
                    out.append(f"{spec.table}.{f.name} = {value!r}: {issue or parsed!r}")
    return out


def postop_death_without_grade_v(flat: dict) -> bool:
    """The flat rule of issue 9: a death within the postoperative window needs Clavien-Dindo V."""
    surgery, death = flat["surgery_date"], flat["death_date"]
    return (surgery is not None and death is not None and 0 <= (death - surgery).days <= DEFAULT_POSTOP_WINDOW_DAYS
            and flat["clavien_dindo_max"] != "V")


# ------------------------------------------------------------------------------------ projection


def test_projection_is_the_committed_flat_cohort() -> None:
    with COMMITTED.open(encoding="utf-8", newline="") as fh:
        committed = list(csv.DictReader(fh))
    records = reference_records()
    assert build_reference_rows() == committed
    assert [flat_texts(to_flat(r)) for r in records] == committed
    for number, (row, record) in enumerate(zip(committed, records, strict=True), start=2):
        typed, issues = parse_record(row, line=number)
        assert issues == []
        assert to_flat(record) == typed, row["patient_id"]


def test_projection_is_the_pinned_row_for_every_seed(cohort: tuple[int, list[PatientRecord]]) -> None:
    seed, records = cohort
    assert [flat_texts(to_flat(r)) for r in records] == build_rows(seed)
    assert all(dropped_by_flat(r) for r in records)  # the episodes hold more than the flat row


def test_flat_texts_writes_whole_numbers_as_typed() -> None:
    texts = flat_texts({"age_at_cetuximab": 71.0, "largest_met_mm": 55.5, "two_stage": False,
                        "surgery_date": dt.date(2005, 1, 2), "cetuximab_cycles": 6})
    assert (texts["age_at_cetuximab"], texts["largest_met_mm"], texts["two_stage"], texts["surgery_date"],
            texts["cetuximab_cycles"], texts["margin"]) == ("71", "55.5", "no", "2005-01-02", "6", "")


# ------------------------------------------------------------------------------------ validity


def test_every_reference_record_passes_every_rule(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    for record in records:
        assert check_patient(record) == [], record.patient_id
        assert text_form_problems(record) == [], record.patient_id
        flat = to_flat(record)
        assert check_record(flat, line=None) == [], record.patient_id
        assert not postop_death_without_grade_v(flat), record.patient_id


def test_the_checks_above_are_not_vacuous() -> None:
    record = reference_records()[0]
    broken = PatientRecord(record.centre, dict(record.patient), {t: [dict(r) for r in rows]
                                                                 for t, rows in record.episodes.items()})
    broken.rows(Table.THERAPY_LINE)[0]["cycles"] = 7.5
    broken.rows(Table.CONTACT)[0]["contact_date"] = dt.date(2030, 1, 1)
    assert text_form_problems(broken) != []
    assert check_patient(broken) != []


# ------------------------------------------------------------------------------------ clinical story


def _operations(record: PatientRecord) -> list[dict]:
    return sorted((p for p in record.rows(Table.LIVER_PROCEDURE) if p["procedure_type"] in OPERATIONS),
                  key=lambda p: p["procedure_date"])


def test_lines_are_numbered_around_the_rescue_line(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    for record in records:
        flat, proj = to_flat(record), project(record)
        rescue = proj.rescue_line
        assert rescue is not None and rescue["line_number"] == flat["prior_chemo_lines"] + 1
        lines = sorted(record.rows(Table.THERAPY_LINE), key=lambda ln: ln["line_number"])
        assert [ln["line_number"] for ln in lines] == list(range(1, len(lines) + 1))
        for ln in lines:
            agents = split_list(ln["agents"])
            if ln["line_number"] < rescue["line_number"]:
                assert ln["intent"] == "palliative" and "cetuximab" not in agents
                assert ln["stop_date"] < rescue["start_date"]
            elif ln["line_number"] > rescue["line_number"]:
                assert ln["intent"] in ("palliative", "adjuvant")
                assert rescue.get("stop_date") is not None and ln["start_date"] > rescue["stop_date"]
            if ln["intent"] == "adjuvant":
                assert flat["margin"] in ("R0", "R1") and ln["start_date"] > flat["surgery_date"]
        if flat["surgery_date"] is not None:
            assert rescue["stop_reason"] == "surgery" and rescue["stop_date"] < _operations(record)[0]["procedure_date"]


def test_reviews_say_resectable_before_each_operation_and_never_for_the_others(
        cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    for record in records:
        reviews = record.rows(Table.MDT_REVIEW)
        operations = _operations(record)
        if not operations:
            assert all(r["decision"] != "resectable" for r in reviews), record.patient_id
        previous = None
        for op in operations:
            low = previous or op["procedure_date"] - dt.timedelta(days=60)
            assert any(r["decision"] == "resectable" and low < r["review_date"] < op["procedure_date"]
                       for r in reviews), (record.patient_id, op)
            previous = op["procedure_date"]
        assert all(r["review_date"] <= to_flat(record)["last_contact_date"] for r in reviews)


def test_assessments_follow_recist_and_reach_the_best_response(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    with_assessments = 0
    for record in records:
        flat = to_flat(record)
        mine = [a for a in record.rows(Table.RESPONSE_ASSESSMENT) if a["line_number"] == flat["prior_chemo_lines"] + 1]
        for a in mine:
            assert a["category"] == recist(a["baseline_sum_mm"], a["nadir_sum_mm"], a["current_sum_mm"],
                                           a["new_lesions"])
        before = [a["category"] for a in mine if flat["progression_date"] is None
                  or a["assessment_date"] < flat["progression_date"]]
        if before:
            with_assessments += 1
            assert min(before, key=["CR", "PR", "SD", "PD"].index) == flat["best_response"], record.patient_id
        if flat["surgery_date"] is None and flat["progression_date"] is not None and mine:
            assert mine[-1]["assessment_date"] == flat["progression_date"] and mine[-1]["category"] == "PD"
    assert with_assessments > 80


def test_procedures_complications_and_pathology(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    two_stage = 0
    for record in records:
        flat, procedure = to_flat(record), project(record).procedure
        procedures = {p["procedure_no"]: p for p in record.rows(Table.LIVER_PROCEDURE)}
        if procedure is None:
            assert procedures == {}
            continue
        types = [p["procedure_type"] for p in procedures.values()]
        if "two_stage_first" in types:
            two_stage += 1
            first = next(p for p in procedures.values() if p["procedure_type"] == "two_stage_first")
            assert procedure["procedure_type"] == "two_stage_second"
            assert first["procedure_date"] < procedure["procedure_date"]
            assert flat["surgery_type"] == "hepatectomy" and flat["two_stage"] is True
        assert ("pve" in types) == bool(flat["portal_vein_embolization"])
        grades = [c["grade"] for c in record.rows(Table.COMPLICATION) if c["procedure_no"] == procedure["procedure_no"]]
        assert max(grades, key=CLAVIEN_DINDO.index, default="none") == flat["clavien_dindo_max"]
        for c in record.rows(Table.COMPLICATION):
            assert c["complication_date"] >= procedures[c["procedure_no"]]["procedure_date"] and c["description"]
        pathology = {p["procedure_no"]: p for p in record.rows(Table.PATHOLOGY)}
        for number, p in procedures.items():
            resection = is_resection(p["procedure_type"], p.get("resected_segments"))
            assert (number in pathology) == resection, (record.patient_id, p)
            if resection:
                assert (pathology[number]["margin_mm"] >= 1) == (p["margin"] == "R0")
                assert pathology[number]["lesion_count"] >= 1 and pathology[number]["largest_lesion_mm"] > 0
        for p in procedures.values():  # after the projected operation: only for a recurrence
            if p["procedure_date"] > procedure["procedure_date"]:
                assert any(e["event_kind"] == "recurrence" and e["event_date"] < p["procedure_date"]
                           for e in record.rows(Table.DISEASE_EVENT))
    assert two_stage == 3


def test_events_and_contacts_around_the_flat_dates(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    for record in records:
        flat = to_flat(record)
        start, progression = flat["cetuximab_start"], flat["progression_date"]
        for e in record.rows(Table.DISEASE_EVENT):
            assert e["event_date"] < start or (progression is not None and e["event_date"] >= progression)
            assert e["sites"]
        contacts = sorted(record.rows(Table.CONTACT), key=lambda c: c["contact_date"])
        assert contacts[-1]["contact_date"] == flat["last_contact_date"]
        assert [c["vital_status"] for c in contacts].count("dead") == (flat["death_date"] is not None)
        assert (contacts[-1]["vital_status"] == "dead") == (flat["death_date"] is not None)


# ------------------------------------------------------------------------------------ determinism, counts


def test_deterministic_for_a_seed() -> None:
    assert reference_records(5) == reference_records(5)
    a, b = reference_records(5), reference_records(6)
    assert a != b and [to_flat(r) for r in a] != [to_flat(r) for r in b]
    assert random_registry(200, 9) == random_registry(200, 9)
    assert random_registry(50, 9) == random_registry(200, 9)[:50]  # patient i does not depend on n
    assert random_registry(50, 9) != random_registry(50, 10)


def test_episode_counts_are_clinically_plausible(cohort: tuple[int, list[PatientRecord]]) -> None:
    _, records = cohort
    s = episode_summary(records)
    assert s["patients"] == 151
    assert s["patients with 2+ lines"] == 151  # every patient had at least one line before the rescue line
    assert s["patients with 3+ lines"] >= 100
    assert s["patients with panitumumab"] >= 5 and s["patients with bevacizumab"] >= 40
    assert s["patients with aflibercept"] >= 2 and s["patients with hai"] >= 5
    assert s["patients with two-stage"] == 3 and s["patients with pve"] == 5
    assert 1 <= s["patients with repeat hepatectomy"] <= 10
    assert s["patients with recurrence"] == 14  # the 13 P patients and A2
    assert s["patients with death"] == sum(r.rows(Table.CONTACT)[-1]["vital_status"] == "dead" for r in records)
    assert s["procedures with 2+ complications"] >= 5
    assert 1.3 <= s["complications per complicated procedure (mean)"] <= 2.5
    assert s["contacts per patient (mean)"] >= 3


def test_the_counts_in_the_docs_are_current() -> None:
    text = (ROOT / DOC).read_text(encoding="utf-8")
    assert with_table(text, reference_table()) == text, "run: python -m oncosurg.reference.summary"


def test_repeat_resections() -> None:
    def record(*procedures: tuple[str, str | None]) -> PatientRecord:
        rows = [{"procedure_no": i, "procedure_date": dt.date(2005, i, 1), "procedure_type": kind,
                 "resected_segments": segments} for i, (kind, segments) in enumerate(procedures, start=1)]
        return PatientRecord("C", {"patient_id": "P"}, {Table.LIVER_PROCEDURE: rows})

    assert repeat_resections(record(("two_stage_first", "2;3"), ("pve", None), ("two_stage_second", "5;6;7;8"))) == 0
    assert repeat_resections(record(("hepatectomy", "5;6"), ("ablation", None), ("hepatectomy", "3"))) == 1
    assert repeat_resections(record(("two_stage_first", None), ("two_stage_second", "5;6;7;8"),
                                     ("hepatectomy", "3"))) == 1


# ------------------------------------------------------------------------------------ random registries


def test_random_registries_are_valid(randoms: list[PatientRecord]) -> None:
    for record in randoms:
        assert check_patient(record) == [], record.patient_id
        assert text_form_problems(record) == [], record.patient_id


def test_random_records_project_onto_their_drawn_flat_row() -> None:
    without = 0
    for flat, record in iter_random_pairs(3000, 4):
        if flat is None:
            without += 1
            assert project(record).rescue_line is None
            continue
        assert to_flat(record) == flat, record.patient_id
        assert check_record(flat, line=None) == [], record.patient_id
        assert not postop_death_without_grade_v(flat)
    assert 20 <= without <= 120  # 2 % have no conversion line


def test_random_registries_hold_the_hard_cases(randoms: list[PatientRecord]) -> None:
    types = Counter(p["procedure_type"] for r in randoms for p in r.rows(Table.LIVER_PROCEDURE))
    assert all(types[t] > 0 for t in ("hepatectomy", "ablation", "exploration_only", "pve", "two_stage_first",
                                      "two_stage_second", "alpps_1", "alpps_2"))
    projected = Counter((project(r).procedure or {}).get("procedure_type") for r in randoms)
    assert projected["ablation"] > 0 and projected["two_stage_first"] > 0  # a strategy stopped after its first stage
    assert any(ln.get("start_date") is None for r in randoms for ln in r.rows(Table.THERAPY_LINE))
    assert any([c["contact_no"] for c in r.rows(Table.CONTACT)] != list(range(1, len(r.rows(Table.CONTACT)) + 1))
               or [p["procedure_no"] for p in r.rows(Table.LIVER_PROCEDURE)]
               != list(range(1, len(r.rows(Table.LIVER_PROCEDURE)) + 1)) for r in randoms)  # entry order
    assert sum(r.rows(Table.CONTACT)[-1]["vital_status"] == "alive" for r in randoms) > 100
    s = episode_summary(randoms)
    assert s["patients with repeat hepatectomy"] > 0 and s["patients with recurrence"] > 0
    assert s["procedures with 2+ complications"] > 0


def test_random_registry_options() -> None:
    records = random_registry(300, 3, centres=["Nord", "Sud"])
    assert {r.centre for r in records} == {"Nord", "Sud"}
    assert len({(r.centre, r.patient_id) for r in records}) == 300
    assert {r.centre for r in random_registry(10, 3, centres=3)} == {f"Centre {i} (synthetic)" for i in (1, 2, 3)}
    assert random_registry(0) == []
    assert next(iter_random_registry(1, 3, centres=["Nord", "Sud"])) == records[0]
    for target in (10, 20):
        rows = sum(len(v) for r in random_registry(1000, 8, episodes=target) for v in r.episodes.values())
        assert target * 0.9 <= rows / 1000 <= target * 1.15, target
    with pytest.raises(ValueError, match="centre"):
        random_registry(1, centres=0)
    with pytest.raises(ValueError, match="seed"):
        random_registry(1, seed=-1)


# ------------------------------------------------------------------------------------ the store


def test_the_store_projects_the_episodes_onto_the_same_flat_rows() -> None:
    """The SQL projection of the episode tables agrees with the Python one on the reference cohort and
    on a random registry (a cross-check of the store with the richest records we have)."""
    from oncosurg.store.episode_tables import build
    from oncosurg.store.episodes import insert_records
    from oncosurg.store.projection import flat_select

    metadata = sa.MetaData()
    centre = sa.Table("centre", metadata, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("name", sa.String(120), nullable=False, unique=True))
    tables = build(metadata)
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    records = reference_records() + random_registry(500, 21)
    with engine.begin() as conn:
        ids = {name: conn.execute(sa.insert(centre).values(name=name)).inserted_primary_key[0]
               for name in sorted({r.centre for r in records})}
        pks = insert_records(conn, tables, records, centre_ids=ids)
        flat = {row["pk"]: {c: row[c] for c in COLUMNS} for row in conn.execute(flat_select(tables, centre)).mappings()}
    engine.dispose()
    assert [flat[pk] for pk in pks] == [to_flat(r) for r in records]
