r"""Writing validated records into the store, in one transaction, and reading them back.

Two entry points write, both all-or-nothing (any refusal or exception rolls the whole file back):

* :func:`import_records` takes flat registry rows (the 33-column CSV and the formats that map onto it):
  a new patient becomes its episodes (:func:`oncosurg.pathway.flat.from_flat`); an update changes the
  episodes of the flat projection (:func:`oncosurg.pathway.update.flat_update_plan`);
* :func:`import_patients` takes :class:`~oncosurg.pathway.flat.PatientRecord`\ s (the long format and
  the episode formats); an update changes only what the record carries
  (:func:`oncosurg.pathway.update.plan_update`).

Records are written in batches of patients inside the one transaction; every stored patient an update
touches is checked with the rules on the merged result before anything is written for it.  Each change
enters the hash-chained audit trail and ``change_log``; a new patient's audit row carries its whole
record.  :func:`registry_select` is the flat row of every patient (the SQL projection).
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedRecord
from oncosurg.pathway.flat import PatientRecord, from_flat, to_flat
from oncosurg.pathway.model import TABLE_BY_NAME, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.pathway.update import Change, UpdatePlan, flat_update_plan, merged, plan_update
from oncosurg.rules import X_ALREADY_REGISTERED, X_CLEARS, X_DERIVED_GRADE, Issue, check_record
from oncosurg.schema import COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.episodes import apply_update, insert_records, read_records
from oncosurg.store.projection import flat_select

BATCH = 1000


@dataclass(slots=True)
class ImportResult:
    """What an import did (or, when ``issues`` is non-empty, refused to do)."""

    batch_id: int | None = None
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changes: list[tuple[str, str, str, Any, Any]] = field(default_factory=list)  # centre, id, field, old, new
    issues: list[Issue] = field(default_factory=list)


def import_records(
    engine: sa.Engine,
    records: Sequence[ParsedRecord],
    *,
    source: str,
    sha256: str,
    rows: int,
    update: bool = False,
    allow_clear: bool = True,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    actor: audit.Actor | None = None,
) -> ImportResult:
    """Write flat registry rows in one transaction; refuse everything if any patient is already
    registered (unless ``update``) or any merged record breaks a rule.

    With ``update`` a row changes only the columns it carries (``record.values``): the episodes of
    the patient's flat projection, never the episodes the flat row cannot show.
    """
    def patients() -> Iterator[_Incoming]:
        for record in records:
            values = record.values
            yield _Incoming(values["centre"], values["patient_id"], record.line, flat=values)

    return _import(engine, patients(), source=source, sha256=sha256, rows=rows, update=update,
                   allow_clear=allow_clear, postop_window_days=postop_window_days, actor=actor)


def import_patients(
    engine: sa.Engine,
    records: Iterable[PatientRecord],
    *,
    source: str,
    sha256: str,
    rows: int,
    update: bool = False,
    allow_clear: bool = True,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    actor: audit.Actor | None = None,
) -> ImportResult:
    """Write patients with their episodes in one transaction (see :func:`import_records`); records
    are consumed once, in batches, so a large file never sits in memory."""
    def patients() -> Iterator[_Incoming]:
        for record in records:
            where = record.where.get((Table.PATIENT, (record.patient_id,)), (None, None))
            yield _Incoming(record.centre, record.patient_id, where[1], record=record)

    return _import(engine, patients(), source=source, sha256=sha256, rows=rows, update=update,
                   allow_clear=allow_clear, postop_window_days=postop_window_days, actor=actor)


@dataclass(slots=True)
class _Incoming:
    centre: str
    patient_id: str
    line: int | None
    flat: dict[str, Any] | None = None
    record: PatientRecord | None = None

    def complete(self) -> PatientRecord:
        return self.record if self.record is not None else from_flat(self.flat or {})


def _import(engine: sa.Engine, incoming: Iterable[_Incoming], *, source: str, sha256: str, rows: int,
            update: bool, allow_clear: bool, postop_window_days: int, actor: audit.Actor | None) -> ImportResult:
    actor = actor or audit.Actor(None, f"cli:{_os_user()}")
    result = ImportResult()
    with engine.begin() as conn:
        now = dt.datetime.now(dt.UTC)
        batch_id = conn.execute(
            sa.insert(t.import_batch).values(source=source[:500], sha256=sha256, mode="update" if update else "insert",
                                             rows=rows, created=0, updated=0, imported_at=now)
        ).inserted_primary_key[0]
        writer = _Writer(conn, actor, batch_id, source, sha256, update=update, allow_clear=allow_clear,
                         window=postop_window_days, result=result)
        chunk: list[_Incoming] = []
        for item in incoming:
            chunk.append(item)
            if len(chunk) >= BATCH:
                writer.batch(chunk)
                chunk = []
        writer.batch(chunk)
        if result.issues:
            conn.rollback()
            result.batch_id = None
            return result
        result.batch_id = batch_id
        conn.execute(sa.update(t.import_batch).where(t.import_batch.c.id == batch_id)
                     .values(created=result.created, updated=result.updated))
    return result


class _Writer:
    """Writes batches of incoming patients; once an issue is found it only keeps checking."""

    def __init__(self, conn: sa.Connection, actor: audit.Actor, batch_id: int, source: str, sha256: str, *,
                 update: bool, allow_clear: bool, window: int, result: ImportResult) -> None:
        self.conn, self.actor, self.batch_id = conn, actor, batch_id
        self.update, self.allow_clear, self.window, self.result = update, allow_clear, window, result
        self.note = f"import batch {batch_id}{' (--update)' if update else ''}: {source[:200]} (sha256 {sha256[:12]})"
        self.centre_ids: dict[str, int] = {}

    def batch(self, chunk: list[_Incoming]) -> None:
        if not chunk:
            return
        conn, result = self.conn, self.result
        self.centre_ids.update(_centre_ids(conn, {i.centre for i in chunk} - set(self.centre_ids)))
        existing = _existing_keys(conn, [(self.centre_ids.get(i.centre), i.patient_id) for i in chunk])
        new: list[_Incoming] = []
        old: list[tuple[_Incoming, int]] = []
        for item in chunk:
            pk = existing.get((self.centre_ids.get(item.centre), item.patient_id))
            if pk is None:
                new.append(item)
            elif not self.update:
                result.issues.append(Issue(
                    X_ALREADY_REGISTERED.code, f"patient already registered in centre '{item.centre}'",
                    "use `oncosurg import --update` to change registered patients, or fix the patient_id",
                    item.line, "patient_id", item.patient_id))
            else:
                old.append((item, pk))
        plans = self._plans(old)
        if result.issues:
            return
        if new:
            records = [i.complete() for i in new]
            for name in {r.centre for r in records}:
                _ensure_centre(conn, self.centre_ids, name)
            pks = insert_records(conn, t.EPISODES, records, centre_ids=self.centre_ids,
                                 patient_extra={"import_batch_id": self.batch_id})
            result.created += len(pks)
            audit.append(conn, actor=self.actor, entries=[
                {"action": "create", "entity": "patient", "entity_id": pk, "patient_pk": pk, "centre": r.centre,
                 "patient_id": r.patient_id, "new_value": snapshot(r), "reason": self.note, "version": 1}
                for pk, r in zip(pks, records, strict=True)])
        for (item, pk), (plan, flat_before, flat_after) in zip(old, plans, strict=True):
            if not plan:
                result.unchanged += 1
                continue
            flat_diff = [(c, flat_before.get(c), flat_after.get(c)) for c in COLUMNS
                         if flat_before.get(c) != flat_after.get(c)]
            log = flat_diff if item.flat is not None else None
            write_plan(conn, pk, plan, actor=self.actor, centre=item.centre, patient_id=item.patient_id,
                       reason=self.note, batch_id=self.batch_id, log=log)
            result.changes += [(item.centre, item.patient_id, c, old, new) for c, old, new in flat_diff]
            result.updated += 1

    def _plans(self, old: list[tuple[_Incoming, int]]) -> list[tuple[UpdatePlan, dict[str, Any], dict[str, Any]]]:
        """Plan every update of the batch and check the merged records (issues go to the result)."""
        if not old:
            return []
        stored = read_records(self.conn, t.EPISODES, t.centre, [pk for _, pk in old])
        out = []
        for item, pk in old:
            before = stored[pk]
            plan = flat_update_plan(before, item.flat) if item.flat is not None else plan_update(before, item.record)
            after = merged(before, plan)
            flat_before, flat_after = to_flat(before), to_flat(after)
            for column, message, hint in plan.refusals:
                self.result.issues.append(Issue(X_DERIVED_GRADE.code, message, hint, item.line, column,
                                                audit.text((item.flat or {}).get(column))))
            if plan.clears and not self.allow_clear:
                listed = ", ".join(f"{c} ({audit.text(v)})" for c, v in plan.clears)
                self.result.issues.append(Issue(
                    X_CLEARS.code, f"the update would clear {len(plan.clears)} stored value(s): {listed}",
                    "leave the cells out of the file to keep the values, or pass --allow-clear to empty them",
                    item.line, plan.clears[0][0]))
            if item.flat is not None:  # the flat rules judge the row the user sees: the stored row overlaid
                overlay = {**flat_before, **item.flat}
                self.result.issues += check_record(overlay, line=item.line, postop_window_days=self.window)
            self.result.issues += [i for i in check_patient(after, postop_window_days=self.window)
                                   if item.flat is None or not _shown_by_flat(i)]
            out.append((plan, flat_before, flat_after))
        return out


def _shown_by_flat(issue: Issue) -> bool:
    """Whether an episode rule's finding is already a flat rule's (the flat row checks its own columns)."""
    return issue.code in ("E604", "E608", "E609")


def snapshot(record: PatientRecord) -> str:
    """A patient's whole record as canonical JSON (the audit trail's value of a created patient)."""
    body: dict[str, Any] = {"patient": {k: audit.text(v) for k, v in record.patient.items()}}
    for table, rows in sorted(record.episodes.items()):
        if rows:
            body[table.value] = [{k: audit.text(v) for k, v in row.items()} for row in rows]
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def write_plan(conn: sa.Connection, pk: int, plan: UpdatePlan, *, actor: audit.Actor, centre: str,
               patient_id: str, reason: str, batch_id: int | None = None,
               log: Sequence[tuple[str, Any, Any]] | None = None) -> int:
    """Apply ``plan`` to patient ``pk``: bump its version, audit every row created, changed or removed
    and, for an import (``batch_id``), record the changes in ``change_log`` — ``log`` (field, old, new)
    when given (a flat import logs flat columns), else one row per episode change; returns the new
    version."""
    done = apply_update(conn, t.EPISODES, pk, plan)
    conn.execute(sa.update(t.patient).where(t.patient.c.id == pk)
                 .values(version=t.patient.c.version + 1,
                         **({"import_batch_id": batch_id} if batch_id is not None else {})))
    version = conn.execute(sa.select(t.patient.c.version).where(t.patient.c.id == pk)).scalar_one()
    entries = [_audit_entry(change, row_id, pk=pk, centre=centre, patient_id=patient_id, reason=reason,
                            version=version) for change, row_id in done]
    audit.append(conn, actor=actor, entries=entries)
    if batch_id is not None:
        rows = ([(f, audit.text(o), audit.text(n)) for f, o, n in log] if log is not None else
                [(e["entity"] + "." + (e["field"] or "*"), e["old_value"], e["new_value"]) for e in entries])
        if rows:
            conn.execute(sa.insert(t.change_log), [{"import_batch_id": batch_id, "patient_pk": pk, "field": f,
                                                    "old_value": o, "new_value": n} for f, o, n in rows])
    return version


def _audit_entry(change: Change, row_id: int, *, pk: int, centre: str, patient_id: str, reason: str,
                 version: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": change.action, "entity": change.table.value, "entity_id": row_id,
                             "patient_pk": pk, "centre": centre, "patient_id": patient_id, "reason": reason,
                             "version": version, "field": change.column}
    if change.action == "update":
        entry |= {"old_value": audit.text(change.old), "new_value": audit.text(change.new)}
    elif change.action == "create":
        entry["new_value"] = _row_json(change.table, change.new)
    else:
        entry["old_value"] = _row_json(change.table, change.old)
    return entry


def _row_json(table: Table, row: Mapping[str, Any] | None) -> str:
    spec = TABLE_BY_NAME[table]
    return json.dumps({f.name: audit.text((row or {}).get(f.name)) for f in spec.fields}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _centre_ids(conn: sa.Connection, names: set[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = conn.execute(sa.select(t.centre.c.name, t.centre.c.id).where(t.centre.c.name.in_(sorted(names))))
    return {name: cid for name, cid in rows}


def _ensure_centre(conn: sa.Connection, ids: dict[str, int], name: str) -> int:
    if name not in ids:
        ids[name] = conn.execute(sa.insert(t.centre).values(name=name)).inserted_primary_key[0]
    return ids[name]


def _existing_keys(conn: sa.Connection, keys: Sequence[tuple[int | None, str]]) -> dict[tuple[int | None, str], int]:
    found: dict[tuple[int | None, str], int] = {}
    wanted = sorted({pid for _, pid in keys})
    for start in range(0, len(wanted), 500):
        ids = wanted[start : start + 500]
        query = sa.select(t.patient.c.centre_id, t.patient.c.patient_id, t.patient.c.id).where(
            t.patient.c.patient_id.in_(ids))
        for centre_id, pid, pk in conn.execute(query):
            found[(centre_id, pid)] = pk
    return found


def write_stages(conn: sa.Connection, pk: int, record: Mapping[str, Any], *, actor: audit.Actor | None = None,
                 source: str = "registry CSV") -> UpdatePlan:
    """Bring a patient's flat projection to ``record`` (the flat columns it holds; the web app's cards),
    changing only the episodes the flat row shows.  Refusals (``plan.refusals``) are the caller's to
    report; with an ``actor`` the changes enter the audit trail here."""
    stored = read_records(conn, t.EPISODES, t.centre, [pk])[pk]
    plan = flat_update_plan(stored, {k: v for k, v in record.items() if k in COLUMNS})
    if plan.refusals or not plan:
        return plan
    if actor is None:
        apply_update(conn, t.EPISODES, pk, plan)
    else:
        write_plan(conn, pk, plan, actor=actor, centre=stored.centre, patient_id=stored.patient_id, reason=source)
    return plan


def registry_select() -> sa.Select:
    """One row per patient with every flat registry column (the CSV's shape), projected from the episodes."""
    return flat_select(t.EPISODES, t.centre)


def read_record(conn: sa.Connection, pk: int) -> dict[str, Any]:
    """The flat registry columns of one patient."""
    row = conn.execute(registry_select().where(t.patient.c.id == pk)).mappings().one()
    return {c: row[c] for c in COLUMNS}


def iter_records(conn: sa.Connection, *, centre: str | None = None) -> Iterator[dict[str, Any]]:
    """Every patient's flat registry columns, ordered by centre then patient_id."""
    query = registry_select().order_by(t.centre.c.name, t.patient.c.patient_id)
    if centre is not None:
        query = query.where(t.centre.c.name == centre)
    for row in conn.execute(query).mappings():
        yield {c: row[c] for c in COLUMNS}


def count_patients(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
