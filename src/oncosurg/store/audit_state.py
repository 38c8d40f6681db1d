"""Each patient's state recomputed from the audit trail, and compared with the tables.

A patient's *state* is what the registry holds about them, as text (:func:`oncosurg.store.audit.text`):

* ``record``: the registry columns (``centre`` aside), non-empty ones only;
* ``regimen``: the cetuximab regimen (schedule, dose, body-surface area, stop date);
* ``complication``, ``mdt_review``, ``response_assessment``: rows by id, each with its fields.

:class:`Replay` rebuilds it from the trail, row by row: a ``create`` of a patient sets fields (one
row per field from the web app's forms, or one ``record`` row carrying the whole record as JSON from
a command-line import or a web upload, :mod:`oncosurg.store.bulk`), an ``update`` sets one field (of
the record, the regimen or an item, e.g. a complication regraded with the worst grade), items are
created and deleted by id, a patient's ``delete`` removes it, and a ``baseline`` row sets the whole
state.  ``oncosurg audit verify``
compares the result with the tables, so a direct edit of the database is caught.

Trails written before oncosurg 0.2 have ``create`` rows of command-line imports without values; for
those patients nothing can be checked until the ``baseline`` row that the 0004 migration appends for
every patient (:func:`write_pending_baselines`): from then on their state is checked too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from oncosurg.schema import COLUMNS, FIELD_BY_NAME
from oncosurg.store import audit
from oncosurg.store import tables as t

ITEMS: dict[str, sa.Table] = {"complication": t.complication, "mdt_review": t.mdt_review,
                              "response_assessment": t.response_assessment}
RECORD_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "centre")
REGIMEN_COLUMNS: tuple[str, ...] = tuple(c.name for c in t.cetuximab_regimen.columns if c.name != "patient_pk")
#: Item columns that are not part of the state: keys, and values derived from others (``grade_rank``
#: from ``grade``; ``from_worst_grade``, whether a complication stands for a flat record's worst grade).
ITEM_SKIP = frozenset({"id", "patient_pk", "grade_rank", "from_worst_grade"})
_STAGES = {f.stage.value for f in FIELD_BY_NAME.values()}
UNKNOWN = "unknown"  # created by a trail row without values (before 0.2): not checkable yet
DELETED = "deleted"


def empty() -> dict[str, Any]:
    return {"record": {}, "regimen": {}, **{k: {} for k in ITEMS}}


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_values(values: Mapping[str, Any]) -> dict[str, str]:
    """A registry record's non-empty columns as trail text (what a command-line ``create`` row carries)."""
    return {c: audit.text(values[c]) for c in RECORD_COLUMNS if values.get(c) is not None}  # type: ignore[misc]


def item_values(row: Mapping[str, Any]) -> dict[str, str]:
    return {k: audit.text(v) for k, v in row.items() if k not in ITEM_SKIP and v is not None}  # type: ignore[misc]


# ----------------------------------------------------------------------------------- the tables

def table_states(conn: sa.Connection, pks: Iterable[int] | None = None) -> dict[int, dict[str, Any]]:
    """``pk → {"centre", "patient_id", "version", "state"}`` for every patient in the tables (or ``pks``)."""
    from oncosurg.store.repository import registry_select

    wanted = None if pks is None else sorted(set(pks))
    query = registry_select().add_columns(t.patient.c.version)
    if wanted is not None:
        query = query.where(t.patient.c.id.in_(wanted))
    out: dict[int, dict[str, Any]] = {}
    for row in conn.execute(query).mappings():
        state = empty()
        state["record"] = {c: audit.text(row[c]) for c in RECORD_COLUMNS if row[c] is not None}
        out[row["pk"]] = {"centre": row["centre"], "patient_id": row["patient_id"], "version": row["version"],
                          "state": state}

    def scoped(table: sa.Table) -> sa.Select:
        query = sa.select(table)
        return query if wanted is None else query.where(table.c.patient_pk.in_(wanted))

    for row in conn.execute(scoped(t.cetuximab_regimen)).mappings():
        if row["patient_pk"] in out:
            out[row["patient_pk"]]["state"]["regimen"] = {
                c: audit.text(row[c]) for c in REGIMEN_COLUMNS if row[c] is not None}
    for entity, table in ITEMS.items():
        for row in conn.execute(scoped(table)).mappings():
            if row["patient_pk"] in out:
                out[row["patient_pk"]]["state"][entity][str(row["id"])] = item_values(row)
    return out


# ------------------------------------------------------------------------------------ the replay

class Replay:
    """Patients' states rebuilt from trail rows fed in order (:meth:`apply`)."""

    def __init__(self) -> None:
        self.states: dict[int, Any] = {}  # pk → state dict, UNKNOWN or DELETED
        self.names: dict[int, tuple[str | None, str | None]] = {}

    def apply(self, row: Mapping[str, Any]) -> None:
        pk, entity, action, field = row["patient_pk"], row["entity"], row["action"], row["field"]
        if pk is None or entity == "app_user":
            return
        self.names[pk] = (row["centre"], row["patient_id"])
        current = self.states.get(pk)
        if action == "baseline":
            self.states[pk] = json.loads(row["new_value"])
            return
        if entity == "patient" and action == "create":
            if field == "record":
                state = empty()
                state["record"] = json.loads(row["new_value"] or "{}")
                self.states[pk] = state
                return
            if field is None:
                self.states[pk] = UNKNOWN
                return
            if not isinstance(current, dict):
                current = self.states[pk] = empty()
            self._set(current["regimen" if field in REGIMEN_COLUMNS else "record"], field, row["new_value"])
            return
        if entity == "patient" and action == "delete":
            self.states[pk] = DELETED
            return
        if not isinstance(current, dict):
            return  # unknown values (or a row after a delete): nothing to check
        if action == "update" and field is not None:  # a registry column (entity = its stage), the regimen, an item
            if entity in ITEMS and field in ITEMS[entity].c:  # an item's own column: e.g. a complication
                # standing for a worst grade, regraded with it (the ``complication`` stage's registry
                # column, ``clavien_dindo_max``, is not one)
                self._set(current[entity].setdefault(str(row["entity_id"]), {}), field, row["new_value"])
            elif entity == "cetuximab_regimen":
                self._set(current["regimen"], field, row["new_value"])
            elif entity in _STAGES or field in RECORD_COLUMNS:
                self._set(current["record"], field, row["new_value"])
            return
        if entity in ITEMS:
            items = current[entity]
            key = str(row["entity_id"])
            if action == "create" and field is not None:
                items.setdefault(key, {})[field] = row["new_value"]
            elif action == "delete":
                items.pop(key, None)

    @staticmethod
    def _set(values: dict[str, Any], field: str, value: str | None) -> None:
        if value is None:
            values.pop(field, None)
        else:
            values[field] = value


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
        table = tables[pk]["state"]
        for part in ("record", "regimen"):
            ours, theirs = state.get(part, {}), table[part]
            for field in sorted(set(ours) | set(theirs)):
                if ours.get(field) != theirs.get(field):
                    add(pk, part, field, ours.get(field), theirs.get(field))
        for entity in ITEMS:
            ours, theirs = state.get(entity, {}), table[entity]
            for key in sorted(set(ours) | set(theirs), key=lambda k: int(k) if k.isdigit() else 0):
                if ours.get(key) != theirs.get(key):
                    add(pk, f"{entity} {key}", None, ours.get(key), theirs.get(key))
    return mismatches, checked, unchecked


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
                "reason": "state baseline for audit verify (migration 0004): checks start from here"}
               for pk, info in sorted(states.items())]
    for i in range(0, len(entries), 2000):
        audit.append(conn, actor=audit.Actor(None, "migration"), entries=entries[i:i + 2000])
    conn.execute(sa.update(t.web_setting).where(t.web_setting.c.key == BASELINE_KEY).values(value="done"))
    return len(entries)
