"""Writing :class:`~oncosurg.pathway.flat.PatientRecord`\\ s into the episode tables and reading them back.

Bulk writes reserve the new rows' ids and insert each table's rows in one statement through the
driver (:mod:`oncosurg.store.bulk`), so importing a million episode rows is a few round trips per
batch of patients.  Reading is
batched by patient (one query per table per batch), so iterating a large registry keeps memory
bounded.  Updating a stored patient from a partial record (:func:`plan_update`) compares only what
the record carries: a table or column the source did not hold is left unchanged, an episode the
file does not list is kept, and a value cleared by an empty cell is listed in
:attr:`UpdatePlan.clears` so the caller can require ``--allow-clear``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import EPISODE_TABLES, PATIENT, TABLE_BY_NAME, EpisodeTable, Table
from oncosurg.pathway.update import Change, UpdatePlan
from oncosurg.schema import CLAVIEN_DINDO
from oncosurg.store.bulk import insert_rows, reserve_ids
from oncosurg.store.episode_tables import PARENT_REFS

Tables = Mapping[Table, sa.Table]
#: more facts read with a patient: ``(name, scalar subquery with the patient's id bound as pk)``
Also = tuple[tuple[str, Any], ...]
_INTERNAL = ("id", "patient_pk", "version", "grade_rank", "procedure_pk", "therapy_line_pk", "centre_id")


def _patient_row(record: PatientRecord, centre_id: int, extra: Mapping[str, Any]) -> dict[str, Any]:
    return {"centre_id": centre_id, **{f.name: record.patient.get(f.name) for f in PATIENT.fields}, **extra}


def episode_row(spec: EpisodeTable, row: Mapping[str, Any]) -> dict[str, Any]:
    """The store columns of one episode (parent keys excluded; the caller adds the parent's id)."""
    skip = PARENT_REFS[spec.table][2] if spec.table in PARENT_REFS else None
    out = {f.name: row.get(f.name) for f in spec.fields if f.name != skip}
    if spec.table is Table.COMPLICATION:
        out["grade_rank"] = CLAVIEN_DINDO.index(row["grade"])
    return out


def insert_records(conn: sa.Connection, tables: Tables, records: Sequence[PatientRecord], *,
                   centre_ids: Mapping[str, int], patient_extra: Mapping[str, Any] | None = None) -> list[int]:
    """Insert new patients with all their episodes; returns the patients' ids in ``records`` order.

    Ids are reserved first and rows go in through the driver (:mod:`oncosurg.store.bulk`): one
    statement per table, whatever the number of patients.
    """
    if not records:
        return []
    extra = dict(patient_extra or {})
    p = tables[Table.PATIENT]
    names = [f.name for f in PATIENT.fields]
    pks = reserve_ids(conn, p, len(records))
    insert_rows(conn, p, ["id", "centre_id", *names, *extra], [
        (pk, centre_ids[r.centre], *map(r.patient.get, names), *extra.values())
        for pk, r in zip(pks, records, strict=True)])
    parents: dict[Table, dict[tuple[int, Any], int]] = {}
    for spec in (*_PARENTS, *(s for s in EPISODE_TABLES if s.table not in _PARENT_TABLES)):
        table = tables[spec.table]
        ref = PARENT_REFS.get(spec.table)
        columns = _columns(spec)
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[int, Any]] = []
        for pk, record in zip(pks, records, strict=True):
            for row in record.rows(spec.table):
                values = [pk, *map(row.get, columns)]
                if ref is not None:
                    parent_key = row.get(ref[2])
                    values.append(None if parent_key is None else parents[ref[1]][(pk, parent_key)])
                if spec.table is Table.COMPLICATION:
                    values.append(CLAVIEN_DINDO.index(row["grade"]))
                rows.append(values)  # type: ignore[arg-type]
                if spec.table in _PARENT_TABLES:
                    keys.append((pk, row[spec.own_key]))
        if not rows:
            continue
        ids = reserve_ids(conn, table, len(rows))
        insert_rows(conn, table, ["id", "patient_pk", *columns, *_extra_columns(spec)],
                    [(i, *values) for i, values in zip(ids, rows, strict=True)])
        if spec.table in _PARENT_TABLES:
            parents[spec.table] = dict(zip(keys, ids, strict=True))
    return list(pks)


_PARENTS = tuple(TABLE_BY_NAME[t] for t in (Table.THERAPY_LINE, Table.LIVER_PROCEDURE))
_PARENT_TABLES = frozenset(s.table for s in _PARENTS)


def _columns(spec: EpisodeTable) -> list[str]:
    """The field columns of an episode table as stored (the parent's file key left out)."""
    skip = PARENT_REFS[spec.table][2] if spec.table in PARENT_REFS else None
    return [f.name for f in spec.fields if f.name != skip]


def _extra_columns(spec: EpisodeTable) -> list[str]:
    """Store columns after the fields: the parent's id, and a complication's grade rank."""
    out = [PARENT_REFS[spec.table][0]] if spec.table in PARENT_REFS else []
    return [*out, "grade_rank"] if spec.table is Table.COMPLICATION else out


def read_records(conn: sa.Connection, tables: Tables, centre: sa.Table, pks: Sequence[int]
                 ) -> dict[int, PatientRecord]:
    """The complete records of the patients ``pks`` (one query per table)."""
    return _read(conn, tables, centre, pks, None)


@dataclass(frozen=True, slots=True)
class StoredPatient:
    """One patient as stored: the record, each episode's row id and version by key, and the rows
    themselves with their internal columns (``id``, ``version``, ``grade_rank``…)."""

    pk: int
    record: PatientRecord
    ids: dict[Table, dict[tuple[Any, ...], tuple[int, int]]]
    rows: dict[Table, list[dict[str, Any]]]
    #: the patient's stored row (``id``, ``version``, ``import_batch_id``…) and its ``centre_name``
    head: dict[str, Any]
    #: the values of the caller's ``also`` subqueries, by name
    also: dict[str, Any] = field(default_factory=dict)


def read_stored(conn: sa.Connection, tables: Tables, centre: sa.Table, pk: int, *, also: Also = ()
                ) -> StoredPatient | None:
    """Patient ``pk`` with its episodes' ids and versions (a page that shows and edits one patient);
    ``None`` when there is no such patient.  SQLite and PostgreSQL read every episode table in one
    statement (:func:`_build_one`: the patient's row too, so one statement is one
    consistent read without a transaction), other databases with one query per table.

    ``also``: more facts about the patient read with it, as ``(name, scalar subquery)`` pairs with
    the patient's id bound as ``pk`` (a module constant: statements are built once per ``also``);
    their values are :attr:`StoredPatient.also`."""
    rows: dict[Table, list[dict[str, Any]]] = {}
    heads: dict[int, dict[str, Any]] = {}
    extra: dict[str, Any] = {}
    one = (_built(_build_one, (tables, centre, also), conn.dialect.name) if conn.dialect.name in _JSON_ARRAYS
           else None)
    if one is not None:
        records = _read_one(conn, pk, rows, heads, one, extra)
    else:
        records = _read(conn, tables, centre, [pk], rows, heads)
        if also and pk in records:
            extra = dict(conn.execute(sa.select(*(q.label(name) for name, q in also)), {"pk": pk}).one()._mapping)
    if pk not in records:
        return None
    record = records[pk]
    ids: dict[Table, dict[tuple[Any, ...], tuple[int, int]]] = {spec.table: {} for spec in EPISODE_TABLES}
    for spec in EPISODE_TABLES:
        for values, raw in zip(record.rows(spec.table), rows.get(spec.table, []), strict=True):
            ids[spec.table][tuple(values[k] for k in spec.key)] = (raw["id"], raw["version"])
    return StoredPatient(pk, record, ids, rows, heads[pk], extra)


def _read(conn: sa.Connection, tables: Tables, centre: sa.Table, pks: Sequence[int],
          keep: dict[Table, list[dict[str, Any]]] | None,
          heads: dict[int, dict[str, Any]] | None = None) -> dict[int, PatientRecord]:
    """:func:`read_records`; with ``keep``, also the stored rows of each table in the records' row
    order (the caller reads one patient)."""
    if not pks:
        return {}
    patients, episodes = _read_statements(tables, centre)
    out: dict[int, PatientRecord] = {}
    for row in conn.execute(patients, {"pks": list(pks)}).mappings():
        out[row["id"]] = PatientRecord(row["centre_name"], {f.name: row[f.name] for f in PATIENT.fields})
        if heads is not None:
            heads[row["id"]] = dict(row)
    keys: dict[Table, dict[int, Any]] = {}
    for spec in EPISODE_TABLES:
        _take(spec, conn.execute(episodes[spec.table], {"pks": list(pks)}).mappings().all(), out, keys, keep)
    _sort(out)
    return out


def _take(spec: EpisodeTable, rows: Sequence[Mapping[str, Any]], out: dict[int, PatientRecord],
          keys: dict[Table, dict[int, Any]], keep: dict[Table, list[dict[str, Any]]] | None) -> None:
    """Add one table's stored ``rows`` (ordered by patient, then id) to the records ``out``: the
    parents' file keys in place of their ids (``keys``: the parents' rows, read first)."""
    ref = PARENT_REFS.get(spec.table)
    if spec.table in (Table.THERAPY_LINE, Table.LIVER_PROCEDURE):
        keys[spec.table] = {r["id"]: r[spec.own_key] for r in rows}
    pairs = []
    for r in rows:
        values = {k: v for k, v in r.items() if k not in _INTERNAL}
        if ref is not None:
            column, parent, key = ref
            values[key] = None if r[column] is None else keys[parent][r[column]]
        values = _ordered(spec, values)
        out[r["patient_pk"]].episodes.setdefault(spec.table, []).append(values)
        pairs.append((values, r))
    if keep is not None:
        pairs.sort(key=lambda pair, s=spec: tuple(pair[0][k] for k in s.key))
        keep[spec.table] = [dict(r) for _, r in pairs]


def _sort(out: dict[int, PatientRecord]) -> None:
    for record in out.values():
        for spec in EPISODE_TABLES:
            if spec.table in record.episodes:
                record.episodes[spec.table].sort(key=lambda row, s=spec: tuple(row[k] for k in s.key))


#: Per dialect, the aggregate that makes a table's rows one JSON array in a single statement.
_JSON_ARRAYS = {"sqlite": ("json_group_array", "json_object"), "postgresql": ("json_agg", "json_build_object")}


def _read_one(conn: sa.Connection, pk: int, keep: dict[Table, list[dict[str, Any]]],
              heads: dict[int, dict[str, Any]], one: tuple[sa.Select, list[list[tuple[str, Any]]]],
              also: dict[str, Any]) -> dict[int, PatientRecord]:
    """:func:`_read` of one patient in one statement instead of one per table: on PostgreSQL each
    statement is a round trip to the server, and the patient page reads a patient on every view.
    The rows come back as JSON and get the types SQLAlchemy gives them (dates, booleans, floats);
    the ``also`` columns (after the arrays) with their own types, into ``also``."""
    statement, converters = one
    arrays = conn.execute(statement, {"pk": pk}).one()
    width = len(converters)
    also.update(zip(arrays._fields[width:], arrays[width:], strict=True))
    arrays = arrays[:width]
    found = _rows_of(arrays[0], converters[0])
    if not found:
        return {}
    head = heads[pk] = found[0]
    out = {pk: PatientRecord(head["centre_name"], {f.name: head[f.name] for f in PATIENT.fields})}
    keys: dict[Table, dict[int, Any]] = {}
    for spec, array, convert in zip(EPISODE_TABLES, arrays[1:], converters[1:], strict=True):
        rows = _rows_of(array, convert)
        rows.sort(key=lambda r: r["id"])
        _take(spec, rows, out, keys, keep)
    _sort(out)
    return out


def _rows_of(array: Any, convert: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    rows = json.loads(array) if isinstance(array, (str, bytes)) else (array or [])
    for r in rows:
        for name, to_type in convert:
            if r[name] is not None:
                r[name] = to_type(r[name])
    return rows


#: Statements built once per set of tables (and ``also``, and dialect): by ``(builder, id(tables),
#: id(centre), id(also), dialect)``, the objects kept in the entry so an id is never taken for another.
_BUILT: dict[tuple[Any, ...], tuple[tuple[Any, ...], Any]] = {}


def _built(build: Any, objects: tuple[Any, ...], *values: str) -> Any:
    """``build(*objects, *values)``, built once per ``objects`` (by identity) and ``values``."""
    key = (build, *map(id, objects), *values)
    found = _BUILT.get(key)
    if found is None or any(a is not b for a, b in zip(found[0], objects, strict=True)):
        if len(_BUILT) > 64:  # staging tables of past imports
            _BUILT.clear()
        found = _BUILT[key] = (objects, build(*objects, *values))
    return found[1]


def _json_pairs(columns: Any, dialect: str) -> tuple[list[Any], list[tuple[str, Any]]] | None:
    """``json_object``'s arguments (name, value, …) for ``columns`` ((name, column) pairs) and the
    conversions of their values."""
    pairs: list[Any] = []
    convert: list[tuple[str, Any]] = []
    for name, c in columns:
        value: Any = c
        if isinstance(c.type, sa.Date):
            convert.append((name, dt.date.fromisoformat))
        elif isinstance(c.type, sa.Boolean):
            convert.append((name, bool))
        elif isinstance(c.type, sa.Float):
            convert.append((name, float))
            if dialect == "sqlite":  # SQLite's JSON keeps 15 digits; 17 give back the stored double
                value = sa.case((c.is_(None), None), else_=sa.func.printf("%!.17g", c))
        elif not isinstance(c.type, (sa.Integer, sa.String)):
            return None  # a type this reader does not convert: one query per table
        pairs += [sa.literal_column(f"'{name}'"), value]
    return pairs, convert


def _build_one(tables: Tables, centre: sa.Table, also: Also, dialect: str
               ) -> tuple[sa.Select, list[list[tuple[str, Any]]]] | None:
    """``SELECT (the patient's row and centre as a JSON array), (the rows of episode table 1 as a
    JSON array), …, also…`` for one patient (``pk`` bound), and per array the columns whose JSON
    value needs converting (name, function); ``None`` if a column has a type it cannot convert."""
    group, obj = _JSON_ARRAYS[dialect]
    p = tables[Table.PATIENT]
    head = _json_pairs([*((c.name, c) for c in p.c), ("centre_name", centre.c.name)], dialect)
    if head is None:
        return None
    columns = [sa.select(getattr(sa.func, group)(getattr(sa.func, obj)(*head[0])))
               .select_from(p.join(centre, centre.c.id == p.c.centre_id))
               .where(p.c.id == sa.bindparam("pk")).scalar_subquery().label("patient")]
    converters = [head[1]]
    for spec in EPISODE_TABLES:
        table = tables[spec.table]
        found = _json_pairs([(c.name, c) for c in table.c], dialect)
        if found is None:
            return None
        converters.append(found[1])
        columns.append(sa.select(getattr(sa.func, group)(getattr(sa.func, obj)(*found[0])))
                       .where(table.c.patient_pk == sa.bindparam("pk")).scalar_subquery().label(spec.table.value))
    return sa.select(*columns, *(q.label(name) for name, q in also)), converters


def _read_statements(tables: Tables, centre: sa.Table) -> tuple[sa.Select, dict[Table, sa.Select]]:
    """:func:`_read`'s statements (patients, then each episode table), ids bound at run time: built
    once per set of tables (building them cost a third of reading one patient)."""
    return _built(_build_read, (tables, centre))


def _build_read(tables: Tables, centre: sa.Table) -> tuple[sa.Select, dict[Table, sa.Select]]:
    pks = sa.bindparam("pks", expanding=True)
    p = tables[Table.PATIENT]
    patients = (sa.select(p, centre.c.name.label("centre_name")).join(centre, centre.c.id == p.c.centre_id)
                .where(p.c.id.in_(pks)))
    episodes = {spec.table: sa.select(tables[spec.table]).where(tables[spec.table].c.patient_pk.in_(pks))
                .order_by(tables[spec.table].c.patient_pk, tables[spec.table].c.id) for spec in EPISODE_TABLES}
    return patients, episodes


def _ordered(spec: EpisodeTable, values: Mapping[str, Any]) -> dict[str, Any]:
    return {f.name: values.get(f.name) for f in spec.fields}


def iter_records(conn: sa.Connection, tables: Tables, centre: sa.Table, *, centre_name: str | None = None,
                 batch: int = 2000) -> Iterator[tuple[int, PatientRecord]]:
    """Every patient (id, record), ordered by centre then patient_id, read ``batch`` patients at a time."""
    p = tables[Table.PATIENT]
    query = sa.select(p.c.id).join(centre, centre.c.id == p.c.centre_id).order_by(centre.c.name, p.c.patient_id)
    if centre_name is not None:
        query = query.where(centre.c.name == centre_name)
    ids = conn.execute(query).scalars().all()
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]
        records = read_records(conn, tables, centre, chunk)
        for pk in chunk:
            yield pk, records[pk]


# ------------------------------------------------------------------------------------------ updates

class DeferredUpdates:
    """Value changes of stored rows collected from many patients' plans (:func:`apply_update`),
    written by :meth:`flush` with one ``executemany`` per (table, column): an import of 10,000
    updates wrote them one statement each, 2 s of its write lock.

    Only a change of a column that is neither part of the row's key nor a reference to a parent
    row is deferred: no other statement of the plans depends on it."""

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.groups: dict[tuple[Table, str], list[dict[str, Any]]] = {}

    def add(self, table: Table, row_id: int, column: str, value: Any) -> None:
        self.groups.setdefault((table, column), []).append({"d_id": row_id, "d_value": value})

    def flush(self, conn: sa.Connection) -> None:
        for (kind, column), params in self.groups.items():
            table = self.tables[kind]
            values: dict[str, Any] = {column: sa.bindparam("d_value")}
            if kind is not Table.PATIENT:
                values["version"] = table.c.version + 1
            if kind is Table.COMPLICATION and column == "grade":
                for p in params:
                    p["d_rank"] = None if p["d_value"] is None else CLAVIEN_DINDO.index(p["d_value"])
                values["grade_rank"] = sa.bindparam("d_rank")
            conn.execute(sa.update(table).where(table.c.id == sa.bindparam("d_id")).values(values), params)
        self.groups.clear()


def apply_update(conn: sa.Connection, tables: Tables, pk: int, plan: UpdatePlan, *,
                 ids: dict[Table, dict[tuple[Any, ...], int]] | None = None,
                 deferred: DeferredUpdates | None = None) -> list[tuple[Change, int]]:
    """Write ``plan`` for patient ``pk``; returns each change with the id of the row it touched.

    Children are deleted before their parent and parents created before their children; within a
    row, a change of its key comes last in the plan.  The caller bumps the patient's version and
    writes the audit trail.  ``ids``: the patient's stored row ids of some tables (key → id, as
    :func:`stored_ids` reads them), when the caller read them for many patients at once; the others
    are read here.  ``deferred``: value changes that no other statement depends on are collected
    there, for the caller to :meth:`~DeferredUpdates.flush` (many patients at once).
    """
    done: list[tuple[Change, int]] = []
    ids = {} if ids is None else ids

    def row_id(table: Table, key: tuple[Any, ...]) -> int | None:
        if table not in ids:
            ids[table] = _stored_ids(conn, tables, TABLE_BY_NAME[table], pk)
        return ids[table].get(key)

    order = {spec.table: i for i, spec in enumerate((PATIENT, *EPISODE_TABLES))}
    # a child detached from its parent (its reference emptied) lets go before the parent is deleted
    detach = [c for c in plan.changes if c.action == "update" and c.new is None and c.table in PARENT_REFS
              and c.column == PARENT_REFS[c.table][2]]
    deletes = sorted((c for c in plan.changes if c.action == "delete"), key=lambda c: -order[c.table])
    others = sorted((c for c in plan.changes if c.action != "delete" and not any(c is d for d in detach)),
                    key=lambda c: order[c.table])
    for change in [*detach, *deletes, *others]:  # children deleted before their parent, parents created first
        spec, table = TABLE_BY_NAME[change.table], tables[change.table]
        if change.table is Table.PATIENT:
            if deferred is not None:
                deferred.add(Table.PATIENT, pk, change.column, change.new)
            else:
                conn.execute(sa.update(table).where(table.c.id == pk).values({change.column: change.new}))
            done.append((change, pk))
            continue
        if change.action == "create":
            values = {"patient_pk": pk, **episode_row(spec, change.new)}
            ref = PARENT_REFS.get(change.table)
            if ref is not None:
                column, parent, key = ref
                parent_key = change.new.get(key)
                values[column] = None if parent_key is None else row_id(parent, (parent_key,))
            new_id = conn.execute(sa.insert(table).returning(table.c.id), values).scalar_one()
            ids.setdefault(change.table, _stored_ids(conn, tables, spec, pk))[change.key] = new_id
            done.append((change, new_id))
            continue
        target = row_id(change.table, change.key)
        if target is None:  # pragma: no cover - plans are made from the stored record
            raise LookupError(f"{change.table} {change.key} of patient {pk} is not stored")
        ref = PARENT_REFS.get(change.table)
        if change.action == "delete":
            conn.execute(sa.delete(table).where(table.c.id == target))
        elif (deferred is not None and change.column not in spec.key
              and (ref is None or change.column != ref[2])):
            deferred.add(change.table, target, change.column, change.new)
        else:
            values = {change.column: change.new, "version": table.c.version + 1}
            if ref is not None and change.column == ref[2]:  # a review's line: stored as the line's id
                del values[change.column]
                values[ref[0]] = None if change.new is None else row_id(ref[1], (change.new,))
            if change.table is Table.COMPLICATION and change.column == "grade":
                values["grade_rank"] = CLAVIEN_DINDO.index(change.new)
            conn.execute(sa.update(table).where(table.c.id == target).values(values))
        done.append((change, target))
    return done


def _stored_ids(conn: sa.Connection, tables: Tables, spec: EpisodeTable, pk: int) -> dict[tuple[Any, ...], int]:
    """Key → row id of a patient's rows of one table (child keys joined through their parent)."""
    return stored_ids(conn, tables, spec, [pk]).get(pk, {})


def stored_ids(conn: sa.Connection, tables: Tables, spec: EpisodeTable, pks: Sequence[int]
               ) -> dict[int, dict[tuple[Any, ...], int]]:
    """Patient id → (key → row id) of the patients' rows of one table (child keys joined through
    their parent), read 500 patients per statement."""
    table = tables[spec.table]
    ref = PARENT_REFS.get(spec.table)
    if ref is None or spec.table in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT):
        query = sa.select(table.c.patient_pk, *[table.c[k] for k in spec.key], table.c.id)
    else:
        column, parent, key = ref
        parent_table = tables[parent]
        own = [table.c[k] for k in spec.key if k != key]
        query = (sa.select(table.c.patient_pk, parent_table.c[key], *own, table.c.id)
                 .join(parent_table, parent_table.c.id == table.c[column]))
    out: dict[int, dict[tuple[Any, ...], int]] = {}
    for start in range(0, len(pks), 500):
        chunk = list(pks[start:start + 500])
        where = (table.c.patient_pk == chunk[0] if len(chunk) == 1 else
                 table.c.patient_pk.in_(sa.bindparam("pks", chunk, expanding=True, literal_execute=True)))
        for r in conn.execute(query.where(where)):
            out.setdefault(r[0], {})[tuple(r[1:-1])] = r[-1]
    return out



def episode_ids(conn: sa.Connection, tables: Tables, pk: int) -> dict[Table, dict[tuple[Any, ...], tuple[int, int]]]:
    """Per episode table of patient ``pk``: key → (row id, row version), for editors that name rows
    by id and lock them by version."""
    out: dict[Table, dict[tuple[Any, ...], tuple[int, int]]] = {}
    for spec in EPISODE_TABLES:
        table = tables[spec.table]
        ids = _stored_ids(conn, tables, spec, pk)
        versions = dict(conn.execute(sa.select(table.c.id, table.c.version).where(table.c.patient_pk == pk)).all())
        out[spec.table] = {key: (row_id, versions[row_id]) for key, row_id in ids.items()}
    return out
