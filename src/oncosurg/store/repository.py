"""Writing validated records into the store, all or nothing, and reading them back as rows.

:func:`plan_import` decides, without writing, what a file does to the registry: which rows create
patients, which update registered ones (field by field) and which are refused, with every reason
at once.  :func:`import_records` (``oncosurg import``) plans on a read snapshot (no lock) and
writes with :func:`oncosurg.store.bulk.write` — all or nothing, holding the write lock only for a
short final swap; the web app's CSV upload plans and writes with the same functions.  The rules (``docs/rules.md``):

* a row names a patient by ``(centre, patient_id)``; a row without a centre goes to
  ``default_centre``, unless the registry holds other (named) centres (``X416``);
* without ``update`` a registered patient is refused (``X411``); with ``update`` an unregistered
  one is refused unless ``allow_new`` (``X415``);
* a new patient whose patient_id differs only in case from one of its centre (``X413``, unless
  ``case_sensitive_ids``) or is registered in another centre (``X414``, unless
  ``allow_id_in_other_centre``) is refused as a probable duplicate;
* an update changes only the columns the file carries (:class:`~oncosurg.ingest.csv.ParsedRecord`);
  emptying a registered value needs ``allow_clear`` (``X417``); the cross-field rules must hold on
  the merged record, and its worst Clavien-Dindo grade may not fall below a complication recorded one
  by one (``X418``: the grade is derived from the complications, :mod:`oncosurg.store.complications`).

Each change enters the hash-chained audit trail and ``change_log`` (field, old → new); an updated
patient's ``version`` is incremented.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedRecord
from oncosurg.rules import (
    V_REQUIRED,
    X_ALREADY_REGISTERED,
    X_CENTRE_MISSING,
    X_CLEARS_VALUE,
    X_DUPLICATE_ID,
    X_ID_CASE,
    X_ID_OTHER_CENTRE,
    X_NOT_REGISTERED,
    Issue,
    check_record,
)
from oncosurg.schema import (
    CLAVIEN_DINDO,
    COLUMNS,
    DEFAULT_CENTRE,
    DEFAULT_POSTOP_WINDOW_DAYS,
    FIELDS,
    REQUIRED,
    Stage,
)
from oncosurg.store import audit, bulk, complications
from oncosurg.store import tables as t


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
    items: list[complications.Complication] = field(default_factory=list)  # its complication rows

    def to_bulk(self) -> bulk.Update:
        return bulk.Update(self.pk, self.version, self.record.values["centre"], self.old["patient_id"], self.merged,
                           self.diff, self.items, self.record.line)


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
    stored = read_records(conn, [r.pk for r in registered]) if options.update else {}
    items = complications.load_many(conn, [r.pk for r in registered]) if options.update else {}
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
                _plan_update(plan, record, found, stored[found.pk], options, items.get(found.pk, []))
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
    centre, patient_id = record.values["centre"], record.values["patient_id"]
    same_centre = [v for v in variants if v.centre == centre]  # registered spellings differing in case
    other = [v for v in variants
             if v.centre != centre and (v.patient_id == patient_id or not options.case_sensitive_ids)]
    if same_centre and not options.case_sensitive_ids:
        spelling = same_centre[0].patient_id
        return Issue(X_ID_CASE.code, f"differs only in case from {spelling!r}, registered in centre '{centre}' "
                     "(probably the same patient)",
                     f"write {spelling!r} if it is the same patient; if they are different patients, pass "
                     "--case-sensitive-ids", record.line, "patient_id", patient_id)
    if other and not options.allow_id_in_other_centre:
        names = sorted({v.centre for v in other})
        return Issue(X_ID_OTHER_CENTRE.code, f"patient_id {other[0].patient_id!r} is registered in centre "
                     f"{', '.join(repr(n) for n in names)}, not in '{centre}'",
                     f"if it is the same patient, import with --centre {names[0]!r} (or correct the centre cell); "
                     f"if it is another patient of centre '{centre}', pass --allow-id-in-other-centre",
                     record.line, "patient_id", patient_id)
    if options.update and not options.allow_new:
        return Issue(X_NOT_REGISTERED.code, f"no patient {patient_id!r} is registered in centre '{centre}'; "
                     "--update changes registered patients only",
                     "correct the patient_id or the centre, or pass --allow-new to register new patients too",
                     record.line, "patient_id", patient_id)
    return None


def _plan_update(plan: ImportPlan, record: ParsedRecord, found: _Registered, old: dict[str, Any],
                 options: ImportOptions, items: list[complications.Complication]) -> None:
    carried = [c for c in COLUMNS if c in record.carried and c not in ("centre", "patient_id")]
    merged = {**old, **{c: record.values[c] for c in carried}}  # a column the file does not carry is kept
    problems = check_record(merged, line=record.line, postop_window_days=options.postop_window_days)
    problems += complications.check(items, merged.get("clavien_dindo_max"), line=record.line)
    diff = [(c, old[c], merged[c]) for c in carried if old[c] != merged[c]]
    if not options.allow_clear:
        problems += [Issue(X_CLEARS_VALUE.code, f"the update would clear {c} (registered: {audit.text(before)})",
                           "leave the column out of the file to keep the value (a column the file does not carry "
                           "is left unchanged), or pass --allow-clear to clear it", record.line, c, "")
                     for c, before, after in diff if after is None]
    if problems:
        plan.issues += problems
    elif diff:
        plan.updates.append(PlannedUpdate(record, found.pk, found.version, found.import_batch_id, old, merged, diff,
                                          items))
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
    attempts: int = 3,
) -> ImportResult:
    """Plan (:func:`plan_import`, on a read snapshot: no lock) and write ``records`` all or nothing
    (:func:`oncosurg.store.bulk.write`: staged, then one short swap); nothing is written when the plan
    has issues, or when it changes nothing (no import batch either).

    ``options`` (default: insert only, or ``update``) says what the import may do.  Patients edited
    between the plan and the swap are planned again inside it (:func:`replan`); if the registry
    changed otherwise (a new patient_id registered meanwhile), the whole file is planned again, up
    to ``attempts`` times.  Every change enters the hash-chained audit trail in the swap, as
    ``actor`` (default: the operating-system user running the import): one ``create`` row per new
    patient carrying its values (field ``record``, the record as JSON; the reason names the batch's
    file by its SHA-256), one ``update`` row per changed field (old → new), and a row per field of
    each complication row added, changed or removed with the worst grade, so the patient's state can
    be recomputed from the trail (:mod:`oncosurg.store.audit_state`).
    """
    options = options or ImportOptions(update=update, postop_window_days=postop_window_days)
    actor = actor or audit.Actor(None, f"cli:{_os_user()}")
    for attempt in range(attempts):
        result = ImportResult()
        with engine.connect() as conn:
            plan = plan_import(conn, records, options)
        result.issues, result.unchanged = plan.issues, plan.unchanged
        if plan.issues or not (plan.creates or plan.updates):
            return result  # nothing written
        try:
            written = bulk.write(
                engine, creates=[r.values for r in plan.creates], updates=[u.to_bulk() for u in plan.updates],
                actor=actor, replan=replan(plan, options),
                create_note=f"import batch {{batch}}: {source[:200]} (sha256 {sha256[:12]})",
                update_note=f"import batch {{batch}} (--update): {source[:200]} (sha256 {sha256[:12]})",
                batch=bulk.BatchInfo(source, sha256, "update" if options.update else "insert", rows))
        except bulk.Refused as refused:
            result.issues = refused.issues
            return result
        except bulk.Changed:
            if attempt + 1 == attempts:
                raise
            continue
        result.batch_id, result.created, result.updated = written.batch_id, len(written.created), written.updated
        result.changes = [(u.centre, u.patient_id, c, o, n) for u in written.applied for c, o, n in u.diff]
        return result
    raise AssertionError("unreachable")


def replan(plan: ImportPlan, options: ImportOptions) -> bulk.Replan:
    """Plan again, under the swap's lock, the updates of patients edited since ``plan`` was made (their
    rows of the file against their records as they are now); :class:`oncosurg.store.bulk.Refused`
    when they now break a rule."""
    by_pk = {u.pk: u.record for u in plan.updates}

    def again(conn: sa.Connection, pks: Sequence[int]) -> list[bulk.Update]:
        fresh = plan_import(conn, [by_pk[pk] for pk in pks], options)
        if fresh.issues:
            raise bulk.Refused(fresh.issues)
        return [u.to_bulk() for u in fresh.updates]

    return again


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _all_centres(conn: sa.Connection) -> dict[str, int]:
    """Every centre of the registry: name → id (a short table)."""
    return {name: cid for name, cid in conn.execute(sa.select(t.centre.c.name, t.centre.c.id))}


def _registered(conn: sa.Connection, patient_ids: set[str]) -> list[_Registered]:
    """The registered patients whose patient_id equals one of ``patient_ids`` up to case, in any centre."""
    found: list[_Registered] = []
    wanted = sorted({p.casefold() for p in patient_ids})
    p = t.patient
    for chunk in range(0, len(wanted), 500):
        query = (sa.select(p.c.id, t.centre.c.name, p.c.patient_id, p.c.version, p.c.import_batch_id)
                 .join(t.centre, t.centre.c.id == p.c.centre_id)
                 .where(sa.func.lower(p.c.patient_id).in_(wanted[chunk:chunk + 500])))
        found += [_Registered(*row) for row in conn.execute(query)]
    return found


def upsert_stage(conn: sa.Connection, table: sa.Table, pk: int, row: dict[str, Any]) -> None:
    """Update the patient's row of a one-to-one stage table, or insert it."""
    done = conn.execute(sa.update(table).where(table.c.patient_pk == pk).values(**row)).rowcount
    if not done:
        conn.execute(sa.insert(table).values(patient_pk=pk, **row))


def write_stages(conn: sa.Connection, pk: int, record: Mapping[str, Any], *, source: str = "registry CSV",
                 previous: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Bring an existing patient's stage tables to a validated registry record (the patient row is the
    caller's).  Stages left empty are removed; complications follow the record's ``clavien_dindo_max``
    without ever removing one recorded one by one (:mod:`oncosurg.store.complications`: validate
    with :func:`oncosurg.store.complications.check` first).  With ``previous`` (the stored record),
    stages whose values did not change are not written.  Returns the audit entries of the
    complication rows added, changed or removed."""
    wanted = bulk.stage_rows(pk, record, source=source)
    before = bulk.stage_rows(pk, previous, source=source) if previous is not None else {}
    for table in t.STAGE_TABLES.values():
        rows = wanted.get(table)
        if previous is not None and before.get(table) == rows:
            continue
        if rows is None:
            conn.execute(sa.delete(table).where(table.c.patient_pk == pk))
        else:
            upsert_stage(conn, table, pk, {k: v for k, v in rows[0].items() if k != "patient_pk"})
    grade = record.get("clavien_dindo_max")
    if previous is not None and previous.get("clavien_dindo_max") == grade:
        return []  # the worst grade derived from the rows is already this one
    return complications.apply(conn, pk, grade, source=source)


def registry_select() -> sa.Select:
    """One row per patient with every registry column (the CSV's shape), built by joins."""
    p = t.patient
    # the worst grade of the patient's complications, looked up by the patient_pk index (a grouped
    # derived table would aggregate every patient's complications for each record read)
    worst = (sa.select(sa.func.max(t.complication.c.grade_rank)).where(t.complication.c.patient_pk == p.c.id)
             .scalar_subquery())
    grade_case = sa.case(
        {i: grade for i, grade in enumerate(CLAVIEN_DINDO) if i > 0}, value=worst,
        else_=sa.case((t.surgery.c.complications_assessed.is_(True), "none"), else_=sa.null()),
    )
    columns: list[sa.ColumnElement[Any]] = []
    for f in FIELDS:
        if f.name == "patient_id":
            columns.append(p.c.patient_id)
        elif f.name == "centre":
            columns.append(t.centre.c.name.label("centre"))
        elif f.name == "clavien_dindo_max":
            columns.append(grade_case.label("clavien_dindo_max"))
        elif f.stage is Stage.PATIENT:
            columns.append(p.c[f.name])
        else:
            columns.append(t.STAGE_TABLES[f.stage].c[f.name])
    joined = p.join(t.centre, t.centre.c.id == p.c.centre_id)
    for table in t.STAGE_TABLES.values():
        joined = joined.outerjoin(table, table.c.patient_pk == p.c.id)
    return sa.select(p.c.id.label("pk"), *columns).select_from(joined)


def read_records(conn: sa.Connection, pks: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The registry columns of many patients, by primary key (one query per 500 patients)."""
    out: dict[int, dict[str, Any]] = {}
    wanted = sorted(set(pks))
    for chunk in range(0, len(wanted), 500):
        query = registry_select().where(t.patient.c.id.in_(wanted[chunk:chunk + 500]))
        out.update({row["pk"]: {c: row[c] for c in COLUMNS} for row in conn.execute(query).mappings()})
    return out


def read_record(conn: sa.Connection, pk: int) -> dict[str, Any]:
    """The registry columns of one patient."""
    row = conn.execute(registry_select().where(t.patient.c.id == pk)).mappings().one()
    return {c: row[c] for c in COLUMNS}


def iter_records(conn: sa.Connection, *, centre: str | None = None) -> Iterator[dict[str, Any]]:
    """Every patient's registry columns, ordered by centre then patient_id."""
    query = registry_select().order_by(t.centre.c.name, t.patient.c.patient_id)
    if centre is not None:
        query = query.where(t.centre.c.name == centre)
    for row in conn.execute(query).mappings():
        yield {c: row[c] for c in COLUMNS}


def count_patients(conn: sa.Connection) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
