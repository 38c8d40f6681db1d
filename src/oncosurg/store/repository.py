"""Writing validated records into the store, in one transaction, and reading them back as rows.

:func:`import_records` is all-or-nothing: it checks every record against the store first
(already-registered patients, rule ``X411``) and only then writes; any exception rolls back.
With ``update=True`` an existing patient's changed fields are overwritten, its ``version`` is
incremented and each change is recorded in ``change_log`` (field, old → new).
"""

from __future__ import annotations

import datetime as dt
import getpass
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedRecord
from oncosurg.rules import X_ALREADY_REGISTERED, Issue, check_record
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS, FIELD_BY_NAME, FIELDS, Stage
from oncosurg.store import audit
from oncosurg.store import tables as t

_PATIENT_COLUMNS = [f.name for f in FIELDS if f.stage is Stage.PATIENT and f.name not in ("patient_id", "centre")]


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
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    actor: audit.Actor | None = None,
) -> ImportResult:
    """Write ``records`` in one transaction; refuse everything if any patient is already registered
    (unless ``update``).

    Every change enters the hash-chained audit trail in the same transaction, as ``actor``
    (default: the operating-system user running the import): one ``create`` row per new patient
    (its values are the batch's file, identified by its SHA-256) and one ``update`` row per changed
    field (old → new).
    """
    actor = actor or audit.Actor(None, f"cli:{_os_user()}")
    result = ImportResult()
    with engine.begin() as conn:
        centre_ids = _centre_ids(conn, {r.values["centre"] for r in records})
        existing = _existing(conn, records, centre_ids)
        if not update:
            for record in records:
                key = (centre_ids.get(record.values["centre"]), record.values["patient_id"])
                if key in existing:
                    result.issues.append(Issue(
                        X_ALREADY_REGISTERED.code,
                        f"patient already registered in centre '{record.values['centre']}'",
                        "use `oncosurg import --update` to change registered patients, or fix the patient_id",
                        record.line, "patient_id", record.values["patient_id"]))
        else:
            # An update may carry only some columns: the cross-field rules must hold on the merged record.
            for record in records:
                pk = existing.get((centre_ids.get(record.values["centre"]), record.values["patient_id"]))
                if pk is not None:
                    merged = {**read_record(conn, pk), **record.values}
                    result.issues += check_record(merged, line=record.line, postop_window_days=postop_window_days)
        if result.issues:
            return result  # nothing written: the transaction holds no changes
        now = dt.datetime.now(dt.UTC)
        batch_id = conn.execute(
            sa.insert(t.import_batch).values(source=source[:500], sha256=sha256, mode="update" if update else "insert",
                                             rows=rows, created=0, updated=0, imported_at=now)
        ).inserted_primary_key[0]
        result.batch_id = batch_id
        new_rows: list[dict[str, Any]] = []
        new_values: list[dict[str, Any]] = []
        updates: list[tuple[int, dict[str, Any]]] = []
        for record in records:
            values = record.values
            centre_id = _ensure_centre(conn, centre_ids, values["centre"])
            pk = existing.get((centre_id, values["patient_id"]))
            if pk is None:
                new_rows.append({"centre_id": centre_id, "patient_id": values["patient_id"],
                                 "import_batch_id": batch_id, **{c: values.get(c) for c in _PATIENT_COLUMNS}})
                new_values.append(values)
            else:
                updates.append((pk, values))
        if new_rows:
            # executemany with RETURNING in parameter order (SQLite >= 3.35, PostgreSQL): one round trip per batch
            pks = conn.execute(sa.insert(t.patient).returning(t.patient.c.id, sort_by_parameter_order=True),
                               new_rows).scalars().all()
            _insert_stages(conn, [_stage_rows(pk, values) for pk, values in zip(pks, new_values, strict=True)])
            result.created = len(pks)
            note = f"import batch {batch_id}: {source[:200]} (sha256 {sha256[:12]})"
            audit.append(conn, actor=actor, entries=[
                {"action": "create", "entity": "patient", "entity_id": pk, "patient_pk": pk,
                 "centre": values["centre"], "patient_id": values["patient_id"], "reason": note, "version": 1}
                for pk, values in zip(pks, new_values, strict=True)])
        for pk, values in updates:
            old = read_record(conn, pk)
            diff = [(c, old.get(c), values.get(c)) for c in COLUMNS if c in values and old.get(c) != values.get(c)]
            if not diff:
                result.unchanged += 1
                continue
            merged = {**old, **{c: values[c] for c in values}}
            conn.execute(sa.update(t.patient).where(t.patient.c.id == pk).values(
                import_batch_id=batch_id, version=t.patient.c.version + 1,
                **{c: merged.get(c) for c in _PATIENT_COLUMNS}))
            write_stages(conn, pk, merged, source=f"import batch {batch_id}")
            version = conn.execute(sa.select(t.patient.c.version).where(t.patient.c.id == pk)).scalar_one()
            note = f"import batch {batch_id} (--update): {source[:200]} (sha256 {sha256[:12]})"
            for column, before, after in diff:
                conn.execute(sa.insert(t.change_log).values(
                    import_batch_id=batch_id, patient_pk=pk, field=column,
                    old_value=audit.text(before), new_value=audit.text(after)))
                result.changes.append((values["centre"], values["patient_id"], column, before, after))
            audit.append(conn, actor=actor, entries=[
                {"action": "update", "entity": FIELD_BY_NAME[column].stage.value, "entity_id": pk, "patient_pk": pk,
                 "centre": values["centre"], "patient_id": values["patient_id"], "field": column,
                 "old_value": before, "new_value": after, "reason": note, "version": version}
                for column, before, after in diff])
            result.updated += 1
        conn.execute(sa.update(t.import_batch).where(t.import_batch.c.id == batch_id)
                     .values(created=result.created, updated=result.updated))
    return result


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


def _existing(conn: sa.Connection, records: Sequence[ParsedRecord], centre_ids: dict[str, int]
              ) -> dict[tuple[int | None, str], int]:
    found: dict[tuple[int | None, str], int] = {}
    wanted = sorted({r.values["patient_id"] for r in records})
    for chunk in range(0, len(wanted), 500):
        ids = wanted[chunk : chunk + 500]
        query = sa.select(t.patient.c.centre_id, t.patient.c.patient_id, t.patient.c.id).where(
            t.patient.c.patient_id.in_(ids))
        for centre_id, pid, pk in conn.execute(query):
            found[(centre_id, pid)] = pk
    return found


_REQUIRED_STAGES = (Stage.PRIOR_CHEMO, Stage.CETUXIMAB, Stage.FOLLOW_UP)


def upsert_stage(conn: sa.Connection, table: sa.Table, pk: int, row: dict[str, Any]) -> None:
    """Update the patient's row of a one-to-one stage table, or insert it."""
    done = conn.execute(sa.update(table).where(table.c.patient_pk == pk).values(**row)).rowcount
    if not done:
        conn.execute(sa.insert(table).values(patient_pk=pk, **row))


def write_stages(conn: sa.Connection, pk: int, record: Mapping[str, Any], *, source: str = "registry CSV") -> None:
    """Bring an existing patient's stage tables to a validated registry record (the patient row is the
    caller's).  Stages left empty are removed; complications recorded one by one (web app) are kept
    as long as their worst grade still equals the record's ``clavien_dindo_max``."""
    for stage, table in t.STAGE_TABLES.items():
        row = {f.name: record.get(f.name) for f in FIELDS if f.stage is stage}
        if stage is Stage.SURGERY:
            if record.get("surgery_date") is None:
                conn.execute(sa.delete(table).where(table.c.patient_pk == pk))
                continue
            row["complications_assessed"] = record.get("clavien_dindo_max") is not None
        elif stage not in _REQUIRED_STAGES and all(v is None for v in row.values()):
            conn.execute(sa.delete(table).where(table.c.patient_pk == pk))
            continue
        upsert_stage(conn, table, pk, row)
    _sync_complications(conn, pk, record.get("clavien_dindo_max"), source)


def _sync_complications(conn: sa.Connection, pk: int, grade: str | None, source: str) -> None:
    """Make the complication rows agree with a worst grade (``none``/empty = no complication rows)."""
    c = t.complication
    rank = None if grade is None else CLAVIEN_DINDO.index(grade)
    if not rank:
        conn.execute(sa.delete(c).where(c.c.patient_pk == pk))
        return
    conn.execute(sa.delete(c).where(c.c.patient_pk == pk, c.c.grade_rank > rank))
    present = conn.execute(sa.select(sa.func.count()).select_from(c)
                           .where(c.c.patient_pk == pk, c.c.grade_rank == rank)).scalar_one()
    if not present:
        conn.execute(sa.insert(c).values(patient_pk=pk, grade=grade, grade_rank=rank,
                                         description=f"worst complication ({source})"))


def _stage_rows(pk: int, values: dict[str, Any]) -> dict[sa.Table, list[dict[str, Any]]]:
    """The stage-table rows of one patient (only stages with something recorded)."""
    out: dict[sa.Table, list[dict[str, Any]]] = {}
    for stage, table in t.STAGE_TABLES.items():
        row = {f.name: values.get(f.name) for f in FIELDS if f.stage is stage}
        if stage is Stage.SURGERY:
            if values.get("surgery_date") is None:
                continue
            row["complications_assessed"] = values.get("clavien_dindo_max") is not None
        elif stage not in _REQUIRED_STAGES and all(v is None for v in row.values()):
            continue
        out[table] = [{"patient_pk": pk, **row}]
    grade = values.get("clavien_dindo_max")
    if grade not in (None, "none"):
        out[t.complication] = [{"patient_pk": pk, "grade": grade, "grade_rank": CLAVIEN_DINDO.index(grade),
                                "description": "worst complication (registry CSV)"}]
    return out


def _insert_stages(conn: sa.Connection, per_patient: list[dict[sa.Table, list[dict[str, Any]]]]) -> None:
    """Insert stage rows grouped by table (executemany)."""
    grouped: dict[sa.Table, list[dict[str, Any]]] = {}
    for rows in per_patient:
        for table, items in rows.items():
            grouped.setdefault(table, []).extend(items)
    for table in [*t.STAGE_TABLES.values(), t.complication]:
        if grouped.get(table):
            conn.execute(sa.insert(table), grouped[table])


def registry_select() -> sa.Select:
    """One row per patient with every registry column (the CSV's shape), built by joins."""
    p = t.patient
    worst = (
        sa.select(t.complication.c.patient_pk, sa.func.max(t.complication.c.grade_rank).label("rank"))
        .group_by(t.complication.c.patient_pk)
        .subquery("worst")
    )
    grade_case = sa.case(
        *[(worst.c.rank == i, grade) for i, grade in enumerate(CLAVIEN_DINDO) if i > 0],
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
    joined = joined.outerjoin(worst, worst.c.patient_pk == p.c.id)
    return sa.select(p.c.id.label("pk"), *columns).select_from(joined)


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
