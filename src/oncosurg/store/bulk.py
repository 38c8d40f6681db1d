"""Many rows into one table through the database driver itself, inside the caller's transaction.

SQLAlchemy's ``executemany`` processes every parameter of every row in Python, and on SQLite it
inserts a row at a time when ids must come back in order; an import of a million episode rows
spent most of its writing time there.  Here rows are plain tuples in the order of ``columns``:

* :func:`insert_rows`: SQLite ``executemany`` (dates as ISO text, as SQLAlchemy stores them),
  PostgreSQL ``COPY … FROM STDIN`` (psycopg adapts each value by its Python type);
* :func:`reserve_ids`: ids for rows about to be inserted, so that children can name their parent
  without reading ids back — PostgreSQL draws them from the column's sequence; SQLite continues
  after the largest id ever given (``sqlite_sequence``: tables use ``AUTOINCREMENT``, ids are never
  reused) and relies on the write lock the caller holds (``BEGIN IMMEDIATE``).

Values go in as the driver takes them: ``str``, ``int``, ``float``, ``bool``, ``datetime.date`` or ``None``.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

# Dates as SQLAlchemy's SQLite dialect stores them (``2024-06-30``): the adapter Python 3.11 applies by
# default, registered explicitly since 3.12 deprecates the default ones.  It applies to ``date`` values
# only (not ``datetime``), and SQLAlchemy's own statements bind dates as text before the driver sees them.
sqlite3.register_adapter(dt.date, dt.date.isoformat)


def reserve_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` new, increasing ids for ``table``'s integer primary key ``id``."""
    if n <= 0:
        return []
    name = table.name
    if conn.dialect.name == "postgresql":
        return sorted(conn.exec_driver_sql(
            "SELECT nextval(pg_get_serial_sequence(%(t)s, 'id')) FROM generate_series(1, %(n)s)",
            {"t": name, "n": n}).scalars())
    quoted = conn.dialect.identifier_preparer.quote(name)
    high = conn.exec_driver_sql(f"SELECT max(id) FROM {quoted}").scalar() or 0
    has_sequence = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'").scalar()
    if has_sequence:
        seq = conn.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).scalar() or 0
        high = max(high, seq)
    return list(range(high + 1, high + 1 + n))


def insert_rows(conn: sa.Connection, table: sa.Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in the order of ``columns``) into ``table``."""
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    driver = conn.connection.driver_connection
    if conn.dialect.name == "postgresql":
        with driver.cursor() as cursor, cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join("?" * len(columns))
    cursor = driver.cursor()
    try:
        cursor.executemany(f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})", rows)
    finally:
        cursor.close()
