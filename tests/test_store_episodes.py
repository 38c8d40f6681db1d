"""The episode tables: records in → the same records out; the flat projection in SQL equals the
Python definition; partial updates change only what they carry."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.ingest.csv import read_registry_csv
from oncosurg.pathway.flat import PatientRecord, from_flat, to_flat
from oncosurg.pathway.model import Table
from oncosurg.pathway.update import merged, plan_update
from oncosurg.store.episode_tables import build
from oncosurg.store.episodes import apply_update, insert_records, iter_records, read_records
from oncosurg.store.projection import flat_select

ROOT = Path(__file__).resolve().parents[1]
D = dt.date


def _schema(url: str) -> tuple[sa.Engine, dict, sa.Table]:
    metadata = sa.MetaData()
    centre = sa.Table("centre", metadata, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("name", sa.String(120), nullable=False, unique=True))
    tables = build(metadata)
    engine = sa.create_engine(url)
    metadata.create_all(engine)
    return engine, tables, centre


def rich_record() -> PatientRecord:
    record = PatientRecord("Centre B", {"patient_id": "B-1", "referral": "referred", "referral_date": D(2005, 3, 1),
                                        "birth_year": 1950, "braf_status": "wild_type"})
    record.episodes = {
        Table.THERAPY_LINE: [
            {"line_number": 1, "start_date": D(2004, 5, 1), "stop_date": D(2004, 11, 1),
             "agents": "oxaliplatin;fluoropyrimidine", "intent": "palliative", "given_at": "elsewhere"},
            {"line_number": 2, "start_date": D(2004, 12, 1), "agents": "cetuximab;irinotecan;fluoropyrimidine",
             "intent": "conversion", "given_at": "elsewhere", "cycles": 6, "schedule": "weekly",
             "dose_mg_m2": 250.0, "bsa_m2": 1.8, "liver_mets_count": 5},
            {"line_number": 3, "start_date": D(2006, 5, 1), "agents": "panitumumab", "intent": "palliative",
             "given_at": "centre"}],
        Table.MDT_REVIEW: [{"review_no": 1, "review_date": D(2005, 3, 10), "decision": "resectable",
                            "line_number": 2, "notes": "two-stage plan"}],
        Table.RESPONSE_ASSESSMENT: [{"assessment_no": 1, "assessment_date": D(2005, 3, 1), "line_number": 2,
                                     "category": "PR", "baseline_sum_mm": 100.0, "current_sum_mm": 60.0}],
        Table.LIVER_PROCEDURE: [
            {"procedure_no": 1, "procedure_date": D(2005, 4, 1), "procedure_type": "two_stage_first",
             "resected_segments": "2;3", "approach": "open", "complications_assessed": True},
            {"procedure_no": 2, "procedure_date": D(2005, 4, 20), "procedure_type": "pve"},
            {"procedure_no": 3, "procedure_date": D(2005, 6, 1), "procedure_type": "two_stage_second",
             "resected_segments": "5;6;7;8", "margin": "R1", "complications_assessed": True},
            {"procedure_no": 4, "procedure_date": D(2006, 2, 1), "procedure_type": "hepatectomy",
             "resected_segments": "4", "margin": "R0", "complications_assessed": False}],
        Table.COMPLICATION: [
            {"procedure_no": 3, "complication_no": 1, "grade": "II", "description": "transfusion"},
            {"procedure_no": 3, "complication_no": 2, "grade": "IIIb", "complication_date": D(2005, 6, 5),
             "description": "re-laparotomy for bleeding"}],
        Table.PATHOLOGY: [{"procedure_no": 3, "steatosis_pct": 20.0, "tumour_regression_grade": 2,
                           "lesion_count": 4, "margin_mm": 0.5}],
        Table.DISEASE_EVENT: [{"event_no": 1, "event_date": D(2005, 12, 1), "event_kind": "recurrence",
                               "sites": "liver"},
                              {"event_no": 2, "event_date": D(2006, 4, 1), "event_kind": "recurrence",
                               "sites": "liver;lung"}],
        Table.CONTACT: [{"contact_no": 1, "contact_date": D(2006, 1, 1), "vital_status": "alive"},
                        {"contact_no": 2, "contact_date": D(2007, 1, 10), "vital_status": "dead"}],
    }
    return record


def _records() -> list[PatientRecord]:
    parsed = read_registry_csv(ROOT / "tests/reference/registries/random-13.csv", centre="Centre A")
    return [from_flat(r.values) for r in parsed.records] + [rich_record()]


def _normal(record: PatientRecord) -> tuple:
    from oncosurg.pathway.model import TABLE_BY_NAME
    eps = {}
    for table, rows in record.episodes.items():
        spec = TABLE_BY_NAME[table]
        if rows:
            eps[table] = sorted(({f.name: r.get(f.name) for f in spec.fields} for r in rows),
                                key=lambda r: tuple(r[k] for k in spec.key))
    patient = {k: v for k, v in record.patient.items() if v is not None}
    return record.centre, patient, eps


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_records_round_trip_and_projection(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'e.db'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database(f"episodes_{id(tmp_path)}")
    engine, tables, centre = _schema(url)
    records = _records()
    with engine.begin() as conn:
        ids = {}
        for name in sorted({r.centre for r in records}):
            ids[name] = conn.execute(sa.insert(centre).values(name=name)).inserted_primary_key[0]
        pks = insert_records(conn, tables, records, centre_ids=ids)
    with engine.connect() as conn:
        back = read_records(conn, tables, centre, pks)
        for pk, record in zip(pks, records, strict=True):
            assert _normal(back[pk]) == _normal(record)
        flat = {row["pk"]: dict(row) for row in conn.execute(flat_select(tables, centre)).mappings()}
        for pk, record in zip(pks, records, strict=True):
            row = {k: v for k, v in flat[pk].items() if k not in ("pk", "rescue_line_pk", "operation_pk")}
            assert row == to_flat(back[pk]), record.patient_id
        assert [pk for pk, _ in iter_records(conn, tables, centre, batch=7)] == [
            pk for _, pk in sorted(((r.centre, r.patient_id), pk) for r, pk in zip(records, pks, strict=True))]
    rich = flat[pks[-1]]
    assert rich["surgery_type"] == "hepatectomy" and rich["two_stage"] is True
    assert rich["clavien_dindo_max"] == "IIIb" and rich["cetuximab_partner"] == "irinotecan"
    assert rich["progression_date"] == D(2005, 12, 1) and rich["death_date"] == D(2007, 1, 10)
    engine.dispose()


def test_partial_update_changes_only_what_it_carries(tmp_path: Path) -> None:
    engine, tables, centre = _schema(f"sqlite:///{tmp_path / 'u.db'}")
    record = rich_record()
    with engine.begin() as conn:
        cid = conn.execute(sa.insert(centre).values(name=record.centre)).inserted_primary_key[0]
        (pk,) = insert_records(conn, tables, [record], centre_ids={record.centre: cid})
    incoming = PatientRecord(record.centre, {"patient_id": "B-1", "msi_status": "mss"}, {
        Table.COMPLICATION: [{"procedure_no": 3, "complication_no": 2, "grade": "IVa",
                              "description": "re-laparotomy for bleeding"},
                             {"procedure_no": 4, "complication_no": 1, "grade": "I"}],
        Table.MDT_REVIEW: [{"review_no": 1, "line_number": 3}],
    }, carried={Table.PATIENT: frozenset({"patient_id", "msi_status"}),
                Table.COMPLICATION: frozenset({"procedure_no", "complication_no", "grade", "description"}),
                Table.MDT_REVIEW: frozenset({"review_no", "line_number"})})
    with engine.begin() as conn:
        stored = read_records(conn, tables, centre, [pk])[pk]
        plan = plan_update(stored, incoming)
        assert not plan.clears
        assert sorted((c.action, c.table.value, c.column) for c in plan.changes) == [
            ("create", "complication", None), ("update", "complication", "grade"),
            ("update", "mdt_review", "line_number"), ("update", "patient", "msi_status")]
        expected = merged(stored, plan)
        apply_update(conn, tables, pk, plan)
        after = read_records(conn, tables, centre, [pk])[pk]
    assert _normal(after) == _normal(expected)
    assert [r["review_no"] for r in after.rows(Table.MDT_REVIEW)] == [1]
    assert after.rows(Table.MDT_REVIEW)[0]["line_number"] == 3
    assert after.rows(Table.MDT_REVIEW)[0]["notes"] == "two-stage plan"  # not carried: kept
    assert len(after.rows(Table.CONTACT)) == 2 and len(after.rows(Table.LIVER_PROCEDURE)) == 4
    clearing = PatientRecord(record.centre, {"patient_id": "B-1", "birth_year": None},
                             carried={Table.PATIENT: frozenset({"patient_id", "birth_year"})})
    assert plan_update(after, clearing).clears == [("patient.birth_year", 1950)]
    engine.dispose()


def test_one_patient_reads_equal_the_registry_select(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``read_record`` (the Python projection of one patient's episodes) and ``registry_select`` restricted
    to some patients give the rows of the whole registry's select, on a random multi-episode registry."""
    import sqlalchemy as sa

    from oncosurg.reference import random_registry
    from oncosurg.schema import COLUMNS
    from oncosurg.store.engine import open_store
    from oncosurg.store.repository import import_patients, read_record, registry_select

    engine = open_store(f"sqlite:///{tmp_path / 'r.db'}")
    records = random_registry(300, 7)
    result = import_patients(engine, records, source="random", sha256="0" * 64, rows=len(records))
    assert not result.issues
    with engine.connect() as conn:
        whole = {r["pk"]: {c: r[c] for c in COLUMNS} for r in conn.execute(registry_select()).mappings()}
        assert len(whole) == 300
        assert all(read_record(conn, pk) == row for pk, row in whole.items())
        some = sorted(whole)[10:60:3]
        narrowed = {r["pk"]: {c: r[c] for c in COLUMNS} for r in conn.execute(registry_select(some)).mappings()}
        assert narrowed == {pk: whole[pk] for pk in some}
        ids = sa.select(sa.literal_column("id")).select_from(sa.table("patient")).where(sa.text("id <= 5"))
        assert sorted(r["pk"] for r in conn.execute(registry_select(ids)).mappings()) == [1, 2, 3, 4, 5]


def test_the_patient_page_reads_each_table_once_and_equals_the_per_part_reads(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``read_patient`` derives the flat record, the regimen, the complications, reviews, responses
    and every episode's id and version, and its creation time, from one statement (12 with a query
    per table, 42 before that), and they equal what the per-part queries read, on a random
    multi-episode registry: its creation time the latest ``create`` row of its trail, else its
    import batch's time."""
    import sqlalchemy as sa

    from oncosurg.reference import random_registry
    from oncosurg.store import tables as t
    from oncosurg.store.engine import open_store
    from oncosurg.store.episodes import episode_ids
    from oncosurg.store.repository import import_patients, read_record
    from oncosurg.web.services import pathway
    from oncosurg.web.services.patients import created_at, read_patient, read_regimen
    from oncosurg.web.services.users import User

    engine = open_store(f"sqlite:///{tmp_path / 'p.db'}")
    records = random_registry(200, 11)
    assert not import_patients(engine, records, source="random", sha256="0" * 64, rows=len(records)).issues
    user = User(id=1, username="t", role="admin", all_centres=True, centres=frozenset())
    with engine.begin() as conn:  # some patients created through the web: their trail's create rows count
        for pk, at in [(3, "2098-05-01T10:00:00.123456Z"), (3, "2098-05-02T09:00:00Z"), (7, "2099-01-01T00:00:00Z")]:
            conn.execute(sa.insert(t.audit_log).values(at=at, username="t", action="create", entity="patient",
                                                       patient_pk=pk, prev_hash="0" * 64, hash=f"{pk}{at}"))
        conn.execute(sa.insert(t.audit_log).values(at="2099-06-01T00:00:00Z", username="t", action="create",
                                                   entity="complication", patient_pk=7, prev_hash="0", hash="c"))
        conn.execute(sa.delete(t.audit_log).where(t.audit_log.c.patient_pk == 5))  # no trail: its batch's time
        imported = conn.execute(sa.select(t.import_batch.c.imported_at)).scalar()
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.connect() as conn:
        pks = [r[0] for r in conn.execute(sa.select(t.patient.c.id))]
        seen = {"complications": 0, "reviews": 0, "responses": 0}
        created = set()
        for pk in pks:
            statements.clear()
            page = read_patient(conn, user=user, pk=pk, today=D(2024, 6, 3))
            assert len(statements) == 1, statements
            batch = conn.execute(sa.select(t.patient.c.import_batch_id).where(t.patient.c.id == pk)).scalar()
            expected = created_at(conn, pk=pk, import_batch_id=batch)
            assert expected is not None and page["created_at"] == expected.isoformat() + "Z"
            created.add(page["created_at"])
            assert page["record"] == read_record(conn, pk)
            assert page["regimen"] == read_regimen(conn, pk)
            assert page["complications"] == pathway.complications(conn, pk=pk)
            assert page["reviews"] == pathway.reviews(conn, pk=pk)
            assert page["responses"] == pathway.responses(conn, pk=pk)
            seen = {k: n + len(page[k]) for k, n in seen.items()}
            ids = episode_ids(conn, t.EPISODES, pk)
            for table, listed in page["episodes"].items():
                for item in listed:
                    assert ids[Table(table)][tuple(item["key"])] == (item["id"], item["version"])
                assert len(listed) == len(ids[Table(table)])
    assert min(seen.values()) > 20, seen
    assert {"2098-05-02T09:00:00Z", "2099-01-01T00:00:00Z", imported.replace(tzinfo=None).isoformat() + "Z"
            } <= created, (created, imported)
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_one_patient_in_one_statement_equals_the_per_table_read(backend: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    """``read_stored`` reads a patient and every episode table in one statement (rows as JSON arrays):
    the record, the patient's row and the stored rows equal the per-table read, value for value and
    type for type, doubles to the last bit (SQLite's JSON alone keeps 15 digits)."""
    from oncosurg.store.episodes import _read, read_stored

    url = (f"sqlite:///{tmp_path / 'one.db'}" if backend == "sqlite"
           else request.getfixturevalue("postgres_server").create_database(f"one_{id(tmp_path)}"))
    engine, tables, centre = _schema(url)
    awkward = rich_record()
    awkward.patient["patient_id"] = "B-2"
    awkward.episodes[Table.PATHOLOGY][0].update(steatosis_pct=0.1 + 0.2, margin_mm=1 / 3)
    awkward.episodes[Table.THERAPY_LINE][1].update(bsa_m2=1.7320508075688772, dose_mg_m2=1e-7)
    records = [*_records(), awkward]
    with engine.begin() as conn:
        ids = {name: conn.execute(sa.insert(centre).values(name=name)).inserted_primary_key[0]
               for name in sorted({r.centre for r in records})}
        pks = insert_records(conn, tables, records, centre_ids=ids)
    statements: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with engine.connect() as conn:
        for pk in pks:
            statements.clear()
            stored = read_stored(conn, tables, centre, pk)
            assert stored is not None and len(statements) == 1, statements
            rows: dict[Table, list[dict]] = {}
            heads: dict[int, dict] = {}
            expected = _read(conn, tables, centre, [pk], rows, heads)[pk]
            assert stored.head == heads[pk]
            assert [type(v) for v in stored.head.values()] == [type(v) for v in heads[pk].values()]
            assert stored.record.centre == expected.centre and stored.record.patient == expected.patient
            assert stored.record.episodes == expected.episodes
            assert {t: r for t, r in stored.rows.items() if r} == {t: r for t, r in rows.items() if r}
            for table, listed in rows.items():
                for mine, theirs in zip(stored.rows[table], listed, strict=True):
                    assert [type(v) for v in mine.values()] == [type(v) for v in theirs.values()], table
        assert read_stored(conn, tables, centre, max(pks) + 1) is None
        last = read_stored(conn, tables, centre, pks[-1])
    assert last is not None
    pathology = last.rows[Table.PATHOLOGY][0]
    assert pathology["steatosis_pct"] == 0.1 + 0.2 and pathology["margin_mm"] == 1 / 3
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_sessions_run_without_jit_unless_the_url_asks(postgres_server) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL's JIT compiled the protocol's view (dozens of CTEs) for longer than it ran it (the
    dashboard's recompute of 10,000 patients: 6.2-8.1 s with, 1.5 s without): the store's sessions
    turn it off, pooled or not, unless the URL's ``options`` set it."""
    from urllib.parse import quote

    from oncosurg.store.engine import open_store

    url = postgres_server.create_database("no_jit")
    engine = open_store(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
        conn.rollback()
    with engine.connect() as conn:  # the pooled connection kept it
        assert conn.exec_driver_sql("SHOW jit").scalar() == "off"
    engine.dispose()
    own = open_store(f"{url}?options={quote('-c jit=on')}")
    with own.connect() as conn:
        assert conn.exec_driver_sql("SHOW jit").scalar() == "on"
    own.dispose()


def test_an_edits_state_row_reads_its_patient_in_one_statement_and_equals_the_registry_wide_read(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An edit's ``state`` row (written while the write holds the audit chain) reads its patient in one
    statement (12 with a query per table), and equals the state read with the whole registry."""
    import sqlalchemy as sa

    from oncosurg.reference import random_registry
    from oncosurg.store import audit_state
    from oncosurg.store.engine import open_store
    from oncosurg.store.repository import import_patients

    engine = open_store(f"sqlite:///{tmp_path / 's.db'}")
    records = random_registry(80, 5)
    assert not import_patients(engine, records, source="random", sha256="0" * 64, rows=len(records)).issues
    statements: list[str] = []
    with engine.connect() as conn:
        whole = audit_state.table_states(conn)
        sa.event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
        for pk in whole:
            statements.clear()
            assert audit_state.table_states(conn, [pk, pk]) == {pk: whole[pk]}
            assert len(statements) == 1, statements
        some = sorted(whole)[: audit_state.FEW]
        assert audit_state.table_states(conn, [*some, 10_000]) == {pk: whole[pk] for pk in some}
        more = sorted(whole)[: audit_state.FEW + 1]
        assert audit_state.table_states(conn, more) == {pk: whole[pk] for pk in more}
    engine.dispose()
