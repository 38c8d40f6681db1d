"""The access trail: who read which patient record and who exported what, when, from where, in which
format (HIPAA §164.312(b) audit controls; GDPR art. 30/32).  Auditors query it on ``/access`` (with
its JSON twin and CSV export) and with ``oncosurg audit access``.

A read is recorded before the page is sent.  On SQLite its row is appended to a journal beside the
registry and moved into the table within about half a second (:mod:`oncosurg.web.access_journal`),
so a page view never waits for the registry's write lock; queries of the trail merge the journal
first (:func:`flush`).  On PostgreSQL the request waits until its row is committed: a patient
page's row in the transaction that read the patient, other rows of concurrent requests in one
shared transaction (group commit, :class:`AccessRecorder`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.web.access_journal import AccessJournal
from oncosurg.web.db import WebStore
from oncosurg.web.services.users import User

log = logging.getLogger("oncosurg.web.access")

FIELDS: tuple[str, ...] = ("id", "at", "username", "user_id", "action", "resource", "format", "centre",
                           "patient_id", "patient_pk", "patients", "client", "detail")
RESOURCES: dict[str, str] = {
    "patient": "a patient's pathway page",
    "patient_audit": "a patient's audit trail",
    "registry": "the registry CSV export",
    "audit": "the audit trail export",
    "access": "the access trail export",
}


@contextlib.contextmanager
def side_write(store: WebStore) -> Iterator[sa.Connection]:
    """A short write that does not touch the audit chain (access rows, session times): on SQLite
    through the one writer; on PostgreSQL without locking the chain's head row."""
    if store.dialect == "sqlite":
        with store.write() as conn:
            yield conn
    else:
        with store.engine.begin() as conn:
            yield conn


class _Batch:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.done = False
        self.error: BaseException | None = None


def journal_of(store: WebStore) -> AccessJournal | None:
    """The store's access journal (SQLite files), or ``None``."""
    return store.access_journal


def flush(store: WebStore) -> int:
    """Merge the journalled rows into the table (before the trail is read); returns how many."""
    journal = journal_of(store)
    return journal.merge(store) if journal is not None else 0


#: built once (its cache key is then computed once, not per page view)
_INSERT = sa.insert(t.access_trail)


class AccessRecorder:
    """Records rows before returning: appended to the journal (SQLite), or by group commit (each
    caller adds its rows and returns once they are committed; one caller at a time writes every row
    waiting, in one transaction)."""

    def __init__(self, store: WebStore) -> None:
        self.store = store
        self.journal = journal_of(store)
        self._cond = threading.Condition()
        self._open = _Batch()
        self._writing = False

    @property
    def in_reader(self) -> bool:
        """Whether a reading thread records its rows itself (appended to the journal, or inserted by
        its PostgreSQL connection) rather than waiting for the write lock."""
        return self.journal is not None or self.store.dialect == "postgresql"

    def record(self, rows: Sequence[dict[str, Any]], *, conn: sa.Connection | None = None) -> None:
        """Record ``rows``.  ``conn``: the request's PostgreSQL read connection (in a transaction or in
        autocommit), which then inserts them and commits (one connection fewer per page view)."""
        if not rows:
            return
        if conn is not None and self.journal is None and self.in_reader:
            conn.execute(_INSERT, list(rows))
            conn.commit()
            return
        if self.journal is not None:
            try:
                self.journal.append(rows, self.store)
                return
            except OSError as exc:  # the table then, as on PostgreSQL
                log.warning("access trail: journal %s not writable (%s); writing to the table",
                            self.journal.path, exc)
        with self._cond:
            mine = self._open
            mine.rows.extend(rows)
            while not mine.done:
                if not self._writing:
                    self._writing = True
                    batch, self._open = self._open, _Batch()
                    break
                self._cond.wait()
            else:
                if mine.error is not None:
                    raise RuntimeError("the access trail could not be written") from mine.error
                return
        try:
            with side_write(self.store) as conn:
                conn.execute(_INSERT, batch.rows)
        except BaseException as exc:
            batch.error = exc
        with self._cond:
            batch.done = True
            self._writing = False
            self._cond.notify_all()
        if batch.error is not None:
            raise RuntimeError("the access trail could not be written") from batch.error


def row(user: User, *, action: str, resource: str, fmt: str, client: str | None, now: dt.datetime,
        centre: str | None = None, patient_pk: int | None = None, patient_id: str | None = None,
        patients: int | None = None, detail: str | None = None) -> dict[str, Any]:
    return {"at": now, "user_id": user.id, "username": user.username, "action": action, "resource": resource,
            "format": fmt, "centre": centre, "patient_pk": patient_pk, "patient_id": patient_id,
            "patients": patients, "client": (client or "")[:64] or None, "detail": (detail or "")[:300] or None}


def patient_counts(conn: sa.Connection, centres: Iterable[str]) -> dict[str, int]:
    """How many patients each centre has (what an export of those centres covers)."""
    wanted = sorted(set(centres))
    if not wanted:
        return {}
    rows = conn.execute(sa.select(t.centre.c.name, sa.func.count(t.patient.c.id))
                        .join(t.patient, t.patient.c.centre_id == t.centre.c.id, isouter=True)
                        .where(t.centre.c.name.in_(wanted)).group_by(t.centre.c.name))
    return {name: int(n) for name, n in rows}


# ------------------------------------------------------------------------------------------ querying

def _where(*, centres: Iterable[str] | None, username: str = "", patient_pk: int | None = None,
           centre: str = "", patient_id: str = "", action: str = "", since: dt.datetime | None = None,
           until: dt.datetime | None = None) -> list[sa.ColumnElement[bool]]:
    a = t.access_trail
    where: list[sa.ColumnElement[bool]] = []
    if centres is not None:
        where.append(a.c.centre.in_(sorted(centres)))
    if username:
        where.append(a.c.username == username)
    if patient_pk is not None:
        where.append(a.c.patient_pk == patient_pk)
    if centre:
        where.append(a.c.centre == centre)
    if patient_id:
        # the patient's own reads, and the exports that covered the patient's centre
        where.append(sa.or_(a.c.patient_id == patient_id, sa.and_(a.c.action == "export",
                                                                 a.c.resource == "registry")))
    if action:
        where.append(a.c.action == action)
    if since is not None:
        where.append(a.c.at >= since)
    if until is not None:
        where.append(a.c.at < until)
    return where


def entries(conn: sa.Connection, *, limit: int = 100, offset: int = 0, **filters: Any
            ) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` rows matching ``filters`` (see :func:`_where`), and how many match."""
    where = _where(**filters)
    a = t.access_trail
    total = conn.execute(sa.select(sa.func.count()).select_from(a).where(*where)).scalar_one()
    rows = conn.execute(sa.select(a).where(*where).order_by(a.c.id.desc()).limit(limit).offset(offset)).mappings()
    return [_plain(r) for r in rows], int(total)


def export_csv(conn: sa.Connection, **filters: Any) -> Iterator[str]:
    """Matching rows, oldest first, as CSV text chunks."""
    where = _where(**filters)
    a = t.access_trail
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    after = 0
    while True:
        chunk = conn.execute(sa.select(a).where(a.c.id > after, *where).order_by(a.c.id).limit(2000)).mappings().all()
        for r in chunk:
            plain = _plain(r)
            writer.writerow(["" if plain[k] is None else _safe(plain[k]) for k in FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(chunk) < 2000:
            return
        after = chunk[-1]["id"]


def _plain(r: Any) -> dict[str, Any]:
    out = {k: r[k] for k in FIELDS}
    out["at"] = r["at"].isoformat(timespec="seconds") + "Z"
    return out


def _safe(value: Any) -> str:
    s = str(value)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s
