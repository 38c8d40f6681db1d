"""Ids are never reused (every backend, every table), and a patient's history and conflict answers show
only what was recorded for that patient in a centre the reader may see (issue 10, item 1)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import alembic_config, open_store
from oncosurg.web.services.users import load_user
from release_databases import RELEASE_DATABASES, copy_sqlite, restore_postgres
from web_helpers import CENTRE_A, CENTRE_B, Api, add_user, fixed_today, make_app, verify_chain

#: Tables whose primary key is a generated integer id.
ID_TABLES = sorted(name for name, table in t.metadata.tables.items()
                   if [c.name for c in table.primary_key.columns] == ["id"]
                   and table.c.id.autoincrement in (True, "auto"))


def test_every_generated_id_is_autoincrement_in_the_metadata_and_the_migrated_schema(tmp_path: Path) -> None:
    assert {"patient", "complication", "mdt_review", "response_assessment", "audit_log"} <= set(ID_TABLES)
    for name in ID_TABLES:
        assert t.metadata.tables[name].dialect_options["sqlite"]["autoincrement"], name
    engine = open_store(f"sqlite:///{tmp_path / 'fresh.db'}")
    with engine.connect() as conn:
        ddl = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'").all())
    engine.dispose()
    missing = [name for name in ID_TABLES if "AUTOINCREMENT" not in ddl[name]]
    assert not missing, f"tables whose ids SQLite would reuse: {missing}"


@pytest.fixture
def two_centres(store_url: str):  # type: ignore[no-untyped-def]
    app = make_app(store_url, today=fixed_today(dt.date(2024, 6, 1)))
    add_user(app, "dm_a", "data_manager", CENTRE_A)
    add_user(app, "dm_b", "data_manager", CENTRE_B)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def test_a_deleted_patients_ids_are_never_given_again(two_centres) -> None:  # type: ignore[no-untyped-def]
    a, b = Api(two_centres, "dm_a"), Api(two_centres, "dm_b")
    a.register(patient_id="PB-0001")
    gone = a.register(patient_id="PB-0002", last_contact_date="2024-05-01")  # the highest id: SQLite's next one
    assert a.post(f"/patients/{gone}/reviews", {"review_date": "2024-02-01", "decision": "potentially_resectable",
                                                "notes": "liver-first discussed; wife anxious"}).status_code == 200
    assert a.save(gone, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy",
                  clavien_dindo_max="none").status_code == 200
    assert a.post(f"/patients/{gone}/complications", {"grade": "IIIb", "description": "re-laparotomy for bleeding"}
                  ).status_code == 200
    assert a.post(f"/patients/{gone}/responses", {"assessment_date": "2024-02-20", "category": "PR"}).status_code == 200
    before = a.patient(gone)
    ids = {"mdt_review": before["reviews"][0]["id"], "complication": before["complications"][0]["id"],
           "response_assessment": before["responses"][0]["id"]}
    assert a.post(f"/patients/{gone}/delete", {"version": str(before["version"]),
                                               "reason": "consent withdrawn"}).status_code == 200

    new = b.register(centre=CENTRE_B, patient_id="BJ-0001", last_contact_date="2024-05-01")
    assert new > gone
    b.post(f"/patients/{new}/reviews", {"review_date": "2024-02-01", "decision": "resectable"})
    b.save(new, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy", clavien_dindo_max="none")
    b.post(f"/patients/{new}/complications", {"grade": "I"})
    b.post(f"/patients/{new}/responses", {"assessment_date": "2024-02-20", "category": "SD"})
    after = b.patient(new)
    assert after["reviews"][0]["id"] > ids["mdt_review"]
    assert after["complications"][0]["id"] > ids["complication"]
    assert after["responses"][0]["id"] > ids["response_assessment"]
    # a guessed id of the deleted patient answers nothing
    for path in (f"/patients/{gone}.json", f"/patients/{gone}/audit.json", f"/patients/{gone}/audit.csv"):
        assert b.get(path).status_code == 404, path
    # the deletion kept every removed row in the trail (reviews, complications, assessments too)
    trail = Api(two_centres, "dm_a")
    add_user(two_centres, "aud", "auditor", CENTRE_A)
    rows = Api(two_centres, "aud").get("/audit.json").json()["entries"]
    removed = {(r["entity"], r["entity_id"]) for r in rows if r["action"] == "delete"}
    assert {(entity, item) for entity, item in ids.items()} <= removed
    assert any(r["field"] == "description" and r["old_value"] == "re-laparotomy for bleeding" for r in rows
               if r["action"] == "delete")
    assert trail.get(f"/patients/{gone}.json").status_code == 404


def _legacy_reuse(url: str) -> tuple[int, int]:
    """A registry as release 0.1.0 left it on SQLite: centre A's patient deleted, and its pk given to the
    next patient, registered by centre B.  Returns (reused pk, number of rows of the deleted patient)."""
    app = make_app(url, today=fixed_today(dt.date(2024, 6, 1)))
    add_user(app, "dm_a", "data_manager", CENTRE_A)
    b_id = add_user(app, "dm_b", "data_manager", CENTRE_B)
    a = Api(app, "dm_a")
    gone = a.register(patient_id="PB-0002")
    a.post(f"/patients/{gone}/reviews", {"review_date": "2024-02-01", "decision": "potentially_resectable",
                                         "notes": "liver-first discussed; wife anxious"})
    for cycles in ("3", "4", "5"):
        a.save(gone, "cetuximab", cetuximab_cycles=cycles)
    version = a.patient(gone)["version"]
    a.post(f"/patients/{gone}/delete", {"version": str(version), "reason": "consent withdrawn"})
    with app.state.store.read() as conn:
        user_b = load_user(conn, user_id=b_id)
        deleted_rows = conn.execute(sa.select(sa.func.count()).select_from(t.audit_log)
                                    .where(t.audit_log.c.patient_pk == gone)).scalar_one()
    app.state.store.dispose()
    engine = open_store(url)
    cfg = alembic_config(url)
    with engine.connect() as conn:  # back to release 0.1.0's schema: plain INTEGER PRIMARY KEY
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0002")
    engine.dispose()
    old = sa.create_engine(url)
    with old.begin() as conn:  # as 0.1.0 registered a patient: its tables, its id allocation, its audit rows
        assert user_b is not None
        centre = conn.execute(sa.select(t.centre.c.id).where(t.centre.c.name == CENTRE_B)).scalar_one()
        new = conn.execute(sa.insert(t.patient).values(centre_id=centre, patient_id="BJ-0001", referral="in_house",
                                                       version=1)).inserted_primary_key[0]
        values = {"prior_chemo_lines": 2, "cetuximab_start": dt.date(2024, 1, 8), "cetuximab_partner": "irinotecan",
                  "last_contact_date": dt.date(2024, 2, 5)}
        conn.execute(sa.insert(t.prior_chemotherapy).values(patient_pk=new, prior_chemo_lines=2))
        conn.execute(sa.insert(t.cetuximab_course).values(patient_pk=new, cetuximab_start=dt.date(2024, 1, 8),
                                                          cetuximab_partner="irinotecan"))
        conn.execute(sa.insert(t.follow_up).values(patient_pk=new, last_contact_date=dt.date(2024, 2, 5)))
        audit.append(conn, actor=audit.Actor(user_b.id, user_b.username), entries=[
            {"action": "create", "entity": "patient", "entity_id": new, "patient_pk": new, "centre": CENTRE_B,
             "patient_id": "BJ-0001", "field": name, "new_value": value, "version": 1}
            for name, value in (("patient_id", "BJ-0001"), ("referral", "in_house"), *values.items())])
    old.dispose()
    return new, deleted_rows


def test_history_and_conflicts_never_show_another_patients_rows_under_a_reused_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    reused, deleted_rows = _legacy_reuse(url)
    with sqlite3.connect(tmp_path / "legacy.db") as raw:
        under_pk = raw.execute("SELECT count(*), count(DISTINCT centre) FROM audit_log WHERE patient_pk = ?",
                               (reused,)).fetchone()
    assert under_pk[0] > deleted_rows and under_pk[1] == 2  # the old id allocation did hand the pk over
    app = make_app(url, today=fixed_today(dt.date(2024, 6, 1)))  # migrates to head
    try:
        b = Api(app, "dm_b")
        history = b.get(f"/patients/{reused}/audit.json").json()
        assert {e["centre"] for e in history["entries"]} == {CENTRE_B}
        assert {e["patient_id"] for e in history["entries"]} == {"BJ-0001"}
        csv_text = b.get(f"/patients/{reused}/audit.csv").text
        assert "PB-0002" not in csv_text and "wife anxious" not in csv_text
        page = b.client.get(f"/patients/{reused}", headers={"accept": "text/html"}).text
        assert "PB-0002" not in page and "wife anxious" not in page
        assert b.save(reused, "cetuximab", version=1, cetuximab_cycles="6").status_code == 200
        stale = b.save(reused, "follow_up", version=1, last_contact_date="2024-03-01")
        assert stale.status_code == 409
        body = stale.json()
        assert [(e["username"], e["field"]) for e in body["errors"]] == [("dm_b", "cetuximab_cycles")]
        assert "dm_a" not in body["error"]
        assert not b.patient(reused)["locked"]  # its age is its own, not the deleted patient's
        new = Api(app, "dm_a").register(patient_id="PB-0003")
        assert new > reused
        assert verify_chain(app).ok
    finally:
        app.state.store.dispose()


@pytest.mark.parametrize("db", [pytest.param(db, id=str(db), marks=[pytest.mark.postgres] * (db.backend != "sqlite"))
                                for db in RELEASE_DATABASES if db.registry == "reference"])
def test_a_release_registry_never_reuses_the_ids_of_its_deleted_rows(db, request, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = copy_sqlite(db, tmp_path) if db.backend == "sqlite" else restore_postgres(
        db, request.getfixturevalue("postgres_server"))
    engine = open_store(url)
    try:
        with engine.connect() as conn:
            a = t.audit_log
            highest = {entity: conn.execute(sa.select(sa.func.max(a.c.entity_id)).where(a.c.entity == entity)
                                            ).scalar() for entity in ("patient", "mdt_review")}
            assert highest["patient"] > conn.execute(sa.select(sa.func.max(t.patient.c.id))).scalar()  # deleted last
            kinds = dict(conn.execute(sa.select(t.complication.c.description, t.complication.c.from_worst_grade)).all())
        assert kinds["worst complication (registry CSV)"] is True
        assert kinds["wound infection, opened at the bedside"] is False
        with engine.begin() as conn:
            centre = conn.execute(sa.select(t.centre.c.id)).scalars().first()
            pk = conn.execute(sa.insert(t.patient).values(centre_id=centre, patient_id="NEW-1", referral="in_house")
                              ).inserted_primary_key[0]
            review = conn.execute(sa.insert(t.mdt_review).values(patient_pk=pk, review_date=dt.date(2024, 1, 1),
                                                                 decision="resectable")).inserted_primary_key[0]
        assert pk > highest["patient"] and review > highest["mdt_review"]
    finally:
        engine.dispose()
