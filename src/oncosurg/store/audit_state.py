"""Each patient's state as the audit trail last recorded it, compared with the tables.

A patient's *state* is its whole record: the patient's fields and every episode row (therapy lines,
reviews, assessments, procedures, complications, pathology, events, contacts), as canonical JSON
with empty values left out (:func:`snapshot`; rows in key order, values as
:func:`oncosurg.store.audit.text`).  Every write leaves the state it produced in the trail, in the
same transaction, so ``oncosurg audit verify`` can compare the trail with the tables and catch a
direct edit of the database:

* a new patient's ``create`` row (field empty) carries its state (an import);
* every other change of a patient (web forms, items, imports with ``--update``, uploads) is
  followed by one ``state`` row (field ``state``) carrying the state after the change — written by
  :func:`oncosurg.store.audit.append` itself (:func:`state_entries`), so no write path can skip it;
* ``baseline`` rows, written once a migration asked for them (:func:`write_pending_baselines`),
  set the state of every patient: from 0004 (trails of 0.1.0 carried no values) and from
  ``0005_episodes`` (the stages became episodes).

:class:`Replay` keeps the last recorded state of each patient; a change row that no state row
follows is itself reported (a write that bypassed :func:`~oncosurg.store.audit.append`, or a
forged row).  Trails written before oncosurg 0.2 have ``create`` rows without values: those
patients are reported *not checkable* until their baseline.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.model import PATIENT, TABLE_BY_NAME, Table
from oncosurg.store import audit
from oncosurg.store import tables as t

#: Trail actions whose ``new_value`` is a patient's whole state.
STATE_ACTIONS = frozenset({"state", "baseline"})
UNKNOWN = "unknown"  # created by a trail row without values (before 0.2): not checkable yet
DELETED = "deleted"
STATE_REASON = "the patient's record after the change above (for audit verify)"
PATIENT_FIELDS = PATIENT.fields


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _texts(row: Mapping[str, Any]) -> dict[str, str]:
    """A row's non-empty values as trail text (:func:`oncosurg.store.audit.text`, inlined for the common
    types: a large import writes one state per patient)."""
    return {k: v if (kind := type(v)) is str else str(v) if kind is int else v.isoformat() if kind is dt.date
            else ("yes" if v else "no") if kind is bool
            else (str(int(v)) if v.is_integer() else str(v)) if kind is float
            else audit.text(v)  # type: ignore[misc]
            for k, v in row.items() if v is not None}


def state_of(record: Any) -> dict[str, Any]:
    """A :class:`~oncosurg.pathway.flat.PatientRecord` as its state: ``{"patient": {...}, table: [rows]}``,
    rows in key order, empty tables left out."""
    body: dict[str, Any] = {"patient": _texts(record.patient)}
    for table, rows in sorted(record.episodes.items()):
        if rows:
            body[table.value] = [_texts(row) for row in _in_key_order(table, rows)]
    return body


def _in_key_order(table: Table, rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Rows sorted by their key, an empty key part first (:func:`_sortable`).  Without empty parts
    the plain key sorts the same, faster; an empty part that decides an order raises and takes the
    slow path (equal parts are never compared with ``<``), as does a row without a key field."""
    if len(rows) < 2:
        return rows
    key = TABLE_BY_NAME[table].key
    try:
        return sorted(rows, key=_GETTERS[key])
    except (TypeError, KeyError):
        return sorted(rows, key=lambda r: tuple(_sortable(r.get(k)) for k in key))


_GETTERS = {spec.key: itemgetter(*spec.key) for spec in TABLE_BY_NAME.values()}


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value)


def snapshot(record: Any) -> str:
    """A patient's state as canonical JSON (the ``new_value`` of its ``create``, ``state`` and ``baseline`` rows)."""
    return dumps(state_of(record))


def stored_snapshot(record: Any) -> str:
    """:func:`snapshot` of a record as the tables will hold it once written: each row keeps only its
    table's fields (a planned row may carry others), so it equals the snapshot read back."""
    body: dict[str, Any] = {"patient": _texts({f.name: record.patient.get(f.name) for f in PATIENT_FIELDS})}
    for table, rows in sorted(record.episodes.items()):
        if rows:
            fields = TABLE_BY_NAME[table].fields
            kept = [{f.name: row.get(f.name) for f in fields} for row in rows]
            body[table.value] = [_texts(row) for row in _in_key_order(table, kept)]
    return dumps(body)


def state_entry(pk: int, *, centre: str, patient_id: str, version: int, state: str) -> dict[str, Any]:
    """The trail's ``state`` row of patient ``pk`` (``state``: its :func:`snapshot`)."""
    return {"action": "state", "entity": "patient", "entity_id": pk, "patient_pk": pk, "centre": centre,
            "patient_id": patient_id, "field": "state", "new_value": state, "reason": STATE_REASON,
            "version": version}


# ----------------------------------------------------------------------------------- the tables

#: up to this many patients, :func:`table_states` reads each in one statement
FEW = 8


def table_states(conn: sa.Connection, pks: Iterable[int] | None = None, *, batch: int = 2000
                 ) -> dict[int, dict[str, Any]]:
    """``pk → {"centre", "patient_id", "version", "state"}`` for every patient in the tables (or ``pks``).

    A few patients (an edit's state row, written while the write holds the audit chain) are read one
    statement each (:func:`~oncosurg.store.episodes.read_stored`) rather than a query per table."""
    from oncosurg.store.episodes import read_records, read_stored

    if pks is not None and len(few := sorted(set(pks))) <= FEW:
        out = {}
        for pk in few:
            stored = read_stored(conn, t.EPISODES, t.centre, pk)
            if stored is not None:
                out[pk] = {"centre": stored.record.centre, "patient_id": stored.record.patient_id,
                           "version": stored.head["version"], "state": state_of(stored.record)}
        return out
    query = sa.select(t.patient.c.id, t.patient.c.version).order_by(t.patient.c.id)
    if pks is not None:
        query = query.where(t.patient.c.id.in_(sorted(set(pks))))
    versions = dict(conn.execute(query).all())
    ids = list(versions)
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), batch):
        for pk, record in read_records(conn, t.EPISODES, t.centre, ids[start:start + batch]).items():
            out[pk] = {"centre": record.centre, "patient_id": record.patient_id, "version": versions[pk],
                       "state": state_of(record)}
    return out


def state_entries(conn: sa.Connection, entries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The ``state`` rows that follow ``entries`` in the trail: one per patient they change, carrying
    its record as the tables now hold it (none for a patient created with its whole state, or deleted)."""
    pks: dict[int, None] = {}
    for e in entries:
        pk = e.get("patient_pk")
        if pk is None or e.get("entity") == "app_user" or e["action"] in STATE_ACTIONS:
            continue
        if e.get("entity") == "patient" and e["action"] == "create" and e.get("field") is None:
            continue  # its new_value is the whole state
        pks[pk] = None
    if not pks:
        return []
    states = table_states(conn, pks)
    return [state_entry(pk, centre=s["centre"], patient_id=s["patient_id"], version=s["version"],
                        state=dumps(s["state"])) for pk, s in states.items()]


# ------------------------------------------------------------------------------------ the replay

class Replay:
    """Patients' last recorded states, from trail rows fed in order (:meth:`apply`)."""

    def __init__(self) -> None:
        self.states: dict[int, Any] = {}  # pk → state dict, UNKNOWN or DELETED
        self.names: dict[int, tuple[str | None, str | None]] = {}
        self.unfollowed: dict[int, int] = {}  # pk → id of a change row no state row followed

    def apply(self, row: Mapping[str, Any]) -> None:
        pk, entity, action, field = row["patient_pk"], row["entity"], row["action"], row["field"]
        if pk is None or entity == "app_user":
            return
        self.names[pk] = (row["centre"], row["patient_id"])
        if action in STATE_ACTIONS:
            self.states[pk] = json.loads(row["new_value"])
            self.unfollowed.pop(pk, None)
            return
        if entity == "patient" and action == "delete":
            self.states[pk] = DELETED
            self.unfollowed.pop(pk, None)
            return
        if entity == "patient" and action == "create" and field is None:
            value = json.loads(row["new_value"]) if row["new_value"] else None
            # 0.1.0's imports carried no values; a create of 0.2 carried a flat record (before the episodes)
            self.states[pk] = value if isinstance(value, dict) and "patient" in value else UNKNOWN
            self.unfollowed.pop(pk, None)
            return
        current = self.states.get(pk)
        if current is None or isinstance(current, dict):  # a change: the state row after it must follow
            self.unfollowed[pk] = row.get("id", 0)


def compare(replay: Replay, tables: Mapping[int, Mapping[str, Any]], *, limit: int = 100
            ) -> tuple[list[dict[str, Any]], int, int]:
    """``(mismatches, patients checked, patients not checkable)`` between the replay and the tables."""
    mismatches: list[dict[str, Any]] = []
    checked = unchecked = 0

    def add(pk: int, what: str, field: str | None, trail: Any, table: Any) -> None:
        if pk in tables:
            centre, pid = tables[pk]["centre"], tables[pk]["patient_id"]
        else:
            centre, pid = replay.names.get(pk, (None, None))
        if len(mismatches) < limit:
            mismatches.append({"patient_pk": pk, "centre": centre, "patient_id": pid, "what": what, "field": field,
                               "trail": trail, "table": table})

    for pk in sorted(set(replay.states) | set(tables)):
        state = replay.states.get(pk)
        if pk in replay.unfollowed and state != DELETED:
            checked += 1
            add(pk, f"a change (trail row {replay.unfollowed[pk]}) without the state it produced", None, None, None)
            continue
        if pk not in tables:
            if isinstance(state, dict):
                checked += 1
                add(pk, "patient missing from the tables (deleted outside the app)", None, "present", None)
            continue
        if state is None or state == DELETED:
            checked += 1
            add(pk, "patient in the tables but not in the audit trail (written outside the app)"
                if state is None else "patient deleted in the audit trail but still in the tables",
                None, None, "present")
            continue
        if state == UNKNOWN:
            unchecked += 1
            continue
        checked += 1
        _diff(pk, state, tables[pk]["state"], add)
    return mismatches, checked, unchecked


def _diff(pk: int, ours: Mapping[str, Any], theirs: Mapping[str, Any], add: Any) -> None:
    mine, table = ours.get("patient", {}), theirs.get("patient", {})
    for field in sorted(set(mine) | set(table)):
        if mine.get(field) != table.get(field):
            add(pk, "patient", field, mine.get(field), table.get(field))
    for name in sorted((set(ours) | set(theirs)) - {"patient"}):
        key = TABLE_BY_NAME[Table(name)].key if name in Table._value2member_map_ else ()
        rows_a = {_key(r, key): r for r in ours.get(name, [])}
        rows_b = {_key(r, key): r for r in theirs.get(name, [])}
        for k in sorted(set(rows_a) | set(rows_b)):
            a, b = rows_a.get(k), rows_b.get(k)
            if a is None or b is None:
                add(pk, f"{name} {k}", None, "present" if a else None, "present" if b else None)
                continue
            for field in sorted(set(a) | set(b)):
                if a.get(field) != b.get(field):
                    add(pk, f"{name} {k}", field, a.get(field), b.get(field))


def _key(row: Mapping[str, Any], key: Sequence[str]) -> str:
    return "/".join(str(row.get(k, "")) for k in key) or dumps(row)


# ------------------------------------------------------------------------------------- baselines

BASELINE_KEY = "audit_baseline"


def write_pending_baselines(conn: sa.Connection) -> int:
    """When a migration asked for it (``web_setting`` ``audit_baseline`` = ``pending``), append one
    ``baseline`` row per patient carrying its current state, then mark it done.  Returns the count."""
    flag = conn.execute(sa.select(t.web_setting.c.value).where(t.web_setting.c.key == BASELINE_KEY)).scalar()
    if flag != "pending":
        return 0
    states = table_states(conn)
    entries = [{"action": "baseline", "entity": "patient", "entity_id": pk, "patient_pk": pk,
                "centre": info["centre"], "patient_id": info["patient_id"], "field": "state",
                "new_value": dumps(info["state"]), "version": info["version"],
                "reason": "state baseline for audit verify (after a schema migration): checks start from here"}
               for pk, info in sorted(states.items())]
    for i in range(0, len(entries), 2000):
        audit.append(conn, actor=audit.Actor(None, "migration"), entries=entries[i:i + 2000])
    conn.execute(sa.update(t.web_setting).where(t.web_setting.c.key == BASELINE_KEY).values(value="done"))
    return len(entries)
