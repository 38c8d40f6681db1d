"""The patient list's index: every patient's list facts in memory, kept current from the audit trail.

The list filters by pathway stage (operated, deceased, on the rescue line…), which the registry
knows only through the projection of each patient's episodes; in SQL that projection ranks every
patient's episodes, 0.25 s per request at 10,000 patients (issue 10's load test: the stage-filtered
list was the costliest request).  A :class:`Roster` projects the registry once per server process,
then on each request reads, in the request's own snapshot, the audit rows appended since it last
looked (one indexed range query) and projects again only the patients they name.

Every change to a patient writes audit rows under its pk: web edits and deletions, uploads and
command-line imports (``create``/``update`` rows).  A change that moves the registry without such
rows (a new patient or import batch with no audit row: registries written before the audit trail
carried patient ids), or an audit row without a patient other than an account's, makes the roster
project everything again.  Ordering (centre, then patient id), filtering (array operations over
a :class:`RosterView`'s columns) and paging happen in Python; the facts are those of
:func:`oncosurg.store.repository.registry_select`, the same SQL for the whole registry and for a few
patients.

The mechanism itself is :class:`AuditFollower` (per-patient values kept current from the trail);
the worklist's index (:class:`oncosurg.web.services.worklist.WorklistIndex`) uses it too.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np
import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.store.repository import registry_select
from oncosurg.web.services.users import ALL_CENTRES, User, visible_centres

V = TypeVar("V")
#: opens a read transaction (:meth:`oncosurg.web.db.WebStore.read`)
Snapshot = Callable[[], AbstractContextManager[sa.Connection]]

#: Above this many changed patients the roster projects the whole registry again (one query).
FULL_REBUILD_ABOVE = 2000


@dataclass(frozen=True, slots=True)
class Facts:
    """What the patient list shows and filters on, for one patient."""

    pk: int
    patient_id: str
    centre: str
    referral: str | None
    cetuximab_start: dt.date | None
    surgery_date: dt.date | None
    surgery_type: str | None
    progression_date: dt.date | None
    death_date: dt.date | None
    last_contact_date: dt.date | None
    stop_date: dt.date | None  # the rescue line's stop date
    last_review: dt.date | None  # the last MDT review's date

    @property
    def order(self) -> tuple[str, str]:
        return (self.centre, self.patient_id)


FACT_COLUMNS: tuple[str, ...] = tuple(Facts.__dataclass_fields__)


def facts_select(patients: Sequence[int] | sa.BindParameter | None = None) -> sa.Select:
    """:class:`Facts` of every patient (``None``) or of ``patients`` (ids)."""
    base = registry_select(patients).subquery("r")
    line, review = t.therapy_line, t.mdt_review
    last_review = sa.select(sa.func.max(review.c.review_date)).where(review.c.patient_pk == base.c.pk).scalar_subquery()
    return (sa.select(*(base.c[c] for c in FACT_COLUMNS[:-2]), line.c.stop_date, last_review.label("last_review"))
            .select_from(base.outerjoin(line, line.c.id == base.c.rescue_line_pk)))


def _mark_columns() -> tuple[sa.ScalarSelect[Any], ...]:
    return (sa.select(t.audit_head.c.last_id).where(t.audit_head.c.id == 1).scalar_subquery(),
            sa.select(sa.func.max(t.patient.c.id)).scalar_subquery(),
            sa.select(sa.func.max(t.import_batch.c.id)).scalar_subquery())


#: built once: building them per request (the list, the worklist, the dashboard) cost ~1 % of the
#: server's CPU under the web benchmark (py-spy), more than SQLAlchemy's cached compilation of them
_MARKS = sa.select(*_mark_columns())
_CENTRES_AND_MARKS = ALL_CENTRES.add_columns(*_mark_columns())


def marks(conn: sa.Connection) -> tuple[Any, ...]:
    """(last audit id, last patient id, last import batch id): what moves when the registry does (a
    web write, deletions too, moves the audit head; a new patient the last id; an import adds a batch)."""
    return tuple(conn.execute(_MARKS).one())


def centres_and_marks(conn: sa.Connection, *, user: User) -> tuple[list[str], tuple[Any, ...]]:
    """The centres ``user`` may see (:func:`~oncosurg.web.services.users.visible_centres`) and the
    registry's :func:`marks` in one statement: one snapshot and, on PostgreSQL, one round trip (the
    list and the dashboard read both; two round trips before)."""
    if not user.all_centres:
        return visible_centres(conn, user=user), marks(conn)
    rows = conn.execute(_CENTRES_AND_MARKS).all()
    if not rows:  # no centre yet: the marks alone
        return [], marks(conn)
    return [row[0] for row in rows], tuple(rows[0][1:])


class AuditFollower(Generic[V]):
    """Values derived from each patient's rows (``pk → V``), current as of the newest snapshot a
    request has shown it, kept so from the audit trail (thread-safe).  Subclasses say how to
    :meth:`load` the values of every patient or of some, and may react to a change (:meth:`_changed_some`).

    ``key`` names what else the values depend on (a date): another key loads everything again.

    A request may pass a connection outside any transaction (each statement its own snapshot, no
    ``BEGIN``/``ROLLBACK`` round trips on PostgreSQL).  A refresh reads the audit rows up to the
    marks the request read, then the values of the patients they name: every audit row up to those
    marks was committed when they were read (audited writes append under the audit head's lock, one
    at a time), and the values read afterwards are as new or newer; a change after the marks has
    audit rows after them, so the next refresh reads its patients again.  ``snapshot`` (the web
    store's :meth:`~oncosurg.web.db.WebStore.read`), for values read with several statements: the
    refresh reads them in one read transaction of its own, so that no value mixes two states."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self._snapshot = snapshot
        self._lock = threading.Lock()
        self._values: dict[int, V] = {}
        self._marks: tuple[Any, ...] | None = None
        self._key: Any = None
        self.rebuilds = 0  # full loads (tests)
        self.updates = 0  # incremental ones

    def load(self, conn: sa.Connection, pks: list[int] | None, key: Any) -> dict[int, V]:
        """The values of patients ``pks`` (``None``: of every patient) under ``key``; a patient without
        a value is absent."""
        raise NotImplementedError

    def current(self, conn: sa.Connection, key: Any = None, *, seen: tuple[Any, ...] | None = None) -> dict[int, V]:
        """``pk → value`` as of ``conn``'s snapshot or newer.  Do not modify it.  ``seen``: the
        registry's :func:`marks` as the caller has just read them on ``conn`` (else read here)."""
        now = marks(conn) if seen is None else seen
        with self._lock:
            if key != self._key or (now != self._marks and not self._newer(now)):
                if self._snapshot is None:
                    self._refresh(conn, now, key)
                else:  # the marks are not read again there: one round trip fewer (see the class)
                    with self._snapshot() as snap:
                        self._refresh(snap, now, key)
            return self._values

    def _newer(self, now: tuple[Any, ...]) -> bool:
        """The values already reflect a later snapshot than ``now`` (another request's)."""
        if self._marks is None:
            return False
        return all((m or 0) <= (s or 0) for m, s in zip(now, self._marks, strict=True))

    def _refresh(self, conn: sa.Connection, now: tuple[Any, ...], key: Any) -> None:
        changed = None if self._marks is None or key != self._key else _changed(conn, self._marks, now)
        if changed is None or len(changed) > FULL_REBUILD_ABOVE:
            self._values = self.load(conn, None, key)
            self._changed_all()
            self.rebuilds += 1
        else:
            fresh = self.load(conn, sorted(changed), key) if changed else {}
            before = {pk: self._values.get(pk) for pk in changed}
            values = dict(self._values)  # a new mapping: requests keep iterating the one they were given
            for pk in changed:
                if pk in fresh:
                    values[pk] = fresh[pk]
                else:
                    values.pop(pk, None)  # deleted, or no value any more
            self._values = values
            self._changed_some(before)
            self.updates += 1
        self._marks, self._key = now, key

    def _changed_all(self) -> None:
        """Called after every patient's value was loaded again."""

    def _changed_some(self, before: dict[int, V | None]) -> None:
        """Called after the patients of ``before`` (their earlier values) were loaded again."""


class RosterView:
    """One state of the roster: every patient's facts in list order (centre, then patient id) and, in
    the same order, columns of what the list filters on, so that a filter is a few array operations
    instead of a Python test per patient (10,000 patients: a stage filter 0.6-1.5 ms → 0.01-0.1 ms).
    Never changed once built: a refresh builds a new one (:meth:`replaced`), so a request keeps a
    consistent state while others refresh."""

    __slots__ = ("_ids", "_starts", "centre_code", "centres", "dead", "line_open", "news", "operated", "ordered",
                 "position", "progressed", "resected")

    def __init__(self, ordered: list[Facts]) -> None:
        self.ordered = ordered
        self.position = {f.pk: i for i, f in enumerate(ordered)}
        self.centres = sorted({f.centre for f in ordered})
        code = {c: i for i, c in enumerate(self.centres)}
        self.centre_code = np.array([code[f.centre] for f in ordered], dtype=np.int32)
        columns = list(zip(*(_columns(f) for f in ordered), strict=True)) or [()] * 6
        self.operated, self.resected, self.progressed, self.dead, self.line_open = (
            np.array(c, dtype=bool) for c in columns[:5])
        self.news = np.array(columns[5], dtype=np.int32)
        #: the lower-cased patient ids joined by NUL, and where each starts (:meth:`_search`)
        ids = [f.patient_id.lower() for f in ordered]
        self._ids = "\0".join(ids)
        self._starts = list(itertools.accumulate((len(i) + 1 for i in ids[:-1]), initial=0)) if ids else []

    def replaced(self, changes: dict[int, Facts]) -> RosterView:
        """A new view with ``changes`` (pk → facts, each in the place it holds: same centre and id)."""
        new = object.__new__(RosterView)
        new.ordered = list(self.ordered)
        new.position, new.centres, new.centre_code = self.position, self.centres, self.centre_code
        new._ids, new._starts = self._ids, self._starts
        arrays = [a.copy() for a in (self.operated, self.resected, self.progressed, self.dead, self.line_open,
                                     self.news)]
        for pk, facts in changes.items():
            i = self.position[pk]
            new.ordered[i] = facts
            for array, value in zip(arrays, _columns(facts), strict=True):
                array[i] = value
        (new.operated, new.resected, new.progressed, new.dead, new.line_open, new.news) = arrays
        return new

    def select(self, *, centres: frozenset[str] | None = None, centre: str = "", needle: str = "",
               stage: str = "", today: dt.date, horizon_weeks: int) -> Sequence[int]:
        """Positions (in list order) of the patients of ``centres`` (``None``: every centre), of
        ``centre``, whose lower-cased id contains ``needle`` and who are at pathway ``stage``
        (a name of :data:`oncosurg.web.services.patients.STAGE_FILTERS`; ``""``: any)."""
        n = len(self.ordered)
        if not (centres is not None or centre or needle or stage):
            return range(n)
        positions = self._search(needle) if needle else None
        mask = np.ones(n, dtype=bool) if positions is None else np.zeros(n, dtype=bool)
        if positions is not None:
            mask[positions] = True
        if centres is not None:
            mask &= np.isin(self.centre_code, [i for i, c in enumerate(self.centres) if c in centres])
        if centre:
            mask &= self.centre_code == (self.centres.index(centre) if centre in self.centres else -1)
        if stage:
            news_within = self.news >= today.toordinal() - 7 * horizon_weeks
            mask &= {"on_cetuximab": lambda: self.line_open & news_within,
                     "status_unknown": lambda: self.line_open & ~news_within,
                     "operated": lambda: self.operated, "resected": lambda: self.resected,
                     "progressed": lambda: self.progressed, "deceased": lambda: self.dead,
                     "alive": lambda: ~self.dead}[stage]()
        return np.flatnonzero(mask)

    def _search(self, needle: str) -> list[int]:
        """Positions whose lower-cased id contains ``needle``: ``str.find`` over the joined ids, one
        step per patient found (a match cannot span two ids: the separator is not in the needle)."""
        if "\0" in needle:
            return [i for i, f in enumerate(self.ordered) if needle in f.patient_id.lower()]
        ids, starts, found = self._ids, self._starts, []
        at = ids.find(needle)
        while at != -1:
            i = bisect.bisect_right(starts, at) - 1
            found.append(i)
            if i + 1 >= len(starts):
                break
            at = ids.find(needle, starts[i + 1])
        return found


def _columns(f: Facts) -> tuple[bool, bool, bool, bool, bool, int]:
    """operated, resected, progressed, dead, rescue line open, ordinal of the latest news (0: none):
    :func:`~oncosurg.web.services.worklist.last_news` and ``status_unknown`` as arrays (that module
    imports this one)."""
    news = [d for d in (f.last_contact_date, f.last_review) if d is not None]
    return (f.surgery_date is not None, f.surgery_type == "hepatectomy", f.progression_date is not None,
            f.death_date is not None, f.surgery_date is None and f.death_date is None and f.stop_date is None,
            max(news).toordinal() if news else 0)


class Roster(AuditFollower[Facts]):
    """The list facts of every patient, and their order (centre, then patient id), as a
    :class:`RosterView`.  The facts are one statement (:func:`facts_select`): a refresh needs no
    ``snapshot``, the request's connection reads them (on PostgreSQL 2 round trips after a change, not 5)."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        super().__init__(snapshot)
        self._view = RosterView([])
        self._some: sa.Select | None = None  # the facts of some patients (ids bound at run time)

    def view(self, conn: sa.Connection, *, seen: tuple[Any, ...] | None = None) -> RosterView:
        """The roster current as of ``conn``'s snapshot or newer (``seen``: see :meth:`AuditFollower.current`)."""
        self.current(conn, seen=seen)
        return self._view

    def patients(self, conn: sa.Connection, *, seen: tuple[Any, ...] | None = None) -> list[Facts]:
        """Every patient's facts ordered by centre then patient id, current as of ``conn``'s snapshot
        (or newer; ``seen``: see :meth:`AuditFollower.current`).  Do not modify the list."""
        return self.view(conn, seen=seen).ordered

    def load(self, conn: sa.Connection, pks: list[int] | None, key: Any = None) -> dict[int, Facts]:
        if pks is None:
            return {row.pk: row for row in (Facts(*r) for r in conn.execute(facts_select()))}
        if self._some is None:  # built once: building the projection costs more than running it for a few
            self._some = facts_select(sa.bindparam("pks", expanding=True))
        out: dict[int, Facts] = {}
        for start in range(0, len(pks), 500):
            out.update((row[0], Facts(*row)) for row in conn.execute(self._some, {"pks": pks[start:start + 500]}))
        return out

    def _changed_all(self) -> None:
        self._sort()

    def _changed_some(self, before: dict[int, Facts | None]) -> None:
        changes: dict[int, Facts] = {}
        for pk, old in before.items():
            new = self._values.get(pk)
            if old is None and new is None:
                continue
            if old is None or new is None or old.order != new.order:
                self._sort()  # a patient added, deleted, renamed or moved to another centre: sort again
                return
            changes[pk] = new  # same place in the order
        if changes:
            self._view = self._view.replaced(changes)

    def _sort(self) -> None:
        self._view = RosterView(sorted(self._values.values(), key=lambda f: f.order))


_APPENDED = (sa.select(t.audit_log.c.patient_pk, t.audit_log.c.entity)
             .where(t.audit_log.c.id > sa.bindparam("after"), t.audit_log.c.id <= sa.bindparam("upto"))
             .group_by(t.audit_log.c.patient_pk, t.audit_log.c.entity))


def _changed(conn: sa.Connection, before: tuple[Any, ...], now: tuple[Any, ...]) -> set[int] | None:
    """Patients named by the audit rows appended between ``before`` and ``now``; ``None`` when the
    change cannot be told from the trail (load everything again)."""
    last_before, last_now = before[0] or 0, now[0] or 0
    if last_now < last_before or (last_now == last_before and before[1:] != now[1:]):
        return None  # the registry moved without audit rows
    rows = conn.execute(_APPENDED, {"after": last_before, "upto": last_now}).all()
    if any(pk is None and entity != "app_user" for pk, entity in rows):
        return None
    return {pk for pk, _ in rows if pk is not None}


__all__ = ["FACT_COLUMNS", "AuditFollower", "Facts", "Roster", "RosterView", "Snapshot", "centres_and_marks",
           "facts_select", "marks"]
