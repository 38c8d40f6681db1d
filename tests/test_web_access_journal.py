"""The SQLite access journal (issue 10, items 4, 6 and 9): a page view's access row is appended to a
journal beside the registry instead of waiting for the registry's write lock; the rows reach the
table before anyone reads the trail, exactly once, whatever crashes between the steps."""

from __future__ import annotations

import datetime as dt
import glob
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI

from oncosurg.cli import cli
from oncosurg.store import tables as t
from oncosurg.web.access_journal import AccessJournal
from oncosurg.web.services import access
from web_helpers import CENTRE_A, Api, add_user, make_app


@pytest.fixture
def app(tmp_path: Path) -> Iterator[FastAPI]:
    app = make_app(f"sqlite:///{tmp_path / 'registry.db'}")
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "aud", "auditor", all_centres=True)
    yield app
    app.state.store.dispose()


def _table_rows(app: FastAPI) -> int:
    with app.state.store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(t.access_trail)).scalar_one()


def _row(i: int) -> dict[str, object]:
    return {"at": dt.datetime(2030, 1, 7, 8, 0) + dt.timedelta(microseconds=i), "user_id": 1, "username": "dm",
            "action": "read", "resource": "patient", "format": "html", "centre": CENTRE_A, "patient_pk": i,
            "patient_id": f"P{i}", "patients": None, "client": "127.0.0.1", "detail": None}


def test_a_page_view_does_not_wait_for_the_write_lock(app: FastAPI, tmp_path: Path) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    before = _table_rows(app)
    holder = sqlite3.connect(tmp_path / "registry.db", timeout=30, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # another writer (an import, an edit) holds the lock for 3 s
    release = threading.Timer(3.0, holder.rollback)
    release.start()
    try:
        start = time.perf_counter()
        assert dm.get(f"/patients/{pk}.json").status_code == 200
        assert dm.get(f"/patients/{pk}", headers={"accept": "text/html"}).status_code == 200
        took = time.perf_counter() - start
    finally:
        release.join()
        holder.close()
    assert took < 1.5, f"two page views took {took:.2f} s while another writer held the lock"
    entries = Api(app, "aud").get("/access.json", params={"username": "dm"}).json()["entries"]
    assert [(e["resource"], e["format"]) for e in entries] == [("patient", "html"), ("patient", "json")]
    assert _table_rows(app) == before + 2
    assert not glob.glob(str(tmp_path / "registry.db-access-journal.*"))  # claimed files removed


def test_the_server_moves_journalled_rows_into_the_table_by_itself(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    before = _table_rows(app)
    dm.get(f"/patients/{pk}.json")
    deadline = time.monotonic() + 10
    while _table_rows(app) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _table_rows(app) == before + 1


def test_the_cli_export_includes_rows_still_in_the_journal(app: FastAPI, tmp_path: Path) -> None:
    store = app.state.store
    journal = access.journal_of(store)
    assert journal is not None
    journal.interval = 3600.0  # the server does not move them first
    journal.append([_row(1), _row(2)], store)
    assert _table_rows(app) == 0
    out = tmp_path / "access.csv"
    url = store.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["audit", "access", "--db", url, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count("\n") == 3  # header and both rows
    assert _table_rows(app) == 2


def test_a_crash_between_commit_and_removal_counts_no_read_twice(app: FastAPI, tmp_path: Path) -> None:
    store = app.state.store
    journal = AccessJournal(str(tmp_path / "registry.db-access-journal"), interval=3600.0)
    journal.append([_row(i) for i in range(5)], store)
    journal._claim()
    (claimed,) = glob.glob(journal.path + ".*")
    shutil.copy(claimed, tmp_path / "copy")
    assert journal.merge(store) == 5
    # the merge committed, then the process died before removing its claimed file
    shutil.copy(tmp_path / "copy", claimed)
    journal.append([_row(5)], store)
    assert journal.merge(store) == 1
    assert _table_rows(app) == 6
    assert not glob.glob(journal.path + ".*")


def test_a_crash_before_commit_loses_no_read(app: FastAPI, tmp_path: Path) -> None:
    store = app.state.store
    journal = AccessJournal(str(tmp_path / "registry.db-access-journal"), interval=3600.0)
    journal.append([_row(i) for i in range(3)], store)
    journal._claim()  # claimed, then the process died before writing the rows
    journal.append([_row(3)], store)
    other = AccessJournal(journal.path, interval=3600.0)  # another process, or the restarted one
    assert other.merge(store) == 4
    assert _table_rows(app) == 4


def test_appends_during_merges_are_each_recorded_once(app: FastAPI, tmp_path: Path) -> None:
    """Appenders and mergers with their own file descriptions, as separate processes would be."""
    store = app.state.store
    path = str(tmp_path / "registry.db-access-journal")
    writers, per_writer = 4, 150
    done = threading.Event()

    def write(w: int) -> None:
        journal = AccessJournal(path, interval=3600.0)
        for i in range(per_writer):
            journal.append([_row(w * 10_000 + i)], store)

    def merge() -> None:
        journal = AccessJournal(path, interval=3600.0)
        while not done.is_set():
            journal.merge(store)

    mergers = [threading.Thread(target=merge) for _ in range(2)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in mergers + threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    for thread in mergers:
        thread.join()
    AccessJournal(path).merge(store)
    with store.engine.connect() as conn:
        pks = sorted(conn.execute(sa.select(t.access_trail.c.patient_pk)).scalars())
    assert pks == sorted(w * 10_000 + i for w in range(writers) for i in range(per_writer))


def test_a_broken_line_is_reported_and_the_others_kept(app: FastAPI, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = app.state.store
    journal = AccessJournal(str(tmp_path / "registry.db-access-journal"), interval=3600.0)
    journal.append([_row(1)], store)
    with open(journal.path, "a", encoding="utf-8") as handle:
        handle.write('{"at": "not a time"\n')
        handle.write('{"at": "2030-01-07T08:00:00", "username": null, "action": "read", "resource": "patient", '
                     '"format": "json"}\n')  # would fail the insert (NOT NULL) and hold every row back
        handle.write('[1, 2]\n')
    journal.append([_row(2)], store)
    assert journal.merge(store) == 2
    assert "line 2 is not a journal row" in caplog.text
    assert "line 3 is not a journal row" in caplog.text
    assert "line 4 is not a journal row" in caplog.text
    assert not glob.glob(journal.path + "*") or os.path.getsize(journal.path) == 0


def test_without_a_writable_journal_rows_go_straight_to_the_table(app: FastAPI, tmp_path: Path) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="PB-1")
    before = _table_rows(app)
    os.mkdir(tmp_path / "registry.db-access-journal")  # cannot be opened as a file
    assert dm.get(f"/patients/{pk}.json").status_code == 200
    assert _table_rows(app) == before + 1  # committed before the answer, as on PostgreSQL


def test_reading_the_trail_from_the_cli_creates_no_file(tmp_path: Path) -> None:
    app = make_app(f"sqlite:///{tmp_path / 'registry.db'}")
    app.state.store.dispose()
    before = sorted(os.listdir(tmp_path))
    result = CliRunner().invoke(cli, ["audit", "access", "--db", f"sqlite:///{tmp_path / 'registry.db'}"])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == before


@pytest.mark.slow
def test_two_server_processes_record_every_read_once(tmp_path: Path) -> None:
    """``oncosurg serve --workers 2``: reads answered by both processes are all in the trail when an
    auditor asks, and nothing is left in journal files once the server has stopped."""
    import subprocess
    import sys

    import httpx

    from test_web_workers import _first_answer, _free_port, _stop
    from web_helpers import PASSWORD

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    app = make_app(url)
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "aud", "auditor", all_centres=True)
    pk = Api(app, "dm").register(patient_id="PB-1")
    app.state.store.dispose()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", "from oncosurg.cli import main; main()", "serve", "--db", url,
                               "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"

    def signed_in(username: str) -> httpx.Client:
        client = httpx.Client(base_url=base, timeout=60, headers={"accept": "application/json"})
        token = client.get("/login.json").json()["csrf_token"]
        client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token}
                    ).raise_for_status()
        return client

    try:
        assert _first_answer(f"{base}/login.json", timeout=90) is not None
        errors: list[int] = []

        def read() -> None:
            client = signed_in("dm")
            try:
                for _ in range(25):
                    status = client.get(f"/patients/{pk}.json").status_code
                    if status != 200:
                        errors.append(status)
            finally:
                client.close()

        threads = [threading.Thread(target=read) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        auditor = signed_in("aud")
        try:
            assert auditor.get("/access.json", params={"username": "dm"}).json()["total"] == 100
            for _ in range(10):
                assert auditor.get(f"/patients/{pk}.json").status_code == 200  # journalled as the server stops
        finally:
            auditor.close()
    finally:
        _stop(server)
    assert server.returncode is not None
    assert not glob.glob(str(tmp_path / "registry.db-access-journal*")) or \
        os.path.getsize(tmp_path / "registry.db-access-journal") == 0
    check = make_app(url)
    try:
        with check.state.store.engine.connect() as conn:
            reads = conn.execute(sa.select(t.access_trail.c.username, sa.func.count())
                                 .where(t.access_trail.c.action == "read").group_by(t.access_trail.c.username)).all()
        assert dict(reads) == {"dm": 100, "aud": 10}
    finally:
        check.state.store.dispose()
