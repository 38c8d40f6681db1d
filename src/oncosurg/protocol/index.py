"""The index event: each patient's time zero, selected in SQL from their episodes.

``[index] episode = "therapy_line where intent = 'conversion' and has(agents, 'cetuximab')"`` makes
one row per patient: the first matching episode (earliest date, then key) among the episodes dated
on or before the data cut.  Its date is ``index_date`` and each of its columns ``index_<column>``
(``index_line_number``, ``index_agents``, ``index_procedure_type``…) in the analysis view.  Inside
the condition, ``index_date`` is the candidate episode's own date and the patient's columns are
visible (``sex``, ``referral``, ``referral_date``…), so a condition may look back::

    therapy_line where has(agents, 'cetuximab', 'panitumumab')
        and exists(therapy_line where stop_reason = 'progression' and start_date < index_date)

SQL shape: ``ROW_NUMBER() OVER (PARTITION BY patient_pk ORDER BY date, key)`` over the matching
episodes, keep row 1 (a patient enters once, at the first qualifying index).  R equivalent:
``d[order(d$id, d$date), ][!duplicated(id), ]`` after filtering the episodes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.model import PATIENT, Table
from oncosurg.protocol.episodes import Episodes, episode_scope, field_type, layer
from oncosurg.protocol.expr import ColumnType, Compiler, ExpressionError, parse_query
from oncosurg.protocol.model import IndexEvent

#: Patient columns visible in the index condition (besides the episode's own).
PATIENT_NAMES = tuple(f.name for f in PATIENT.fields if f.name != "patient_id")


@dataclass(frozen=True)
class IndexSelect:
    """The index subquery (``patient_pk``, ``index_id``, ``index_date``, ``index_<column>``…)."""

    subquery: sa.CTE
    table: Table
    types: Mapping[str, ColumnType]


def index_select(tables: Mapping[Table, sa.FromClause], index: IndexEvent, params: Mapping[str, Any]
                 ) -> IndexSelect:
    """Compile ``index.episode``; raises :class:`ExpressionError` with the position of a problem."""
    query = parse_query(index.episode)
    try:
        table = Table(query.table)
    except ValueError:
        table = None
    if table is None or table is Table.PATIENT:
        from difflib import get_close_matches

        names = [t.value for t in Table if t is not Table.PATIENT]
        guess = get_close_matches(query.table, names, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else f" (tables: {', '.join(names)})"
        raise ExpressionError(f"unknown episode table '{query.table}'{hint}", index.episode, query.position)
    scope = episode_scope(tables, table)
    if not scope.dates:
        raise ExpressionError(f"{table.value} has no date of its own; choose a dated table (e.g. liver_procedure)",
                              index.episode, query.position)
    patient = tables[Table.PATIENT].alias("index_patient")
    columns = {name: patient.c[name] for name in PATIENT_NAMES}
    types = {name: field_type(PATIENT.field_by_name[name]) for name in PATIENT_NAMES}
    compiler = Compiler(columns, types, params, episodes=Episodes(tables, scope.patient_pk))
    date = scope.columns[scope.dates[0]]
    _, compiled = compiler.compile_query(index.episode, scope=scope, extra={"index_date": (date, ColumnType("date"))})
    own = {name: col for name, col in scope.columns.items()}
    ranked = layer(sa.select(scope.patient_pk.label("patient_pk"), scope.id.label("index_id"),
                        sa.type_coerce(date, sa.Date()).label("index_date"),
                        *[col.label(f"index_{name}") for name, col in own.items()],
                        sa.func.row_number().over(partition_by=scope.patient_pk, order_by=scope.order).label("rn"))
              .select_from(scope.from_.join(patient, patient.c.id == scope.patient_pk))
              .where(compiled.sql, date.is_not(None)), "v_index_candidates")
    chosen = layer(sa.select(*[c for c in ranked.c if c.name != "rn"]).where(ranked.c.rn == 1), "v_index")
    out_types = {"index_date": ColumnType("date"), **{f"index_{n}": scope.types[n] for n in own}}
    return IndexSelect(chosen, table, out_types)


def accrual_text(column: str, start: Any, end: Any) -> str | None:
    """The accrual window as a protocol expression (``None`` without a window)."""
    s = start.isoformat() if start else None
    e = end.isoformat() if end else None
    if s and e:
        return f"{column} between date '{s}' and date '{e}'"
    if s:
        return f"{column} >= date '{s}'"
    if e:
        return f"{column} <= date '{e}'"
    return None
