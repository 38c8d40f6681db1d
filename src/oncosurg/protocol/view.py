"""The analysis view: one row per patient with the registry columns and the derived columns.

Built as a SQLAlchemy subquery so every endpoint runs as a query inside the database, on SQLite
and PostgreSQL alike.  Date differences use :class:`days_between`, compiled per dialect.  Derived
columns (docs/analysis-view.md): operated, hepatectomy, major_hepatectomy, any_complication, postop_death,
os_days/os_months/os_event, pfs_days/pfs_months/pfs_event, followup_from_surgery_days/_months,
alive_at_last_contact, disease_free_at_last_contact, and the protocol's own derived predicates
(e.g. liver_abnormality).  Months are days / 30.4375.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from oncosurg.protocol.expr import ColumnType, Compiler
from oncosurg.schema import DAYS_PER_MONTH, FIELDS, Kind
from oncosurg.store.repository import registry_select


class days_between(FunctionElement):
    """Whole days from the first date to the second (``second - first``)."""

    type = sa.Integer()
    inherit_cache = True
    name = "days_between"


@compiles(days_between, "sqlite")
def _days_sqlite(element: days_between, compiler: Any, **kw: Any) -> str:
    a, b = list(element.clauses)
    return (f"CAST(ROUND(julianday({compiler.process(b, **kw)}) - julianday({compiler.process(a, **kw)})) "
            "AS INTEGER)")


@compiles(days_between)
def _days_default(element: days_between, compiler: Any, **kw: Any) -> str:
    a, b = list(element.clauses)
    return f"({compiler.process(b, **kw)} - {compiler.process(a, **kw)})"


_KIND_TO_TYPE = {
    Kind.TEXT: "text", Kind.ENUM: "text", Kind.INTEGER: "int", Kind.NUMBER: "float", Kind.DATE: "date",
    Kind.BOOL: "bool", Kind.SEGMENTS: "text",
}

#: Derived columns and their types (protocol-derived predicates are added per protocol).
DERIVED_TYPES: dict[str, ColumnType] = {
    "operated": ColumnType("bool"),
    "hepatectomy": ColumnType("bool"),
    "major_hepatectomy": ColumnType("bool"),
    "resected_segment_count": ColumnType("int"),
    "any_complication": ColumnType("bool"),
    "postop_death": ColumnType("bool"),
    "days_to_surgery": ColumnType("int"),
    "os_days": ColumnType("int"),
    "os_months": ColumnType("float"),
    "os_event": ColumnType("bool"),
    "pfs_days": ColumnType("int"),
    "pfs_months": ColumnType("float"),
    "pfs_event": ColumnType("bool"),
    "followup_from_surgery_days": ColumnType("int"),
    "followup_from_surgery_months": ColumnType("float"),
    "alive_at_last_contact": ColumnType("bool"),
    "disease_free_at_last_contact": ColumnType("bool"),
}

#: One line per derived column, for docs/analysis-view.md.
DERIVED_DESCRIPTIONS: dict[str, str] = {
    "operated": "surgery_date is given (any laparotomy for the liver disease)",
    "hepatectomy": "surgery_type = hepatectomy",
    "major_hepatectomy": "hepatectomy of at least `major_hepatectomy_segments` (default 3) segments",
    "resected_segment_count": "number of resected Couinaud segments (NULL when not recorded)",
    "any_complication": "clavien_dindo_max other than none (NULL when not assessed)",
    "postop_death": "death within `postop_window_days` (default 60) of surgery; NULL when not operated",
    "days_to_surgery": "days from cetuximab_start to surgery_date",
    "os_days": "days from cetuximab_start to death, else last contact",
    "os_months": "os_days / 30.4375",
    "os_event": "death_date is given",
    "pfs_days": "days from cetuximab_start to the first of progression or death, else last contact",
    "pfs_months": "pfs_days / 30.4375",
    "pfs_event": "progression_date or death_date is given",
    "followup_from_surgery_days": "days from surgery_date to last contact",
    "followup_from_surgery_months": "followup_from_surgery_days / 30.4375",
    "alive_at_last_contact": "no death_date (crude status)",
    "disease_free_at_last_contact": "no death_date and no progression_date (crude status)",
}


def registry_types() -> dict[str, ColumnType]:
    """Types of the registry columns as seen by filter expressions."""
    return {f.name: ColumnType(_KIND_TO_TYPE[f.kind], f.choices if f.kind is Kind.ENUM else ())
            for f in FIELDS}


@dataclass(frozen=True, slots=True)
class AnalysisView:
    """The view as a subquery plus its columns' types."""

    subquery: sa.Subquery
    types: Mapping[str, ColumnType]

    @property
    def columns(self) -> Mapping[str, sa.ColumnElement[Any]]:
        return {name: self.subquery.c[name] for name in self.types}


def _bool(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    # CASE yields true/false (PostgreSQL) or 1/0 (SQLite) and never NULL.
    return sa.case((cond, sa.true()), else_=sa.false())


def build_view(
    *,
    postop_window_days: int,
    major_hepatectomy_segments: int = 3,
    derived: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    base: sa.FromClause | None = None,
) -> AnalysisView:
    """Build the analysis view.

    ``derived`` maps new column names to filter expressions over the registry and the built-in
    derived columns; the result is yes/no, or NULL when every input of the expression is missing.
    ``base`` holds the registry rows (:func:`~oncosurg.store.repository.registry_select`'s columns;
    default: that select itself, computed from the episode tables by every query).
    """
    base = registry_select().subquery("registry") if base is None else base
    c = base.c
    months = sa.literal(DAYS_PER_MONTH, sa.Float())
    segments = c.resected_segments
    segment_count = sa.case(
        (segments.is_(None), sa.null()),
        else_=sa.func.length(segments) - sa.func.length(sa.func.replace(segments, ";", "")) + 1,
    )
    end_os = sa.func.coalesce(c.death_date, c.last_contact_date)
    end_pfs = sa.func.coalesce(c.progression_date, c.death_date, c.last_contact_date)
    followup = days_between(c.surgery_date, c.last_contact_date)
    os_days = days_between(c.cetuximab_start, end_os)
    pfs_days = days_between(c.cetuximab_start, end_pfs)
    derived_cols: dict[str, sa.ColumnElement[Any]] = {
        "operated": _bool(c.surgery_date.is_not(None)),
        "hepatectomy": _bool(c.surgery_type == "hepatectomy"),
        "resected_segment_count": segment_count,
        "major_hepatectomy": _bool(sa.and_(c.surgery_type == "hepatectomy",
                                           segment_count >= major_hepatectomy_segments)),
        "any_complication": sa.case(
            (c.clavien_dindo_max.is_(None), sa.null()),
            else_=_bool(c.clavien_dindo_max != "none")),
        "postop_death": sa.case(
            (c.surgery_date.is_(None), sa.null()),
            else_=_bool(sa.and_(c.death_date.is_not(None),
                                days_between(c.surgery_date, c.death_date) <= postop_window_days))),
        "days_to_surgery": days_between(c.cetuximab_start, c.surgery_date),
        "os_days": os_days,
        "os_months": sa.cast(os_days, sa.Float()) / months,
        "os_event": _bool(c.death_date.is_not(None)),
        "pfs_days": pfs_days,
        "pfs_months": sa.cast(pfs_days, sa.Float()) / months,
        "pfs_event": _bool(sa.or_(c.progression_date.is_not(None), c.death_date.is_not(None))),
        "followup_from_surgery_days": followup,
        "followup_from_surgery_months": sa.cast(followup, sa.Float()) / months,
        "alive_at_last_contact": _bool(c.death_date.is_(None)),
        "disease_free_at_last_contact": _bool(sa.and_(c.death_date.is_(None), c.progression_date.is_(None))),
    }
    inner = sa.select(*base.c, *[v.label(k) for k, v in derived_cols.items()]
                      ).subquery("derived")
    types = {**registry_types(), **DERIVED_TYPES}
    if not derived:
        return AnalysisView(inner, types)
    compiler = Compiler({n: inner.c[n] for n in types}, types, params)
    extra: dict[str, sa.ColumnElement[Any]] = {}
    for name, text in derived.items():
        compiled = compiler.compile(text)
        all_missing = sa.and_(*[inner.c[i].is_(None) for i in compiled.inputs]) if compiled.inputs else sa.false()
        extra[name] = sa.case((all_missing, sa.null()), (compiled.sql, sa.true()), else_=sa.false())
    outer = sa.select(*inner.c, *[v.label(k) for k, v in extra.items()]
                      ).subquery("analysis")
    return AnalysisView(outer, {**types, **{n: ColumnType("bool") for n in extra}})
