"""Who read what (issue 10, item 6): reads of patient pages (HTML and JSON) and every export enter the
access trail, which auditors query on /access (JSON twin, CSV) and with `oncosurg audit access`; the
access log lines carry the user name."""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncosurg.cli import cli
from web_helpers import CENTRE_A, CENTRE_B, Api, add_user, make_app, verify_chain


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url)
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "dmb", "data_manager", CENTRE_B)
    add_user(app, "inv", "investigator", CENTRE_A)
    add_user(app, "aud", "auditor", all_centres=True)
    add_user(app, "auda", "auditor", CENTRE_A)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def test_reads_and_exports_are_recorded(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    dm.register(patient_id="PB-2")
    Api(app, "dmb").register(centre=CENTRE_B, patient_id="BJ-1")
    inv = Api(app, "inv", client=("192.0.2.44", 1))
    assert inv.get(f"/patients/{pk}.json").status_code == 200
    assert inv.get(f"/patients/{pk}", headers={"accept": "text/html"}).status_code == 200
    assert inv.get("/export.csv").status_code == 200
    assert dm.get(f"/patients/{pk}/audit.csv").status_code == 200
    assert inv.get("/patients/999999.json").status_code == 404  # not a read: nothing recorded

    rows = Api(app, "aud").get("/access.json").json()["entries"]
    reads = [(r["username"], r["action"], r["resource"], r["format"], r["patient_id"], r["centre"], r["client"])
             for r in rows if r["action"] == "read"]
    assert ("inv", "read", "patient", "json", "PB-1", CENTRE_A, "192.0.2.44") in reads
    assert ("inv", "read", "patient", "html", "PB-1", CENTRE_A, "192.0.2.44") in reads
    export = next(r for r in rows if r["resource"] == "registry")
    assert (export["username"], export["action"], export["format"], export["centre"], export["patients"]) == (
        "inv", "export", "csv", CENTRE_A, 2)
    assert any(r["resource"] == "patient_audit" and r["username"] == "dm" and r["action"] == "export" for r in rows)
    assert all(r["at"].endswith("Z") for r in rows)


def test_auditors_query_the_trail_of_their_centres(app: FastAPI) -> None:
    dm, dmb = Api(app, "dm"), Api(app, "dmb")
    pk = dm.register(patient_id="PB-1")
    pk_b = dmb.register(centre=CENTRE_B, patient_id="BJ-1")
    dm.get(f"/patients/{pk}.json")
    dmb.get(f"/patients/{pk_b}.json")
    dmb.get("/export.csv")
    auditor = Api(app, "aud")
    about = auditor.get("/access.json", params={"patient_id": "PB-1", "centre": CENTRE_A}).json()
    assert {(r["username"], r["resource"]) for r in about["entries"]} == {("dm", "patient")}
    mine = auditor.get("/access.json", params={"username": "dmb"}).json()
    assert {r["resource"] for r in mine["entries"]} == {"patient", "registry"} and mine["total"] == 2
    exports = auditor.get("/access.json", params={"action": "export"}).json()["entries"]
    assert [r["centre"] for r in exports] == [CENTRE_B]
    limited = Api(app, "auda").get("/access.json").json()["entries"]
    assert {r["centre"] for r in limited} == {CENTRE_A}  # an auditor of one centre sees that centre only
    assert Api(app, "auda").get("/access.json", params={"centre": CENTRE_B}).status_code == 403
    assert Api(app, "inv").get("/access.json").status_code == 403
    assert Api(app, "dm").get("/access.json").status_code == 403
    page = auditor.get("/access", headers={"accept": "text/html"})
    assert page.status_code == 200 and "BJ-1" in page.text
    exported = auditor.get("/access.csv", params={"username": "dm"})
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["patient_id"] for r in table] == ["PB-1"]
    # exporting the access trail is itself recorded
    assert auditor.get("/access.json", params={"username": "aud", "action": "export"}).json()["total"] == 1


def test_cli_export_of_the_access_trail(app: FastAPI, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    dm.get(f"/patients/{pk}.json")
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    out = tmp_path / "access.csv"
    result = CliRunner().invoke(cli, ["audit", "access", "--db", url, "--user", "dm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["username"], r["action"], r["resource"], r["format"], r["patient_id"]) for r in table] == [
        ("dm", "read", "patient", "json", "PB-1")]


def test_concurrent_reads_are_each_recorded_once(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    clients = [Api(app, "inv") for _ in range(6)]
    errors: list[int] = []

    def read(api: Api) -> None:
        for _ in range(10):
            status = api.get(f"/patients/{pk}.json").status_code
            if status != 200:
                errors.append(status)

    threads = [threading.Thread(target=read, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert Api(app, "aud").get("/access.json", params={"username": "inv"}).json()["total"] == 60


def test_access_log_lines_name_the_user(app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    with caplog.at_level(logging.INFO, logger="oncosurg.web.access"):
        dm.get(f"/patients/{pk}.json")
        TestClient(app).get("/me.json")
    lines = [r.getMessage() for r in caplog.records if r.name == "oncosurg.web.access"]
    assert any(f' - dm "GET /patients/{pk}.json HTTP/1.1" 200 ' in line for line in lines), lines
    assert any(' - - "GET /me.json HTTP/1.1" 401 ' in line for line in lines), lines
