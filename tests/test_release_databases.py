"""Registries written by earlier releases open with today's code with every value kept (non-negotiable 4).

Each committed database of ``tests/fixtures/releases/`` (built by that release's ``build.py``) is
copied (SQLite) or restored into a fresh database (PostgreSQL), opened with :func:`open_store`
(migrations run to head), and read back through the old-release view; it must equal what the old
code read back (``expected/``), and the audit chain must still verify.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from release_databases import (
    RELEASE_DATABASES,
    RELEASES,
    ReleaseDatabase,
    compare_views,
    copy_sqlite,
    expected_view,
    head_revision,
    old_release_view,
    release_audit_anchor,
    report,
    restore_postgres,
    stored_revision,
)


def _param(db: ReleaseDatabase):  # type: ignore[no-untyped-def]
    marks = [pytest.mark.postgres] if db.backend == "postgresql" else []
    return pytest.param(db, id=str(db), marks=marks)


def _open(db: ReleaseDatabase, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if db.backend == "sqlite":
        return copy_sqlite(db, tmp_path)
    return restore_postgres(db, request.getfixturevalue("postgres_server"))


@pytest.mark.parametrize("db", [_param(db) for db in RELEASE_DATABASES])
def test_release_database_opens_with_every_value_kept(db: ReleaseDatabase, request: pytest.FixtureRequest,
                                                      tmp_path: Path) -> None:
    url = _open(db, request, tmp_path)
    assert stored_revision(url) == db.revision, "the fixture is not the release's database"
    engine = open_store(url)
    try:
        assert stored_revision(url) == head_revision(), "migrations did not run to head"
        with engine.connect() as conn:
            chain = audit.verify(conn)
            patients = conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
        assert chain.ok, f"{db}: audit chain broken after migrating: {chain.problem}"
        expected = expected_view(db)
        anchor = expected.tables["audit"]
        with engine.connect() as conn:  # the release's rows are untouched; migrations only append
            assert release_audit_anchor(conn) == anchor, "the release's audit rows changed"
            appended = conn.execute(sa.select(t.audit_log.c.action, sa.func.count()).where(
                t.audit_log.c.id > anchor["rows"]).group_by(t.audit_log.c.action)).all()
        # what migrations appended: per patient one migrate row (0005) and one state baseline
        assert dict(appended) == {"migrate": patients, "baseline": patients}
        assert chain.rows == anchor["rows"] + sum(n for _, n in appended)
        assert chain.patients_checked == patients and not chain.mismatches
        problems = compare_views(expected, old_release_view(engine))
        assert not problems, report(db, problems)
    finally:
        engine.dispose()


def test_a_lost_value_is_reported(tmp_path: Path) -> None:
    """The comparison can fail: edits behind the code's back are named by patient and column."""
    db = RELEASE_DATABASES[0]
    url = copy_sqlite(db, tmp_path)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        raw.execute("UPDATE complication SET description = NULL WHERE id = (SELECT max(id) FROM complication)")
        raw.execute("UPDATE follow_up SET last_contact_date = '2030-01-01' WHERE patient_pk = 1")
        raw.execute("DELETE FROM mdt_review WHERE id = (SELECT min(id) FROM mdt_review)")
    engine = open_store(url)
    try:
        problems = compare_views(expected_view(db), old_release_view(engine))
    finally:
        engine.dispose()
    text = "\n".join(problems)
    assert "REF-001 last_contact_date: expected" in text
    assert "tables.complication[" in text and ".description: expected" in text
    assert "tables.mdt_review: 6 rows expected, 5 found" in text
    assert "tables.counts.mdt_review: expected 6, got 5" in text


def test_a_broken_audit_chain_is_reported(tmp_path: Path) -> None:
    db = RELEASE_DATABASES[0]
    url = copy_sqlite(db, tmp_path)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        raw.execute("UPDATE audit_log SET new_value = 'tampered' WHERE id = 200")
    engine = open_store(url)
    try:
        with engine.connect() as conn:
            chain = audit.verify(conn)
    finally:
        engine.dispose()
    assert (chain.ok, chain.bad_id) == (False, 200)


@pytest.mark.parametrize("registry", ["reference", "random"])
def test_the_fixtures_hold_what_the_readme_says(registry: str) -> None:
    """The committed data are not trivial, and both backends hold the same registry."""
    sqlite_db, pg_db = (db for db in RELEASE_DATABASES if db.registry == registry)
    for db in (sqlite_db, pg_db):
        assert db.source.stat().st_size < 2_000_000
        tables = expected_view(db).tables
        counts = tables["counts"]
        assert counts["patient"] >= 150 and counts["change_log"] > 0 and counts["centre"] == 2
        assert tables["audit"]["rows"] == counts["audit_log"] > counts["patient"]
        trail = list(csv.DictReader(io.StringIO(expected_view(db).audit_csv)))
        actions = {r["action"] for r in trail}
        assert {"create", "update"} <= actions
        if registry == "reference":
            assert actions == {"create", "update", "delete"}
            assert {r["reason"] for r in trail if r["action"] == "delete" and r["entity"] == "patient"} == {
                "registered twice (duplicate of another record)", "consent withdrawn"}
            for name in ("mdt_review", "response_assessment", "cetuximab_regimen", "web_session", "pending_upload"):
                assert counts[name] > 0, name
            assert {u["role"] for u in tables["app_user"]} == {"admin", "data_manager", "investigator", "auditor"}
            itemised = [c for c in tables["complication"] if c["patient_id"] == "WEB-001"]
            assert len(itemised) >= 4 and all(c["description"] for c in itemised)
            regimen = {(r["schedule"], r["dose_mg_m2"]) for r in tables["cetuximab_regimen"]}
            assert {("weekly", 250.0), ("biweekly", 500.0)} <= regimen
            assert any(r["stop_date"] for r in tables["cetuximab_regimen"])
    assert expected_view(sqlite_db).registry_csv == expected_view(pg_db).registry_csv
    assert (RELEASES / "0.1.0" / "README.md").is_file()
