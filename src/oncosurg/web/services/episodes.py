"""The patient's pathway as episodes: the timeline, and adding, editing and deleting each episode.

Every write runs in one transaction of :meth:`oncosurg.web.db.WebStore.write` and goes the way an
import does: the submitted cells are parsed with the registry's single-value rules
(:func:`oncosurg.web.services.forms.parse_fields`), the change is planned in the domain layer
(:mod:`oncosurg.pathway.edit`), the record it would leave is checked with every rule across episodes
(:func:`oncosurg.pathway.rules.check_patient`, ``E6xx``), and the plan is written by
:func:`oncosurg.store.repository.write_plan`, which bumps the patient's version and audits every row
(the patient's state row included).

Locking: an edit or a delete names the episode by its id and the ``version`` of that episode the
form was loaded with; when the episode changed (or went) meanwhile nothing is saved and a
:class:`~oncosurg.web.errors.Conflict` lists what changed since ``patient_version`` (the patient's
version the page showed).  Adding is append-only (two people adding two contacts lose nothing).
Editing the patient's own fields needs the patient's current version, as before.

Records older than the lock period need a reason for every edit and delete, and for adding a
complication or a pathology report (they change an operation already on record).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway import edit
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import (
    AGENT_LABELS,
    PROCEDURE_LABELS,
    TABLE_BY_NAME,
    Table,
    is_resection,
    split_list,
)
from oncosurg.pathway.rules import check_patient
from oncosurg.pathway.update import UpdatePlan, merged
from oncosurg.schema import CLAVIEN_DINDO, Field
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.episodes import StoredPatient, episode_ids, read_records, read_stored
from oncosurg.store.repository import write_plan
from oncosurg.web.errors import Invalid, NotFound
from oncosurg.web.services.forms import issue_dict, parse_fields, web_error
from oncosurg.web.services.pathway import comprehensive_complication_index, recist_category
from oncosurg.web.services.patients import Context, _locked_head, _reason, _require_writer, stale


@dataclass(frozen=True, slots=True)
class EpisodeForm:
    """How the patient page shows and edits one episode table."""

    table: Table
    title: str
    noun: str
    add: tuple[Field, ...]
    edit: tuple[Field, ...]


_NOUNS = {Table.THERAPY_LINE: "therapy line", Table.MDT_REVIEW: "MDT review",
          Table.RESPONSE_ASSESSMENT: "response assessment", Table.LIVER_PROCEDURE: "liver procedure",
          Table.COMPLICATION: "complication", Table.PATHOLOGY: "pathology report",
          Table.DISEASE_EVENT: "disease event", Table.CONTACT: "contact"}
FORMS: dict[Table, EpisodeForm] = {
    table: EpisodeForm(table, TABLE_BY_NAME[table].title, noun, edit.add_fields(table), edit.edit_fields(table))
    for table, noun in _NOUNS.items()}
PATIENT_FIELDS: tuple[Field, ...] = edit.edit_fields(Table.PATIENT)
#: Additions that change an operation already on record (a reason under the lock period).
_ADD_NEEDS_REASON = (Table.COMPLICATION, Table.PATHOLOGY)


def table_named(name: str) -> Table:
    """The episode table of a URL segment (``therapy_line``, ``mdt_review``, …), else :class:`NotFound`."""
    try:
        table = Table(name)
    except ValueError:
        table = None
    if table is None or table not in FORMS:
        raise NotFound(f"no episode type '{name[:40]}'; types: {', '.join(t.value for t in FORMS)}")
    return table


# ------------------------------------------------------------------------------------------ reading

def _stored(conn: sa.Connection, pk: int) -> PatientRecord:
    return read_records(conn, t.EPISODES, t.centre, [pk])[pk]


def _agents(text: str | None) -> str:
    return " + ".join(AGENT_LABELS.get(a, a) for a in split_list(text)) or "agents not recorded"


def _labels(record: PatientRecord) -> dict[Table, dict[tuple[Any, ...], str]]:
    """A short label of every episode (the timeline's and the lists')."""
    rows = record.rows
    out: dict[Table, dict[tuple[Any, ...], str]] = {table: {} for table in FORMS}
    for line in rows(Table.THERAPY_LINE):
        intent = f", {line['intent']}" if line.get("intent") else ""
        where = ", given elsewhere" if line.get("given_at") == "elsewhere" else ""
        out[Table.THERAPY_LINE][(line["line_number"],)] = (
            f"line {line['line_number']}: {_agents(line.get('agents'))}{intent}{where}")
    for r in rows(Table.MDT_REVIEW):
        of = f" (line {r['line_number']})" if r.get("line_number") is not None else ""
        out[Table.MDT_REVIEW][(r["review_no"],)] = f"MDT review: {str(r['decision']).replace('_', ' ')}{of}"
    for a in rows(Table.RESPONSE_ASSESSMENT):
        of = f" (line {a['line_number']})" if a.get("line_number") is not None else ""
        out[Table.RESPONSE_ASSESSMENT][(a["assessment_no"],)] = f"response assessment: {a.get('category') or '?'}{of}"
    grades: dict[Any, list[str]] = {}
    for c in rows(Table.COMPLICATION):
        grades.setdefault(c["procedure_no"], []).append(c["grade"])
        text = f"complication {c['grade']}" + (f": {c['description']}" if c.get("description") else "")
        out[Table.COMPLICATION][(c["procedure_no"], c["complication_no"])] = text
    resections = sorted((p for p in rows(Table.LIVER_PROCEDURE)
                         if is_resection(p.get("procedure_type"), p.get("resected_segments"))),
                        key=lambda p: (str(p.get("procedure_date")), p["procedure_no"]))
    repeat = {p["procedure_no"] for p in resections[1:]}
    for p in rows(Table.LIVER_PROCEDURE):
        number = p["procedure_no"]
        text = f"procedure {number}: {PROCEDURE_LABELS.get(p['procedure_type'], p['procedure_type'])}"
        if number in repeat:
            text += " (repeat hepatectomy)"
        if grades.get(number):
            worst = max(grades[number], key=CLAVIEN_DINDO.index)
            text += f"; worst complication {worst} (CCI {comprehensive_complication_index(grades[number]):g})"
        elif p.get("complications_assessed"):
            text += "; no complication"
        out[Table.LIVER_PROCEDURE][(number,)] = text
    for p in rows(Table.PATHOLOGY):
        out[Table.PATHOLOGY][(p["procedure_no"],)] = f"pathology of procedure {p['procedure_no']}"
    for e in rows(Table.DISEASE_EVENT):
        sites = ", ".join(split_list(e.get("sites")))
        out[Table.DISEASE_EVENT][(e["event_no"],)] = f"{e['event_kind']}" + (f" ({sites})" if sites else "")
    for c in rows(Table.CONTACT):
        out[Table.CONTACT][(c["contact_no"],)] = "death" if c["vital_status"] == "dead" else "contact (alive)"
    return out


def read_pathway(conn: sa.Connection, *, pk: int, stored: StoredPatient | None = None) -> dict[str, Any]:
    """Every episode of patient ``pk`` (id, version, key, label, values) by table, and the timeline
    (from ``stored`` when the caller has read the patient already)."""
    if stored is None:
        stored = read_stored(conn, t.EPISODES, t.centre, pk)
        if stored is None:
            raise KeyError(pk)
    record, ids = stored.record, stored.ids
    labels = _labels(record)
    episodes: dict[str, list[dict[str, Any]]] = {}
    timeline: list[dict[str, Any]] = []
    for table in FORMS:
        spec = TABLE_BY_NAME[table]
        listed = []
        for row in record.rows(table):
            key = edit.key_of(table, row)
            row_id, version = ids[table][key]
            item = {"id": row_id, "version": version, "key": list(key), "label": labels[table][key],
                    "values": dict(row)}
            listed.append(item)
            date = row.get(spec.date) if spec.date else None
            if table is Table.PATHOLOGY or (table is Table.COMPLICATION and date is None):
                continue  # shown with their procedure
            anchor = f"ep-{table.value}-{row_id}"
            if table is Table.COMPLICATION:
                anchor = f"ep-{Table.LIVER_PROCEDURE.value}-{ids[Table.LIVER_PROCEDURE][(row['procedure_no'],)][0]}"
            timeline.append({"date": audit.text(date), "kind": table.value, "id": row_id,
                             "label": labels[table][key], "anchor": anchor})
            if table is Table.THERAPY_LINE and row.get("stop_date") is not None:
                why = f" ({row['stop_reason']})" if row.get("stop_reason") else ""
                timeline.append({"date": audit.text(row["stop_date"]), "kind": "therapy_line_stop", "id": row_id,
                                 "label": f"line {row['line_number']} stopped{why}", "anchor": anchor})
        listed.sort(key=lambda i: (str(i["values"].get(spec.date) or "") if spec.date else "", i["key"]))
        episodes[table.value] = listed
    order = {name: i for i, name in enumerate(
        ("therapy_line", "response_assessment", "mdt_review", "therapy_line_stop", "liver_procedure",
         "complication", "disease_event", "contact"))}
    timeline.sort(key=lambda e: (e["date"] or "", order.get(e["kind"], 9)))
    return {"patient_fields": dict(record.patient), "episodes": episodes, "timeline": timeline,
            "procedures": [p["procedure_no"] for p in record.rows(Table.LIVER_PROCEDURE)],
            "lines": [ln["line_number"] for ln in record.rows(Table.THERAPY_LINE)]}


# ------------------------------------------------------------------------------------------ writing

def _rule_errors(stored: PatientRecord, plan: UpdatePlan, ctx: Context) -> list[dict[str, Any]]:
    """The rules across episodes on the record the plan leaves (as an import checks it)."""
    out = []
    for issue in check_patient(merged(stored, plan), where=lambda table, row: (table.value, None),
                               postop_window_days=ctx.postop_window_days):
        error = issue_dict(issue)
        error["table"] = error.pop("file", None)  # the episode type the finding is about
        out.append(error)
    return out


def _recist(stored: PatientRecord, values: dict[str, Any], *, key: tuple[Any, ...] | None) -> list[dict[str, Any]]:
    """RECIST category from the target-lesion sums (W503, W504), against the line's earlier assessments."""
    date, current, given = values.get("assessment_date"), values.get("current_sum_mm"), values.get("category")
    earlier = sorted((a for a in stored.rows(Table.RESPONSE_ASSESSMENT)
                      if edit.key_of(Table.RESPONSE_ASSESSMENT, a) != key
                      and a.get("line_number") == values.get("line_number")
                      and (date is None or a["assessment_date"] <= date)), key=lambda a: a["assessment_date"])
    if current is None:
        if given is None:
            return [web_error("W504", "category", None, "neither a RECIST category nor the current sum is given",
                              "choose the category, or fill in the target-lesion sums")]
        return []
    baseline = values.get("baseline_sum_mm")
    if baseline is None:
        baseline = next((a["baseline_sum_mm"] for a in earlier if a.get("baseline_sum_mm") is not None), None)
    if baseline is None:
        return [web_error("W504", "baseline_sum_mm", None, "the baseline sum is needed with the current sum",
                          "fill in the sum of target-lesion diameters at the start of the line")]
    nadir = values.get("nadir_sum_mm")
    if nadir is None:
        nadir = min([baseline, *[a["current_sum_mm"] for a in earlier if a.get("current_sum_mm") is not None]])
    computed, why = recist_category(baseline=baseline, current=current, nadir=nadir,
                                    new_lesions=values.get("new_lesions"))
    if given is not None and given != computed:
        return [web_error("W503", "category", given, f"the sums give {computed} ({why})",
                          f"write {computed}, or leave the category empty to compute it")]
    values |= {"category": computed, "baseline_sum_mm": baseline, "nadir_sum_mm": nadir}
    return []


def _write(conn: sa.Connection, ctx: Context, head: Mapping[str, Any], stored: PatientRecord, plan: UpdatePlan,
           errors: list[dict[str, Any]], what: str, why: str | None) -> int:
    errors += _rule_errors(stored, plan, ctx) if not errors else []
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the {what} was not saved", errors=errors)
    return write_plan(conn, head["pk"], plan, actor=ctx.actor, centre=head["centre"], patient_id=head["patient_id"],
                      reason=why)


def _summary(plan: UpdatePlan) -> list[dict[str, Any]]:
    return [{"action": c.action, "table": c.table.value, "key": list(c.key), "field": c.column,
             "old": audit.text(c.old) if c.action == "update" else None,
             "new": audit.text(c.new) if c.action == "update" else None} for c in plan.changes]


def add_episode(conn: sa.Connection, *, ctx: Context, pk: int, table: Table, form: Mapping[str, str],
                reason: str = "") -> dict[str, Any]:
    """Add one episode of ``table`` from the submitted ``form``; returns its id, key and the new version."""
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    stored = _stored(conn, pk)
    spec = FORMS[table]
    values, errors = parse_fields(spec.add, form, today=ctx.today)
    if table is Table.RESPONSE_ASSESSMENT and not errors:
        errors += _recist(stored, values, key=None)
    plan = edit.plan_add(stored, table=table, values=values)
    why = (_reason(ctx, conn, head, reason) if table in _ADD_NEEDS_REASON and not errors
           else (reason or "").strip()[:1000] or None)
    version = _write(conn, ctx, head, stored, plan, errors, spec.noun, why)
    key = plan.changes[0].key
    row_id, row_version = episode_ids(conn, t.EPISODES, pk)[table][key]
    return {"version": version, "id": row_id, "episode_version": row_version, "table": table.value,
            "key": list(key), "changes": _summary(plan)}


def _target(conn: sa.Connection, *, head: Mapping[str, Any], table: Table, episode_id: int, version: int,
            patient_version: int | None, submitted: Mapping[str, str] | None) -> tuple[PatientRecord, tuple[Any, ...]]:
    """The stored record and the key of episode ``episode_id``, if it is still at ``version``."""
    stored = _stored(conn, head["pk"])
    found = {row_id: (key, v) for key, (row_id, v) in episode_ids(conn, t.EPISODES, head["pk"])[table].items()}
    if episode_id in found and found[episode_id][1] == version:
        return stored, found[episode_id][0]
    if episode_id not in found and patient_version is None:
        raise NotFound(f"{FORMS[table].noun} {episode_id} not found for this patient")
    since = patient_version if patient_version is not None else 0
    error = stale(conn, head=head, version=since, submitted=dict(submitted or {}))
    if patient_version is None:  # only the history of this episode
        error.errors = [c for c in error.errors if c["entity"] == table.value]
    gone = "was deleted" if episode_id not in found else f"changed (your version {version}, now {found[episode_id][1]})"
    error.message = (f"this {FORMS[table].noun} of {head['patient_id']} {gone} since you opened it; nothing was saved. "
                     "The page now shows the current values and what changed: re-enter your change if it is still "
                     "right.")
    raise error


def edit_episode(conn: sa.Connection, *, ctx: Context, pk: int, table: Table, episode_id: int,
                 form: Mapping[str, str], version: int, patient_version: int | None = None,
                 reason: str = "") -> dict[str, Any]:
    """Change episode ``episode_id`` to the submitted values (a field the form does not carry is kept)."""
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    stored, key = _target(conn, head=head, table=table, episode_id=episode_id, version=version,
                          patient_version=patient_version, submitted=form)
    row = edit.find(stored, table, key) or {}
    spec = FORMS[table]
    values, errors = parse_fields(spec.edit, form, today=ctx.today, current=row)
    if table is Table.RESPONSE_ASSESSMENT and not errors:
        values = {**row, **values}
        if "category" not in form:  # computed again from the sums the edit leaves
            values["category"] = None if values.get("current_sum_mm") is not None else row.get("category")
        errors += _recist(stored, values, key=key)
    plan = edit.plan_edit(stored, table=table, key=key, values=values)
    if not plan and not errors:
        return {"version": head["version"], "id": episode_id, "changes": []}
    why = _reason(ctx, conn, head, reason) if not errors else None
    new_version = _write(conn, ctx, head, stored, plan, errors, spec.noun, why)
    return {"version": new_version, "id": episode_id, "changes": _summary(plan)}


def delete_episode(conn: sa.Connection, *, ctx: Context, pk: int, table: Table, episode_id: int, version: int,
                   patient_version: int | None = None, reason: str = "") -> dict[str, Any]:
    """Delete episode ``episode_id`` with what belongs to it (:func:`oncosurg.pathway.edit.plan_delete`)."""
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    stored, key = _target(conn, head=head, table=table, episode_id=episode_id, version=version,
                          patient_version=patient_version, submitted=None)
    plan = edit.plan_delete(stored, table=table, key=key)
    why = _reason(ctx, conn, head, reason)
    new_version = _write(conn, ctx, head, stored, plan, [], FORMS[table].noun, why)
    return {"version": new_version, "id": episode_id, "changes": _summary(plan)}


def edit_patient(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str], version: int,
                 reason: str = "") -> dict[str, Any]:
    """Change the patient's own fields (sex, birth year, markers, referral…); needs the current version."""
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    if head["version"] != version:
        raise stale(conn, head=head, version=version, submitted=dict(form))
    stored = _stored(conn, pk)
    values, errors = parse_fields(PATIENT_FIELDS, form, today=ctx.today, current=stored.patient)
    plan = edit.plan_edit(stored, table=Table.PATIENT, key=(stored.patient_id,), values=values)
    if not plan and not errors:
        return {"version": version, "changes": []}
    why = _reason(ctx, conn, head, reason) if not errors else None
    new_version = _write(conn, ctx, head, stored, plan, errors, "patient", why)
    return {"version": new_version, "changes": _summary(plan)}


__all__ = ["FORMS", "PATIENT_FIELDS", "add_episode", "delete_episode", "edit_episode", "edit_patient", "read_pathway",
           "table_named"]
