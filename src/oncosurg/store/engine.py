"""Engine creation and schema migrations (Alembic).

``sqlite:///oncosurg.db`` is the default URL; ``--db`` and ``ONCOSURG_DB`` override it.
PostgreSQL URLs (``postgresql://...``) use psycopg 3.

Opening a store either *creates* a registry (``create=True``: ``oncosurg import``, ``oncosurg
user add``, the web app's tests) or *requires* one (``create=False``: every command that only
reads).  A required registry must already exist: a missing SQLite file, or a database without the
oncosurg tables (an empty SQLite file, a new PostgreSQL database), is refused with
:class:`RegistryMissing` and nothing is created.  A registry written by an earlier release (an
older Alembic revision) is always migrated to the current schema when opened, either way.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_URL = "sqlite:///oncosurg.db"
_MIGRATIONS = Path(__file__).with_name("migrations")


#: SQLite waits this long for a lock inside one statement (``PRAGMA busy_timeout``), in milliseconds.
BUSY_TIMEOUT_MS = 5000
#: A write transaction keeps retrying ``BEGIN IMMEDIATE`` this long, in seconds, before giving up.
WRITE_WAIT_SECONDS = 120.0


class StoreError(Exception):
    """The store cannot be opened or migrated (bad URL, unreachable server)."""


class RegistryMissing(StoreError):
    """A command that only reads was pointed at a database that holds no registry."""


def _missing(where: str, detail: str = "") -> RegistryMissing:
    return RegistryMissing(f"no registry at {where}{detail}; run `oncosurg import` first, or check --db")


class StoreBusy(StoreError):
    """Another writer held the database longer than :data:`WRITE_WAIT_SECONDS` (SQLite)."""


def resolve_url(url: str | None = None) -> str:
    """``url`` if given, else ``$ONCOSURG_DB``, else :data:`DEFAULT_URL`; psycopg 3 for PostgreSQL."""
    url = url or os.environ.get("ONCOSURG_DB") or DEFAULT_URL
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.close()


def _postgres_no_jit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    """``SET jit = off`` on each new PostgreSQL connection.  oncosurg's statements are either short
    (a page, an edit) or analytic views over registries of 10,000-100,000 patients (the
    protocol's dozens of CTEs), which PostgreSQL's LLVM JIT (on by default since 12) compiled longer
    than it ran them: the web dashboard's recompute of a 10,000-patient registry took 6.2-8.1 s with
    JIT and 1.5 s without (PostgreSQL 15), the compile time hidden in the first node of the plan.
    A URL whose ``options`` mention ``jit`` keeps its own choice."""
    autocommit = dbapi_connection.autocommit
    dbapi_connection.autocommit = True
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET jit = off")
        cursor.close()
    except Exception:  # a server without the setting (before PostgreSQL 11): nothing to turn off
        pass
    finally:
        dbapi_connection.autocommit = autocommit


def _locked(exc: sa.exc.OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


def begin_immediate(conn: sa.Connection, *, wait: float = WRITE_WAIT_SECONDS) -> None:
    """Take SQLite's write lock now (``BEGIN IMMEDIATE``), retrying with jittered back-off while another
    writer holds it (each try already waits :data:`BUSY_TIMEOUT_MS`); :class:`StoreBusy` after ``wait``
    seconds.  A transaction that reads before it writes can then never fail half-way with "database
    is locked"."""
    deadline = time.monotonic() + wait
    pause = 0.01
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except sa.exc.OperationalError as exc:
            if not _locked(exc) or time.monotonic() > deadline:
                if _locked(exc):
                    raise StoreBusy(f"the database stayed locked by another writer for {wait:.0f} s") from exc
                raise
            time.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 0.5)


@contextmanager
def write_transaction(engine: sa.Engine, *, lock_first: bool = True) -> Iterator[sa.Connection]:
    """One write transaction on a connection of ``engine``; commits on success, rolls back on any
    exception.  The writers' lock is taken first: on SQLite the database's (:func:`begin_immediate`),
    on PostgreSQL the audit chain's head row, as every writer of the web app does
    (:class:`oncosurg.web.db.WebStore`).  Taken last (by the first audit row), it made an import that
    had updated rows and a web edit waiting for one of them deadlock.

    ``lock_first=False`` (PostgreSQL only) leaves the head row to the first audit row: for a
    transaction that only inserts new rows, which no other writer can be waiting for, so that web
    edits do not wait while it inserts (10,000 new patients: 3.6 s)."""
    with engine.connect() as conn, conn.begin():
        if engine.dialect.name == "sqlite":
            begin_immediate(conn)
        elif engine.dialect.name == "postgresql" and lock_first:
            lock_audit_head(conn)
        try:
            yield conn
        finally:
            forget_audit_head(conn)


#: ``conn.info`` key of the audit head as :func:`lock_audit_head` read it: (transaction, last id, last hash)
_HELD_HEAD = "oncosurg.audit_head"


def lock_audit_head(conn: sa.Connection) -> None:
    """PostgreSQL: the writers' lock, the audit chain's head row (until the transaction ends).  What
    it read serves the transaction's first audit row (:func:`held_audit_head`: one round trip fewer
    per write); :func:`forget_audit_head` when the transaction ends."""
    last_id, last_hash = conn.exec_driver_sql("SELECT last_id, last_hash FROM audit_head WHERE id = 1 FOR UPDATE").one()
    conn.info[_HELD_HEAD] = (conn.get_transaction(), last_id, last_hash)


def held_audit_head(conn: sa.Connection) -> tuple[int | None, str] | None:
    """(last id, last hash) as this transaction's :func:`lock_audit_head` read them, once (then ``None``)."""
    held = conn.info.pop(_HELD_HEAD, None)
    return (held[1], held[2]) if held is not None and held[0] is conn.get_transaction() else None


def forget_audit_head(conn: sa.Connection) -> None:
    """Drop what :func:`lock_audit_head` kept (the connection returns to the pool)."""
    conn.info.pop(_HELD_HEAD, None)


def is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    """PostgreSQL ended this transaction to break a deadlock."""
    return getattr(exc.orig, "sqlstate", None) == "40P01"


def is_conflict(exc: sa.exc.DBAPIError) -> bool:
    """A PostgreSQL deadlock or unique violation: another writer took the same key meanwhile."""
    return is_deadlock(exc) or getattr(exc.orig, "sqlstate", None) == "23505"


#: Patients an import must create or change before PostgreSQL's statistics are refreshed after it.
ANALYZE_AFTER = 1000


def refresh_statistics(engine: sa.Engine, changed: int) -> None:
    """After an import that created or changed ``changed`` patients, refresh PostgreSQL's planner
    statistics (``ANALYZE``, a sample of each table; it blocks no reader or writer).

    Until autovacuum gets to it, a registry just filled by an import has statistics of the empty
    tables, and PostgreSQL nests loops over the projection's "first row per patient" subqueries: the
    patient list filtered by stage took 8.8 s for 10,000 patients, 0.08 s after ``ANALYZE``.
    """
    if engine.dialect.name != "postgresql" or changed < ANALYZE_AFTER:
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def open_store(url: str | None = None, *, migrate: bool = True, create: bool = True) -> sa.Engine:
    """Create the engine for ``url`` and bring the schema to the latest migration.

    ``create=False`` (commands that only read) refuses, with :class:`RegistryMissing`, a SQLite
    file that does not exist (creating neither it nor its folders) and a database with no oncosurg
    schema (which it leaves untouched); a registry at an older revision is still migrated.
    """
    url = resolve_url(url)
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {url!r}: {exc}") from exc
    shown = engine.url.render_as_string(hide_password=True)
    if engine.dialect.name == "postgresql" and "jit" not in str(engine.url.query.get("options", "")):
        sa.event.listen(engine, "connect", _postgres_no_jit)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:" and not engine.url.query.get("uri"):
            path = Path(database).expanduser()
            shown = database
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            elif not path.is_file():
                engine.dispose()
                raise _missing(database)
    try:
        if not create and not has_registry(engine):
            engine.dispose()
            raise _missing(shown, " (the database holds no oncosurg tables)")
        if migrate:
            upgrade(engine)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise StoreError(f"cannot open database {shown}: {exc.orig}") from exc
    return engine


def has_registry(engine: sa.Engine) -> bool:
    """Whether the database holds an oncosurg schema (the Alembic version table); reads only."""
    with engine.connect() as conn:
        return sa.inspect(conn).has_table("alembic_version")


_REVISION = re.compile(r"^(down_revision|revision)\b[^=\n]*=\s*(None|['\"]([^'\"]+)['\"])", re.MULTILINE)


@cache
def _head_from_files() -> str | None:
    """The head revision read from the migration files' headers, without importing Alembic.

    None when the history is not one plain chain (several heads, merges, an unreadable header):
    :func:`upgrade` then asks Alembic.
    """
    revisions: dict[str, str | None] = {}
    for path in (_MIGRATIONS / "versions").glob("*.py"):
        found = dict((key, rev) for key, _raw, rev in _REVISION.findall(path.read_text(encoding="utf-8")))
        if "revision" not in found or "down_revision" not in found:
            return None
        revisions[found["revision"]] = found["down_revision"] or None
    heads = set(revisions) - {down for down in revisions.values() if down}
    return heads.pop() if len(heads) == 1 else None


def _current_revision(engine: sa.Engine) -> str | None:
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    except sa.exc.DBAPIError:
        return None


def upgrade(engine: sa.Engine) -> None:
    """Run pending Alembic migrations; a registry already at head is recognised without importing Alembic.

    On SQLite the migrations run in one ``BEGIN IMMEDIATE`` transaction with foreign keys off (a
    table rebuilt by a batch migration is dropped and re-created: with foreign keys on, dropping it
    would cascade to the rows that reference it); ``PRAGMA foreign_key_check`` guards the result.
    Data steps that need the code of the schema at head run last, in the same transaction
    (:func:`oncosurg.store.audit_state.write_pending_baselines`, requested by 0004).
    """
    head = _head_from_files()
    if head is not None and _current_revision(engine) == head:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from oncosurg.store.audit_state import write_pending_baselines

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.connect() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        try:
            with connection.begin():
                if sqlite:
                    begin_immediate(connection)
                if MigrationContext.configure(connection).get_current_revision() == head:
                    return  # another process migrated meanwhile
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, "head")
                # data steps that need the code of the schema at head (the audit-state baseline of 0004)
                write_pending_baselines(connection)
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise StoreError("the migration left rows whose foreign keys point nowhere; nothing was changed")
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                connection.commit()
