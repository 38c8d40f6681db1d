"""Ids are never reused (every backend, every table), and a patient's history and conflict answers show
only what was recorded for that patient in a centre the reader may see (issue 10, item 1)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from oncosurg.pathway.update import stands_for_worst_grade
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import alembic_config, open_store
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
    assert any(r["entity"] == "complication" and "re-laparotomy for bleeding" in (r["old_value"] or "") for r in rows
               if r["action"] == "delete")
    assert trail.get(f"/patients/{gone}.json").status_code == 404


def _legacy_reuse(url: str) -> tuple[int, int]:
    """A registry as release 0.1.0 left it on SQLite (its schema, revision 0002; its id allocation; its
    audit rows): centre A's patient deleted, and its pk given to the next patient, registered by
    centre B.  Returns (reused pk, number of rows of the deleted patient)."""
    engine = sa.create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
    with engine.begin() as conn:
        def sql(statement: str, **values: object) -> sa.CursorResult:
            return conn.execute(sa.text(statement), values)

        def log(user: str, *entries: dict) -> None:
            audit.append(conn, actor=audit.Actor(None, user), entries=list(entries), states=False)

        centres = {name: sql("INSERT INTO centre (name) VALUES (:n)", n=name).lastrowid
                   for name in (CENTRE_A, CENTRE_B)}

        def register(centre: str, patient_id: str, user: str) -> int:
            pk = sql("INSERT INTO patient (centre_id, patient_id, referral, version) VALUES (:c, :p, 'in_house', 1)",
                     c=centres[centre], p=patient_id).lastrowid
            sql("INSERT INTO prior_chemotherapy (patient_pk, prior_chemo_lines) VALUES (:pk, 2)", pk=pk)
            sql("INSERT INTO cetuximab_course (patient_pk, cetuximab_start, cetuximab_partner) "
                "VALUES (:pk, '2024-01-08', 'irinotecan')", pk=pk)
            sql("INSERT INTO follow_up (patient_pk, last_contact_date) VALUES (:pk, '2024-02-05')", pk=pk)
            values = (("patient_id", patient_id), ("referral", "in_house"), ("prior_chemo_lines", "2"),
                      ("cetuximab_start", "2024-01-08"), ("cetuximab_partner", "irinotecan"),
                      ("last_contact_date", "2024-02-05"))
            log(user, *[{"action": "create", "entity": "patient", "entity_id": pk, "patient_pk": pk, "centre": centre,
                         "patient_id": patient_id, "field": name, "new_value": value, "version": 1}
                        for name, value in values])
            return pk

        gone = register(CENTRE_A, "PB-0002", "dm_a")
        head = {"patient_pk": gone, "centre": CENTRE_A, "patient_id": "PB-0002"}
        review = sql("INSERT INTO mdt_review (patient_pk, review_date, decision, notes) VALUES (:pk, '2024-02-01', "
                     "'potentially_resectable', 'liver-first discussed; wife anxious')", pk=gone).lastrowid
        log("dm_a", *[head | {"action": "create", "entity": "mdt_review", "entity_id": review, "field": f,
                              "new_value": v, "version": 2}
                      for f, v in (("decision", "potentially_resectable"), ("notes", "liver-first discussed; "
                                                                                      "wife anxious"))])
        for version, cycles in enumerate(("3", "4", "5"), start=3):
            sql("UPDATE cetuximab_course SET cetuximab_cycles = :c WHERE patient_pk = :pk", c=int(cycles), pk=gone)
            log("dm_a", head | {"action": "update", "entity": "cetuximab_course", "entity_id": gone,
                                "field": "cetuximab_cycles", "new_value": cycles, "version": version})
        for table in ("mdt_review", "prior_chemotherapy", "cetuximab_course", "follow_up"):
            sql(f"DELETE FROM {table} WHERE patient_pk = :pk", pk=gone)
        sql("DELETE FROM patient WHERE id = :pk", pk=gone)
        log("dm_a", head | {"action": "delete", "entity": "patient", "entity_id": gone, "reason": "consent withdrawn",
                            "version": 6})
        deleted_rows = sql("SELECT count(*) FROM audit_log WHERE patient_pk = :pk", pk=gone).scalar_one()
        new = register(CENTRE_B, "BJ-0001", "dm_b")
    engine.dispose()
    return new, deleted_rows


def test_history_and_conflicts_never_show_another_patients_rows_under_a_reused_id(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'legacy.db'}"
    reused, deleted_rows = _legacy_reuse(url)
    with sqlite3.connect(tmp_path / "legacy.db") as raw:
        under_pk = raw.execute("SELECT count(*), count(DISTINCT centre) FROM audit_log WHERE patient_pk = ?",
                               (reused,)).fetchone()
    assert under_pk[0] > deleted_rows and under_pk[1] == 2  # the old id allocation did hand the pk over
    app = make_app(url, today=fixed_today(dt.date(2024, 6, 1)))  # migrates to head
    add_user(app, "dm_a", "data_manager", CENTRE_A)
    add_user(app, "dm_b", "data_manager", CENTRE_B)
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
            rows = conn.execute(sa.select(t.complication)).mappings().all()
        kinds = {r["description"]: stands_for_worst_grade(r) for r in rows}
        assert kinds["worst complication (registry CSV)"] is True  # it follows a flat worst grade
        assert kinds["wound infection, opened at the bedside"] is False  # recorded one by one
        with engine.begin() as conn:
            centre = conn.execute(sa.select(t.centre.c.id)).scalars().first()
            pk = conn.execute(sa.insert(t.patient).values(centre_id=centre, patient_id="NEW-1", referral="in_house")
                              ).inserted_primary_key[0]
            review = conn.execute(sa.insert(t.mdt_review).values(patient_pk=pk, review_no=1, decision="resectable",
                                                                 review_date=dt.date(2024, 1, 1))
                                  ).inserted_primary_key[0]
        assert pk > highest["patient"] and review > highest["mdt_review"]
    finally:
        engine.dispose()
