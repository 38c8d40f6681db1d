"""The episode tables as protocol expressions see them: scopes for queries, and the data cut.

A query in a protocol expression (``exists(liver_procedure where …)``, ``first(mdt_review.decision
where …)``) reads one patient's episodes of one table.  :class:`Episodes` hands the expression
compiler a fresh alias of the table per query (:class:`~oncosurg.protocol.expr.EpisodeScope`) with the
columns of the episode model (:mod:`oncosurg.pathway.model`): a child's parent key and date are
joined in (a complication sees ``procedure_no``, ``procedure_date`` and ``procedure_type``; an MDT
review or response assessment sees the ``line_number`` of its line).

**Data cut.** With a cut date every table is replaced by the rows dated on or before it
(:func:`cut_tables`): episodes after the cut do not exist for the protocol (index, eligibility,
origins, events, the flat projection alike).  Contacts after the cut become one contact *alive on
the cut date* (the patient was known to be alive then), so follow-up is truncated at the cut and a
death after the cut is censored at the cut, as administrative censoring in R (``pmin(time, cut)``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.model import TABLE_BY_NAME, EpisodeTable, Table
from oncosurg.protocol.expr import ColumnType, EpisodeScope
from oncosurg.schema import Field, Kind

#: Tables a query may read, in pathway order.
QUERY_TABLES: tuple[Table, ...] = (Table.THERAPY_LINE, Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT,
                                   Table.LIVER_PROCEDURE, Table.COMPLICATION, Table.PATHOLOGY,
                                   Table.DISEASE_EVENT, Table.CONTACT)
SEGMENTS = tuple(str(i) for i in range(1, 9))

_KIND_TO_TYPE = {Kind.TEXT: "text", Kind.ENUM: "text", Kind.INTEGER: "int", Kind.NUMBER: "float",
                 Kind.DATE: "date", Kind.BOOL: "bool", Kind.SEGMENTS: "codes", Kind.CODES: "codes"}


def field_type(f: Field) -> ColumnType:
    """The expression type of a registry or episode field."""
    kind = _KIND_TO_TYPE[f.kind]
    if f.kind is Kind.SEGMENTS:
        return ColumnType(kind, SEGMENTS)
    return ColumnType(kind, f.choices if f.kind in (Kind.ENUM, Kind.CODES) else ())


def layer(select: sa.Select, name: str) -> sa.CTE:
    """A named layer of the analysis view: a CTE, so the SQL nests shallowly (SQLite's parser stack) and,
    on PostgreSQL, ``MATERIALIZED`` so each layer is computed once per query rather than re-planned
    inside every correlated subquery."""
    return (select.cte(name).prefix_with("MATERIALIZED", dialect="postgresql")
            .prefix_with("MATERIALIZED", dialect="sqlite"))


def _inline(select: sa.Select, name: str) -> sa.CTE:
    # read through many aliases by correlated queries: PostgreSQL must inline it to use the indexes
    return select.cte(name).prefix_with("NOT MATERIALIZED", dialect="postgresql")


def cut_tables(tables: Mapping[Table, sa.Table], cut: dt.date | None) -> dict[Table, sa.FromClause]:
    """The episode tables as of the data cut (the tables themselves when there is no cut)."""
    if cut is None:
        return dict(tables)
    at = sa.literal(cut, sa.Date())
    out: dict[Table, sa.FromClause] = {Table.PATIENT: tables[Table.PATIENT]}

    def upto(table: Table, column: str, *, undated: bool = False) -> sa.FromClause:
        t = tables[table]
        cond = t.c[column] <= at
        if undated:
            cond = sa.or_(cond, t.c[column].is_(None))
        return _inline(sa.select(t).where(cond), f"{table.value}_cut")

    out[Table.THERAPY_LINE] = upto(Table.THERAPY_LINE, "start_date", undated=True)
    out[Table.MDT_REVIEW] = upto(Table.MDT_REVIEW, "review_date")
    out[Table.RESPONSE_ASSESSMENT] = upto(Table.RESPONSE_ASSESSMENT, "assessment_date")
    out[Table.LIVER_PROCEDURE] = upto(Table.LIVER_PROCEDURE, "procedure_date")
    out[Table.DISEASE_EVENT] = upto(Table.DISEASE_EVENT, "event_date")
    proc = tables[Table.LIVER_PROCEDURE]
    kept = sa.select(proc.c.id).where(proc.c.procedure_date <= at)
    comp, path = tables[Table.COMPLICATION], tables[Table.PATHOLOGY]
    out[Table.COMPLICATION] = _inline(sa.select(comp).where(comp.c.procedure_pk.in_(kept),
                                                            sa.or_(comp.c.complication_date.is_(None),
                                                                   comp.c.complication_date <= at)),
                                      "complication_cut")
    out[Table.PATHOLOGY] = _inline(sa.select(path).where(path.c.procedure_pk.in_(kept)), "pathology_cut")
    contact = tables[Table.CONTACT]
    after = contact.c.contact_date > at
    cols = [sa.case((after, at), else_=contact.c.contact_date).label(c.name) if c.name == "contact_date"
            else sa.case((after, "alive"), else_=contact.c.vital_status).label(c.name) if c.name == "vital_status"
            else c for c in contact.c]
    out[Table.CONTACT] = _inline(sa.select(*cols), "contact_cut")
    return out


@dataclass(frozen=True)
class Episodes:
    """Fresh scopes of the (cut) episode tables, correlated on ``patient_pk`` (the outer patient)."""

    source: Mapping[Table, sa.FromClause]
    patient_pk: Any
    tables: tuple[str, ...] = tuple(t.value for t in QUERY_TABLES)

    def correlated(self, patient_pk: Any) -> Episodes:
        return Episodes(self.source, patient_pk, self.tables)

    def scope(self, table: str) -> EpisodeScope:
        return episode_scope(self.source, Table(table))


def _undated_first(date: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    return sa.case((date.is_(None), 0), else_=1)


def episode_scope(source: Mapping[Table, sa.FromClause], table: Table) -> EpisodeScope:
    """A fresh alias of ``table`` with the model's columns (a child's parent key and date joined in)."""
    spec: EpisodeTable = TABLE_BY_NAME[table]
    own = source[table].alias()
    columns: dict[str, Any] = {}
    types: dict[str, ColumnType] = {}
    for f in spec.fields:
        if f.name in own.c:
            columns[f.name], types[f.name] = own.c[f.name], field_type(f)
    from_: sa.FromClause = own
    dates: tuple[str, ...] = (spec.date,) if spec.date else ()
    order: list[Any] = []
    if table in (Table.COMPLICATION, Table.PATHOLOGY):
        parent = source[Table.LIVER_PROCEDURE].alias()
        pspec = TABLE_BY_NAME[Table.LIVER_PROCEDURE]
        from_ = own.join(parent, parent.c.id == own.c.procedure_pk)
        for name in ("procedure_no", "procedure_date", "procedure_type"):
            columns[name], types[name] = parent.c[name], field_type(pspec.field_by_name[name])
        dates = (*dates, "procedure_date")
        order = [parent.c.procedure_date, parent.c.procedure_no]
        if table is Table.COMPLICATION:
            order += [_undated_first(own.c.complication_date), own.c.complication_date, own.c.complication_no]
    elif table in (Table.MDT_REVIEW, Table.RESPONSE_ASSESSMENT):
        line = source[Table.THERAPY_LINE].alias()
        from_ = own.outerjoin(line, line.c.id == own.c.therapy_line_pk)
        columns["line_number"] = line.c.line_number
        types["line_number"] = field_type(spec.field_by_name["line_number"])
    if not order:
        date = own.c[spec.date] if spec.date else None
        order = ([] if date is None else [_undated_first(date), date]) + [own.c[k] for k in spec.key]
    return EpisodeScope(table=table.value, from_=from_, columns=columns, types=types, patient_pk=own.c.patient_pk,
                        id=own.c.id, dates=dates, order=tuple(order))
