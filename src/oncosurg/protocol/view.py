"""The analysis view: one row per patient, built in SQL from the episode tables.

Layers (each a ``SELECT`` over the one below, so every endpoint runs inside the database on SQLite
and PostgreSQL alike):

1. the episode tables as of the data cut (:func:`oncosurg.protocol.episodes.cut_tables`);
2. the flat registry row of each patient (:mod:`oncosurg.store.projection`: the rescue line, the
   operation after it, …), the patient's other columns, and the index event (``index_date``,
   ``index_<column>``; :mod:`.index`);
3. the built-in derived columns of the flat row (operated, hepatectomy, postop_death…);
4. the protocol's ``[derived]`` columns (yes/no conditions, or values such as dates);
5. the declared outcomes (``<id>_days``, ``<id>_months``, ``<id>_event``, ``<id>_cause``,
   ``<id>_origin``; :mod:`.outcomes`).

Each column also has a *timing* (:data:`TIMING`): ``baseline`` (known at time zero), ``later``
(recorded after it: surgery, pathology, follow-up, outcomes, queries not bounded by the index) or
``referral`` (known only from the referral date).  Comparisons use it to refuse analyses that would
treat a later decision as known at time zero.  Months are days / 30.4375.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from oncosurg.pathway.model import PATIENT, Table
from oncosurg.protocol.episodes import Episodes, cut_tables, field_type, layer
from oncosurg.protocol.episodes import layer as _layer
from oncosurg.protocol.expr import ColumnType, Compiled, Compiler, ExpressionError, days_between
from oncosurg.protocol.index import index_select
from oncosurg.protocol.model import IndexEvent, Outcome, ProtocolError
from oncosurg.protocol.outcomes import outcome_layers
from oncosurg.schema import DAYS_PER_MONTH, FIELD_BY_NAME, FIELDS, Stage
from oncosurg.store import tables as t
from oncosurg.store.projection import flat_select

__all__ = ["DERIVED_DESCRIPTIONS", "DERIVED_TYPES", "TIMING", "AnalysisView", "build_view", "days_between",
           "registry_types", "timing_of"]

#: Timing of a column: known at time zero, later, or from the referral date.
TIMING = ("baseline", "later", "referral")

#: Built-in derived columns of the flat row and their types.
DERIVED_TYPES: dict[str, ColumnType] = {
    "operated": ColumnType("bool"),
    "hepatectomy": ColumnType("bool"),
    "major_hepatectomy": ColumnType("bool"),
    "resected_segment_count": ColumnType("int"),
    "any_complication": ColumnType("bool"),
    "postop_death": ColumnType("bool"),
    "days_to_surgery": ColumnType("int"),
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
    "alive_at_last_contact": "no death_date (crude status)",
    "disease_free_at_last_contact": "no death_date and no progression_date (crude status)",
}

#: Patient columns the flat row does not carry.
PATIENT_EXTRA = ("birth_year", "braf_status", "msi_status", "referral_date", "age_at_rescue")
_BASELINE_STAGES = {Stage.PATIENT, Stage.BASELINE, Stage.PRIOR_CHEMO}
_LATER_FLAT = {"cetuximab_cycles", "best_response"}


def registry_types() -> dict[str, ColumnType]:
    """Types of the flat registry columns as seen by filter expressions."""
    return {f.name: field_type(f) for f in FIELDS}


def _flat_timing(name: str) -> str:
    if name == "referral":
        return "referral"
    f = FIELD_BY_NAME[name]
    if name in _LATER_FLAT:
        return "later"
    return "baseline" if f.stage in _BASELINE_STAGES or f.stage is Stage.CETUXIMAB else "later"


def timing_of(compiled: Compiled, timing: Mapping[str, str]) -> str:
    """The timing of an expression from the columns and queries it reads: ``later`` wins over
    ``referral``, which wins over ``baseline``."""
    kinds = {timing.get(c, "later") for c in compiled.columns}
    if any(not q.baseline for q in compiled.queries):
        kinds.add("later")
    for kind in ("later", "referral"):
        if kind in kinds:
            return kind
    return "baseline"


@dataclass(frozen=True)
class AnalysisView:
    """The view as a subquery plus its columns' types and timings."""

    subquery: sa.CTE
    types: Mapping[str, ColumnType]
    timing: Mapping[str, str] = field(default_factory=dict)
    tables: Mapping[Table, sa.FromClause] = field(default_factory=dict)
    index_table: str | None = None
    derived: Mapping[str, Compiled] = field(default_factory=dict)

    @property
    def columns(self) -> Mapping[str, sa.ColumnElement[Any]]:
        return {name: self.subquery.c[name] for name in self.types}

    @property
    def episodes(self) -> Episodes:
        """Episode queries correlated on this view's patient."""
        return Episodes(self.tables or cut_tables(t.EPISODES, None), self.subquery.c.pk)

    def compiler(self, params: Mapping[str, Any] | None = None, populations: Any = None) -> Compiler:
        columns: dict[str, Any] = dict(self.columns)
        if "index_id" in self.subquery.c:
            columns["index_id"] = self.subquery.c.index_id
        return Compiler(columns, self.types, params, populations, self.episodes)


def _bool(cond: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
    # CASE yields true/false (PostgreSQL) or 1/0 (SQLite) and never NULL.
    return sa.case((cond, sa.true()), else_=sa.false())


def _base(tables: Mapping[Table, sa.FromClause], index: IndexEvent | None, params: Mapping[str, Any],
          problems: list[str]) -> tuple[sa.CTE, dict[str, ColumnType], dict[str, str], str | None]:
    flat = layer(flat_select(tables, t.centre), "v_flat")
    patient = tables[Table.PATIENT].alias("patient_extra")
    types = {"pk": ColumnType("int"), **registry_types()}
    timing = {"pk": "baseline", **{n: _flat_timing(n) for n in registry_types()}}
    cols: list[Any] = [flat.c.pk, *[flat.c[n] for n in registry_types()]]
    for name in PATIENT_EXTRA:
        cols.append(patient.c[name])
        types[name] = field_type(PATIENT.field_by_name[name])
        timing[name] = "referral" if name == "referral_date" else "baseline"
    joined: sa.FromClause = flat.join(patient, patient.c.id == flat.c.pk)
    index_table = None
    if index is not None:
        try:
            chosen = index_select(tables, index, params)
        except ExpressionError as exc:
            problems.append(f"index.episode: {exc}")
        else:
            index_table = chosen.table.value
            sub = chosen.subquery
            joined = joined.outerjoin(sub, sub.c.patient_pk == flat.c.pk)
            cols.append(sub.c.index_id)
            for name, ctype in chosen.types.items():
                cols.append(sub.c[name])
                types[name] = ctype
                timing[name] = "baseline"
    return layer(sa.select(*cols).select_from(joined), "v_base"), types, timing, index_table


def _builtin(base: sa.CTE, postop_window_days: int, major_hepatectomy_segments: int) -> sa.CTE:
    c = base.c
    segments = c.resected_segments
    segment_count = sa.case(
        (segments.is_(None), sa.null()),
        else_=sa.func.length(segments) - sa.func.length(sa.func.replace(segments, ";", "")) + 1,
    )
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
        "alive_at_last_contact": _bool(c.death_date.is_(None)),
        "disease_free_at_last_contact": _bool(sa.and_(c.death_date.is_(None), c.progression_date.is_(None))),
    }
    return layer(sa.select(*base.c, *[v.label(k) for k, v in derived_cols.items()]), "v_derived")


def _protocol_derived(layer: sa.CTE, types: dict[str, ColumnType], timing: dict[str, str],
                      derived: Mapping[str, str], params: Mapping[str, Any], tables: Mapping[Table, sa.FromClause],
                      problems: list[str]) -> tuple[sa.CTE, dict[str, Compiled]]:
    """Compile ``[derived]`` in dependency order (a derived column may use earlier-resolved ones)."""
    columns: dict[str, Any] = {n: layer.c[n] for n in types}
    if "index_id" in layer.c:
        columns["index_id"] = layer.c.index_id
    episodes = Episodes(tables, layer.c.pk)
    done: dict[str, Compiled] = {}
    sql: dict[str, sa.ColumnElement[Any]] = {}
    resolving: list[str] = []

    def resolve(name: str) -> Compiled | None:
        if name in done:
            return done[name]
        if name not in derived:
            return None
        if name in resolving:
            raise ExpressionError(f"derived column '{name}' refers to itself ({' → '.join([*resolving, name])})",
                                  derived[name])
        resolving.append(name)
        try:
            others = {k: v for k, v in derived.items() if k != name and k not in resolving}
            for other in others:  # resolve dependencies first so that they are visible as columns
                if _mentions(derived[name], other):
                    resolve(other)
            compiler = Compiler({**columns, **sql}, {**types, **{k: c.type for k, c in done.items()}}, params,
                                episodes=episodes)
            compiled = compiler.compile_value(derived[name])
        finally:
            resolving.pop()
        if compiled.type.kind == "bool":
            inputs = [compiler.columns[i] for i in compiled.inputs]
            all_missing = sa.and_(*[i.is_(None) for i in inputs]) if inputs else sa.false()
            value = sa.case((all_missing, sa.null()), (compiled.sql, sa.true()), else_=sa.false())
        else:
            value = compiled.sql
        done[name] = compiled
        sql[name] = value
        timing[name] = timing_of(compiled, timing)
        return compiled

    for name in derived:
        if name in types:
            problems.append(f"derived.{name}: the name is already a column of the analysis view")
            continue
        try:
            resolve(name)
        except ExpressionError as exc:
            problems.append(f"derived.{name}: {exc}")
    if not sql:
        return layer, done
    for name, compiled in done.items():
        types[name] = compiled.type
    out = _layer(sa.select(*layer.c, *[v.label(k) for k, v in sql.items()]), "v_protocol_derived")
    return out, done


def _mentions(text: str, name: str) -> bool:
    import re

    return re.search(rf"(?<![A-Za-z0-9_.$]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


def build_view(
    *,
    postop_window_days: int,
    major_hepatectomy_segments: int = 3,
    derived: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
    index: IndexEvent | None = None,
    data_cut: dt.date | None = None,
    outcomes: Sequence[Outcome] = (),
) -> AnalysisView:
    """Build the analysis view; raises :class:`ProtocolError` listing every problem (key paths)."""
    params = dict(params or {})
    problems: list[str] = []
    tables = cut_tables(t.EPISODES, data_cut)
    base, types, timing, index_table = _base(tables, index, params, problems)
    if problems:  # without the index every later expression would fail too: report the cause only
        raise ProtocolError("<analysis view>", problems)
    layer = _builtin(base, postop_window_days, major_hepatectomy_segments)
    types.update(DERIVED_TYPES)
    timing.update({n: "later" for n in DERIVED_TYPES})
    layer, compiled_derived = _protocol_derived(layer, types, timing, derived or {}, params, tables, problems)
    for o in outcomes:
        clash = [n for n in (f"{o.id}_days", f"{o.id}_months", f"{o.id}_event") if n in types]
        if clash:
            problems.append(f"outcomes.{o.id}: the column {clash[0]} already exists; rename the outcome")
    if not problems:
        layer, types = outcome_layers(layer, types, outcomes, params, tables, index_table, problems)
        for o in outcomes:
            for suffix in ("origin", "days", "months", "event", "cause"):
                timing[f"{o.id}_{suffix}"] = "later"
    if problems:
        raise ProtocolError("<analysis view>", problems)
    return AnalysisView(layer, types, timing, tables, index_table, compiled_derived)


#: Months per day, for callers that convert (re-exported for the report).
MONTH_DAYS = DAYS_PER_MONTH
