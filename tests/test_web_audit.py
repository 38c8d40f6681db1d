"""The hash-chained audit trail, its command-line verification and export, CSV upload and export,
and the web-app migration on both backends."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner
from fastapi import FastAPI

from oncosurg.cli import cli
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import alembic_config, open_store
from web_helpers import CENTRE_A, Api, add_user, make_app, verify_chain

HEADER = "patient_id,referral,prior_chemo_lines,cetuximab_start,cetuximab_partner,last_contact_date"


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url)
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "aud", "auditor", all_centres=True)
    yield app
    app.state.store.dispose()


def _busy(app: FastAPI) -> int:
    dm = Api(app, "dm")
    pk = dm.register()
    dm.save(pk, "cetuximab", cetuximab_cycles="5")
    dm.post(f"/patients/{pk}/reviews", {"review_date": "2024-02-01", "decision": "unresectable_continue"})
    return pk


def test_every_change_is_recorded_with_who_what_and_old_new(app: FastAPI) -> None:
    pk = _busy(app)
    rows = Api(app, "aud").get("/audit.json").json()["entries"]
    assert {r["username"] for r in rows} == {"dm"}
    update = next(r for r in rows if r["action"] == "update")
    assert (update["entity"], update["field"], update["old_value"], update["new_value"], update["version"]) == (
        "cetuximab_course", "cetuximab_cycles", "2", "5", 2)
    assert {r["field"] for r in rows if r["entity"] == "mdt_review"} >= {"review_date", "decision"}
    assert all(r["patient_pk"] == pk for r in rows)
    result = CliRunner().invoke(cli, ["audit", "verify", "--db", str(app.state.store.engine.url.render_as_string(
        hide_password=False))])
    assert result.exit_code == 0 and f"{len(rows)} row(s)" in result.output


@pytest.mark.parametrize("tamper", ["edit", "delete_middle", "truncate", "reorder_hash"])
def test_tampering_is_detected(app: FastAPI, tamper: str) -> None:
    _busy(app)
    engine = app.state.store.engine
    log = t.audit_log
    with engine.begin() as conn:
        if tamper == "edit":
            conn.execute(sa.update(log).where(log.c.id == 3).values(new_value="forged"))
        elif tamper == "delete_middle":
            conn.execute(sa.delete(log).where(log.c.id == 3))
        elif tamper == "truncate":
            last = conn.execute(sa.select(sa.func.max(log.c.id))).scalar()
            conn.execute(sa.delete(log).where(log.c.id == last))
        else:  # recompute row 3's hash honestly: row 4 no longer follows
            row = dict(conn.execute(sa.select(log).where(log.c.id == 3)).mappings().one())
            row["reason"] = "forged"
            conn.execute(sa.update(log).where(log.c.id == 3).values(
                reason="forged", hash=audit.row_hash(row["prev_hash"], row)))
    result = verify_chain(app)
    assert not result.ok
    expected = {"edit": 3, "delete_middle": 3, "reorder_hash": 4}.get(tamper, result.rows + 1)
    assert result.bad_id == expected, result
    url = engine.url.render_as_string(hide_password=False)
    cli_result = CliRunner().invoke(cli, ["audit", "verify", "--db", url, "--json"])
    assert cli_result.exit_code == 1 and '"ok": false' in cli_result.output


def test_audit_export_and_per_patient_view(app: FastAPI) -> None:
    pk = _busy(app)
    dm = Api(app, "dm")
    page = dm.get(f"/patients/{pk}/audit.json").json()
    assert page["total"] > 5
    exported = dm.get(f"/patients/{pk}/audit.csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len(rows) == page["total"] and rows[0]["prev_hash"] == audit.GENESIS
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    cli_rows = CliRunner().invoke(cli, ["audit", "export", "--db", url, "--patient", "PB-0001", "--centre", CENTRE_A])
    assert cli_rows.exit_code == 0 and cli_rows.output == exported.text
    html = dm.client.get(f"/patients/{pk}/audit", headers={"accept": "text/html"})
    assert "cetuximab_cycles" in html.text


def test_deleted_patients_stay_in_the_trail(app: FastAPI) -> None:
    pk = _busy(app)
    dm = Api(app, "dm")
    version = dm.patient(pk)["version"]
    assert dm.post(f"/patients/{pk}/delete", {"version": str(version), "reason": "registered twice"}).status_code == 200
    rows = Api(app, "aud").get("/audit.json").json()["entries"]
    deletion = [r for r in rows if r["action"] == "delete" and r["entity"] == "patient"]
    assert deletion and {r["reason"] for r in deletion} == {"registered twice"}
    assert {"patient_id", "cetuximab_cycles"} <= {r["field"] for r in deletion}
    assert verify_chain(app).ok


def test_upload_reports_every_error_before_anything_is_imported(app: FastAPI) -> None:
    dm = Api(app, "dm")
    bad = (f"{HEADER}\nPB-1,inhouse,2,2004-01-05,irinotecan,2005-01-01\n"
           "PB-2,in_house,0,2004-01-05,irinotecan,2003-01-01\n")
    report = dm.client.post("/upload", files={"file": ("bad.csv", bad.encode(), "text/csv")},
                            data={"centre": CENTRE_A, "csrf_token": dm.csrf}).json()
    assert report["ok"] is False and "token" not in report
    assert {(e["line"], e["column"], e["code"]) for e in report["errors"]} == {
        (2, "referral", "V306"), (3, "prior_chemo_lines", "V307"), (3, "last_contact_date", "X409")}
    html = dm.client.post("/upload", files={"file": ("bad.csv", bad.encode(), "text/csv")},
                          data={"centre": CENTRE_A, "csrf_token": dm.csrf}, headers={"accept": "text/html"})
    assert html.status_code == 422 and html.text.count('class="error-row"') == 3
    assert dm.get("/patients.json").json()["total"] == 0


def test_upload_confirm_update_and_export_round_trip(app: FastAPI) -> None:
    dm = Api(app, "dm")
    good = f"{HEADER}\nPB-1,in_house,2,2004-01-05,irinotecan,2005-01-01\nPB-2,referred,1,2004-02-05,both,2005-03-01\n"
    staged = dm.client.post("/upload", files={"file": ("good.csv", good.encode(), "text/csv")},
                            data={"centre": CENTRE_A, "csrf_token": dm.csrf}).json()
    assert (staged["ok"], staged["create"], staged["update"]) == (True, 2, 0)
    assert dm.get("/patients.json").json()["total"] == 0  # nothing before confirmation
    done = dm.post("/upload/confirm", {"token": staged["token"]}).json()
    assert done["created"] == 2
    assert dm.post("/upload/confirm", {"token": staged["token"]}).status_code == 404  # one-time token
    again = dm.client.post("/upload", files={"file": ("good.csv", good.encode(), "text/csv")},
                           data={"centre": CENTRE_A, "csrf_token": dm.csrf}).json()
    assert {e["code"] for e in again["errors"]} == {"X411"}
    changed = good.replace("2005-03-01", "2005-04-01")
    update = dm.client.post("/upload", files={"file": ("fix.csv", changed.encode(), "text/csv")},
                            data={"centre": CENTRE_A, "mode": "update", "csrf_token": dm.csrf}).json()
    assert (update["update"], update["unchanged"]) == (1, 1)
    assert update["changes"] == [{"patient_id": "PB-2", "centre": CENTRE_A, "field": "last_contact_date",
                                  "old": "2005-03-01", "new": "2005-04-01"}]
    assert dm.post("/upload/confirm", {"token": update["token"]}).json()["updated"] == 1
    exported = dm.get("/export.csv").text
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["patient_id"], r["last_contact_date"]) for r in rows] == [("PB-1", "2005-01-01"), ("PB-2", "2005-04-01")]
    assert verify_chain(app).ok


def test_upload_refuses_other_centres_and_readers(app: FastAPI) -> None:
    add_user(app, "inv", "investigator", CENTRE_A)
    dm = Api(app, "dm")
    other = f"centre,{HEADER}\nBeaujon,B-1,in_house,2,2004-01-05,irinotecan,2005-01-01\n"
    report = dm.client.post("/upload", files={"file": ("o.csv", other.encode(), "text/csv")},
                            data={"centre": CENTRE_A, "csrf_token": dm.csrf}).json()
    assert [e["column"] for e in report["errors"]] == ["centre"]
    inv = Api(app, "inv")
    refused = inv.client.post("/upload", files={"file": ("o.csv", other.encode(), "text/csv")},
                              data={"centre": CENTRE_A, "csrf_token": inv.csrf})
    assert refused.status_code == 403


def test_migration_matches_the_tables_and_downgrades(store_url: str) -> None:
    engine = open_store(store_url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), t.metadata) == []
        assert conn.execute(sa.select(t.audit_head.c.last_hash)).scalar() == audit.GENESIS
    url = engine.url.render_as_string(hide_password=False)
    cfg = alembic_config(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    assert "audit_log" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    again = open_store(store_url)
    assert "audit_log" in sa.inspect(again).get_table_names()
    again.dispose()
