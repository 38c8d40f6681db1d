"""Complications and the worst Clavien-Dindo grade: the grade is derived from the rows, never the reverse.

A patient's complications are rows of ``complication``; the registry column ``clavien_dindo_max`` is
their worst grade (``none`` when complications were assessed and there were none).  A flat record
(a registry CSV row, the surgery card) carries only that worst grade.  Writing one reconciles the
rows with it (:func:`plan`) without ever losing a complication recorded one by one:

* the same worst grade: nothing changes;
* a higher grade: the row that stands for a flat worst grade (``from_worst_grade``) is raised to it,
  or such a row is added;
* a lower grade, ``none`` or empty: rows standing for a worst grade above it are lowered or removed;
  a complication recorded one by one above it refuses the record (rule X418), naming the rows: the
  user changes or deletes those complications (patient page), and the worst grade follows them.

Every row added, changed or removed becomes an audit entry (:func:`apply` returns them).  The
functions work on one patient's rows; with the episode tables (issue 11) the same plan applies to
one procedure's complications.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.rules import X_GRADE_BELOW_COMPLICATIONS, Issue
from oncosurg.schema import CLAVIEN_DINDO
from oncosurg.store import tables as t


@dataclass(frozen=True, slots=True)
class Complication:
    """One complication row (``from_worst_grade``: it only stands for a flat record's worst grade)."""

    id: int
    grade: str
    description: str | None
    from_worst_grade: bool

    @property
    def rank(self) -> int:
        return CLAVIEN_DINDO.index(self.grade)


@dataclass(frozen=True, slots=True)
class Plan:
    """What writing a worst grade does to the rows (``blocking`` non-empty: it is refused)."""

    add: str | None = None
    regrade: tuple[tuple[Complication, str], ...] = ()
    remove: tuple[Complication, ...] = ()
    blocking: tuple[Complication, ...] = field(default=())

    @property
    def changes(self) -> bool:
        return bool(self.add or self.regrade or self.remove)


def rank(grade: str | None) -> int:
    """``None`` and ``none`` rank 0, grade I 1 … V 7."""
    return 0 if grade is None else CLAVIEN_DINDO.index(grade)


def worst(items: Iterable[Complication]) -> str | None:
    """The worst grade of ``items`` (``None`` without any)."""
    best = max(items, key=lambda c: c.rank, default=None)
    return None if best is None else best.grade


def plan(items: Sequence[Complication], grade: str | None) -> Plan:
    """How to make the worst grade of ``items`` equal ``grade`` without touching an itemised row."""
    target = rank(grade)
    blocking = tuple(c for c in items if not c.from_worst_grade and c.rank > target)
    if blocking:
        return Plan(blocking=blocking)
    above = sorted((c for c in items if c.from_worst_grade and c.rank > target), key=lambda c: -c.rank)
    left = max((c.rank for c in items if c not in above), default=0)
    if left >= target:
        return Plan(remove=tuple(above))
    if above:  # lower the highest stand-in, remove the others
        return Plan(regrade=((above[0], grade),), remove=tuple(above[1:]))  # type: ignore[arg-type]
    stand_ins = sorted((c for c in items if c.from_worst_grade), key=lambda c: -c.rank)
    if stand_ins:  # a higher worst grade: the stand-in follows it
        return Plan(regrade=((stand_ins[0], grade),))  # type: ignore[arg-type]
    return Plan(add=grade)


def check(items: Sequence[Complication], grade: str | None, *, line: int | None) -> list[Issue]:
    """Rule X418: the worst grade may not go below a complication recorded one by one."""
    blocking = plan(items, grade).blocking
    if not blocking:
        return []
    shown = "; ".join(f"{c.grade}" + (f" '{c.description[:60]}'" if c.description else "") for c in blocking[:5])
    wanted = "empty" if grade is None else f"'{grade}'"
    return [Issue(
        X_GRADE_BELOW_COMPLICATIONS.code,
        f"the worst Clavien-Dindo grade would become {wanted}, below {len(blocking)} complication(s) recorded "
        f"one by one ({shown}); the grade is derived from them and never deletes them",
        "change or delete those complications on the patient page (Complications) first, or keep the worst "
        f"grade {worst(blocking)}", line, "clavien_dindo_max", grade)]


def _complication(row: Mapping[str, Any]) -> Complication:
    return Complication(int(row["id"]), row["grade"], row["description"], bool(row["from_worst_grade"]))


def load(conn: sa.Connection, pk: int) -> list[Complication]:
    """One patient's complication rows."""
    c = t.complication
    rows = conn.execute(sa.select(c.c.id, c.c.grade, c.c.description, c.c.from_worst_grade)
                        .where(c.c.patient_pk == pk).order_by(c.c.id)).mappings()
    return [_complication(r) for r in rows]


def load_many(conn: sa.Connection, pks: Iterable[int], *, chunk: int = 500) -> dict[int, list[Complication]]:
    """Complication rows of many patients (batched ``IN`` lists); patients without any are absent."""
    c = t.complication
    wanted = sorted(set(pks))
    out: dict[int, list[Complication]] = {}
    for i in range(0, len(wanted), chunk):
        rows = conn.execute(sa.select(c.c.id, c.c.patient_pk, c.c.grade, c.c.description, c.c.from_worst_grade)
                            .where(c.c.patient_pk.in_(wanted[i:i + chunk])).order_by(c.c.id)).mappings()
        for row in rows:
            out.setdefault(row["patient_pk"], []).append(_complication(row))
    return out


class GradeRefused(ValueError):
    """A worst grade below complications recorded one by one reached :func:`apply` (validate first)."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(issues[0].message)
        self.issues = issues


def stand_in(grade: str, source: str) -> dict[str, Any]:
    """The values of a row standing for a flat record's worst grade."""
    return {"grade": grade, "grade_rank": rank(grade), "description": f"worst complication ({source})",
            "from_worst_grade": True}


#: The fields of a complication row that the audit trail carries (the others are keys or derived).
AUDITED = ("grade", "description")


def entries(action: str, cid: int, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
            ) -> list[dict[str, Any]]:
    """The audit entries of one complication row added (``old`` None), changed, or removed (``new``
    None): one per audited field whose value differs (action, entity, entity_id, field, old_value,
    new_value; the caller adds who, why and the patient)."""
    out: list[dict[str, Any]] = []
    for name in AUDITED:
        before = None if old is None else old.get(name)
        after = None if new is None else new.get(name)
        if before != after:
            out.append({"action": action, "entity": "complication", "entity_id": cid, "field": name,
                        "old_value": before, "new_value": after})
    return out


def values(item: Complication) -> dict[str, Any]:
    """The audited values of a row (:data:`AUDITED`)."""
    return {"grade": item.grade, "description": item.description}


def apply(conn: sa.Connection, pk: int, grade: str | None, *, source: str) -> list[dict[str, Any]]:
    """Reconcile the patient's rows with ``grade``; returns one audit entry per field of each row added,
    changed or removed (:func:`entries`)."""
    items = load(conn, pk)
    todo = plan(items, grade)
    if todo.blocking:
        raise GradeRefused(check(items, grade, line=None))
    c = t.complication
    out: list[dict[str, Any]] = []
    for item in todo.remove:
        conn.execute(sa.delete(c).where(c.c.id == item.id))
        out += entries("delete", item.id, values(item), None)
    for item, new in todo.regrade:
        conn.execute(sa.update(c).where(c.c.id == item.id).values(grade=new, grade_rank=rank(new)))
        out += entries("update", item.id, values(item), values(item) | {"grade": new})
    if todo.add:
        row = stand_in(todo.add, source)
        cid = int(conn.execute(sa.insert(c).values(patient_pk=pk, **row)).inserted_primary_key[0])
        out += entries("create", cid, None, row)
    return out


def superseded(items: Sequence[Complication], grade: str) -> list[Complication]:
    """Rows standing for a worst grade of ``grade``: a complication of that grade recorded one by one
    is the one they stood for, and replaces them (a stand-in of another grade may be another
    complication, and stays)."""
    return [c for c in items if c.from_worst_grade and c.grade == grade]
