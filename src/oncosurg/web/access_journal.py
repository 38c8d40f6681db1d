"""SQLite: access-trail rows written to a journal file beside the registry, moved into the
``access_trail`` table in batches.

A page view must be recorded before the page is sent.  Written straight into SQLite, its row waited
for the registry's one write lock, held by whoever was saving: in the web benchmark (10,000 patients,
30 clients, two workers) a page view's row waited up to 0.57 s (p95 126 ms) behind edits, and the
patient page's p95 was 110 to 210 ms above the list's.  Here the row is appended to
``<database>-access-journal`` (one ``write`` to a file opened with ``O_APPEND``, mode 600) and the
page is sent; the rows reach the table within about half a second, moved by the server process that
appended them (:meth:`AccessJournal.merge`, one write transaction for every row waiting), and
before anyone reads the trail (``/access``, ``oncosurg audit access``), which merges first.

Nothing is lost or counted twice:

* a merge *claims* the journal by renaming it (``<journal>.<pid>-<n>``) under an exclusive
  ``flock``; an appender holds a shared ``flock`` and checks that the file it opened is still the
  journal, so a row is never appended to a claimed file after it was read;
* claimed files are removed only after the rows are committed; a merge takes every claimed file it
  finds (another process's, or one left by a crash) and skips rows the table already holds (same
  time to the microsecond, user, action, resource, format, patient, centre, client and detail), so a
  crash between the commit and the removal never counts a read twice;
* a row survives the death of the server process (it is in the operating system's file cache as soon
  as ``write`` returns), not a power cut before the kernel wrote it out: the same promise as the
  registry's SQLite journal.

PostgreSQL has no single write lock to wait for: its rows go straight into the table
(:class:`oncosurg.web.services.access.AccessRecorder`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import glob
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: rows go straight into the table
    fcntl = None  # type: ignore[assignment]

from oncosurg.store import tables as t

log = logging.getLogger("oncosurg.web.access")

#: the columns a journal line carries (every column of ``access_trail`` but its id)
COLUMNS: tuple[str, ...] = ("at", "user_id", "username", "action", "resource", "format", "patient_pk",
                            "patient_id", "centre", "patients", "client", "detail")
_counter = itertools.count()
#: never through a symbolic link planted in the registry's directory
_NOFOLLOW = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def journal_path(store: Any) -> str | None:
    """``<database>-access-journal`` for a SQLite file; ``None`` for PostgreSQL, in-memory databases
    and systems without ``flock``."""
    database = store.engine.url.database
    if store.dialect != "sqlite" or fcntl is None or not database or database == ":memory:" \
            or database.startswith("file:"):
        return None
    return f"{os.path.abspath(database)}-access-journal"


def _line(row: dict[str, Any]) -> str:
    at = row["at"]
    body = {k: row.get(k) for k in COLUMNS} | {"at": at.isoformat() if isinstance(at, dt.datetime) else at}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False) + "\n"


#: text columns: length, and whether a value is required (a row breaking these is skipped, not
#: left to fail the merge's insert and hold every later row back)
_TEXT: dict[str, tuple[int, bool]] = {"username": (64, True), "action": (16, True), "resource": (32, True),
                                      "format": (8, True), "patient_id": (64, False), "centre": (120, False),
                                      "client": (64, False), "detail": (300, False)}
_INTEGERS = ("user_id", "patient_pk", "patients")


def _row(line: str) -> dict[str, Any] | None:
    """The row a journal line carries; ``None`` if it is not one."""
    try:
        body = json.loads(line)
        row = {k: body.get(k) for k in COLUMNS}
        row["at"] = dt.datetime.fromisoformat(body["at"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    for name, (length, required) in _TEXT.items():
        value = row[name]
        if (value is None and required) or (value is not None and (not isinstance(value, str)
                                                                    or len(value) > length)):
            return None
    if any(row[k] is not None and (type(row[k]) is not int or abs(row[k]) >= 2**31) for k in _INTEGERS):
        return None
    return row


def _key(row: Any) -> tuple[Any, ...]:
    return tuple(row[k] for k in COLUMNS)


class AccessJournal:
    """The journal of one SQLite registry, for one server process."""

    def __init__(self, path: str, *, interval: float = 0.5) -> None:
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._mover: threading.Thread | None = None
        self._store: Any = None

    # ---------------------------------------------------------------------------------- appending

    def append(self, rows: Sequence[dict[str, Any]], store: Any) -> None:
        """Append ``rows`` (one ``write``); raises ``OSError`` if the journal cannot be written."""
        data = "".join(_line(r) for r in rows).encode("utf-8")
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
                try:
                    current = os.stat(self.path).st_ino
                except FileNotFoundError:
                    current = None
                if current != os.fstat(fd).st_ino:
                    continue  # claimed by a merge after we opened it: open the new journal
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"{self.path}: {written} of {len(data)} bytes written (disk full?)")
                break
            finally:
                os.close(fd)  # releases the lock
        self._schedule(store)

    def _schedule(self, store: Any) -> None:
        with self._lock:
            self._store = store
            if self._mover is None or not self._mover.is_alive():
                self._mover = threading.Thread(target=self._move, name="access-journal", daemon=True)
                self._mover.start()

    def _move(self) -> None:
        """Merge every ``interval`` while rows keep coming; end when a merge found nothing (or after
        three failures in a row: the rows stay in the journal for the next merge)."""
        failures = 0
        while True:
            time.sleep(self.interval)
            try:
                moved = self.merge(self._store)
                failures = 0
            except Exception:  # kept in the journal; the next merge retries
                log.exception("access trail: the journal %s could not be merged (kept, retried)", self.path)
                failures += 1
                if failures >= 3:
                    with self._lock:
                        self._mover = None
                    return
                continue
            if not moved:
                with self._lock:
                    if not self._pending():
                        self._mover = None
                        return

    def _pending(self) -> bool:
        try:
            return os.stat(self.path).st_size > 0 or bool(glob.glob(glob.escape(self.path) + ".*"))
        except FileNotFoundError:
            return bool(glob.glob(glob.escape(self.path) + ".*"))

    # ------------------------------------------------------------------------------------ merging

    def _claim(self) -> None:
        """Rename a non-empty journal to a claimed file (appenders then open a new journal)."""
        try:
            fd = os.open(self.path, os.O_RDWR | _NOFOLLOW)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same and os.fstat(fd).st_size > 0:
                os.rename(self.path, f"{self.path}.{os.getpid()}-{next(_counter)}")
        finally:
            os.close(fd)

    def merge(self, store: Any) -> int:
        """Move every journalled row into ``access_trail`` (one write transaction); returns how many
        rows were added."""
        if not self._pending():
            return 0
        self._claim()
        if not glob.glob(glob.escape(self.path) + ".*"):
            return 0
        with store.write() as conn:  # merges of all processes take turns here
            files = sorted(glob.glob(glob.escape(self.path) + ".*"))
            rows: list[dict[str, Any]] = []
            for name in files:
                try:
                    with open(name, encoding="utf-8", errors="replace") as handle:
                        text = handle.read()
                except FileNotFoundError:  # another merge took it
                    continue
                for number, line in enumerate(text.splitlines(), 1):
                    row = _row(line) if line.strip() else None
                    if row is None:
                        if line.strip():
                            log.error("access trail: %s line %d is not a journal row, skipped: %.200r",
                                      name, number, line)
                        continue
                    rows.append(row)
            added = self._insert(conn, rows)
        for name in files:  # committed: the claimed files are done
            with contextlib.suppress(FileNotFoundError):
                os.remove(name)
        return added

    @staticmethod
    def _insert(conn: sa.Connection, rows: list[dict[str, Any]]) -> int:
        if not rows:
            return 0
        a = t.access_trail
        low, high = min(r["at"] for r in rows), max(r["at"] for r in rows)
        seen = {_key(r) for r in conn.execute(sa.select(*(a.c[k] for k in COLUMNS))
                                              .where(a.c.at >= low, a.c.at <= high)).mappings()}
        new = []
        for r in sorted(rows, key=lambda r: r["at"]):
            key = _key(r)
            if key not in seen:
                seen.add(key)
                new.append(r)
        if new:
            conn.execute(sa.insert(a), new)
        return len(new)
