"""The server processes take turns to write to a SQLite registry through a lock file
(:class:`oncosurg.web.db.WriteTurn`), so a waiting writer is woken when the other process's write
ends instead of polling in SQLite's busy handler."""

from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.web.db import WebStore


def _free(path: str) -> bool:
    probe = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(probe, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(probe)


def test_two_stores_on_one_file_write_one_after_the_other(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    first, second = WebStore(url), WebStore(url)  # as two server processes
    assert first.turn is not None and first.turn.path == str(tmp_path / "registry.db") + "-writers"
    order: list[str] = []

    def other() -> None:
        with second.write() as conn:
            order.append("second")
            conn.execute(sa.select(t.audit_head.c.id)).all()

    with first.write() as conn:
        conn.execute(sa.select(t.audit_head.c.id)).all()
        assert not _free(first.turn.path), "the turn is held during a write"
        thread = threading.Thread(target=other)
        thread.start()
        time.sleep(0.3)
        assert order == [], "the other store waits for its turn"
        order.append("first")
    thread.join(10)
    assert order == ["first", "second"]
    assert _free(first.turn.path), "and it is free after"
    assert stat.S_IMODE(os.stat(first.turn.path).st_mode) == 0o600
    first.dispose()
    second.dispose()


def test_without_a_lock_file_writes_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = WebStore(f"sqlite:///{tmp_path / 'registry.db'}")
    assert store.turn is not None
    monkeypatch.setattr(store.turn, "path", str(tmp_path / "missing" / "registry.db-writers"))
    with store.write() as conn:
        conn.execute(sa.select(t.audit_head.c.id)).all()
    assert not (tmp_path / "missing").exists()
    store.dispose()
