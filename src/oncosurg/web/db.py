"""The web app's handle on the store: many readers, one writer.

Reads use the ordinary engine of :func:`oncosurg.store.open_store`.  Every write goes through
:meth:`WebStore.write`, one transaction at a time:

* on SQLite (WAL journal) through a process-wide lock and ``BEGIN IMMEDIATE``, so a transaction
  that reads then writes never fails half-way on a stale snapshot (datasette's single writer);
* on PostgreSQL by locking the audit chain's head row (``SELECT … FOR UPDATE``) first.

Either way the audit trail's hash chain is appended by one transaction at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.store.engine import open_store


def _sqlite_writer_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let the "begin" event issue BEGIN IMMEDIATE
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


class WebStore:
    """Reader engine, writer engine and the write lock for one database URL."""

    def __init__(self, url: str | None, *, create: bool = True) -> None:
        self.engine = open_store(url, create=create)
        self.dialect = self.engine.dialect.name
        self._lock = threading.Lock()
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            self.writer = sa.create_engine(self.engine.url, pool_size=1, max_overflow=0, pool_timeout=60)
            sa.event.listen(self.writer, "connect", _sqlite_writer_connect)
            sa.event.listen(self.writer, "begin", _sqlite_begin_immediate)
        else:
            self.writer = self.engine

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction; commits on success, rolls back on any exception."""
        if self.dialect == "sqlite":
            with self._lock, self.writer.begin() as conn:
                yield conn
        else:
            with self.writer.begin() as conn:
                conn.execute(sa.select(t.audit_head.c.id).where(t.audit_head.c.id == 1).with_for_update())
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()
        if self.writer is not self.engine:
            self.writer.dispose()
