"""An audit chain that proves more (issue 10, item 7): signed checkpoints catch a truncated or re-hashed
chain; `verify` recomputes each patient's state from the trail and catches direct edits of the tables;
every change path carries its values; the 0004 migration adds a baseline on databases of 0.1.0."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI

from oncosurg.cli import cli
from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.schema import COLUMNS
from oncosurg.store import audit, audit_state
from oncosurg.store import tables as t
from oncosurg.store.repository import import_records
from web_helpers import CENTRE_A, Api, add_user, make_app, verify_chain

ROOT = Path(__file__).resolve().parents[1]
KEY = b"k" * 64


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url)
    add_user(app, "dm", "data_manager", CENTRE_A)
    yield app
    app.state.store.dispose()


def _csv(*rows: dict[str, str]) -> bytes:
    base = {"patient_id": "CLI-1", "centre": CENTRE_A, "referral": "in_house", "prior_chemo_lines": "2",
            "cetuximab_start": "2024-01-08", "cetuximab_partner": "irinotecan", "last_contact_date": "2024-06-01"}
    lines = [",".join(COLUMNS)] + [",".join({**base, **r}.get(c, "") for c in COLUMNS) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _import(app: FastAPI, *rows: dict[str, str], update: bool = False) -> None:
    parsed = parse_registry_csv(_csv(*rows), source="cli.csv")
    assert not parsed.issues, parsed.issues
    result = import_records(app.state.store.engine, parsed.records, source="cli.csv", sha256=parsed.sha256,
                            rows=parsed.rows, update=update)
    assert not result.issues


def _every_path(app: FastAPI) -> int:
    """Changes through every path: CLI import create and update (complications synced), web registration,
    stage edits, items added and removed, CSV upload create and update, a patient deleted."""
    surgery = {"surgery_date": "2024-05-02", "surgery_type": "hepatectomy", "clavien_dindo_max": "IIIa"}
    _import(app, {**surgery}, {"patient_id": "CLI-2"})
    _import(app, {**surgery, "clavien_dindo_max": "II", "cetuximab_cycles": "9"}, update=True)
    dm = Api(app, "dm")
    pk = dm.register(patient_id="WEB-1")
    dm.save(pk, "cetuximab", cetuximab_cycles="5", schedule="weekly", dose_mg_m2="250", bsa_m2="1.8")
    dm.post(f"/patients/{pk}/reviews", {"review_date": "2024-02-01", "decision": "unresectable_continue"})
    dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-02-01", "baseline_sum_mm": "100",
                                          "current_sum_mm": "60"})
    assert dm.save(pk, "surgery", surgery_date="2024-02-03", surgery_type="hepatectomy", margin="R0",
                   clavien_dindo_max="none").status_code == 200
    assert dm.post(f"/patients/{pk}/complications", {"grade": "II", "description": "ileus"}).status_code == 200
    cid = dm.patient(pk)["complications"][0]["id"]
    assert dm.post(f"/patients/{pk}/complications", {"grade": "IIIa", "description": "bile leak"}).status_code == 200
    version = dm.patient(pk)["version"]
    assert dm.post(f"/patients/{pk}/complications/{cid}/delete", {"version": str(version)}).status_code == 200
    assert dm.save(pk, "surgery", clavien_dindo_max="IVa").status_code == 200  # the typed worst grade wins
    review = dm.patient(pk)["reviews"][0]["id"]
    assert dm.post(f"/patients/{pk}/reviews/{review}/delete",
                   {"version": str(dm.patient(pk)["version"])}).status_code == 200
    gone = dm.register(patient_id="WEB-GONE")
    assert dm.post(f"/patients/{gone}/delete", {"version": "1", "reason": "duplicate"}).status_code == 200
    head = "patient_id,referral,prior_chemo_lines,cetuximab_start,cetuximab_partner,last_contact_date"
    for mode, body in (("insert", "UP-1,in_house,2,2024-01-08,irinotecan,2024-02-05"),
                       ("update", "UP-1,referred,2,2024-01-08,irinotecan,2024-03-05")):
        report = dm.client.post("/upload", files={"file": ("u.csv", f"{head}\n{body}\n".encode(), "text/csv")},
                                data={"centre": CENTRE_A, "mode": mode, "csrf_token": dm.csrf}).json()
        assert dm.post("/upload/confirm", {"token": report["token"]}).status_code == 200
    return pk


def test_every_change_path_can_be_replayed_from_the_trail(app: FastAPI) -> None:
    _every_path(app)
    result = verify_chain(app)
    assert result.ok, result
    assert result.patients_checked == 4 and result.patients_unchecked == 0  # WEB-GONE: deleted in both


@pytest.mark.parametrize("edit", ["stage_value", "patient_row", "review_deleted", "complication_grade",
                                  "regimen", "patient_inserted", "patient_deleted"])
def test_a_direct_edit_of_the_tables_is_caught(app: FastAPI, edit: str) -> None:
    pk = _every_path(app)
    assert verify_chain(app).ok
    with app.state.store.engine.begin() as conn:
        if edit == "stage_value":
            conn.execute(sa.update(t.therapy_line).where(t.therapy_line.c.patient_pk == pk).values(cycles=12))
        elif edit == "patient_row":
            conn.execute(sa.update(t.patient).where(t.patient.c.patient_id == "CLI-2").values(sex="M"))
        elif edit == "review_deleted":
            conn.execute(sa.delete(t.response_assessment).where(t.response_assessment.c.patient_pk == pk))
        elif edit == "complication_grade":
            conn.execute(sa.update(t.complication).where(t.complication.c.patient_pk == pk)
                         .values(grade="I", grade_rank=1))
        elif edit == "regimen":
            conn.execute(sa.update(t.therapy_line).values(dose_mg_m2=500))
        elif edit == "patient_inserted":
            centre = conn.execute(sa.select(t.centre.c.id)).scalar()
            conn.execute(sa.insert(t.patient).values(centre_id=centre, patient_id="GHOST", referral="in_house",
                                                     version=1))
        elif edit == "patient_deleted":
            for name in reversed(list(t.EPISODES)[1:]):  # children before their parents
                table = t.EPISODES[name]
                conn.execute(sa.delete(table).where(table.c.patient_pk.in_(
                    sa.select(t.patient.c.id).where(t.patient.c.patient_id == "CLI-2"))))
            conn.execute(sa.delete(t.patient).where(t.patient.c.patient_id == "CLI-2"))
    result = verify_chain(app)
    assert not result.ok and result.mismatches, edit
    assert "difference(s) between the tables and the state recomputed from the trail" in result.problem
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    cli_result = CliRunner().invoke(cli, ["audit", "verify", "--db", url])
    assert cli_result.exit_code == 1 and "BROKEN" in cli_result.output


def _checkpoint(app: FastAPI) -> dict:
    with app.state.store.read() as conn:
        return audit.checkpoint(conn, key=KEY)


def _verify(app: FastAPI, point: dict, key: bytes = KEY) -> audit.Verification:
    with app.state.store.read() as conn:
        return audit.verify(conn, checkpoints=[point], key=key)


def test_a_checkpoint_catches_truncation(app: FastAPI) -> None:
    _every_path(app)
    add_user(app, "later", "auditor", CENTRE_A)
    Api(app, "dm").register(patient_id="LAST-1")
    point = _checkpoint(app)
    assert _verify(app, point).ok
    with app.state.store.engine.begin() as conn:  # remove the last patient's rows and move the head back
        last = conn.execute(sa.select(sa.func.min(t.audit_log.c.id)).where(t.audit_log.c.patient_id == "LAST-1")
                            ).scalar_one()
        conn.execute(sa.delete(t.audit_log).where(t.audit_log.c.id >= last))
        prev = conn.execute(sa.select(t.audit_log.c.hash).where(t.audit_log.c.id == last - 1)).scalar_one()
        conn.execute(sa.update(t.audit_head).values(last_id=last - 1, last_hash=prev))
        pk = conn.execute(sa.select(t.patient.c.id).where(t.patient.c.patient_id == "LAST-1")).scalar_one()
        for name in reversed(list(t.EPISODES)[1:]):  # children before their parents
            conn.execute(sa.delete(t.EPISODES[name]).where(t.EPISODES[name].c.patient_pk == pk))
        conn.execute(sa.delete(t.patient).where(t.patient.c.id == pk))
    with app.state.store.read() as conn:
        assert audit.verify(conn).ok  # consistent: the chain alone cannot tell
    result = _verify(app, point)
    assert not result.ok and "truncated" in result.problem


def test_a_checkpoint_catches_a_rehashed_chain(app: FastAPI) -> None:
    pk = _every_path(app)
    point = _checkpoint(app)
    with app.state.store.engine.begin() as conn:  # rewrite history consistently: trail, tables, hashes
        row = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.patient_pk == pk,
                                                        t.audit_log.c.field == "cetuximab_cycles",
                                                        t.audit_log.c.action == "update")).mappings().first()
        conn.execute(sa.update(t.audit_log).where(t.audit_log.c.id == row["id"]).values(new_value="3"))
        conn.execute(sa.update(t.therapy_line).where(t.therapy_line.c.patient_pk == pk).values(cycles=3))
        state = audit_state.dumps(audit_state.table_states(conn, [pk])[pk]["state"])
        conn.execute(sa.update(t.audit_log).where(t.audit_log.c.patient_pk == pk, t.audit_log.c.action == "state")
                     .values(new_value=state))  # and the recorded states, so that they agree with the tables
        prev = audit.GENESIS
        for r in conn.execute(sa.select(t.audit_log).order_by(t.audit_log.c.id)).mappings().all():
            digest = audit.row_hash(prev, dict(r))
            conn.execute(sa.update(t.audit_log).where(t.audit_log.c.id == r["id"]).values(prev_hash=prev,
                                                                                        hash=digest))
            prev = digest
        conn.execute(sa.update(t.audit_head).values(last_hash=prev))
    with app.state.store.read() as conn:
        assert audit.verify(conn).ok  # a re-hashed chain verifies on its own
    result = _verify(app, point)
    assert not result.ok and "rewritten" in result.problem


def test_a_forged_checkpoint_or_a_wrong_key_is_refused(app: FastAPI) -> None:
    _every_path(app)
    point = _checkpoint(app)
    forged = point | {"rows": point["rows"] - 1}
    assert "signature" in _verify(app, forged).problem
    assert "signature" in _verify(app, point, key=b"x" * 64).problem


def test_checkpoint_commands(app: FastAPI, tmp_path: Path) -> None:
    _every_path(app)
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    key, point = tmp_path / "audit.key", tmp_path / "head.json"
    assert runner.invoke(cli, ["audit", "keygen", "--out", str(key)]).exit_code == 0
    assert (key.stat().st_mode & 0o777) == 0o600 and len(key.read_text().strip()) == 64
    assert runner.invoke(cli, ["audit", "keygen", "--out", str(key)]).exit_code == 2  # never overwritten
    made = runner.invoke(cli, ["audit", "checkpoint", "--db", url, "--key", str(key), "--out", str(point)])
    assert made.exit_code == 0, made.output
    recorded = json.loads(point.read_text())
    assert recorded["rows"] == verify_chain(app).rows and len(recorded["signature"]) == 64
    to_stdout = runner.invoke(cli, ["audit", "checkpoint", "--db", url, "--key", str(key)])
    assert json.loads(to_stdout.output)["head_hash"] == recorded["head_hash"]
    ok = runner.invoke(cli, ["audit", "verify", "--db", url, "--checkpoint", str(point), "--key", str(key)])
    assert ok.exit_code == 0 and "1 checkpoint(s) hold" in ok.output
    with app.state.store.engine.begin() as conn:
        last = conn.execute(sa.select(sa.func.max(t.audit_log.c.id))).scalar_one()
        conn.execute(sa.delete(t.audit_log).where(t.audit_log.c.id == last))
        prev = conn.execute(sa.select(t.audit_log.c.hash).where(t.audit_log.c.id == last - 1)).scalar_one()
        conn.execute(sa.update(t.audit_head).values(last_id=last - 1, last_hash=prev))
    broken = runner.invoke(cli, ["audit", "verify", "--db", url, "--checkpoint", str(point), "--key", str(key)])
    assert broken.exit_code == 1 and "BROKEN" in broken.output
    no_key = runner.invoke(cli, ["audit", "verify", "--db", url, "--checkpoint", str(point)], env={
        "ONCOSURG_AUDIT_KEY": ""})
    assert no_key.exit_code == 2 and "--key" in no_key.output


# ----------------------------------------------------------------------------------- old releases

@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_a_database_of_0_1_0_gets_a_state_baseline(backend: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """The committed 0.1.0 registry (tests/fixtures/releases/0.1.0): its create rows of command-line
    imports carry no values; after the 0004 migration every patient's state is checked anyway."""
    from release_databases import RELEASE_DATABASES, copy_sqlite, restore_postgres

    db = next(d for d in RELEASE_DATABASES if d.registry == "reference" and d.backend == backend)
    url = copy_sqlite(db, tmp_path) if backend == "sqlite" else restore_postgres(
        db, request.getfixturevalue("postgres_server"))
    old = sa.create_engine(url)
    with old.connect() as conn:  # read without migrating: what 0.1.0 left
        rows_before = conn.execute(sa.select(sa.func.count()).select_from(t.audit_log)).scalar_one()
        patients = conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
        valueless = conn.execute(sa.select(sa.func.count()).select_from(t.audit_log).where(
            t.audit_log.c.action == "create", t.audit_log.c.entity == "patient", t.audit_log.c.field.is_(None))
        ).scalar_one()
    old.dispose()
    assert valueless > 100  # the imported cohort: nothing to replay from before the baseline
    app = make_app(url)  # migrates to head
    with app.state.store.read() as conn:
        baselines = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.action == "baseline")
                                 .order_by(t.audit_log.c.id)).mappings().all()
    # after the release's rows and one migrate row per patient (0005_episodes)
    assert len(baselines) == patients and baselines[0]["id"] == rows_before + patients + 1
    assert json.loads(baselines[0]["new_value"])["patient"]["patient_id"] == baselines[0]["patient_id"]
    result = verify_chain(app)
    assert result.ok, result
    assert result.patients_checked == patients and result.patients_unchecked == 0
    # a later direct edit of an imported patient, which 0.1.0's trail could not have caught, is caught
    with app.state.store.engine.begin() as conn:
        conn.execute(sa.update(t.therapy_line).where(t.therapy_line.c.patient_pk == 1).values(cycles=99))
    broken = verify_chain(app)
    assert not broken.ok and broken.mismatches[0]["field"] == "cycles"
    app.state.store.dispose()


def test_patients_without_values_in_the_trail_are_reported_not_checkable() -> None:
    """A create row without values (command-line imports before 0.2) and no baseline yet: not checkable;
    a baseline row makes the patient checkable from there on; a change no state row follows is reported."""
    from oncosurg.store.audit_state import Replay, compare

    def row(pk: int, action: str, field: str | None = None, value: str | None = None, entity: str = "patient",
            rid: int = 0) -> dict:
        return {"id": rid, "patient_pk": pk, "entity": entity, "action": action, "field": field, "new_value": value,
                "entity_id": pk, "centre": "C", "patient_id": f"P{pk}"}

    def state(cycles: str) -> dict:
        return {"patient": {"patient_id": "P"}, "therapy_line": [{"line_number": "3", "cycles": cycles}]}

    replay = Replay()
    for r in (row(1, "create"), row(2, "create"), row(3, "create", None, json.dumps(state("5"))),
              row(1, "update", "cycles", "4", "therapy_line")):
        replay.apply(r)
    replay.apply(row(2, "baseline", "state", json.dumps(state("6"))))
    replay.apply(row(3, "update", "cycles", "6", "therapy_line", rid=9))  # and no state row after it
    tables = {pk: {"centre": "C", "patient_id": f"P{pk}", "state": state("7")} for pk in (1, 2, 3)}
    mismatches, checked, unchecked = compare(replay, tables)
    assert (checked, unchecked) == (2, 1)
    assert [(m["patient_id"], m["what"], m["field"], m["trail"], m["table"]) for m in mismatches] == [
        ("P2", "therapy_line 3", "cycles", "6", "7"),
        ("P3", "a change (trail row 9) without the state it produced", None, None, None)]
