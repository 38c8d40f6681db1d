"""Editing one episode of a stored patient: the :class:`~oncosurg.pathway.update.UpdatePlan` of an
add, an edit or a delete (the web app's forms; any other single-episode editor).

Keys follow the design of the episode model (``docs/registry-long.md``): a therapy line's
``line_number`` is the clinical line number, entered by the user; every other episode gets the next
instance number of its table (``max + 1`` within the patient, within the procedure for a
complication) and keeps it.  A child names its parent by the parent's key and does not move to
another parent (delete it and add it under the other one).  Deleting a procedure deletes its
complications and pathology; deleting a therapy line detaches the reviews and assessments that
named it (their ``line_number`` is emptied).  Adding a complication marks its procedure's
complications as assessed.

Nothing here reads or writes the store: the caller checks the single values with
:func:`oncosurg.rules.parse_cell`, the record the plan leaves with
:func:`oncosurg.pathway.rules.check_patient` (:func:`oncosurg.pathway.update.merged`), and writes
it with :func:`oncosurg.store.repository.write_plan`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import EPISODE_TABLES, PATIENT, TABLE_BY_NAME, Table
from oncosurg.pathway.update import Change, UpdatePlan
from oncosurg.schema import Field

#: Instance numbers the registry assigns (never entered by the user).
NUMBERED: dict[Table, str] = {
    Table.MDT_REVIEW: "review_no", Table.RESPONSE_ASSESSMENT: "assessment_no",
    Table.LIVER_PROCEDURE: "procedure_no", Table.COMPLICATION: "complication_no",
    Table.DISEASE_EVENT: "event_no", Table.CONTACT: "contact_no",
}
#: Children: the column naming their parent procedure (chosen when the child is added, then fixed).
PARENT_KEY: dict[Table, str] = {Table.COMPLICATION: "procedure_no", Table.PATHOLOGY: "procedure_no"}
#: Patient fields that are not edited as values (the pseudonym names the patient).
PATIENT_FIXED = ("patient_id",)
EDITABLE_TABLES: tuple[Table, ...] = tuple(spec.table for spec in EPISODE_TABLES)


def add_fields(table: Table) -> tuple[Field, ...]:
    """The fields a user enters to add an episode of ``table`` (numbered keys excluded)."""
    return tuple(f for f in TABLE_BY_NAME[table].fields if f.name != NUMBERED.get(table))


def edit_fields(table: Table) -> tuple[Field, ...]:
    """The fields a user may change on a stored episode (its numbered key and parent excluded)."""
    if table is Table.PATIENT:
        return tuple(f for f in PATIENT.fields if f.name not in PATIENT_FIXED)
    return tuple(f for f in add_fields(table) if f.name != PARENT_KEY.get(table))


def key_of(table: Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in TABLE_BY_NAME[table].key)


def _next(rows: list[dict[str, Any]], column: str) -> int:
    return max((r[column] for r in rows if r.get(column) is not None), default=0) + 1


def find(stored: PatientRecord, table: Table, key: tuple[Any, ...]) -> dict[str, Any] | None:
    return next((r for r in stored.rows(table) if key_of(table, r) == key), None)


def plan_add(stored: PatientRecord, *, table: Table, values: Mapping[str, Any]) -> UpdatePlan:
    """A new episode of ``table`` with ``values`` (the fields of :func:`add_fields`)."""
    spec = TABLE_BY_NAME[table]
    row = {f.name: values.get(f.name) for f in spec.fields}
    number = NUMBERED.get(table)
    if number is not None:
        siblings = stored.rows(table)
        if table in PARENT_KEY:
            siblings = [r for r in siblings if r.get(PARENT_KEY[table]) == row.get(PARENT_KEY[table])]
        row[number] = _next(siblings, number)
    plan = UpdatePlan([Change("create", table, key_of(table, row), new=row)])
    if table is Table.COMPLICATION:
        procedure = find(stored, Table.LIVER_PROCEDURE, (row.get("procedure_no"),))
        if procedure is not None and not procedure.get("complications_assessed"):
            plan.changes.append(Change("update", Table.LIVER_PROCEDURE, (procedure["procedure_no"],),
                                       "complications_assessed", procedure.get("complications_assessed"), True))
    return plan


def plan_edit(stored: PatientRecord, *, table: Table, key: tuple[Any, ...], values: Mapping[str, Any]
              ) -> UpdatePlan:
    """Changes of the stored episode ``key`` to ``values`` (fields of :func:`edit_fields`; a field
    ``values`` does not hold is kept).  A therapy line's new ``line_number`` comes last in the plan
    (the row's key changes; its reviews and assessments follow it)."""
    plan = UpdatePlan()
    if table is Table.PATIENT:
        for f in edit_fields(table):
            if f.name in values and stored.patient.get(f.name) != values[f.name]:
                plan.changes.append(Change("update", table, (stored.patient_id,), f.name,
                                           stored.patient.get(f.name), values[f.name]))
        return plan
    row = find(stored, table, key)
    if row is None:
        raise LookupError(f"{table.value} {key} is not stored")
    renumber = None
    for f in edit_fields(table):
        if f.name not in values or row.get(f.name) == values[f.name]:
            continue
        change = Change("update", table, key, f.name, row.get(f.name), values[f.name])
        if f.name in TABLE_BY_NAME[table].key:
            renumber = change
        else:
            plan.changes.append(change)
    if renumber is not None:
        plan.changes.append(renumber)
    return plan


def plan_delete(stored: PatientRecord, *, table: Table, key: tuple[Any, ...]) -> UpdatePlan:
    """Delete the stored episode ``key``, with what belongs to it (module docstring)."""
    row = find(stored, table, key)
    if row is None:
        raise LookupError(f"{table.value} {key} is not stored")
    plan = UpdatePlan()
    add = plan.changes.append
    if table is Table.LIVER_PROCEDURE:
        for child in (Table.COMPLICATION, Table.PATHOLOGY):
            for c in stored.rows(child):
                if c.get("procedure_no") == row["procedure_no"]:
                    add(Change("delete", child, key_of(child, c), old=c))
    if table is Table.THERAPY_LINE:
        for child in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT):
            for c in stored.rows(child):
                if c.get("line_number") == row["line_number"]:
                    add(Change("update", child, key_of(child, c), "line_number", row["line_number"], None))
    add(Change("delete", table, key, old=row))
    return plan
