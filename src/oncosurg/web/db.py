"""The web app's handle on the store: many readers, one writer at a time, never "database is locked".

Reads use the ordinary engine of :func:`oncosurg.store.open_store`.  Every write goes through
:meth:`WebStore.write`, one short transaction at a time:

* on SQLite (WAL journal: readers never wait) through a process-wide lock, then the server
  processes' turn (:class:`WriteTurn`, a lock file), then ``BEGIN IMMEDIATE``
  (:func:`oncosurg.store.engine.begin_immediate`: the write lock is taken before anything is read,
  retried with back-off while another process, e.g. a command-line import, holds it), so a
  transaction never fails half-way with "database is locked"; after two minutes of waiting the
  request is refused with 503 (nothing saved) rather than an internal error;
* on PostgreSQL by locking the audit chain's head row (``SELECT … FOR UPDATE``) first.

Either way the audit trail's hash chain is appended by one transaction at a time.  Large imports
(:func:`oncosurg.store.repository.import_records`) validate outside these transactions and take the
write lock only to write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]

from oncosurg.store.engine import (
    BUSY_TIMEOUT_MS,
    StoreBusy,
    begin_immediate,
    forget_audit_head,
    is_deadlock,
    lock_audit_head,
    open_store,
)
from oncosurg.web.access_journal import AccessJournal, journal_path
from oncosurg.web.errors import Busy


def _sqlite_writer_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let the "begin" event issue BEGIN IMMEDIATE
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin_immediate(conn: sa.Connection) -> None:
    begin_immediate(conn)


class WriteTurn:
    """The server processes' turn to write to one SQLite file: ``flock`` on ``<database>-writers``.

    Without it the worker processes met only in SQLite's busy handler, which sleeps 1 to 100 ms between
    tries: the process holding the lock took it again for its next queued write before the other
    process's sleeping writer looked, which waited up to 0.8 s for a 10 ms write (web benchmark, two
    workers: page views that record their access row, edits).  A waiter on ``flock`` is woken as soon
    as the lock is released.  Other writers (a command-line import) still meet the server in the busy
    handler.  Where the lock file cannot be created, writes go on without it."""

    def __init__(self, database: str) -> None:
        self.path = f"{database}-writers"
        self._fd: int | None = None
        self._failed = False

    def _descriptor(self) -> int | None:
        if self._fd is None and not self._failed:
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
            except OSError:
                self._failed = True
        return self._fd

    @contextmanager
    def held(self) -> Iterator[None]:
        fd = self._descriptor() if fcntl is not None else None
        if fd is None:
            yield
            return
        fcntl.flock(fd, fcntl.LOCK_EX)  # the interpreter lock is released while waiting
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class WebStore:
    """Reader engine, writer engine and the write lock for one database URL."""

    def __init__(self, url: str | None, *, create: bool = True) -> None:
        self.engine = open_store(url, create=create)
        self.dialect = self.engine.dialect.name
        self._lock = threading.Lock()
        if self.dialect == "sqlite":
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
            self.writer = sa.create_engine(self.engine.url, pool_size=1, max_overflow=0, pool_timeout=300)
            sa.event.listen(self.writer, "connect", _sqlite_writer_connect)
            sa.event.listen(self.writer, "begin", _sqlite_begin_immediate)
            database = self.engine.url.database
            self.turn = WriteTurn(os.path.abspath(database)) if database and database != ":memory:" else None
        else:
            self.writer = self.engine
            self.turn = None
        path = journal_path(self)
        #: where page views' access rows wait for the table (SQLite files; :mod:`oncosurg.web.access_journal`)
        self.access_journal = AccessJournal(path) if path else None

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """One read transaction that sees a single snapshot of the registry.

        A page reads a patient with several statements (fields, episodes, their ids and versions);
        an edit committed between two of them must not show half of itself, so the reads share one
        snapshot: ``REPEATABLE READ`` on PostgreSQL, a deferred ``BEGIN`` on SQLite (WAL: the
        snapshot is taken at the first read and never blocks the writer).  Ends with a rollback.
        """
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            elif self.dialect == "sqlite":
                conn.exec_driver_sql("BEGIN")
            yield conn

    @contextmanager
    def read_one(self) -> Iterator[sa.Connection]:
        """A read of one statement (or of statements that need no common snapshot), outside any
        transaction: on PostgreSQL in autocommit, which saves the ``BEGIN`` and ``ROLLBACK`` round
        trips of :meth:`read` (every request's session lookup: 3 round trips → 1; a patient page,
        whose patient is one statement, and its access row: 8 → 4)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def serial(self) -> Iterator[None]:
        """This process's turn to write (SQLite: one writer per process queues here, not in SQLite)."""
        if self.dialect == "sqlite":
            with self._lock:
                yield
        else:
            yield

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One write transaction; commits on success, rolls back on any exception."""
        try:
            if self.dialect == "sqlite":
                with self._lock, self.turn.held() if self.turn else nullcontext(), self.writer.begin() as conn:
                    yield conn
            else:
                with self.writer.begin() as conn:
                    lock_audit_head(conn)
                    try:
                        yield conn
                    finally:
                        forget_audit_head(conn)
        except StoreBusy as exc:
            raise Busy(f"the registry is busy with a large import; nothing was saved, try again ({exc})") from exc
        except sa.exc.OperationalError as exc:
            if not is_deadlock(exc):
                raise
            raise Busy("another writer took the same record at the same time (PostgreSQL ended this write to "
                       "break the deadlock); nothing was saved, try again") from exc

    def dispose(self) -> None:
        if self.turn is not None:
            self.turn.close()
        self.engine.dispose()
        if self.writer is not self.engine:
            self.writer.dispose()
