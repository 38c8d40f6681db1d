"""Importing records with episodes (the long format's path): all or nothing, the import rules of issue 9
(registered, allow-new, centres, case, clears), partial updates that change only what they carry, audit."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from oncosurg.pathway.flat import PatientRecord, to_flat
from oncosurg.pathway.model import Table
from oncosurg.reference import reference_records
from oncosurg.reference.random_registry import random_registry
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.episodes import iter_records as iter_patients
from oncosurg.store.repository import ImportOptions, import_patients, iter_records

D = dt.date


def _import(engine: sa.Engine, records: list[PatientRecord], **options: object):  # type: ignore[no-untyped-def]
    return import_patients(engine, records, source="test", sha256="0" * 64, rows=len(records),
                           options=ImportOptions(**options))  # type: ignore[arg-type]


def _stored(engine: sa.Engine) -> dict[tuple[str, str], PatientRecord]:
    with engine.connect() as conn:
        return {(r.centre, r.patient_id): r for _, r in iter_patients(conn, t.EPISODES, t.centre)}


def _same(a: PatientRecord, b: PatientRecord) -> bool:
    def norm(record: PatientRecord) -> tuple:
        episodes = {k: sorted((tuple(sorted((c, x) for c, x in r.items() if x is not None)) for r in v), key=repr)
                    for k, v in record.episodes.items() if v}
        return record.centre, {k: v for k, v in record.patient.items() if v is not None}, episodes
    return norm(a) == norm(b)


def test_reference_records_import_whole_and_project_onto_the_flat_cohort(store: sa.Engine) -> None:
    records = reference_records()
    result = _import(store, records)
    assert not result.issues and result.created == 151
    stored = _stored(store)
    assert all(_same(stored[(r.centre, r.patient_id)], r) for r in records)
    with store.connect() as conn:
        flat = {(r["centre"], r["patient_id"]): r for r in iter_records(conn)}
        assert audit.verify(conn).ok
    assert all(flat[(r.centre, r.patient_id)] == to_flat(r) for r in records)


def test_the_rules_of_issue_9_hold_for_records(store: sa.Engine) -> None:
    records = random_registry(30, seed=3, centres=2)
    assert _import(store, records).created == 30
    again = _import(store, records)
    assert again.batch_id is None and again.issues[0].code == "X411" and "every patient" in again.issues[0].message
    new = random_registry(31, seed=3, centres=2)[30:]
    refused = _import(store, new, update=True)
    assert [i.code for i in refused.issues] == ["X415"]
    assert _import(store, new, update=True, allow_new=True).created == 1
    twin = PatientRecord(records[0].centre, {**records[0].patient, "patient_id": records[0].patient_id.lower()},
                         records[0].episodes)
    assert [i.code for i in _import(store, [twin]).issues] == ["X413"]
    nameless = PatientRecord("", dict(new[0].patient, patient_id="NEW-9"), new[0].episodes)
    assert [i.code for i in _import(store, [nameless]).issues] == ["X416"]
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one() == 31


def test_a_partial_update_changes_only_what_it_carries(store: sa.Engine) -> None:
    (record,) = [r for r in reference_records() if len(r.rows(Table.LIVER_PROCEDURE)) >= 2][:1]
    _import(store, [record])
    before = _stored(store)[(record.centre, record.patient_id)]
    contact_no = max(c["contact_no"] for c in before.rows(Table.CONTACT)) + 1
    last = max(c["contact_date"] for c in before.rows(Table.CONTACT))
    update = PatientRecord(record.centre, {"patient_id": record.patient_id, "msi_status": "mss"}, {
        Table.CONTACT: [{"contact_no": contact_no, "contact_date": last, "vital_status": "alive"}]},
        carried={Table.PATIENT: frozenset({"patient_id", "msi_status"}),
                 Table.CONTACT: frozenset({"contact_no", "contact_date", "vital_status"})})
    # the same date as the last contact: a probable duplicate (E603), refused and nothing written
    assert [i.code for i in _import(store, [update], update=True).issues] == ["E603"]
    update.rows(Table.CONTACT)[0]["contact_date"] = last + dt.timedelta(days=30)
    result = _import(store, [update], update=True)
    assert not result.issues and result.updated == 1
    after = _stored(store)[(record.centre, record.patient_id)]
    assert after.patient["msi_status"] == "mss" and after.patient["sex"] == before.patient["sex"]
    assert len(after.rows(Table.CONTACT)) == len(before.rows(Table.CONTACT)) + 1
    for table in (Table.THERAPY_LINE, Table.LIVER_PROCEDURE, Table.COMPLICATION, Table.PATHOLOGY):
        assert after.rows(table) == before.rows(table)  # not carried: unchanged
    with store.connect() as conn:
        rows = conn.execute(sa.select(t.audit_log.c.action, t.audit_log.c.entity, t.audit_log.c.field)
                            .where(t.audit_log.c.patient_id == record.patient_id).order_by(t.audit_log.c.id)).all()
        assert audit.verify(conn).ok
    assert [tuple(r) for r in rows][1:] == [("update", "patient", "msi_status"), ("create", "contact", None),
                                            ("state", "patient", "state")]  # the record after the change


def test_clearing_needs_allow_clear_and_breaking_a_rule_writes_nothing(store: sa.Engine) -> None:
    record = reference_records()[0]
    _import(store, [record])
    clear = PatientRecord(record.centre, {"patient_id": record.patient_id, "sex": None},
                          carried={Table.PATIENT: frozenset({"patient_id", "sex"})})
    refused = _import(store, [clear], update=True)
    assert [(i.code, i.column) for i in refused.issues] == [("X417", "patient.sex")]
    assert _import(store, [clear], update=True, allow_clear=True).updated == 1
    death = min(c["contact_date"] for c in record.rows(Table.CONTACT)) - dt.timedelta(days=1)
    dead = PatientRecord(record.centre, {"patient_id": record.patient_id},
                         {Table.CONTACT: [{"contact_no": 99, "contact_date": death, "vital_status": "dead"}]},
                         carried={Table.PATIENT: frozenset({"patient_id"}),
                                  Table.CONTACT: frozenset({"contact_no", "contact_date", "vital_status"})})
    assert {i.code for i in _import(store, [dead], update=True).issues} == {"E609"}
    assert _stored(store)[(record.centre, record.patient_id)].rows(Table.CONTACT) == record.rows(Table.CONTACT)


@pytest.mark.slow
def test_a_failure_in_a_late_batch_rolls_back_the_earlier_batches(store: sa.Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from oncosurg.store import repository

    monkeypatch.setattr(repository, "BATCH", 10)
    records = random_registry(35, seed=5)
    bad = PatientRecord(records[-1].centre, dict(records[-1].patient), dict(records[-1].episodes))
    bad.patient["patient_id"] = records[0].patient_id  # a duplicate in the last batch
    bad = PatientRecord(records[0].centre, bad.patient, bad.episodes)
    result = _import(store, [*records, bad])
    assert result.batch_id is None and [i.code for i in result.issues] == ["X411"]
    with store.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one() == 0
        assert conn.execute(sa.select(sa.func.count()).select_from(t.import_batch)).scalar_one() == 0


def test_cli_imports_and_exports_the_long_registry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from oncosurg.cli import cli
    from oncosurg.export.long import write_long

    records = sorted(reference_records(), key=lambda r: (r.centre, r.patient_id))
    write_long(records, tmp_path / "in")
    db = f"sqlite:///{tmp_path / 'r.db'}"
    runner = CliRunner()
    done = runner.invoke(cli, ["import", "--format", "long", str(tmp_path / "in"), "--db", db])
    assert done.exit_code == 0 and "imported 151 new patient(s)" in done.output, done.output
    back = runner.invoke(cli, ["export", "--format", "long", "--db", db, "--out", str(tmp_path / "out.zip")])
    assert back.exit_code == 0, back.output
    write_long(records, tmp_path / "in.zip")
    assert (tmp_path / "out.zip").read_bytes() == (tmp_path / "in.zip").read_bytes()  # long → registry → long
    flat = runner.invoke(cli, ["export", "--db", db, "--out", str(tmp_path / "flat.csv")])
    assert flat.exit_code == 0 and "151 patient(s) hold episodes" in flat.output
    again = runner.invoke(cli, ["import", "--format", "long", str(tmp_path / "in"), "--db", db])
    assert again.exit_code == 2 and "in/patients.csv:2" in again.output and "X411" in again.output
    missing = runner.invoke(cli, ["import", "--format", "long", "--update", str(tmp_path / "in"),
                                  "--db", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert missing.exit_code != 0 and not (tmp_path / "missing.db").exists()  # an update needs a registry


def test_an_update_import_plans_the_states_the_tables_then_hold(store: sa.Engine) -> None:
    """An update import plans each patient's ``state`` row (the record after the write) outside the
    write lock instead of reading the tables back under it: on a random multi-episode registry updated
    with another random registry's flat rows (every column, clears allowed), the states written must
    equal the tables, patient by patient, and ``audit verify`` must pass."""
    import csv
    import io
    import random

    from oncosurg.export import cell_text
    from oncosurg.ingest.csv import parse_registry_csv
    from oncosurg.reference.random_registry import iter_random_pairs
    from oncosurg.schema import COLUMNS
    from oncosurg.store.audit_state import table_states
    from oncosurg.store.repository import import_records, plan_import

    assert not _import(store, random_registry(240, seed=5)).issues
    with store.connect() as conn:
        stored = {(r["centre"], r["patient_id"]): r for r in iter_records(conn)}
    other = {(f["centre"], f["patient_id"]): f for f, _ in iter_random_pairs(240, seed=6) if f is not None}
    rng = random.Random(7)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for key, row in stored.items():  # three columns of each patient from the other registry's patient
        changed = dict(row)
        for column in rng.sample([c for c in COLUMNS if c not in ("centre", "patient_id")], 3):
            changed[column] = other.get(key, row)[column]
        writer.writerow({c: cell_text(changed[c]) for c in COLUMNS})
    parsed = parse_registry_csv(buffer.getvalue().encode(), source="update.csv")
    options = ImportOptions(update=True, allow_clear=True)
    with store.connect() as conn:  # rows breaking a rule are left out (the import would write nothing)
        refused = {i.line for i in [*parsed.issues, *plan_import(conn, parsed.records, options).issues]}
    records = [r for r in parsed.records if r.line not in refused]
    result = import_records(store, records, source="update.csv", sha256=parsed.sha256, rows=len(records),
                            options=options)
    assert not result.issues and result.updated > 30, (len(refused), result.updated)
    with store.connect() as conn:
        states = table_states(conn)
        a = t.audit_log
        written = dict(conn.execute(sa.select(a.c.patient_pk, a.c.new_value).where(a.c.action == "state")
                                    .order_by(a.c.id)).all())  # the last state row of each patient
        assert len(written) == result.updated
        assert all(written[pk] == audit_state_dumps(states[pk]["state"]) for pk in written)
        verification = audit.verify(conn)
        assert verification.ok and not verification.mismatches and verification.patients_checked == 240


def audit_state_dumps(state: object) -> str:
    from oncosurg.store.audit_state import dumps

    return dumps(state)


@pytest.mark.postgres
def test_new_patients_go_in_before_the_chain_is_locked_on_postgresql(postgres_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """PostgreSQL: web edits lock the audit chain's head first.  An import of new patients only now
    inserts them before it locks the head (with its first audit row), so edits need not wait while it
    inserts (10,000 new patients: edits waited 3.6 s, ``benchmarks/bench_locks.py``).  An import that
    changes registered patients still locks it first (a deadlock with an edit of the same patient)."""
    from oncosurg.store import repository
    from oncosurg.store.engine import open_store

    engine = open_store(postgres_server.create_database("late_head_lock"))
    probe = sa.create_engine(engine.url)
    free: list[bool] = []

    def head_is_free() -> None:
        with probe.connect() as conn:
            try:
                conn.exec_driver_sql("SELECT id FROM audit_head WHERE id = 1 FOR UPDATE NOWAIT")
                free.append(True)
            except sa.exc.OperationalError:
                free.append(False)
            conn.rollback()

    real_insert, real_write = repository.insert_records, repository.write_plans

    def insert(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = real_insert(*args, **kwargs)
        head_is_free()  # the new patients are in, not yet audited
        return out

    def write(conn, writes, **kwargs):  # type: ignore[no-untyped-def]
        if writes:
            head_is_free()
        return real_write(conn, writes, **kwargs)

    monkeypatch.setattr(repository, "insert_records", insert)
    monkeypatch.setattr(repository, "write_plans", write)
    try:
        assert _import(engine, random_registry(30, seed=9)).created == 30  # import_patients: its own path
        from oncosurg.ingest.csv import parse_registry_csv
        from oncosurg.store.repository import import_records

        with engine.connect() as conn:
            rows = list(iter_records(conn))
        import csv
        import io

        from oncosurg.export import cell_text

        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: cell_text(v) for c, v in r.items()} for r in rows)
        text = buffer.getvalue()
        parsed = parse_registry_csv(text.replace("RND-", "NEW-").encode(), source="new.csv")
        assert not parsed.issues, parsed.issues[:3]
        free.clear()
        created = import_records(engine, parsed.records, source="new.csv", sha256=parsed.sha256, rows=parsed.rows)
        assert created.created == len(rows) and free == [True]
        changed = parse_registry_csv(text.replace(",in_house,", ",referred,").encode(), source="update.csv")
        free.clear()
        updated = import_records(engine, changed.records, source="update.csv", sha256=changed.sha256,
                                 rows=changed.rows, options=ImportOptions(update=True))
        assert updated.updated and free == [False]
        with engine.connect() as conn:
            assert audit.verify(conn).ok
    finally:
        probe.dispose()
        engine.dispose()
