"""Engine creation and schema migrations (Alembic), run on first use.

``sqlite:///oncosurg.db`` is the default URL; ``--db`` and ``ONCOSURG_DB`` override it.
PostgreSQL URLs (``postgresql://...``) use psycopg 3.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

DEFAULT_URL = "sqlite:///oncosurg.db"
_MIGRATIONS = Path(__file__).with_name("migrations")


class StoreError(Exception):
    """The store cannot be opened or migrated (bad URL, unreachable server)."""


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
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def open_store(url: str | None = None, *, migrate: bool = True) -> sa.Engine:
    """Create the engine for ``url`` and bring the schema to the latest migration."""
    url = resolve_url(url)
    try:
        engine = sa.create_engine(url, future=True)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise StoreError(f"cannot use database URL {url!r}: {exc}") from exc
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if migrate:
        try:
            upgrade(engine)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot open database {engine.url.render_as_string(hide_password=True)}: "
                             f"{exc.orig}") from exc
    return engine


def upgrade(engine: sa.Engine) -> None:
    """Run pending Alembic migrations (cheap when the schema is already at head)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    with engine.begin() as connection:
        if MigrationContext.configure(connection).get_current_revision() == head:
            return
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
        # data steps that need the code of the schema at head (e.g. the audit-state baseline of 0004)
        from oncosurg.store.audit_state import write_pending_baselines

        write_pending_baselines(connection)
