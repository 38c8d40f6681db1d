"""Writing validated records into the store, in one transaction, and reading them back as rows.

:func:`plan_import` decides, without writing, what a file does to the registry: which rows create
patients, which update registered ones (field by field) and which are refused, with every reason
at once.  :func:`import_records` (``oncosurg import``) plans and writes in one transaction — all or
nothing; the web app's CSV upload plans with the same function.  The rules (``docs/rules.md``):

* a row names a patient by ``(centre, patient_id)``; a row without a centre goes to
  ``default_centre``, unless the registry holds other (named) centres (``X416``);
* without ``update`` a registered patient is refused (``X411``); with ``update`` an unregistered
  one is refused unless ``allow_new`` (``X415``);
* a new patient whose patient_id differs only in case from one of its centre (``X413``, unless
  ``case_sensitive_ids``) or is registered in another centre (``X414``, unless
  ``allow_id_in_other_centre``) is refused as a probable duplicate;
* an update changes only the columns the file carries (:class:`~oncosurg.ingest.csv.ParsedRecord`);
  emptying a registered value needs ``allow_clear`` (``X417``); the cross-field rules must hold on
  the merged record.

The store holds episodes (:mod:`oncosurg.pathway.model`); the flat registry row is their
projection (:func:`registry_select`).  A new flat row becomes its episodes
(:func:`oncosurg.pathway.flat.from_flat`); an update changes the episodes the flat row shows
(:func:`oncosurg.pathway.update.flat_update_plan`: the rescue line, the operation with its
complications and pathology, the first disease event, the last contact) and never the others.
:func:`import_patients` does the same for records with episodes (the long format): an update
changes only the tables and columns the source carries (:func:`oncosurg.pathway.update.plan_update`).

Each change enters the hash-chained audit trail and ``change_log`` (field, old → new); an updated
patient's ``version`` is incremented; a new patient's audit row carries its whole record.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import getpass
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedRecord
from oncosurg.pathway.flat import PatientRecord, from_flat, to_flat
from oncosurg.pathway.model import TABLE_BY_NAME, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.pathway.update import Change, UpdatePlan, flat_update_plan, plan_update
from oncosurg.pathway.update import merged as merged_episodes
from oncosurg.rules import (
    V_REQUIRED,
    X_ALREADY_REGISTERED,
    X_CENTRE_MISSING,
    X_CLEARS_VALUE,
    X_DUPLICATE_ID,
    X_GRADE_BELOW_COMPLICATIONS,
    X_ID_CASE,
    X_ID_OTHER_CENTRE,
    X_NOT_REGISTERED,
    Issue,
    check_record,
)
from oncosurg.schema import COLUMNS, DEFAULT_CENTRE, DEFAULT_POSTOP_WINDOW_DAYS, REQUIRED
from oncosurg.store import audit, audit_state
from oncosurg.store import tables as t
from oncosurg.store.audit_state import snapshot
from oncosurg.store.engine import StoreBusy, is_conflict, lock_audit_head, refresh_statistics, write_transaction
from oncosurg.store.episode_tables import PARENT_REFS
from oncosurg.store.episodes import DeferredUpdates, apply_update, insert_records, stored_ids
from oncosurg.store.episodes import read_records as read_patient_records
from oncosurg.store.projection import flat_select

#: Patients per batch of :func:`import_patients` (records are consumed, checked and written batch by batch).
BATCH = 1000


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """What an import may do (the flags of ``oncosurg import``)."""

    update: bool = False  # rows of registered patients change them
    allow_new: bool = False  # with update: rows of unregistered patients create them
    allow_clear: bool = False  # with update: a present, empty cell empties a registered value
    case_sensitive_ids: bool = False  # 'pb-1' and 'PB-1' are different patients
    allow_id_in_other_centre: bool = False  # a patient_id registered in another centre is another patient
    default_centre: str = DEFAULT_CENTRE
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS


@dataclass(slots=True)
class PlannedUpdate:
    """One registered patient an import changes: its stored and merged registry records and the diff."""

    record: ParsedRecord
    pk: int
    version: int
    import_batch_id: int | None
    old: dict[str, Any]
    merged: dict[str, Any]
    diff: list[tuple[str, Any, Any]]  # field, old, new
    episodes: UpdatePlan  # what changes in the episode tables
    #: the patient's state after the write (:func:`oncosurg.store.audit_state.snapshot`), computed while
    #: planning so that the write lock is not held to read it back (a test compares it with the tables)
    state: str = ""


@dataclass(slots=True)
class ImportPlan:
    """What a file would do to the registry; refuse it when ``issues`` is non-empty."""

    creates: list[ParsedRecord] = field(default_factory=list)  # centre resolved
    updates: list[PlannedUpdate] = field(default_factory=list)
    unchanged: int = 0
    issues: list[Issue] = field(default_factory=list)


@dataclass(slots=True)
class ImportResult:
    """What an import did (or, when ``issues`` is non-empty, refused to do)."""

    batch_id: int | None = None
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    changes: list[tuple[str, str, str, Any, Any]] = field(default_factory=list)  # centre, id, field, old, new
    issues: list[Issue] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Registered:
    pk: int
    centre: str
    patient_id: str
    version: int
    import_batch_id: int | None


def plan_import(conn: sa.Connection, records: Sequence[ParsedRecord], options: ImportOptions) -> ImportPlan:
    """Check ``records`` against the registry and the rules of the module docstring; writes nothing."""
    plan = ImportPlan()
    centres = _all_centres(conn)
    records = _resolve_centres(records, centres, options.default_centre, plan.issues)
    registered = _registered(conn, {r.values["patient_id"] for r in records})
    by_key = {(r.centre, r.patient_id): r for r in registered}
    by_folded: dict[str, list[_Registered]] = {}
    for r in registered:
        by_folded.setdefault(r.patient_id.casefold(), []).append(r)
    planned: dict[tuple[str, str], int] = {}
    stored_episodes = read_patient_records(conn, t.EPISODES, t.centre, [r.pk for r in registered]
                                           ) if options.update else {}
    # the flat row of each, projected in Python (equal to registry_select's, tested; 10,000 patients: 0.4 s
    # instead of 4 s for the SQL projection, which ranks every episode before it can keep a patient)
    stored = {pk: _flat_columns(record) for pk, record in stored_episodes.items()}
    already = 0
    for record in records:
        centre, patient_id = record.values["centre"], record.values["patient_id"]
        if (centre, patient_id) in planned:  # e.g. one row without a centre, one naming the default centre
            first = planned[(centre, patient_id)]
            plan.issues.append(Issue(X_DUPLICATE_ID.code, f"patient_id already used on line {first} (both rows go "
                                     f"to centre '{centre}')", "give each patient of a centre one row",
                                     record.line, "patient_id", patient_id))
            continue
        planned[(centre, patient_id)] = record.line
        found = by_key.get((centre, patient_id))
        if found is not None:
            if options.update:
                _plan_update(plan, record, found, stored[found.pk], stored_episodes[found.pk], options)
            else:
                already += 1
                plan.issues.append(Issue(
                    X_ALREADY_REGISTERED.code, f"patient already registered in centre '{centre}'",
                    "use `oncosurg import --update` to change registered patients, or fix the patient_id",
                    record.line, "patient_id", patient_id))
            continue
        problem = _new_patient_problem(record, by_folded.get(patient_id.casefold(), []), options)
        if problem is not None:
            plan.issues.append(problem)
            continue
        plan.creates.append(record)
        missing = [c for c in REQUIRED if record.values.get(c) is None]
        plan.issues += [Issue(V_REQUIRED.code, f"a new patient needs {c}; the file does not carry it",
                              f"add the {c} of this patient (or register the patient first)", record.line, c, None)
                        for c in missing]
        if not record.carried.issuperset(COLUMNS):  # the reader checked the whole record already
            # the file's values with every absent column empty: what the new patient's record will be
            plan.issues += check_record(dict(record.values), line=record.line,
                                        postop_window_days=options.postop_window_days, failed=missing)
    if records and already == len(records):
        plan.issues.insert(0, Issue(X_ALREADY_REGISTERED.code,
                                    f"every row of the file ({already}) is already registered: it was imported before",
                                    "nothing to import; to change registered patients, import with --update"))
    return plan


def _resolve_centres(records: Sequence[ParsedRecord], centres: dict[str, int], default: str,
                     issues: list[Issue]) -> list[ParsedRecord]:
    """Rows without a centre go to ``default``, unless the registry holds named centres (``X416``)."""
    named = sorted(c for c in centres if c != default)
    blank = [r for r in records if not r.values["centre"]]
    if not blank:
        return list(records)
    if named:
        shown = ", ".join(repr(c) for c in named[:5]) + (f" and {len(named) - 5} more" if len(named) > 5 else "")
        hint = f"import with --centre NAME (e.g. --centre {named[0]!r}) or fill the 'centre' column"
        if len(blank) == len(records):
            issues.append(Issue(X_CENTRE_MISSING.code, f"the registry holds the centres {shown}; the file names "
                                "no centre (no --centre, no 'centre' column)", hint, None, "centre"))
        else:
            issues += [Issue(X_CENTRE_MISSING.code, f"the centre is empty and the registry holds the centres {shown}",
                             hint, r.line, "centre", "") for r in blank]
        return [r for r in records if r.values["centre"]]
    return [dataclasses.replace(r, values={**r.values, "centre": default}) if not r.values["centre"] else r
            for r in records]


def _new_patient_problem(record: ParsedRecord, variants: list[_Registered], options: ImportOptions) -> Issue | None:
    """Why ``record`` may not create a patient (probable duplicate, or ``--update`` without ``--allow-new``)."""
    return _new_patient_issue(record.values["centre"], record.values["patient_id"], record.line, variants, options)


def _new_patient_issue(centre: str, patient_id: str, line: int | None, variants: list[_Registered],
                       options: ImportOptions) -> Issue | None:
    """Why a record may not create a patient (probable duplicate, or ``--update`` without ``--allow-new``)."""
    same_centre = [v for v in variants if v.centre == centre]  # registered spellings differing in case
    other = [v for v in variants
             if v.centre != centre and (v.patient_id == patient_id or not options.case_sensitive_ids)]
    if same_centre and not options.case_sensitive_ids:
        spelling = same_centre[0].patient_id
        return Issue(X_ID_CASE.code, f"differs only in case from {spelling!r}, registered in centre '{centre}' "
                     "(probably the same patient)",
                     f"write {spelling!r} if it is the same patient; if they are different patients, pass "
                     "--case-sensitive-ids", line, "patient_id", patient_id)
    if other and not options.allow_id_in_other_centre:
        names = sorted({v.centre for v in other})
        return Issue(X_ID_OTHER_CENTRE.code, f"patient_id {other[0].patient_id!r} is registered in centre "
                     f"{', '.join(repr(n) for n in names)}, not in '{centre}'",
                     f"if it is the same patient, import with --centre {names[0]!r} (or correct the centre cell); "
                     f"if it is another patient of centre '{centre}', pass --allow-id-in-other-centre",
                     line, "patient_id", patient_id)
    if options.update and not options.allow_new:
        return Issue(X_NOT_REGISTERED.code, f"no patient {patient_id!r} is registered in centre '{centre}'; "
                     "--update changes registered patients only",
                     "correct the patient_id or the centre, or pass --allow-new to register new patients too",
                     line, "patient_id", patient_id)
    return None


def _plan_update(plan: ImportPlan, record: ParsedRecord, found: _Registered, old: dict[str, Any],
                 episodes: PatientRecord, options: ImportOptions) -> None:
    carried = [c for c in COLUMNS if c in record.carried and c not in ("centre", "patient_id")]
    merged = {**old, **{c: record.values[c] for c in carried}}  # a column the file does not carry is kept
    problems = check_record(merged, line=record.line, postop_window_days=options.postop_window_days)
    diff = [(c, old[c], merged[c]) for c in carried if old[c] != merged[c]]
    changes = flat_update_plan(episodes, {c: record.values[c] for c in carried})
    problems += [Issue(X_GRADE_BELOW_COMPLICATIONS.code, message, hint, record.line, column,
                       audit.text(record.values.get(column))) for column, message, hint in changes.refusals]
    after = None
    if not problems:  # the episodes the flat row does not show must stay coherent with the change
        after = merged_episodes(episodes, changes)
        problems += [dataclasses.replace(i, line=record.line) for i in check_patient(
            after, postop_window_days=options.postop_window_days)]
    if not options.allow_clear:
        problems += [Issue(X_CLEARS_VALUE.code, f"the update would clear {c} (registered: {audit.text(before)})",
                           "leave the column out of the file to keep the value (a column the file does not carry "
                           "is left unchanged), or pass --allow-clear to clear it", record.line, c, "")
                     for c, before, after in diff if after is None]
    if problems:
        plan.issues += problems
    elif diff:
        assert after is not None
        plan.updates.append(PlannedUpdate(record, found.pk, found.version, found.import_batch_id, old, merged, diff,
                                          changes, audit_state.stored_snapshot(after)))
    else:
        plan.unchanged += 1


def import_records(
    engine: sa.Engine,
    records: Sequence[ParsedRecord],
    *,
    source: str,
    sha256: str,
    rows: int,
    update: bool = False,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    actor: audit.Actor | None = None,
    options: ImportOptions | None = None,
    create_note: str | None = None,
    update_note: str | None = None,
) -> ImportResult:
    """Plan (:func:`plan_import`) and write ``records`` in one transaction; nothing is written when the
    plan has issues, or when it changes nothing (no import batch either).

    ``options`` (default: insert only, or ``update``) says what the import may do.  Every change
    enters the hash-chained audit trail in the same transaction, as ``actor`` (default: the
    operating-system user running the import): one ``create`` row per new patient (its values are
    the batch's file, identified by its SHA-256) and one ``update`` row per changed field (old → new).
    """
    options = options or ImportOptions(update=update, postop_window_days=postop_window_days)
    actor = actor or audit.Actor(None, f"cli:{_os_user()}")
    result = ImportResult()
    with engine.connect() as conn:  # planned without the write lock: others keep writing meanwhile
        plan = plan_import(conn, records, options)
    result.issues, result.unchanged = plan.issues, plan.unchanged
    if plan.issues or not (plan.creates or plan.updates):
        return result  # nothing written
    created = _new_records(plan.creates)  # built before the write lock (10,000 new patients: 0.5 s)
    # PostgreSQL, new patients only: the rows go in before the chain's head is locked (by the first
    # audit row); a patient registered meanwhile under one of the file's ids stops the import (unique key)
    late = engine.dialect.name == "postgresql" and not plan.updates
    try:
        with write_transaction(engine, lock_first=not late) as conn:
            stale = _stale(conn, plan)
            if stale:  # patients edited or registered meanwhile: plan them again, under the lock
                plan = _replanned(conn, plan, stale, options)
                result.issues, result.unchanged = plan.issues, plan.unchanged
                if plan.issues or not (plan.creates or plan.updates):
                    return result
            if late and plan.updates:  # with --update --allow-new, a patient registered meanwhile became an update
                lock_audit_head(conn)
            _write_plan(conn, plan, result, options=options, actor=actor, source=source, sha256=sha256, rows=rows,
                        create_note=create_note, update_note=update_note, created=created)
    except sa.exc.DBAPIError as exc:
        if late and is_conflict(exc):
            raise StoreBusy("a patient of the file was registered by someone else meanwhile; nothing was "
                            "imported: import again to see which") from exc
        raise
    refresh_statistics(engine, result.created + result.updated)
    return result


def _new_records(creates: Sequence[ParsedRecord]) -> dict[int, tuple[PatientRecord, str]]:
    """``id(row)`` → the new patient's record and its state (the ``create`` row's value)."""
    out: dict[int, tuple[PatientRecord, str]] = {}
    for r in creates:
        record = from_flat(r.values)
        out[id(r)] = (record, snapshot(record))
    return out


def _stale(conn: sa.Connection, plan: ImportPlan) -> list[ParsedRecord]:
    """The records ``plan`` saw differently from the registry now: updates of patients whose version
    changed (edited meanwhile, or deleted), and new patients whose id (or a spelling differing in
    case) was registered since."""
    stale: list[ParsedRecord] = []
    if plan.updates:
        now = _versions(conn, [u.pk for u in plan.updates])
        stale += [u.record for u in plan.updates if now.get(u.pk) != u.version]
    if plan.creates:
        taken = {r.patient_id.casefold() for r in _registered(conn, {r.values["patient_id"] for r in plan.creates})}
        stale += [r for r in plan.creates if r.values["patient_id"].casefold() in taken]
    return stale


def _versions(conn: sa.Connection, pks: Sequence[int]) -> dict[int, int]:
    """Patient id → version, 500 patients per statement (ids missing from the result were deleted)."""
    out: dict[int, int] = {}
    for start in range(0, len(pks), 500):
        chunk = sa.bindparam("pks", list(pks[start:start + 500]), expanding=True, literal_execute=True)
        out.update(conn.execute(sa.select(t.patient.c.id, t.patient.c.version).where(t.patient.c.id.in_(chunk))).all())
    return out


def _replanned(conn: sa.Connection, plan: ImportPlan, stale: Sequence[ParsedRecord], options: ImportOptions
               ) -> ImportPlan:
    """``plan`` with its ``stale`` records planned again against the registry as it is now.

    Only those records are read again (a web editor changing one patient during a 10,000-row update
    costs one patient's planning under the write lock, not the file's); the checks within the file
    (duplicate rows) held for the whole file and still do.
    """
    again = plan_import(conn, stale, options)
    gone = {id(r) for r in stale}
    return ImportPlan(creates=[r for r in plan.creates if id(r) not in gone] + again.creates,
                      updates=[u for u in plan.updates if id(u.record) not in gone] + again.updates,
                      unchanged=plan.unchanged + again.unchanged,
                      # the file-wide "every row is already registered" is about the whole file, not these rows
                      issues=[i for i in again.issues if not (i.code == X_ALREADY_REGISTERED.code and i.line is None)])


def _write_plan(conn: sa.Connection, plan: ImportPlan, result: ImportResult, *, options: ImportOptions,
                actor: audit.Actor, source: str, sha256: str, rows: int, create_note: str | None = None,
                update_note: str | None = None, created: Mapping[int, tuple[PatientRecord, str]] | None = None
                ) -> None:
    now = dt.datetime.now(dt.UTC)
    batch_id = conn.execute(
        sa.insert(t.import_batch).values(source=source[:500], sha256=sha256,
                                         mode="update" if options.update else "insert",
                                         rows=rows, created=0, updated=0, imported_at=now)
    ).inserted_primary_key[0]
    result.batch_id = batch_id
    centre_ids = _all_centres(conn)
    if plan.creates:
        made = dict(created or {})
        made.update(_new_records([r for r in plan.creates if id(r) not in made]))  # planned again under the lock
        records_new = [made[id(r)] for r in plan.creates]
        for r, _ in records_new:
            _ensure_centre(conn, centre_ids, r.centre)
        pks = insert_records(conn, t.EPISODES, [r for r, _ in records_new], centre_ids=centre_ids,
                             patient_extra={"import_batch_id": batch_id})
        result.created = len(pks)
        note = create_note or f"import batch {batch_id}: {source[:200]} (sha256 {sha256[:12]})"
        audit.append(conn, actor=actor, entries=[
            {"action": "create", "entity": "patient", "entity_id": pk, "patient_pk": pk, "centre": r.centre,
             "patient_id": r.patient_id, "new_value": state, "reason": note, "version": 1}
            for pk, (r, state) in zip(pks, records_new, strict=True)])
    note = update_note or f"import batch {batch_id} (--update): {source[:200]} (sha256 {sha256[:12]})"
    versions = write_plans(conn, [PatientWrite(u.pk, u.episodes, u.record.values["centre"],
                                               u.record.values["patient_id"], u.diff) for u in plan.updates],
                           actor=actor, reason=note, batch_id=batch_id)
    for planned in plan.updates:
        values = planned.record.values
        result.changes += [(values["centre"], values["patient_id"], c, before, after)
                           for c, before, after in planned.diff]
        result.updated += 1
    # the states planned (the tables are not read back under the write lock)
    audit.append(conn, actor=actor, states=False, entries=[audit_state.state_entry(
        u.pk, centre=u.record.values["centre"], patient_id=u.record.values["patient_id"],
        version=versions[u.pk], state=u.state) for u in plan.updates])
    conn.execute(sa.update(t.import_batch).where(t.import_batch.c.id == batch_id)
                 .values(created=result.created, updated=result.updated))


def append_states(conn: sa.Connection, actor: audit.Actor, pks: Sequence[int], *, batch: int = 1000) -> None:
    """The ``state`` rows of patients whose changes were appended with ``states=False`` (batched)."""
    for start in range(0, len(pks), batch):
        entries = [{"action": "update", "entity": "patient", "patient_pk": pk} for pk in pks[start:start + batch]]
        audit.append(conn, actor=actor, entries=audit_state.state_entries(conn, entries), states=False)


def import_patients(
    engine: sa.Engine,
    records: Iterable[PatientRecord],
    *,
    source: str,
    sha256: str,
    rows: int,
    options: ImportOptions | None = None,
    actor: audit.Actor | None = None,
) -> ImportResult:
    """Write patients with their episodes (the long format and the episode formats) in one
    transaction, under the rules of :func:`plan_import`; an update changes only the tables and
    columns a record carries (``PatientRecord.carried``) and keeps every episode it does not list.

    ``records`` are consumed once, :data:`BATCH` patients at a time — checked against the registry,
    then written while no issue has been found — so a large file never sits in memory; the first
    issue stops the writing, every later batch is still checked, and the transaction is rolled
    back.
    """
    options = options or ImportOptions()
    actor = actor or audit.Actor(None, f"cli:{_os_user()}")
    result = ImportResult()
    try:
        with write_transaction(engine) as conn:
            batch_id = conn.execute(sa.insert(t.import_batch).values(
                source=source[:500], sha256=sha256, mode="update" if options.update else "insert", rows=rows,
                created=0, updated=0, imported_at=dt.datetime.now(dt.UTC))).inserted_primary_key[0]
            writer = _PatientWriter(conn, options, actor, batch_id, source, sha256, result)
            chunk: list[PatientRecord] = []
            for record in records:
                chunk.append(record)
                if len(chunk) >= BATCH:
                    writer.batch(chunk)
                    chunk = []
            writer.batch(chunk)
            if writer.seen and writer.already == writer.seen and not options.update:
                result.issues.insert(0, Issue(
                    X_ALREADY_REGISTERED.code, f"every patient of the file ({writer.seen}) is already registered: "
                    "it was imported before", "nothing to import; to change registered patients, import with --update"))
            if result.issues or not (result.created or result.updated):
                raise _Refused
            conn.execute(sa.update(t.import_batch).where(t.import_batch.c.id == batch_id)
                         .values(created=result.created, updated=result.updated))
            result.batch_id = batch_id
    except _Refused:
        result.batch_id = None
        return result
    refresh_statistics(engine, result.created + result.updated)
    return result


class _Refused(Exception):
    """Raised inside the import transaction to roll it back (the issues are in the result)."""


class _PatientWriter:
    """Checks and writes batches of :class:`PatientRecord`; after the first issue it only checks."""

    def __init__(self, conn: sa.Connection, options: ImportOptions, actor: audit.Actor, batch_id: int, source: str,
                 sha256: str, result: ImportResult) -> None:
        self.conn, self.options, self.actor, self.batch_id, self.result = conn, options, actor, batch_id, result
        self.note = (f"import batch {batch_id}{' (--update)' if options.update else ''}: {source[:200]} "
                     f"(sha256 {sha256[:12]})")
        self.centres = _all_centres(conn)
        self.seen = self.already = 0

    def batch(self, chunk: list[PatientRecord]) -> None:
        if not chunk:
            return
        conn, options, result = self.conn, self.options, self.result
        chunk = self._centres(chunk)
        self.seen += len(chunk)
        registered = _registered(conn, {r.patient_id for r in chunk})
        by_key = {(r.centre, r.patient_id): r for r in registered}
        folded: dict[str, list[_Registered]] = {}
        for r in registered:
            folded.setdefault(r.patient_id.casefold(), []).append(r)
        found = {id(r): by_key.get((r.centre, r.patient_id)) for r in chunk}
        stored = read_patient_records(conn, t.EPISODES, t.centre, [f.pk for f in found.values() if f is not None]
                                      ) if options.update else {}
        creates: list[PatientRecord] = []
        updates: list[tuple[PatientRecord, int, UpdatePlan]] = []
        for record in chunk:
            file, line = record.where.get((Table.PATIENT, (record.patient_id,)), (None, None))
            hit = found[id(record)]
            if hit is None:
                problem = _new_patient_issue(record.centre, record.patient_id, line,
                                             folded.get(record.patient_id.casefold(), []), options)
                if problem is not None:
                    result.issues.append(dataclasses.replace(problem, file=file))
                else:
                    result.issues += _new_record_issues(record, line, options)
                    creates.append(record)
                continue
            if not options.update:
                self.already += 1
                result.issues.append(Issue(
                    X_ALREADY_REGISTERED.code, f"patient already registered in centre '{record.centre}'",
                    "use `oncosurg import --update` to change registered patients, or fix the patient_id",
                    line, "patient_id", record.patient_id, file))
                continue
            plan = plan_update(stored[hit.pk], record)
            if plan.clears and not options.allow_clear:
                result.issues += [Issue(X_CLEARS_VALUE.code, f"the update would clear {column} (registered: "
                                        f"{audit.text(before)})", "leave the column or file out to keep the value "
                                        "(what the file does not carry is left unchanged), or pass --allow-clear",
                                        line, column, "", file) for column, before in plan.clears]
            result.issues += check_patient(merged_episodes(stored[hit.pk], plan), where=_located_in(record),
                                           postop_window_days=options.postop_window_days)
            if plan:
                updates.append((record, hit.pk, plan))
            else:
                result.unchanged += 1
        if result.issues:
            return
        if creates:
            for r in creates:
                _ensure_centre(conn, self.centres, r.centre)
            pks = insert_records(conn, t.EPISODES, creates, centre_ids=self.centres,
                                 patient_extra={"import_batch_id": self.batch_id})
            audit.append(conn, actor=self.actor, entries=[
                {"action": "create", "entity": "patient", "entity_id": pk, "patient_pk": pk, "centre": r.centre,
                 "patient_id": r.patient_id, "new_value": snapshot(r), "reason": self.note, "version": 1}
                for pk, r in zip(pks, creates, strict=True)])
            result.created += len(pks)
        write_plans(conn, [PatientWrite(pk, plan, record.centre, record.patient_id) for record, pk, plan in updates],
                    actor=self.actor, reason=self.note, batch_id=self.batch_id)
        for record, _pk, plan in updates:
            result.changes += [(record.centre, record.patient_id, f"{c.table.value}.{c.column or '*'}", c.old, c.new)
                               for c in plan.changes]
            result.updated += 1
        append_states(conn, self.actor, [pk for _, pk, _ in updates])

    def _centres(self, chunk: list[PatientRecord]) -> list[PatientRecord]:
        """Records without a centre go to the default centre unless the registry holds named ones (X416)."""
        default = self.options.default_centre
        named = sorted(c for c in self.centres if c != default)
        out = []
        for record in chunk:
            if not record.centre:
                if named:
                    line = record.where.get((Table.PATIENT, (record.patient_id,)), (None, None))[1]
                    self.result.issues.append(Issue(
                        X_CENTRE_MISSING.code, f"the centre is empty and the registry holds the centres "
                        f"{', '.join(repr(c) for c in named[:5])}",
                        f"import with --centre NAME (e.g. --centre {named[0]!r}) or fill the 'centre' column",
                        line, "centre", ""))
                    continue
                record = dataclasses.replace(record, centre=default)
            out.append(record)
        return out


def _located_in(record: PatientRecord) -> Callable[[Table, Mapping[str, Any]], tuple[str | None, int | None]]:
    """``check_patient``'s ``where`` for the rows of ``record`` (the source's file and line of each key)."""
    def where(table: Table, row: Mapping[str, Any]) -> tuple[str | None, int | None]:
        key = tuple(row.get(k) for k in TABLE_BY_NAME[table].key)
        return record.where.get((table, key), (None, None))
    return where


def _new_record_issues(record: PatientRecord, line: int | None, options: ImportOptions) -> list[Issue]:
    """What keeps a record from creating a patient: a required patient field it lacks (``V301``; a
    source may carry only some tables), or a rule across its episodes."""
    missing = [f.name for f in TABLE_BY_NAME[Table.PATIENT].fields
               if f.required == "yes" and record.patient.get(f.name) is None]
    issues = [Issue(V_REQUIRED.code, f"a new patient needs {c}; the source does not give it",
                    f"add the {c} of this patient (or register the patient first)", line, c, None) for c in missing]
    if missing:
        return issues
    return check_patient(record, where=_located_in(record), postop_window_days=options.postop_window_days)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _all_centres(conn: sa.Connection) -> dict[str, int]:
    """Every centre of the registry: name → id (a short table)."""
    return {name: cid for name, cid in conn.execute(sa.select(t.centre.c.name, t.centre.c.id))}


def _ensure_centre(conn: sa.Connection, ids: dict[str, int], name: str) -> int:
    if name not in ids:
        ids[name] = conn.execute(sa.insert(t.centre).values(name=name)).inserted_primary_key[0]
    return ids[name]


def _registered(conn: sa.Connection, patient_ids: set[str]) -> list[_Registered]:
    """The registered patients whose patient_id equals one of ``patient_ids`` up to case, in any centre."""
    found: list[_Registered] = []
    wanted = sorted({p.casefold() for p in patient_ids})
    p = t.patient
    for chunk in range(0, len(wanted), 500):
        # The ids are written into the statement (literal_execute): PostgreSQL then matches each row
        # against a hashed set of them; as a prepared statement with 500 parameters it compared every
        # row with each parameter in turn (57 s of a 100,000-patient import, growing with the registry).
        ids = sa.bindparam("wanted", wanted[chunk:chunk + 500], expanding=True, literal_execute=True)
        query = (sa.select(p.c.id, t.centre.c.name, p.c.patient_id, p.c.version, p.c.import_batch_id)
                 .join(t.centre, t.centre.c.id == p.c.centre_id)
                 .where(sa.func.lower(p.c.patient_id).in_(ids)))
        found += [_Registered(*row) for row in conn.execute(query)]
    return found


def write_plan(conn: sa.Connection, pk: int, plan: UpdatePlan, *, actor: audit.Actor, centre: str,
               patient_id: str, reason: str | None, batch_id: int | None = None,
               log: Sequence[tuple[str, Any, Any]] | None = None, states: bool = True) -> int:
    """Apply ``plan`` to patient ``pk``: bump its version, audit every row created, changed or removed
    and, for an import (``batch_id``), record the changes in ``change_log`` — ``log`` (field, old, new)
    when given (a flat import logs flat columns), else one row per episode change; returns the new
    version.  (:func:`write_plans` for one patient.)"""
    return write_plans(conn, [PatientWrite(pk, plan, centre, patient_id, log)], actor=actor, reason=reason,
                       batch_id=batch_id, states=states)[pk]


@dataclass(frozen=True, slots=True)
class PatientWrite:
    """One patient's part of :func:`write_plans`: its plan, names for the trail, and (for a flat
    import) the flat columns to log instead of the episode changes."""

    pk: int
    plan: UpdatePlan
    centre: str
    patient_id: str
    log: Sequence[tuple[str, Any, Any]] | None = None


def write_plans(conn: sa.Connection, writes: Sequence[PatientWrite], *, actor: audit.Actor, reason: str | None,
                batch_id: int | None = None, states: bool = False) -> dict[int, int]:
    """:func:`write_plan` for many patients at once (imports), with the same rows in the tables, the
    trail and ``change_log``; returns patient id → new version.

    An import of 10,000 updates spent 10 s of its write lock in 70,000 statements, seven per
    patient; here the stored row ids are read 500 patients per statement, the versions bumped with
    one ``executemany``, the trail appended in one go and the change log inserted in one go.  The
    patients' ``state`` rows are appended here with ``states``, else they are the caller's
    (:func:`append_states`, batched).
    """
    if not writes:
        return {}
    pks = [w.pk for w in writes]
    touched = {c.table for w in writes for c in w.plan.changes if c.table is not Table.PATIENT}
    touched |= {PARENT_REFS[table][1] for table in list(touched) if table in PARENT_REFS}
    known = {table: stored_ids(conn, t.EPISODES, TABLE_BY_NAME[table], pks) for table in touched}
    versions = _versions(conn, pks)
    entries: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    deferred = DeferredUpdates(t.EPISODES)
    for w in writes:
        ids = {table: dict(known[table].get(w.pk, {})) for table in touched}
        done = apply_update(conn, t.EPISODES, w.pk, w.plan, ids=ids, deferred=deferred)
        versions[w.pk] += 1
        mine = [_audit_entry(change, row_id, pk=w.pk, centre=w.centre, patient_id=w.patient_id, reason=reason,
                             version=versions[w.pk]) for change, row_id in done]
        entries += mine
        if batch_id is not None:
            logs += [{"import_batch_id": batch_id, "patient_pk": w.pk, "field": f, "old_value": o, "new_value": n}
                     for f, o, n in _log_rows(mine, w.log)]
    deferred.flush(conn)
    bump = {"version": sa.bindparam("b_version")}
    if batch_id is not None:
        bump["import_batch_id"] = sa.literal(batch_id)
    conn.execute(sa.update(t.patient).where(t.patient.c.id == sa.bindparam("b_pk")).values(bump),
                 [{"b_pk": pk, "b_version": versions[pk]} for pk in dict.fromkeys(pks)])
    audit.append(conn, actor=actor, entries=entries, states=states)
    if logs:
        conn.execute(sa.insert(t.change_log), logs)
    return versions


def _log_rows(entries: Sequence[dict[str, Any]], log: Sequence[tuple[str, Any, Any]] | None
              ) -> list[tuple[str, Any, Any]]:
    """``change_log`` rows of one patient's write: the flat columns given, else one per episode change."""
    if log is not None:
        return [(f, audit.text(o), audit.text(n)) for f, o, n in log]
    return [(e["entity"] + "." + (e["field"] or "*"), e.get("old_value"), e.get("new_value")) for e in entries]


def _audit_entry(change: Change, row_id: int, *, pk: int, centre: str, patient_id: str, reason: str | None,
                 version: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": change.action, "entity": change.table.value, "entity_id": row_id,
                             "patient_pk": pk, "centre": centre, "patient_id": patient_id, "reason": reason,
                             "version": version, "field": change.column}
    if change.action == "update":
        entry |= {"old_value": audit.text(change.old), "new_value": audit.text(change.new)}
    elif change.action == "create":
        entry["new_value"] = row_json(change.table, change.new)
    else:
        entry["old_value"] = row_json(change.table, change.old)
    return entry


def row_json(table: Table, row: Mapping[str, Any] | None) -> str:
    spec = TABLE_BY_NAME[table]
    return json.dumps({f.name: audit.text((row or {}).get(f.name)) for f in spec.fields}, sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)


def write_stages(conn: sa.Connection, pk: int, record: Mapping[str, Any], *, actor: audit.Actor | None = None,
                 source: str = "registry CSV", stored: PatientRecord | None = None) -> UpdatePlan:
    """Bring a patient's flat projection to ``record`` (the flat columns it holds; the web app's cards),
    changing only the episodes the flat row shows.  Refusals (``plan.refusals``) are the caller's to
    report; with an ``actor`` the changes enter the audit trail here.  ``stored`` is the patient as
    the caller read it in this transaction (else it is read here)."""
    if stored is None:
        stored = read_patient_records(conn, t.EPISODES, t.centre, [pk])[pk]
    plan = flat_update_plan(stored, {k: v for k, v in record.items() if k in COLUMNS})
    if plan.refusals or not plan:
        return plan
    if actor is None:
        apply_update(conn, t.EPISODES, pk, plan)
    else:
        write_plan(conn, pk, plan, actor=actor, centre=stored.centre, patient_id=stored.patient_id, reason=source)
    return plan


def registry_select(patients: sa.Select | sa.BindParameter | Sequence[int] | None = None) -> sa.Select:
    """One row per patient with every flat registry column (the CSV's shape), projected from the episodes.

    ``patients`` (ids, or a select of one id column) restricts the projection to those patients
    before it ranks their episodes: a page of 50 patients costs 50 patients' work, not the registry's.
    An expanding bind parameter (``sa.bindparam("pks", expanding=True)``) builds the statement once
    for any list of ids.
    """
    if patients is None:
        return flat_select(t.EPISODES, t.centre)
    ids = patients if isinstance(patients, (sa.Select, sa.BindParameter)) else list(patients)
    tables: dict[Table, Any] = {}
    for table, stored in t.EPISODES.items():
        own = stored.c.id if table is Table.PATIENT else stored.c.patient_pk
        tables[table] = sa.select(stored).where(own.in_(ids)).subquery(f"{stored.name}_of")
    return flat_select(tables, t.centre)


def _flat_columns(record: PatientRecord) -> dict[str, Any]:
    """The registry columns of one patient's record (:func:`~oncosurg.pathway.flat.to_flat`)."""
    flat = to_flat(record)
    return {c: flat[c] for c in COLUMNS}


def read_record(conn: sa.Connection, pk: int) -> dict[str, Any]:
    """The registry columns of one patient: :func:`~oncosurg.pathway.flat.to_flat` of its episodes.

    The same row as :func:`registry_select`'s (a test compares them on random multi-episode
    registries), read in about 2 ms: the select ranks every patient's episodes before it can keep
    one patient (0.1 s for 10,000 patients, growing with the registry).  Raises ``LookupError``
    when no patient has id ``pk``.
    """
    records = read_patient_records(conn, t.EPISODES, t.centre, [pk])
    if pk not in records:
        raise LookupError(f"no patient with id {pk}")
    return _flat_columns(records[pk])


def iter_records(conn: sa.Connection, *, centre: str | None = None) -> Iterator[dict[str, Any]]:
    """Every patient's registry columns, ordered by centre then patient_id."""
    query = registry_select().order_by(t.centre.c.name, t.patient.c.patient_id)
    if centre is not None:
        query = query.where(t.centre.c.name == centre)
    for row in conn.execute(query).mappings():
        yield {c: row[c] for c in COLUMNS}


def stored_lookup(engine: sa.Engine) -> Callable[[Sequence[tuple[str, str]]], dict[tuple[str, str], PatientRecord]]:
    """``(centre, patient_id)`` keys → the stored records (the long reader checks an update on them)."""
    def lookup(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PatientRecord]:
        if not keys:
            return {}
        p = t.patient
        wanted = sa.tuple_(t.centre.c.name, p.c.patient_id).in_([tuple(k) for k in keys])
        with engine.connect() as conn:
            pks = conn.execute(sa.select(p.c.id).join(t.centre, t.centre.c.id == p.c.centre_id).where(wanted)
                               ).scalars().all()
            found = read_patient_records(conn, t.EPISODES, t.centre, pks)
        return {(r.centre, r.patient_id): r for r in found.values()}
    return lookup


def patients_beyond_flat(conn: sa.Connection, *, centre: str | None = None) -> int:
    """How many patients hold something the flat registry row cannot show: more than one therapy line,
    procedure, disease event or contact, any MDT review or response assessment, complications beyond
    one undated, undescribed complication per operation, pathology beyond the flat columns, or a
    patient field of the episode model (birth year, BRAF, MSI, referral date)."""
    p = t.patient

    def more_than(table: sa.Table, n: int) -> sa.ColumnElement[bool]:
        return sa.select(sa.func.count()).select_from(table).where(table.c.patient_pk == p.c.id
                                                                   ).scalar_subquery() > n

    c, path = t.complication, t.pathology
    line = t.therapy_line
    beyond = sa.or_(
        more_than(line, 1), more_than(t.liver_procedure, 1), more_than(t.disease_event, 1), more_than(t.contact, 1),
        more_than(t.mdt_review, 0), more_than(t.response_assessment, 0), more_than(c, 1),
        sa.exists().where(c.c.patient_pk == p.c.id, sa.or_(c.c.description.is_not(None),
                                                           c.c.complication_date.is_not(None))),
        sa.exists().where(path.c.patient_pk == p.c.id, sa.or_(path.c.lesion_count.is_not(None),
                                                              path.c.largest_lesion_mm.is_not(None),
                                                              path.c.margin_mm.is_not(None))),
        sa.exists().where(line.c.patient_pk == p.c.id, sa.or_(line.c.stop_date.is_not(None),
                                                              line.c.stop_reason.is_not(None),
                                                              line.c.schedule.is_not(None),
                                                              line.c.dose_mg_m2.is_not(None),
                                                              line.c.bsa_m2.is_not(None))),
        p.c.birth_year.is_not(None), p.c.braf_status.is_not(None), p.c.msi_status.is_not(None),
        p.c.referral_date.is_not(None))
    query = sa.select(sa.func.count()).select_from(p.join(t.centre, t.centre.c.id == p.c.centre_id)).where(beyond)
    if centre is not None:
        query = query.where(t.centre.c.name == centre)
    return int(conn.execute(query).scalar_one())


def count_patients(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
