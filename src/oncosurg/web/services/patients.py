"""Patients: list and search, read one pathway, register, edit a stage, delete.

Every write runs in one transaction of :meth:`oncosurg.web.db.WebStore.write`, validates the whole
record with the registry rules, bumps ``patient.version`` only if the version the form was loaded
with is still current (optimistic locking: a stale edit raises :class:`Conflict` listing what
changed meanwhile), and appends one audit row per changed field.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.flat import from_flat, rescue_line, to_flat
from oncosurg.pathway.model import Table
from oncosurg.rules import X_ALREADY_REGISTERED
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, FIELD_BY_NAME, FIELDS, Stage
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.episodes import StoredPatient, insert_records, read_stored
from oncosurg.store.repository import row_json, write_stages
from oncosurg.web.errors import Conflict, Forbidden, Invalid, NotFound
from oncosurg.web.services.forms import (
    REGIMEN_FIELDS,
    REGISTER_FIELDS,
    STAGE_FORMS,
    check_dates_within,
    parse_fields,
    validate_registry,
    web_error,
)
from oncosurg.web.services.roster import Roster
from oncosurg.web.services.users import User, ensure_centre
from oncosurg.web.services.worklist import REVIEW_HORIZON_WEEKS, last_news, status_unknown

PATIENT_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in FIELDS if f.stage is Stage.PATIENT and f.name != "centre")
REGIMEN_COLUMNS: tuple[str, ...] = tuple(f.name for f in REGIMEN_FIELDS)

#: Pathway-stage filters of the patient list (name → label).
STAGE_FILTERS: dict[str, str] = {
    "on_cetuximab": "on cetuximab (not operated, alive, not stopped, news within the review horizon)",
    "status_unknown": "cetuximab status unknown (no stop date, no news for longer than the review horizon)",
    "operated": "operated",
    "resected": "hepatectomy",
    "progressed": "progression recorded",
    "deceased": "deceased",
    "alive": "alive at last contact",
}


@dataclass(frozen=True, slots=True)
class Context:
    """Who acts and under which settings (passed to every write)."""

    user: User
    today: dt.date
    lock_days: int
    postop_window_days: int

    @property
    def actor(self) -> audit.Actor:
        return audit.Actor(self.user.id, self.user.username)


# ------------------------------------------------------------------------------------------ reading

#: Statements of every page view, built once (parameters bound at run time).
_HEAD = (sa.select(t.patient.c.id, t.patient.c.patient_id, t.patient.c.version, t.centre.c.name.label("centre"),
                   t.patient.c.import_batch_id)
         .join(t.centre, t.centre.c.id == t.patient.c.centre_id).where(t.patient.c.id == sa.bindparam("pk")))
_CREATED = (sa.select(t.audit_log.c.patient_pk, sa.func.max(t.audit_log.c.at))
            .where(t.audit_log.c.patient_pk.in_(sa.bindparam("pks", expanding=True)), t.audit_log.c.action == "create",
                   t.audit_log.c.entity == "patient").group_by(t.audit_log.c.patient_pk))
#: :func:`created_at` read with the patient (:func:`read_patient`): its latest ``create`` row, its batch's time
_CREATED_ALSO = (
    ("created_logged", sa.select(sa.func.max(t.audit_log.c.at))
     .where(t.audit_log.c.patient_pk == sa.bindparam("pk"), t.audit_log.c.action == "create",
            t.audit_log.c.entity == "patient").scalar_subquery()),
    ("created_imported", sa.select(t.import_batch.c.imported_at)
     .join(t.patient, t.patient.c.import_batch_id == t.import_batch.c.id)
     .where(t.patient.c.id == sa.bindparam("pk")).scalar_subquery()),
)


def patient_head(conn: sa.Connection, *, user: User, pk: int) -> dict[str, Any]:
    """pk, patient_id, centre and version of a patient the user may see (else :class:`NotFound`)."""
    row = conn.execute(_HEAD, {"pk": pk}).mappings().first()
    if row is None or not user.sees(row["centre"]):
        raise NotFound(f"patient {pk} not found in your centres")
    return dict(row)


def history_filter(conn: sa.Connection, *, head: Mapping[str, Any]) -> dict[str, Any]:
    """Which audit rows are the history of the patient ``head`` (a patient the reader may see): rows
    under its pk, recorded in its centre, after the last deletion of a patient under that pk.

    Ids are never reused (migration 0003); the filter also holds on registries written before,
    where a new patient could inherit a deleted one's pk, from whichever centre.
    """
    pk = head["pk"] if "pk" in head else head["id"]
    return {"patient_pk": pk, "centres": [head["centre"]], "after": audit.history_start(conn, patient_pk=pk)}


def read_registry_record(conn: sa.Connection, pk: int) -> dict[str, Any]:
    """The registry columns of one patient (those of :func:`oncosurg.store.repository.read_record`)."""
    return registry_record_and_line(conn, pk)[0]


def registry_record_and_line(conn: sa.Connection, pk: int) -> tuple[dict[str, Any], int | None]:
    """The registry columns of one patient and the id of its rescue line (:func:`rescue_line_pk`),
    read with :func:`~oncosurg.store.episodes.read_stored`: one statement on SQLite and PostgreSQL
    (:func:`~oncosurg.store.repository.read_record` reads each episode table: 10 statements, held
    inside the write lock by an MDT review or a response assessment).  ``LookupError`` when no
    patient has id ``pk``."""
    stored = read_stored(conn, t.EPISODES, t.centre, pk)
    if stored is None:
        raise LookupError(f"no patient with id {pk}")
    line = rescue_line(stored.rows.get(Table.THERAPY_LINE, []))
    return _flat_and_regimen(stored)[0], None if line is None else int(line["id"])


def rescue_line_pk(conn: sa.Connection, pk: int) -> int | None:
    """The id of the patient's rescue line (the line the flat registry row describes)."""
    lines = [dict(r) for r in conn.execute(sa.select(t.therapy_line).where(t.therapy_line.c.patient_pk == pk))
             .mappings()]
    line = rescue_line(lines)
    return None if line is None else int(line["id"])


def read_regimen(conn: sa.Connection, pk: int) -> dict[str, Any]:
    """The targeted agent's regimen and stop date, held by the rescue line."""
    line = rescue_line_pk(conn, pk)
    row = None if line is None else conn.execute(
        sa.select(t.therapy_line).where(t.therapy_line.c.id == line)).mappings().first()
    return {c: (row[c] if row else None) for c in REGIMEN_COLUMNS}


def created_at(conn: sa.Connection, *, pk: int, import_batch_id: int | None) -> dt.datetime | None:
    """When the record was created: its first audit row, else its import batch; ``None`` if unknown."""
    return created_many(conn, {pk: import_batch_id})[pk]


def created_many(conn: sa.Connection, batches: Mapping[int, int | None], *, chunk: int = 500
                 ) -> dict[int, dt.datetime | None]:
    """:func:`created_at` of many patients (pk → import batch id).  The latest ``create`` row counts:
    before migration 0003 a pk could be inherited from a deleted patient created earlier."""
    b = t.import_batch
    pks = sorted(batches)
    out: dict[int, dt.datetime | None] = dict.fromkeys(pks)
    for i in range(0, len(pks), chunk):
        rows = conn.execute(_CREATED, {"pks": pks[i:i + chunk]})
        for pk, at in rows:
            out[pk] = _creation(at, None)
    wanted = sorted({bid for pk, bid in batches.items() if out[pk] is None and bid is not None})
    if wanted:
        imported = dict(conn.execute(sa.select(b.c.id, b.c.imported_at).where(b.c.id.in_(wanted))).all())
        for pk, bid in batches.items():
            if out[pk] is None:
                out[pk] = _creation(None, imported.get(bid))
    return out


def _creation(logged: str | None, imported: Any) -> dt.datetime | None:
    """A record's creation time (naive UTC): its latest ``create`` row's time, else its batch's."""
    if logged:
        return dt.datetime.fromisoformat(logged.rstrip("Z"))
    return imported.replace(tzinfo=None) if isinstance(imported, dt.datetime) else None


def is_locked(created: dt.datetime | None, *, today: dt.date, lock_days: int) -> bool:
    """Records older than ``lock_days`` (or of unknown age) need a reason for every change."""
    return created is None or (today - created.date()).days > lock_days


def stage_label(record: Mapping[str, Any], regimen: Mapping[str, Any], *, last_review: dt.date | None = None,
                today: dt.date | None = None, horizon_weeks: int | None = None) -> str:
    """Where the patient is on the pathway, in a few words.

    With ``today`` and ``horizon_weeks``, a line without a stop date and without news (last contact or
    ``last_review``) for longer than the horizon is "cetuximab status unknown", not "on cetuximab".
    """
    if record.get("death_date"):
        return "deceased"
    if record.get("surgery_date"):
        kind = record.get("surgery_type") or "surgery"
        return "hepatectomy, follow-up" if kind == "hepatectomy" else f"{kind.replace('_', ' ')}, follow-up"
    if regimen.get("stop_date"):
        return "cetuximab stopped"
    if today is not None and horizon_weeks is not None and status_unknown(
            last_news(record.get("last_contact_date"), last_review), today=today, horizon_weeks=horizon_weeks):
        return "cetuximab status unknown"
    return "on cetuximab"


def list_patients(conn: sa.Connection, *, user: User, q: str = "", stage: str = "", centre: str = "",
                  page: int = 1, page_size: int = 50, today: dt.date | None = None,
                  horizon_weeks: int = REVIEW_HORIZON_WEEKS, roster: Roster | None = None,
                  seen: tuple[Any, ...] | None = None) -> dict[str, Any]:
    """One page of the user's patients, filtered by search text, pathway stage and centre, ordered
    by centre then patient id.  ``roster`` is the server's index of every patient's list facts
    (:mod:`oncosurg.web.services.roster`; ``seen``: the registry's marks as just read on ``conn``);
    without one the registry is projected for this call."""
    today = today or dt.date.today()
    page = max(1, page)
    if centre and not user.sees(centre):
        raise Forbidden(f"centre '{centre}' is not granted to you")
    if stage and stage not in STAGE_FILTERS:
        raise Invalid(f"unknown stage filter '{stage}'", errors=[{
            "column": "stage", "value": stage, "message": "unknown stage filter",
            "hint": "use one of " + ", ".join(STAGE_FILTERS)}])
    needle = q.strip().lower()[:64]
    view = (roster or Roster()).view(conn, seen=seen)
    chosen = view.select(centres=None if user.all_centres else user.centres, centre=centre, needle=needle,
                         stage=stage, today=today, horizon_weeks=horizon_weeks)
    facts = [view.ordered[i] for i in chosen[(page - 1) * page_size:page * page_size]]
    patients = [{
        "pk": f.pk, "patient_id": f.patient_id, "centre": f.centre, "referral": f.referral,
        "cetuximab_start": audit.text(f.cetuximab_start), "surgery_date": audit.text(f.surgery_date),
        "last_contact_date": audit.text(f.last_contact_date),
        "stage": stage_label({"death_date": f.death_date, "surgery_date": f.surgery_date,
                              "surgery_type": f.surgery_type, "last_contact_date": f.last_contact_date},
                             {"stop_date": f.stop_date}, last_review=f.last_review, today=today,
                             horizon_weeks=horizon_weeks),
    } for f in facts]
    total = len(chosen)
    return {"patients": patients, "total": total, "page": page, "page_size": page_size,
            "pages": max(1, -(-total // page_size)), "filters": {"q": q, "stage": stage, "centre": centre}}


def _flat_and_regimen(stored: StoredPatient) -> tuple[dict[str, Any], dict[str, Any]]:
    """The registry columns (:func:`read_registry_record`) and the regimen (:func:`read_regimen`) of a
    patient read with :func:`~oncosurg.store.episodes.read_stored`."""
    flat = to_flat(stored.record)
    line = rescue_line(stored.rows.get(Table.THERAPY_LINE, []))
    return {c: flat[c] for c in COLUMNS}, {c: (line[c] if line else None) for c in REGIMEN_COLUMNS}


def _by_date(column: str) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """Date order, then id (rows without a date first, as SQLite orders them)."""
    return lambda row: (row[column] is not None, row[column] or dt.date.min, row["id"])


def read_patient(conn: sa.Connection, *, user: User, pk: int, today: dt.date | None = None,
                 horizon_weeks: int = REVIEW_HORIZON_WEEKS) -> dict[str, Any]:
    """The whole pathway of one patient (registry record, regimen, complications, reviews, assessments)."""
    from oncosurg.web.services import episodes, pathway

    # the patient and every episode in one statement (one consistent read): the page derives the rest
    stored = read_stored(conn, t.EPISODES, t.centre, pk, also=_CREATED_ALSO)
    if stored is None or not user.sees(stored.head["centre_name"]):
        raise NotFound(f"patient {pk} not found in your centres")
    head = {"pk": pk, "patient_id": stored.head["patient_id"], "centre": stored.head["centre_name"],
            "version": stored.head["version"], "import_batch_id": stored.head["import_batch_id"]}
    record, regimen = _flat_and_regimen(stored)
    worst_first = sorted(stored.rows.get(Table.COMPLICATION, []),
                         key=lambda c: (c["grade_rank"] is None, -(c["grade_rank"] or 0), c["id"]))
    complications = [{"id": c["id"], "grade": c["grade"], "description": c["description"]} for c in worst_first]
    reviews = [{k: r[k] for k in ("id", "review_date", "decision", "cycles_at_review", "notes")}
               for r in sorted(stored.rows.get(Table.MDT_REVIEW, []), key=_by_date("review_date"))]
    responses = [{k: a[k] for k in ("id", "assessment_date", "category", "baseline_sum_mm", "current_sum_mm",
                                    "nadir_sum_mm", "new_lesions")}
                 for a in sorted(stored.rows.get(Table.RESPONSE_ASSESSMENT, []), key=_by_date("assessment_date"))]
    created = _creation(stored.also["created_logged"], stored.also["created_imported"])
    return {
        "pk": pk, "patient_id": head["patient_id"], "centre": head["centre"], "version": head["version"],
        "created_at": created.isoformat() + "Z" if created else None,
        "record": record, "regimen": regimen, "complications": complications,
        "cci": pathway.comprehensive_complication_index([c["grade"] for c in complications]),
        "reviews": reviews, "responses": responses,
        "stage": stage_label(record, regimen, last_review=max((r["review_date"] for r in reviews), default=None),
                             today=today or dt.date.today(), horizon_weeks=horizon_weeks),
        "dose_per_administration_mg": pathway.dose_mg(regimen),
        **episodes.read_pathway(conn, pk=pk, stored=stored),  # the timeline; each episode with its id
    }


# ------------------------------------------------------------------------------------------ writing

def _store_regimen(conn: sa.Connection, pk: int, regimen: Mapping[str, Any]) -> None:
    line = rescue_line_pk(conn, pk)
    if line is not None:
        conn.execute(sa.update(t.therapy_line).where(t.therapy_line.c.id == line)
                     .values({c: regimen.get(c) for c in REGIMEN_COLUMNS}))


def _regimen_errors(record: Mapping[str, Any], regimen: Mapping[str, Any]) -> list[dict[str, Any]]:
    return check_dates_within(record, "stop_date", regimen.get("stop_date"))


def bump_version(conn: sa.Connection, *, head: Mapping[str, Any], version: int | None, submitted: Any = None
                 ) -> int:
    """Claim the next version if ``version`` is still current (``None`` = append-only, no check)."""
    pk = head["pk"] if "pk" in head else head["id"]
    expected = head["version"] if version is None else version
    done = conn.execute(sa.update(t.patient).where(t.patient.c.id == pk, t.patient.c.version == expected)
                        .values(version=t.patient.c.version + 1)).rowcount
    if not done:
        raise stale(conn, head=head, version=expected, submitted=submitted)
    return expected + 1


def stale(conn: sa.Connection, *, head: Mapping[str, Any], version: int, submitted: Any = None) -> Conflict:
    pk = head["pk"] if "pk" in head else head["id"]
    current = conn.execute(sa.select(t.patient.c.version).where(t.patient.c.id == pk)).scalar()
    changes = audit.changes_since(conn, version=version, **history_filter(conn, head=head))
    who = sorted({c["username"] for c in changes})
    by = f" by {', '.join(who)}" if who else " (outside the web app, e.g. a CSV import)"
    error = Conflict(
        f"{head['patient_id']} was changed{by} since you opened it (your version {version}, now {current}); "
        "nothing was saved. The page now shows the current values and what changed: re-enter your change "
        "if it is still right.", errors=changes)
    error.submitted = submitted  # type: ignore[attr-defined]
    return error


def _reason(ctx: Context, conn: sa.Connection, head: Mapping[str, Any], reason: str,
            stored: StoredPatient | None = None) -> str | None:
    """The change's reason, required of a record older than the lock period.  ``stored``: the patient
    as read with ``also=_CREATED_ALSO`` in this transaction (its creation time then needs no statement)."""
    reason = (reason or "").strip()[:1000]
    if stored is not None and "created_logged" in stored.also:
        created = _creation(stored.also["created_logged"], stored.also["created_imported"])
    else:
        created = created_at(conn, pk=head["id"], import_batch_id=head["import_batch_id"])
    if is_locked(created, today=ctx.today, lock_days=ctx.lock_days) and not reason:
        raise Invalid("a reason is required to change this record", errors=[web_error(
            "W505", "reason", None,
            f"the record is older than the {ctx.lock_days}-day lock period: say why it changes",
            "fill in the reason (e.g. 'source document corrected')")])
    return reason or None


def _entries(head: Mapping[str, Any], version: int, action: str, entity: str, entity_id: int | None,
             changes: list[tuple[str, Any, Any]], reason: str | None) -> list[dict[str, Any]]:
    return [{"action": action, "entity": entity, "entity_id": entity_id, "patient_pk": head["id"],
             "centre": head["centre"], "patient_id": head["patient_id"], "field": field, "old_value": old,
             "new_value": new, "reason": reason, "version": version} for field, old, new in changes]


def _require_writer(user: User) -> None:
    if not user.can_write:
        raise Forbidden(f"role '{user.role}' is read-only")


def _locked_head(conn: sa.Connection, *, user: User, pk: int) -> dict[str, Any]:
    head = patient_head(conn, user=user, pk=pk)
    head["id"] = head["pk"] = pk
    return head


def save_stage(conn: sa.Connection, *, ctx: Context, pk: int, stage: str, form: Mapping[str, str],
               version: int, reason: str = "") -> dict[str, Any]:
    """Validate and save one card of the patient page; returns ``{"version", "changes"}``."""
    _require_writer(ctx.user)
    card = STAGE_FORMS.get(stage)
    if card is None:
        raise NotFound(f"no stage '{stage}'; stages: {', '.join(STAGE_FORMS)}")
    head = _locked_head(conn, user=ctx.user, pk=pk)
    if head["version"] != version:
        raise stale(conn, head=head, version=version, submitted=dict(form))
    # read once: the form's values, the plan's base and the record's creation (the lock period)
    stored = read_stored(conn, t.EPISODES, t.centre, pk, also=_CREATED_ALSO)
    assert stored is not None  # the row is locked
    current, regimen = _flat_and_regimen(stored)
    record, errors = validate_registry(current, form, card.registry_fields, today=ctx.today,
                                       postop_window_days=ctx.postop_window_days)
    new_regimen = regimen
    if stage == "cetuximab":
        new_regimen, regimen_errors = parse_fields(REGIMEN_FIELDS, form, today=ctx.today, current=regimen)
        errors += regimen_errors + _regimen_errors(record, new_regimen)
    if record.get("patient_id") != head["patient_id"] and record.get("patient_id"):
        errors += _duplicate(conn, head["centre"], record["patient_id"], exclude=pk)
    if errors:
        raise Invalid(f"{len(errors)} problem(s): nothing was saved", errors=errors)
    changes = [(c, current.get(c), record.get(c)) for c in COLUMNS if current.get(c) != record.get(c)]
    changes += [(c, regimen.get(c), new_regimen.get(c)) for c in REGIMEN_COLUMNS
                if regimen.get(c) != new_regimen.get(c)]
    if not changes:
        return {"version": version, "changes": []}
    why = _reason(ctx, conn, head, reason, stored)
    new_version = bump_version(conn, head=head, version=version, submitted=dict(form))
    plan = write_stages(conn, pk, record, source="surgery card", stored=stored.record)
    if plan.refusals:
        raise Invalid(f"{len(plan.refusals)} problem(s): nothing was saved", errors=[
            web_error("X418", column, audit.text(record.get(column)), message, hint)
            for column, message, hint in plan.refusals])
    if stage == "cetuximab":
        _store_regimen(conn, pk, new_regimen)
    entries = []
    for field, old, new in changes:
        entity = FIELD_BY_NAME[field].stage.value if field in FIELD_BY_NAME else "cetuximab_regimen"
        entries += _entries(head, new_version, "update", entity, pk, [(field, old, new)], why)
    audit.append(conn, actor=ctx.actor, entries=entries)
    return {"version": new_version, "changes": [{"field": f, "old": audit.text(o), "new": audit.text(n)}
                                                for f, o, n in changes]}


def _duplicate(conn: sa.Connection, centre: str, patient_id: str, *, exclude: int | None = None
               ) -> list[dict[str, Any]]:
    query = (sa.select(t.patient.c.id).join(t.centre, t.centre.c.id == t.patient.c.centre_id)
             .where(t.centre.c.name == centre, t.patient.c.patient_id == patient_id))
    if exclude is not None:
        query = query.where(t.patient.c.id != exclude)
    if conn.execute(query).first() is None:
        return []
    return [{"code": X_ALREADY_REGISTERED.code, "rule": X_ALREADY_REGISTERED.name, "column": "patient_id",
             "value": patient_id, "message": f"patient already registered in centre '{centre}'",
             "hint": "open the registered patient, or fix the patient_id"}]


def validate_new(conn: sa.Connection, *, ctx: Context, form: Mapping[str, str]
                 ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Registration form → (record, regimen, errors) without writing."""
    centre = str(form.get("centre", "")).strip()
    errors: list[dict[str, Any]] = []
    if not centre:
        errors.append({"code": "V301", "rule": "required", "column": "centre", "value": "",
                       "message": "required value is empty", "hint": "choose one of your centres"})
    elif not ctx.user.sees(centre):
        errors.append({"code": "V306", "rule": "enum", "column": "centre", "value": centre[:120],
                       "message": "this centre is not granted to you", "hint": "choose one of your centres"})
    names = [f.name for f in REGISTER_FIELDS] + ["centre"]  # a new centre name (all-centre users) obeys the rules
    cells = {c: str(form.get(c, "")) for c in names} | {"centre": centre}
    record, rule_errors = validate_registry({}, cells, names, today=ctx.today,
                                            postop_window_days=ctx.postop_window_days)
    errors += rule_errors
    regimen, regimen_errors = parse_fields(REGIMEN_FIELDS, form, today=ctx.today)
    errors += regimen_errors + _regimen_errors(record, regimen)
    if record.get("centre") and record.get("patient_id"):
        errors += _duplicate(conn, centre, record["patient_id"])
    record["centre"] = centre
    return record, regimen, errors


def create_patient(conn: sa.Connection, *, ctx: Context, record: Mapping[str, Any],
                   regimen: Mapping[str, Any] | None = None, entity_note: str | None = None,
                   source: str = "registration form") -> int:
    """Insert a validated record (version 1) and audit every non-empty field; returns the pk."""
    centre_id = ensure_centre(conn, name=record["centre"])
    (pk,) = insert_records(conn, t.EPISODES, [from_flat(record)], centre_ids={record["centre"]: centre_id})
    regimen = regimen or {}
    _store_regimen(conn, pk, regimen)
    head = {"id": pk, "centre": record["centre"], "patient_id": record["patient_id"]}
    changes = [(c, None, record.get(c)) for c in COLUMNS if c != "centre" and record.get(c) is not None]
    changes += [(c, None, regimen.get(c)) for c in REGIMEN_COLUMNS if regimen.get(c) is not None]
    audit.append(conn, actor=ctx.actor, entries=_entries(head, 1, "create", "patient", pk, changes, entity_note))
    return pk


def register(conn: sa.Connection, *, ctx: Context, form: Mapping[str, str]) -> int:
    """Validate the registration form and create the patient (raises :class:`Invalid`)."""
    _require_writer(ctx.user)
    record, regimen, errors = validate_new(conn, ctx=ctx, form=form)
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the patient was not registered", errors=errors)
    return create_patient(conn, ctx=ctx, record=record, regimen=regimen)


def delete_patient(conn: sa.Connection, *, ctx: Context, pk: int, version: int, reason: str) -> None:
    """Delete a patient and every stage row; a reason is always required; the trail keeps the values."""
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    if head["version"] != version:
        raise stale(conn, head=head, version=version)
    reason = (reason or "").strip()[:1000]
    if not reason:
        raise Invalid("a reason is required to delete a patient", errors=[web_error(
            "W505", "reason", None, "say why the patient is deleted", "fill in the reason")])
    record = read_registry_record(conn, pk)
    regimen = read_regimen(conn, pk)
    changes = [(c, record.get(c), None) for c in COLUMNS if c != "centre" and record.get(c) is not None]
    changes += [(c, regimen.get(c), None) for c in REGIMEN_COLUMNS if regimen.get(c) is not None]
    removed = []  # every episode row goes into the trail with its values
    for name in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT, Table.COMPLICATION, Table.PATHOLOGY,
                 Table.LIVER_PROCEDURE, Table.DISEASE_EVENT, Table.CONTACT, Table.THERAPY_LINE):
        table = t.EPISODES[name]
        for row in conn.execute(sa.select(table).where(table.c.patient_pk == pk).order_by(table.c.id)).mappings():
            removed.append({"action": "delete", "entity": name.value, "entity_id": row["id"], "patient_pk": pk,
                            "centre": head["centre"], "patient_id": head["patient_id"], "reason": reason,
                            "version": version + 1, "old_value": row_json(name, row)})
        conn.execute(sa.delete(table).where(table.c.patient_pk == pk))
    conn.execute(sa.delete(t.change_log).where(t.change_log.c.patient_pk == pk))
    conn.execute(sa.delete(t.patient).where(t.patient.c.id == pk))
    audit.append(conn, actor=ctx.actor,
                 entries=removed + _entries(head, version + 1, "delete", "patient", pk, changes, reason))


__all__ = ["CLAVIEN_DINDO", "STAGE_FILTERS", "Context", "create_patient", "delete_patient", "list_patients",
           "read_patient", "register", "save_stage"]
