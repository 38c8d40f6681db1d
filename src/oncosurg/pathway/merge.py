"""A partial record laid over a stored one: what a patient looks like after ``import --update``.

The long registry format (and any source that carries only some tables or columns) updates a
stored patient by key: a table or column the source did not carry stays as stored, a row whose key
is stored replaces the carried columns of that row, a new key adds a row, and a stored row that the
source does not list is kept.  The rules across episodes are checked on the result, so a child in
the file may name a parent that is only in the store.  :func:`oncosurg.pathway.update.plan_update`
(what the store writes) has the same semantics; a test keeps the two equal.
"""

from __future__ import annotations

from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import EPISODE_TABLES, PATIENT, Table


def overlay(stored: PatientRecord, incoming: PatientRecord) -> PatientRecord:
    """``stored`` updated by ``incoming`` (whose ``carried`` says what it holds; ``None`` = everything).

    The incoming row dicts are reused (completed with the stored values of the columns they do not
    carry), so a caller that located them (file, line) by identity still finds them.
    """
    carried = incoming.carried
    if carried is None or Table.PATIENT in carried:
        columns = _columns(carried, Table.PATIENT, PATIENT.fields)
        patient = incoming.patient
        for name, value in stored.patient.items():
            if name not in columns:
                patient[name] = value
    else:
        patient = dict(stored.patient)
    out = PatientRecord(stored.centre, patient)
    for spec in EPISODE_TABLES:
        have = stored.rows(spec.table)
        new = incoming.rows(spec.table)
        if not new or (carried is not None and spec.table not in carried):
            if have:
                out.episodes[spec.table] = [dict(r) for r in have]
            continue
        columns = _columns(carried, spec.table, spec.fields)
        by_key = {tuple(r.get(k) for k in spec.key): r for r in have}
        listed = set()
        rows: list[dict[str, Any]] = []
        for row in new:
            key = tuple(row.get(k) for k in spec.key)
            listed.add(key)
            old = by_key.get(key)
            if old is not None:
                for name, value in old.items():
                    if name not in columns:
                        row[name] = value
            rows.append(row)
        rows += [dict(r) for k, r in by_key.items() if k not in listed]
        out.episodes[spec.table] = rows
    return out


def _columns(carried: dict[Table, frozenset[str]] | None, table: Table, fields: tuple[Any, ...]) -> frozenset[str]:
    if carried is None:
        return frozenset(f.name for f in fields)
    return carried.get(table, frozenset())
