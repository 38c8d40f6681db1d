"""Large imports without long write locks: validate on a snapshot, stage, then one short swap.

An import of thousands of patients (``oncosurg import``, a confirmed web upload) stays all or nothing
without making anyone else wait for it:

1. the caller validates the file against a read snapshot (no lock) and hands :func:`write` the new
   records and the planned updates, each update with the patient version it was validated against;
2. :func:`write` reserves the new patients' ids (:func:`reserve_ids`; never reused), builds every
   row in Python and copies them in batches into temporary tables of its own connection: nothing is
   visible to anyone and no write lock is held;
3. one short write transaction, the swap, checks that nothing changed meanwhile (every planned
   patient still at its validated version, no new patient_id registered by someone else), then moves
   the rows with a few set-based statements (``INSERT … SELECT``, ``UPDATE … FROM``), applies the
   complication plans and appends the audit rows.  Any failure rolls the swap back; the temporary
   tables are dropped either way.

Audit: one ``create`` row per new patient (field ``record``, its values as canonical JSON in
``new_value``: :func:`oncosurg.store.audit_state.record_values`), one ``update`` row per changed field
(old → new), and one row per field of each complication row added, changed or removed
(:func:`oncosurg.store.complications.entries`), the rows standing for new patients' worst grades
included (their ids are reserved with the patients'), so that ``oncosurg audit verify`` can
recompute every patient's state (:mod:`oncosurg.store.audit_state`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.schema import CLAVIEN_DINDO, FIELD_BY_NAME, FIELDS, Stage
from oncosurg.store import audit, audit_state, complications
from oncosurg.store import tables as t
from oncosurg.store.engine import begin_immediate

PATIENT_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in FIELDS if f.stage is Stage.PATIENT and f.name not in ("patient_id", "centre"))
_REQUIRED_STAGES = (Stage.PRIOR_CHEMO, Stage.CETUXIMAB, Stage.FOLLOW_UP)


@dataclass(slots=True)
class Update:
    """A registered patient to update, as validated: its pk, the version it was validated at, the
    record after the update (``merged``), the changed fields and its complication rows."""

    pk: int
    version: int
    centre: str
    patient_id: str
    merged: Mapping[str, Any]
    diff: Sequence[tuple[str, Any, Any]]
    items: Sequence[complications.Complication] = ()
    line: int | None = None


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The ``import_batch`` row of a command-line import (``None`` for web uploads)."""

    source: str
    sha256: str
    mode: str
    rows: int


@dataclass(slots=True)
class Written:
    """What the swap wrote, and how long each step took (seconds; ``swap`` is the write lock's)."""

    batch_id: int | None = None
    created: list[int] = field(default_factory=list)  # new pks, in the order of the records
    updated: int = 0
    applied: list[Update] = field(default_factory=list)  # the updates written (re-planned ones as re-planned)
    replanned: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


#: Checks updates of patients edited since validation again, under the swap's lock: given the pks,
#: returns their updates (as :class:`Update`, an empty diff meaning nothing left to change), or
#: raises :class:`Refused` with the rules they now break.
Replan = Callable[[sa.Connection, Sequence[int]], Sequence[Update]]


class Refused(Exception):
    """Updates re-checked in the swap now break a rule (``issues``); nothing was written."""

    def __init__(self, issues: list[Any]) -> None:
        super().__init__(f"{len(issues)} problem(s)")
        self.issues = issues


class Changed(Exception):
    """The registry changed between validation and the swap (nothing was written)."""

    def __init__(self, message: str, *, stale: list[str], taken: list[str]) -> None:
        super().__init__(message)
        self.stale, self.taken = stale, taken


def stage_rows(pk: int, values: Mapping[str, Any], *, source: str = "registry CSV"
               ) -> dict[sa.Table, list[dict[str, Any]]]:
    """The stage-table rows of one patient (only stages with something recorded; stages the pathway
    requires always), and the complication row standing for its worst grade."""
    out: dict[sa.Table, list[dict[str, Any]]] = {}
    for stage, table in t.STAGE_TABLES.items():
        row = {f.name: values.get(f.name) for f in FIELDS if f.stage is stage}
        if stage is Stage.SURGERY:
            if values.get("surgery_date") is None:
                continue
            row["complications_assessed"] = values.get("clavien_dindo_max") is not None
        elif stage not in _REQUIRED_STAGES and all(v is None for v in row.values()):
            continue
        out[table] = [{"patient_pk": pk, **row}]
    if _has_stand_in(values):
        out[t.complication] = [{"patient_pk": pk, **complications.stand_in(values["clavien_dindo_max"], source)}]
    return out


def _has_stand_in(values: Mapping[str, Any]) -> bool:
    """Whether a flat record's worst grade needs a complication row standing for it (not empty or ``none``)."""
    return values.get("clavien_dindo_max") not in (None, "none")


def reserve_ids(conn: sa.Connection, table: sa.Table, count: int) -> list[int]:
    """``count`` fresh ids of ``table`` (inside the caller's write transaction on SQLite: it moves
    ``sqlite_sequence``; PostgreSQL's ``nextval`` never gives an id twice, committed or not).  Ids
    reserved by an import that fails are skipped, never reused."""
    if count <= 0:
        return []
    if conn.dialect.name == "postgresql":
        sequence = sa.func.pg_get_serial_sequence(table.name, "id")
        query = sa.select(sa.func.nextval(sequence)).select_from(sa.func.generate_series(1, count))
        return [int(v) for v in conn.execute(query).scalars()]
    seq = sa.table("sqlite_sequence", sa.column("name", sa.String), sa.column("seq", sa.Integer))
    last = conn.execute(sa.select(seq.c.seq).where(seq.c.name == table.name)).scalar()
    highest = conn.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0
    start = max(last or 0, highest)
    if last is None:
        conn.execute(sa.insert(seq).values(name=table.name, seq=start + count))
    else:
        conn.execute(sa.update(seq).where(seq.c.name == table.name).values(seq=start + count))
    return list(range(start + 1, start + count + 1))


def created_entries(pks: Sequence[int], creates: Sequence[Mapping[str, Any]], stand_ins: Mapping[int, int], *,
                    note: str, source: str) -> list[dict[str, Any]]:
    """The audit entries of new patients: per patient its ``create`` row (field ``record``, the values
    as JSON) and the entries of the complication row standing for its worst grade (``stand_ins``:
    pk → that row's reserved id)."""
    out: list[dict[str, Any]] = []
    for pk, values in zip(pks, creates, strict=True):
        head = {"patient_pk": pk, "centre": values["centre"], "patient_id": values["patient_id"], "reason": note,
                "version": 1}
        out.append(head | {"action": "create", "entity": "patient", "entity_id": pk, "field": "record",
                           "new_value": audit_state.dumps(audit_state.record_values(values))})
        if pk in stand_ins:
            row = complications.stand_in(values["clavien_dindo_max"], source)
            out += [head | e for e in complications.entries("create", stand_ins[pk], None, row)]
    return out


class _Staging:
    """Temporary tables of one connection mirroring the tables an import writes."""

    def __init__(self) -> None:
        self.metadata = sa.MetaData()
        def patient_cols() -> list[sa.Column]:
            return [sa.Column(c, t.patient.c[c].type) for c in PATIENT_COLUMNS]

        self.new = sa.Table("tmp_new_patient", self.metadata, sa.Column("id", sa.Integer),
                            sa.Column("centre_name", sa.String(120)), sa.Column("patient_id", sa.String(64)),
                            *patient_cols(), prefixes=["TEMPORARY"])
        self.upd = sa.Table("tmp_updated_patient", self.metadata, sa.Column("id", sa.Integer),
                            sa.Column("version", sa.Integer), sa.Column("patient_id", sa.String(64)),
                            *patient_cols(), prefixes=["TEMPORARY"])
        self.stages = {table: sa.Table(f"tmp_{table.name}", self.metadata,
                                       *[sa.Column(c.name, c.type) for c in table.columns], prefixes=["TEMPORARY"])
                       for table in t.STAGE_TABLES.values()}
        columns = ("id", "patient_pk", "grade", "grade_rank", "description", "from_worst_grade")
        self.complication = sa.Table("tmp_complication", self.metadata,
                                     *[sa.Column(c, t.complication.c[c].type) for c in columns],
                                     prefixes=["TEMPORARY"])
        self.change_log = sa.Table("tmp_change_log", self.metadata,
                                   *[sa.Column(c, t.change_log.c[c].type)
                                     for c in ("patient_pk", "field", "old_value", "new_value")],
                                   prefixes=["TEMPORARY"])

    @contextlib.contextmanager
    def on(self, conn: sa.Connection) -> Iterator[_Staging]:
        self.metadata.drop_all(conn, checkfirst=True)
        self.metadata.create_all(conn)
        conn.commit()
        try:
            yield self
        finally:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.rollback()
                self.metadata.drop_all(conn, checkfirst=True)
                conn.commit()

    @staticmethod
    def fill(conn: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], chunk: int) -> None:
        for i in range(0, len(rows), chunk):
            conn.execute(sa.insert(table), list(rows[i:i + chunk]))


def write(
    engine: sa.Engine,
    *,
    creates: Sequence[Mapping[str, Any]],
    updates: Sequence[Update],
    actor: audit.Actor,
    create_note: str,
    update_note: str,
    batch: BatchInfo | None = None,
    source: str = "registry CSV",
    serial: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
    replan: Replan | None = None,
    chunk: int = 1000,
) -> Written:
    """Write validated new records and updates all or nothing, holding the write lock only for the
    swap (see the module docstring).

    Patients edited between validation and the swap are checked again under the swap's lock with
    ``replan`` (their new diff is applied; :class:`Refused` if they now break a rule); without
    ``replan``, or when a planned patient was deleted or a new patient_id registered meanwhile,
    :class:`Changed` is raised and nothing is written.  ``serial`` wraps the write transactions
    (the web app's one-writer-per-process turn).
    """
    sqlite = engine.dialect.name == "sqlite"
    staging = _Staging()
    out = Written()
    stand_ins: dict[int, int] = {}
    clock = time.perf_counter()
    with engine.connect() as conn:
        if creates:
            with serial(), conn.begin():
                if sqlite:
                    begin_immediate(conn)
                out.created = reserve_ids(conn, t.patient, len(creates))
                graded = [pk for pk, v in zip(out.created, creates, strict=True) if _has_stand_in(v)]
                stand_ins = dict(zip(graded, reserve_ids(conn, t.complication, len(graded)), strict=True))
        created = created_entries(out.created, creates, stand_ins, note=create_note, source=source)
        with staging.on(conn):
            _stage(conn, staging, creates, out.created, updates, source=source, chunk=chunk, stand_ins=stand_ins)
            out.seconds["stage"] = time.perf_counter() - clock
            with serial(), conn.begin():
                locked = time.perf_counter()
                if sqlite:
                    begin_immediate(conn)
                else:
                    conn.execute(sa.select(t.audit_head.c.id).where(t.audit_head.c.id == 1).with_for_update())
                _swap(conn, staging, created, out, list(updates), actor=actor, update_note=update_note,
                      batch=batch, source=source, replan=replan, chunk=chunk)
            out.seconds["swap"] = time.perf_counter() - locked
    return out


def _stage(conn: sa.Connection, staging: _Staging, creates: Sequence[Mapping[str, Any]], pks: Sequence[int],
           updates: Sequence[Update], *, source: str, chunk: int, transaction: bool = True,
           stand_ins: Mapping[int, int] | None = None) -> None:
    """Copy every row to write into the temporary tables (no lock on the registry's tables); the
    complication rows of new patients get their reserved ids (``stand_ins``: pk → id)."""
    ids = stand_ins or {}
    new_rows, upd_rows, logs = [], [], []
    grouped: dict[sa.Table, list[dict[str, Any]]] = {}
    for pk, values in zip(pks, creates, strict=True):
        new_rows.append({"id": pk, "centre_name": values["centre"], "patient_id": values["patient_id"],
                         **{c: values.get(c) for c in PATIENT_COLUMNS}})
        for table, rows in stage_rows(pk, values, source=source).items():
            if table is t.complication:
                rows = [row | {"id": ids[pk]} for row in rows]
            grouped.setdefault(table, []).extend(rows)
    for u in updates:
        upd_rows.append({"id": u.pk, "version": u.version, "patient_id": u.merged.get("patient_id"),
                         **{c: u.merged.get(c) for c in PATIENT_COLUMNS}})
        for table, rows in stage_rows(u.pk, u.merged, source=source).items():
            if table is not t.complication:  # complications follow their plan (never replaced)
                grouped.setdefault(table, []).extend(rows)
        logs += [{"patient_pk": u.pk, "field": c, "old_value": audit.text(o), "new_value": audit.text(n)}
                 for c, o, n in u.diff]
    with conn.begin() if transaction else contextlib.nullcontext():
        staging.fill(conn, staging.new, new_rows, chunk)
        staging.fill(conn, staging.upd, upd_rows, chunk)
        for table, rows in grouped.items():
            target = staging.complication if table is t.complication else staging.stages[table]
            staging.fill(conn, target, rows, chunk)
        staging.fill(conn, staging.change_log, logs, chunk)


def _check_unchanged(conn: sa.Connection, staging: _Staging, updates: list[Update], *, replan: Replan | None,
                     source: str, chunk: int) -> int:
    """Refuse (:class:`Changed`) if a new patient_id was registered or a planned patient deleted
    meanwhile; re-plan the patients edited meanwhile (their staged rows are replaced; ``updates``
    is changed in place).  Returns how many were re-planned."""
    p, u, n, c = t.patient, staging.upd, staging.new, t.centre
    moved = conn.execute(sa.select(u.c.id, u.c.patient_id, p.c.id.is_(None)).select_from(
        u.outerjoin(p, p.c.id == u.c.id)).where(sa.or_(p.c.id.is_(None), p.c.version != u.c.version))
        .order_by(u.c.patient_id)).all()
    gone = [pid for _, pid, deleted in moved if deleted]
    stale = [pid for _, pid, _ in moved][:20] if replan is None else gone[:20]
    taken = conn.execute(sa.select(n.c.centre_name, n.c.patient_id)
                         .join(c, c.c.name == n.c.centre_name)
                         .join(p, sa.and_(p.c.centre_id == c.c.id, p.c.patient_id == n.c.patient_id))
                         .order_by(n.c.patient_id).limit(20)).all()
    if not (stale or taken):
        if moved and replan is not None:
            pks = [pk for pk, _, _ in moved]
            fresh = [f for f in replan(conn, pks) if f.diff]
            for tmp in (staging.upd, *staging.stages.values(), staging.change_log):
                key = tmp.c.id if tmp is staging.upd else tmp.c.patient_pk
                conn.execute(sa.delete(tmp).where(key.in_(pks)))
            _stage(conn, staging, [], [], fresh, source=source, chunk=chunk, transaction=False)
            keep = set(pks)
            updates[:] = [x for x in updates if x.pk not in keep] + fresh
        return len(moved)
        parts = []
        if stale:
            parts.append(f"changed or deleted meanwhile: {', '.join(stale)}")
        if taken:
            parts.append("registered meanwhile: " + ", ".join(f"{pid} ({centre})" for centre, pid in taken))
        raise Changed("the registry changed since the file was checked (" + "; ".join(parts) +
                      "); nothing was imported: check the file again", stale=list(stale),
                      taken=[pid for _, pid in taken])


def _swap(conn: sa.Connection, staging: _Staging, created: list[dict[str, Any]], out: Written,
          updates: list[Update], *, actor: audit.Actor, update_note: str, batch: BatchInfo | None, source: str,
          replan: Replan | None, chunk: int) -> None:
    """The short write transaction: checks, then set-based moves, complications, audit (``created``:
    the audit entries of the new patients, prepared before the lock)."""
    out.replanned = _check_unchanged(conn, staging, updates, replan=replan, source=source, chunk=chunk)
    p, n, u = t.patient, staging.new, staging.upd
    batch_id = None
    if batch is not None:
        batch_id = conn.execute(sa.insert(t.import_batch).values(
            source=batch.source[:500], sha256=batch.sha256, mode=batch.mode, rows=batch.rows, created=0, updated=0,
            imported_at=dt.datetime.now(dt.UTC))).inserted_primary_key[0]
        out.batch_id = batch_id
        update_note = update_note.replace("{batch}", str(batch_id))
        for entry in created:
            entry["reason"] = entry["reason"].replace("{batch}", str(batch_id))
    batch_value = sa.cast(sa.literal(batch_id), sa.Integer) if batch_id is not None else sa.null()
    if created:
        known = sa.select(t.centre.c.name)
        conn.execute(sa.insert(t.centre).from_select(
            ["name"], sa.select(n.c.centre_name).where(n.c.centre_name.not_in(known)).distinct()))
        conn.execute(sa.insert(p).from_select(
            ["id", "centre_id", "patient_id", *PATIENT_COLUMNS, "version", "import_batch_id"],
            sa.select(n.c.id, t.centre.c.id, n.c.patient_id, *[n.c[c] for c in PATIENT_COLUMNS],
                      sa.literal(1, sa.Integer), batch_value)
            .join(t.centre, t.centre.c.name == n.c.centre_name).order_by(n.c.id)))
    if updates:
        values: dict[str, Any] = {"version": p.c.version + 1, **{c: u.c[c] for c in PATIENT_COLUMNS}}
        if batch_id is not None:
            values["import_batch_id"] = batch_value
        conn.execute(sa.update(p).where(p.c.id == u.c.id).values(**values))
        for table in t.STAGE_TABLES.values():
            conn.execute(sa.delete(table).where(table.c.patient_pk.in_(sa.select(u.c.id))))
    for table, tmp in [*staging.stages.items(), (t.complication, staging.complication)]:
        columns = [c.name for c in tmp.columns]
        conn.execute(sa.insert(table).from_select(columns, sa.select(*tmp.columns)))
    if batch_id is not None:
        log = staging.change_log
        conn.execute(sa.insert(t.change_log).from_select(
            ["import_batch_id", "patient_pk", "field", "old_value", "new_value"],
            sa.select(batch_value, log.c.patient_pk, log.c.field, log.c.old_value, log.c.new_value)))
    entries = created
    for item in updates:
        head = {"patient_pk": item.pk, "centre": item.centre, "patient_id": item.patient_id,
                "reason": update_note, "version": item.version + 1}
        entries += [head | {"action": "update", "entity": FIELD_BY_NAME[c].stage.value, "entity_id": item.pk,
                            "field": c, "old_value": old, "new_value": new} for c, old, new in item.diff]
        grade = item.merged.get("clavien_dindo_max")
        if complications.plan(item.items, grade).changes:  # the rows as validated (the version held)
            entries += [head | e for e in complications.apply(conn, item.pk, grade, source=source)]
    out.updated, out.applied = len(updates), updates
    if batch_id is not None:
        conn.execute(sa.update(t.import_batch).where(t.import_batch.c.id == batch_id)
                     .values(created=len(out.created), updated=out.updated))
    audit.append(conn, actor=actor, entries=entries)


__all__ = ["CLAVIEN_DINDO", "BatchInfo", "Changed", "Refused", "Replan", "Update", "Written", "created_entries",
           "reserve_ids", "stage_rows", "write"]
