"""Updating a patient from a partial record: what changes, and the record it would leave.

:func:`plan_update` compares a stored patient with an incoming record that may carry only some
tables and columns (a REDCap export of selected instruments, a FHIR bundle without a Procedure, a
long-format folder with two files): what the source does not carry is left unchanged, an episode it
does not list is kept, and a value it clears (a present, empty cell) is listed in
:attr:`UpdatePlan.clears` so that the caller can require ``--allow-clear``.  :func:`flat_update_plan`
does the same for the flat registry CSV, whose columns map onto the episodes of the flat
projection (the rescue line, the operation, the first disease event, the last contact).
:func:`merged` gives the record after the plan, on which the rules are checked before anything is
written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from oncosurg.pathway.flat import (
    FLAT_TO_PROCEDURE,
    LINE_BURDEN,
    PARTNER_AGENTS,
    PATHOLOGY_COLUMNS,
    PROCEDURE_COLUMNS,
    PROCEDURE_TO_FLAT,
    PatientRecord,
    from_flat,
    project,
    to_flat,
)
from oncosurg.pathway.model import AGENTS, EPISODE_TABLES, PATIENT, TABLE_BY_NAME, Table, join_list, split_list
from oncosurg.schema import CLAVIEN_DINDO


@dataclass(frozen=True, slots=True)
class Change:
    """One change an update makes: ``action`` create | update | delete on ``table`` row ``key``."""

    action: str
    table: Table
    key: tuple[Any, ...]
    column: str | None = None
    old: Any = None
    new: Any = None


@dataclass(slots=True)
class UpdatePlan:
    """What updating one stored patient from a (partial) record would change."""

    changes: list[Change] = field(default_factory=list)
    #: (column, stored value) of each value the source clears; set by the flat planner in flat columns.
    flat_clears: list[tuple[str, Any]] | None = None
    #: (column, message, hint): changes the source asks for that cannot be made (refuse the file).
    refusals: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def clears(self) -> list[tuple[str, Any]]:
        """(column, stored value) of every value the update would empty (they need ``--allow-clear``)."""
        if self.flat_clears is not None:
            return self.flat_clears
        return [(f"{c.table.value}.{c.column}", c.old) for c in self.changes
                if c.action == "update" and c.new is None and c.old is not None]

    def __bool__(self) -> bool:
        return bool(self.changes)


def plan_update(stored: PatientRecord, incoming: PatientRecord) -> UpdatePlan:
    """Compare ``incoming`` (which may carry only some tables and columns) with ``stored``.

    Tables and columns that ``incoming.carried`` does not list are left as stored; an episode the
    incoming record does not list is kept; a new key is a new episode.
    """
    plan = UpdatePlan()
    carried = incoming.carried
    for spec in (PATIENT, *EPISODE_TABLES):
        if carried is not None and spec.table not in carried:
            continue
        columns = [f.name for f in spec.fields if f.name not in spec.key
                   and (carried is None or f.name in carried[spec.table])]
        if spec.table is Table.PATIENT:
            for column in columns:
                old, new = stored.patient.get(column), incoming.patient.get(column)
                if old != new:
                    plan.changes.append(Change("update", spec.table, (stored.patient_id,), column, old, new))
            continue
        have = {tuple(r[k] for k in spec.key): r for r in stored.rows(spec.table)}
        for row in incoming.rows(spec.table):
            key = tuple(row[k] for k in spec.key)
            old_row = have.get(key)
            if old_row is None:
                plan.changes.append(Change("create", spec.table, key, new=row))
                continue
            for column in columns:
                if old_row.get(column) != row.get(column):
                    plan.changes.append(Change("update", spec.table, key, column, old_row.get(column), row.get(column)))
    return plan


def merged(stored: PatientRecord, plan: UpdatePlan) -> PatientRecord:
    """``stored`` with ``plan`` applied (for checking the rules on the result before writing)."""
    out = PatientRecord(stored.centre, dict(stored.patient),
                        {t: [dict(r) for r in rows] for t, rows in stored.episodes.items()})
    for change in plan.changes:
        if change.table is Table.PATIENT:
            out.patient[change.column] = change.new  # type: ignore[index]
            continue
        spec = TABLE_BY_NAME[change.table]
        rows = out.episodes.setdefault(change.table, [])
        if change.action == "create":
            rows.append(dict(change.new))
        elif change.action == "update":
            for row in rows:
                if tuple(row[k] for k in spec.key) == change.key:
                    row[change.column] = change.new  # type: ignore[index]
            if change.table is Table.THERAPY_LINE and change.column == "line_number":
                for child in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT):  # they follow their line
                    for row in out.episodes.get(child, []):
                        if row.get("line_number") == change.old:
                            row["line_number"] = change.new
        elif change.action == "delete":
            rows[:] = [r for r in rows if tuple(r[k] for k in spec.key) != change.key]
    return out


# ------------------------------------------------------------------------------------------ the flat CSV

#: Flat column → column of the rescue line (``prior_chemo_lines``, ``cetuximab_partner`` and ``referral``
#: are mapped by hand: line number, agents, where the line was given).
FLAT_LINE = {"cetuximab_start": "start_date", "cetuximab_cycles": "cycles", "best_response": "best_response",
             **{c: c for c in LINE_BURDEN}}
FLAT_PATIENT = {"sex": "sex", "primary_site": "primary_site", "primary_side": "primary_side",
                "ras_status": "ras_status", "referral": "referral", "age_at_cetuximab": "age_at_rescue"}
FLAT_PROCEDURE = {"surgery_date": "procedure_date", **{c: c for c in PROCEDURE_COLUMNS}}
_PARTNER_CODES = ("irinotecan", "oxaliplatin", "other")


def _next(rows: list[dict[str, Any]], key: str) -> int:
    return max((r[key] for r in rows if r.get(key) is not None), default=0) + 1


def flat_update_plan(stored: PatientRecord, values: Mapping[str, Any]) -> UpdatePlan:
    """The changes a flat registry row makes to a stored patient.

    ``values`` holds the columns the file carries (an empty cell is ``None``).  They change the
    episodes of the flat projection: the rescue line, the operation (its complications and
    pathology), the first disease event after the rescue start, the last contact.  A later date of
    last contact is a new contact; an earlier one corrects the last.  ``clavien_dindo_max`` is the
    worst of the operation's complications: rows that only stand for a worst grade follow it; a grade
    below a complication recorded one by one is refused (edit that complication instead).
    """
    plan = UpdatePlan()
    add = plan.changes.append
    carried = set(values) - {"patient_id", "centre"}
    before = to_flat(stored)
    after = {**before, **{c: values[c] for c in carried}}
    plan.flat_clears = [(c, before[c]) for c in sorted(carried) if values[c] is None and before.get(c) is not None]
    target = from_flat(after)
    proj = project(stored)
    pid = (stored.patient_id,)
    for column, name in FLAT_PATIENT.items():
        if column in carried and stored.patient.get(name) != values[column]:
            add(Change("update", Table.PATIENT, pid, name, stored.patient.get(name), values[column]))
    _line(stored, proj.rescue_line, target, carried, values, plan)
    _operation(stored, proj.procedure, target, carried, values, plan)
    _event(stored, proj.disease_event, target, carried, plan)
    _contact(stored, proj.last_contact, target, carried, plan)
    return plan


def _line(stored: PatientRecord, line: Mapping[str, Any] | None, target: PatientRecord, carried: set[str],
          values: Mapping[str, Any], plan: UpdatePlan) -> None:
    wanted = carried & {*FLAT_LINE, "prior_chemo_lines", "cetuximab_partner", "referral"}
    if not wanted:
        return
    new_line = target.rows(Table.THERAPY_LINE)[0]
    if line is None:
        if "cetuximab_start" in carried and values["cetuximab_start"] is not None:
            plan.changes.append(Change("create", Table.THERAPY_LINE, (new_line["line_number"],), new=new_line))
        return
    key = (line["line_number"],)
    renumber = None
    for column in sorted(wanted):
        if column == "prior_chemo_lines":
            if new_line["line_number"] != line["line_number"]:
                renumber = Change("update", Table.THERAPY_LINE, key, "line_number", line["line_number"],
                                  new_line["line_number"])
            continue
        if column == "cetuximab_partner":
            kept = [a for a in split_list(line.get("agents")) if a not in _PARTNER_CODES]
            name, new = "agents", join_list((*kept, "cetuximab", *PARTNER_AGENTS[values[column] or "none"]), AGENTS)
        elif column == "referral":
            name, new = "given_at", new_line["given_at"]
        else:
            name, new = FLAT_LINE[column], values[column]
        if line.get(name) != new:
            plan.changes.append(Change("update", Table.THERAPY_LINE, key, name, line.get(name), new))
    if renumber is not None:  # last: the line's key changes
        plan.changes.append(renumber)


def _operation(stored: PatientRecord, proc: Mapping[str, Any] | None, target: PatientRecord, carried: set[str],
               values: Mapping[str, Any], plan: UpdatePlan) -> None:
    add = plan.changes.append
    wanted = carried & {*FLAT_PROCEDURE, "surgery_type", "clavien_dindo_max", *PATHOLOGY_COLUMNS}
    if not wanted:
        return
    new_procs = target.rows(Table.LIVER_PROCEDURE)
    if proc is None:
        if not new_procs:
            return
        number = _next(stored.rows(Table.LIVER_PROCEDURE), "procedure_no")
        for table in (Table.LIVER_PROCEDURE, Table.COMPLICATION, Table.PATHOLOGY):
            for row in target.rows(table):
                row = {**row, "procedure_no": number}
                spec = TABLE_BY_NAME[table]
                add(Change("create", table, tuple(row[k] for k in spec.key), new=row))
        return
    number = proc["procedure_no"]
    key = (number,)
    complications = [c for c in stored.rows(Table.COMPLICATION) if c["procedure_no"] == number]
    pathology = next((p for p in stored.rows(Table.PATHOLOGY) if p["procedure_no"] == number), None)
    if not new_procs:  # the surgery_date was cleared: the operation goes, with what belongs to it
        for c in complications:
            add(Change("delete", Table.COMPLICATION, (number, c["complication_no"]), old=c))
        if pathology is not None:
            add(Change("delete", Table.PATHOLOGY, key, old=pathology))
        add(Change("delete", Table.LIVER_PROCEDURE, key, old=proc))
        return
    new = new_procs[0]
    for column in sorted(wanted & {*FLAT_PROCEDURE, "surgery_type"}):
        if column == "surgery_type":
            if PROCEDURE_TO_FLAT.get(proc.get("procedure_type")) == values[column]:
                continue  # a two-stage second stage is a 'hepatectomy' in the flat CSV: nothing changes
            name, value = "procedure_type", FLAT_TO_PROCEDURE.get(values[column] or "")
        else:
            name, value = FLAT_PROCEDURE[column], new.get(FLAT_PROCEDURE[column])
        if proc.get(name) != value:
            add(Change("update", Table.LIVER_PROCEDURE, key, name, proc.get(name), value))
    if "clavien_dindo_max" in carried:
        _grade(proc, complications, values["clavien_dindo_max"], plan)
    wanted_path = wanted & set(PATHOLOGY_COLUMNS)
    if wanted_path:
        new_path = next(iter(target.rows(Table.PATHOLOGY)), {})
        if pathology is None:
            if any(new_path.get(c) is not None for c in wanted_path):
                add(Change("create", Table.PATHOLOGY, key, new={**new_path, "procedure_no": number}))
        elif all(new_path.get(c) is None for c in PATHOLOGY_COLUMNS) and not any(
                pathology.get(c) is not None for c in ("lesion_count", "largest_lesion_mm", "margin_mm")):
            add(Change("delete", Table.PATHOLOGY, key, old=pathology))
        else:
            for column in sorted(wanted_path):
                if pathology.get(column) != new_path.get(column):
                    add(Change("update", Table.PATHOLOGY, key, column, pathology.get(column), new_path.get(column)))


def stands_for_worst_grade(complication: Mapping[str, Any]) -> bool:
    """Whether a complication only stands for a flat record's worst grade: no date and no description
    (or the label ``worst complication (…)`` that earlier releases gave it).  Such a row follows the
    flat ``clavien_dindo_max``; a complication recorded one by one never does."""
    text = complication.get("description") or ""
    return complication.get("complication_date") is None and (not text or text.startswith("worst complication ("))


def _grade(proc: Mapping[str, Any], complications: list[dict[str, Any]], grade: str | None, plan: UpdatePlan) -> None:
    """The flat worst grade ``grade`` applied to an operation's complications: the rows standing for a
    worst grade (:func:`stands_for_worst_grade`) follow it — raised, lowered or removed; a grade below
    a complication recorded one by one is refused (``X418``)."""
    number = proc["procedure_no"]
    key = (number,)
    add = plan.changes.append
    rank = -1 if grade is None or grade == "none" else CLAVIEN_DINDO.index(grade)
    itemised = [c for c in complications if not stands_for_worst_grade(c)]
    stand_ins = sorted((c for c in complications if stands_for_worst_grade(c)),
                       key=lambda c: (CLAVIEN_DINDO.index(c["grade"]), c["complication_no"]))
    worst_itemised = max((CLAVIEN_DINDO.index(c["grade"]) for c in itemised), default=-1)
    if worst_itemised > rank:
        listed = ", ".join(f"{c['grade']}" + (f" ({c['description']})" if c.get("description") else "")
                           for c in sorted(itemised, key=lambda c: c["complication_no"]))
        plan.refusals.append((
            "clavien_dindo_max",
            f"the operation's complications recorded one by one are {listed}: their worst grade is "
            f"{CLAVIEN_DINDO[worst_itemised]}, and a lower or empty clavien_dindo_max would delete them",
            "delete or regrade the complications themselves (web app, or complications.csv of the long format)"))
        return
    keep = stand_ins[-1] if stand_ins and rank > worst_itemised else None
    for c in stand_ins:
        if c is keep:
            continue
        add(Change("delete", Table.COMPLICATION, (number, c["complication_no"]), old=c))
    if rank > worst_itemised:
        if keep is None:
            row = {"procedure_no": number, "complication_no": _next(complications, "complication_no"),
                   "grade": grade}
            add(Change("create", Table.COMPLICATION, (number, row["complication_no"]), new=row))
        elif keep["grade"] != grade:
            add(Change("update", Table.COMPLICATION, (number, keep["complication_no"]), "grade", keep["grade"], grade))
    assessed = bool(proc.get("complications_assessed"))
    if assessed != (grade is not None):
        add(Change("update", Table.LIVER_PROCEDURE, key, "complications_assessed", assessed, grade is not None))


def _event(stored: PatientRecord, event: Mapping[str, Any] | None, target: PatientRecord, carried: set[str],
           plan: UpdatePlan) -> None:
    if "progression_date" not in carried:
        return
    new = next(iter(target.rows(Table.DISEASE_EVENT)), None)
    if event is None:
        if new is not None:
            row = {**new, "event_no": _next(stored.rows(Table.DISEASE_EVENT), "event_no")}
            plan.changes.append(Change("create", Table.DISEASE_EVENT, (row["event_no"],), new=row))
    elif new is None:
        plan.changes.append(Change("delete", Table.DISEASE_EVENT, (event["event_no"],), old=event))
    elif new["event_date"] != event["event_date"]:
        plan.changes.append(Change("update", Table.DISEASE_EVENT, (event["event_no"],), "event_date",
                                   event["event_date"], new["event_date"]))


def _contact(stored: PatientRecord, last: Mapping[str, Any] | None, target: PatientRecord, carried: set[str],
             plan: UpdatePlan) -> None:
    if not carried & {"last_contact_date", "death_date"}:
        return
    new = next(iter(target.rows(Table.CONTACT)), None)
    if new is None:
        return  # last_contact_date is required: an empty one is refused by the flat rules
    if last is None or new["contact_date"] > last["contact_date"]:
        row = {**new, "contact_no": _next(stored.rows(Table.CONTACT), "contact_no")}
        plan.changes.append(Change("create", Table.CONTACT, (row["contact_no"],), new=row))
        return
    key = (last["contact_no"],)
    for column in ("contact_date", "vital_status"):
        if last.get(column) != new[column]:
            plan.changes.append(Change("update", Table.CONTACT, key, column, last.get(column), new[column]))
