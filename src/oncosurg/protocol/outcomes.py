"""Declared outcomes: time-to-event columns derived in SQL, and their estimates.

An outcome ``[outcomes.os]`` names its origin, its events (the first one that happens is the event,
cause 1), its competing events (cause 2) and extra censoring; follow-up otherwise ends at the last
contact, and the data cut truncates everything (:mod:`.episodes`).  Each outcome adds to the
analysis view (SQL, per patient):

* ``<id>_origin``: the origin date; ``<id>_days`` and ``<id>_months`` (days / 30.4375): origin to
  the end; ``<id>_event``: yes when the end is an event (cause 1); ``<id>_cause``: 0 censored,
  1 event, 2 competing event.  All NULL when the patient has no origin (e.g. never resected).

A date is given as ``index``, ``death``, ``last_contact``, a date column or expression of the view
(``surgery_date``, ``first(liver_procedure.procedure_date where …)``) or an episode query
``TABLE [where expr]``: the patient's first such episode dated on or after the anchor (the index for
an origin or an exposure, the origin for an event), never the origin's own episode.  SQL shape:
``(SELECT date FROM episodes WHERE patient_pk = p.pk AND cond AND date >= origin ORDER BY date,
key LIMIT 1)``, then a ``CASE`` that picks the first of event, competing event and censoring.
R equivalent: ``pmin`` over the event dates, ``time = end - origin``,
``status = ifelse(event_first, 1, ifelse(competing_first, 2, 0))``.

Estimation fetches one row per distinct ``(time, event)`` (or ``(time, cause)``) with its count and
hands the counts to :mod:`oncosurg.stats` as case weights.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.pathway.model import Table
from oncosurg.protocol.episodes import Episodes
from oncosurg.protocol.episodes import layer as layer_cte
from oncosurg.protocol.expr import ColumnType, Compiler, ExpressionError, days_between
from oncosurg.protocol.model import Endpoint, Outcome
from oncosurg.schema import DAYS_PER_MONTH
from oncosurg.stats import cumulative_incidence, kaplan_meier

#: A Kaplan-Meier median reached with fewer patients than this at risk earns a warning.
FEW_AT_RISK = 5
BUILTIN_DATES = {"death": "death_date", "last_contact": "last_contact_date"}
_WORD = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class DateSpec:
    """A compiled date: its SQL, and for an episode the row id and table it comes from."""

    text: str
    sql: sa.ColumnElement[Any]
    id: sa.ColumnElement[Any] | None = None
    table: str | None = None


def date_spec(text: str, compiler: Compiler, *, anchor: sa.ColumnElement[Any] | None = None,
              exclude: tuple[str | None, sa.ColumnElement[Any] | None] = (None, None),
              index_table: str | None = None) -> DateSpec:
    """Compile a date given as ``index``, ``death``, ``last_contact``, a date expression or an episode query.

    ``anchor``: only dates on or after it count; ``exclude``: (table, id) of an episode that never
    counts (the origin's own episode).  Raises :class:`ExpressionError`.
    """
    s = text.strip()
    columns = compiler.columns
    if s == "index":
        if "index_date" not in columns:
            raise ExpressionError("'index' needs an [index] table in the protocol", text, 0)
        return DateSpec(text, columns["index_date"], columns["index_id"], index_table)
    episodes = compiler.episodes
    word = _WORD.match(s)
    rest = s[word.end():].strip() if word else ""
    if word and episodes is not None and word.group(1) in episodes.tables and (not rest or rest.lower().startswith(
            "where")):
        scope, compiled = compiler.compile_query(s)
        date = scope.columns[scope.dates[0]] if scope.dates else None
        if date is None:  # pragma: no cover - every query table has a date or a parent's date
            raise ExpressionError(f"{scope.table} has no date", text, 0)
        cond = [scope.patient_pk == episodes.patient_pk, compiled.sql, date.is_not(None)]
        if anchor is not None:
            cond.append(date >= anchor)
        if exclude[0] == scope.table and exclude[1] is not None:
            cond.append(sa.or_(exclude[1].is_(None), scope.id != exclude[1]))

        def first(column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
            return (sa.select(column).select_from(scope.from_).where(*cond).order_by(*scope.order).limit(1)
                    .scalar_subquery())

        return DateSpec(text, sa.type_coerce(first(date), sa.Date()), first(scope.id), scope.table)
    name = BUILTIN_DATES.get(s, s)
    compiled = compiler.compile_value(name)
    if compiled.type.kind != "date":
        raise ExpressionError(f"expected a date (index, death, last_contact, a date column or 'TABLE where …'), "
                              f"found a {compiled.type.kind} value", text, 0)
    sql = compiled.sql
    if anchor is not None:
        sql = sa.case((sql >= anchor, sql), else_=sa.null())
    return DateSpec(text, sa.type_coerce(sql, sa.Date()))


def least(values: Sequence[sa.ColumnElement[Any]]) -> sa.ColumnElement[Any] | None:
    """The earliest non-NULL value (NULL when all are NULL); portable, unlike SQLite's ``min(a, b)``."""
    if not values:
        return None

    def pair(a: sa.ColumnElement[Any], b: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
        return sa.type_coerce(sa.case((a.is_(None), b), (b.is_(None), a), (a <= b, a), else_=b), sa.Date())

    return reduce(pair, values)


OUTCOME_SUFFIXES = {"origin": ColumnType("date"), "days": ColumnType("int"), "months": ColumnType("float"),
                    "event": ColumnType("bool"), "cause": ColumnType("int")}


def outcome_columns(outcome: Outcome) -> dict[str, ColumnType]:
    return {f"{outcome.id}_{suffix}": ctype for suffix, ctype in OUTCOME_SUFFIXES.items()}


def outcome_layers(layer: sa.CTE, types: Mapping[str, ColumnType], outcomes: Sequence[Outcome],
                   params: Mapping[str, Any], tables: Mapping[Table, sa.FromClause], index_table: str | None,
                   problems: list[str]) -> tuple[sa.CTE, dict[str, ColumnType]]:
    """Add the outcome columns to ``layer`` (three nested SELECTs: origins, event dates, times)."""
    if not outcomes:
        return layer, dict(types)

    def compiler_on(sub: sa.CTE, extra: Mapping[str, ColumnType] | None = None) -> Compiler:
        all_types = {**types, **(extra or {})}
        columns = {n: sub.c[n] for n in all_types}
        if "index_id" in sub.c:
            columns["index_id"] = sub.c.index_id
        return Compiler(columns, all_types, params, episodes=Episodes(tables, sub.c.pk))

    anchor_name = "index_date" if "index_date" in types else None
    # 1. origins
    compiler = compiler_on(layer)
    origin_cols: list[Any] = []
    origin_tables: dict[str, str | None] = {}
    for o in outcomes:
        anchor = None if anchor_name is None or o.origin == "index" else layer.c[anchor_name]
        try:
            spec = date_spec(o.origin, compiler, anchor=anchor, index_table=index_table)
        except ExpressionError as exc:
            problems.append(f"outcomes.{o.id}.origin: {exc}")
            spec = DateSpec(o.origin, sa.null())
        origin_tables[o.id] = spec.table
        origin_id = spec.id if spec.id is not None else sa.cast(sa.null(), sa.Integer())
        origin_cols += [spec.sql.label(f"{o.id}_origin"), origin_id.label(f"_{o.id}_origin_id")]
        if anchor is not None and spec.id is None and not isinstance(spec.sql, sa.Null):
            # a date column before the index is no origin: flagged (origin_before_index), never silently lost
            raw = date_spec(o.origin, compiler).sql
            origin_cols.append(sa.case((raw < anchor, 1), else_=0).label(f"_{o.id}_origin_before_index"))
    origins = layer_cte(sa.select(*layer.c, *origin_cols), "v_origins")
    origin_types = {f"{o.id}_origin": ColumnType("date") for o in outcomes}
    # 2. first event, competing event and censoring date of each outcome, on or after its origin
    compiler = compiler_on(origins, origin_types)
    date_cols: list[Any] = []
    for o in outcomes:
        origin = origins.c[f"{o.id}_origin"]
        exclude = (origin_tables[o.id], origins.c[f"_{o.id}_origin_id"])
        for key, texts in (("event", o.events), ("competing", o.competing), ("censor", o.censor)):
            specs = []
            for i, text in enumerate(texts):
                try:
                    specs.append(date_spec(text, compiler, anchor=origin, exclude=exclude,
                                           index_table=index_table).sql)
                except ExpressionError as exc:
                    label = {"event": "events", "competing": "competing", "censor": "censor"}[key]
                    problems.append(f"outcomes.{o.id}.{label}[{i}]: {exc}")
            first = least(specs)
            date_cols.append((first if first is not None else sa.cast(sa.null(), sa.Date())).label(f"_{o.id}_{key}"))
    dates = layer_cte(sa.select(*origins.c, *date_cols), "v_dates")
    # 3. times, events and causes
    months = sa.literal(DAYS_PER_MONTH, sa.Float())
    final: list[Any] = []
    for o in outcomes:
        c = dates.c
        origin, event, competing, censor = (c[f"{o.id}_origin"], c[f"_{o.id}_event"], c[f"_{o.id}_competing"],
                                            c[f"_{o.id}_censor"])
        last = least([c.last_contact_date, censor])
        assert last is not None
        event_first = sa.and_(event.is_not(None), sa.or_(competing.is_(None), event <= competing),
                              sa.or_(censor.is_(None), event <= censor))
        competing_first = sa.and_(competing.is_not(None), sa.or_(censor.is_(None), competing <= censor))
        cause = sa.case((origin.is_(None), sa.null()), (event_first, 1), (competing_first, 2), else_=0)
        end = sa.case((event_first, event), (competing_first, competing), else_=last)
        days = sa.case((origin.is_(None), sa.null()), else_=days_between(origin, end))
        final += [days.label(f"{o.id}_days"), (sa.cast(days, sa.Float()) / months).label(f"{o.id}_months"),
                  sa.case((origin.is_(None), sa.null()), (event_first, sa.true()), else_=sa.false())
                  .label(f"{o.id}_event"),
                  cause.label(f"{o.id}_cause")]
    out = layer_cte(sa.select(*dates.c, *final), "v_outcomes")
    new_types = dict(types)
    for o in outcomes:
        new_types.update(outcome_columns(o))
    return out, new_types


# ---------------------------------------------------------------------------------------- estimates
def _num(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _warning(ep: Endpoint, code: str, message: str) -> dict[str, Any]:
    return {"endpoint": ep.id, "code": code, "message": message}


def _negative(rows: list[Any], ep: Endpoint, warnings: list[dict[str, Any]]) -> list[Any]:
    bad = sum(int(r[-1]) for r in rows if r[0] is not None and float(r[0]) < 0)
    if bad:
        warnings.append(_warning(ep, "origin-after-end",
                                 f"{ep.id}: {bad} patient(s) whose follow-up ends before the origin "
                                 f"({ep.time}) are left out; check their dates"))
    return [r for r in rows if float(r[0]) >= 0]


def time_to_event(conn: sa.Connection, columns: Any, ep: Endpoint, where: sa.ColumnElement[bool],
                  warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """A Kaplan-Meier median (or reverse-KM median follow-up) from ``(time, event, count)`` rows."""
    return time_to_event_from_rows(event_rows(conn, columns[ep.time], columns[ep.event], where), ep, warnings)


def event_rows(conn: sa.Connection, time: Any, status: Any, where: sa.ColumnElement[bool]) -> list[Any]:
    """One row per distinct ``(time, status)`` with its count: the estimators' sufficient statistics."""
    return conn.execute(sa.select(time, status, sa.func.count()).where(where, time.is_not(None), status.is_not(None))
                        .group_by(time, status)).all()


def time_to_event_from_rows(rows: Sequence[Any], ep: Endpoint, warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`time_to_event` from ``(time, event, count)`` rows (also pooled across centres)."""
    rows = _negative(rows, ep, warnings)
    t = np.asarray([r[0] for r in rows], dtype=float)
    e = np.asarray([bool(r[1]) for r in rows], dtype=float)
    w = np.asarray([r[2] for r in rows], dtype=float)
    if ep.kind == "followup_median":
        e = 1 - e  # reverse Kaplan-Meier: censoring (alive at last contact) is the event
    n = int(w.sum())
    events = int(w[e == 1].sum())
    out: dict[str, Any] = {"n": n, "events": events, "median": None, "ci_low": None, "ci_high": None,
                           "conf_type": ep.conf_type, "unit": ep.unit}
    if ep.outcome:
        out["outcome"] = ep.outcome
    if ep.kind == "followup_median":
        out["method"] = "reverse Kaplan-Meier (Schemper & Smith 1996)"
    if ep.at:
        out["at"] = [{"time": x, "surv": None, "lower": None, "upper": None, "n_risk": 0} for x in ep.at]
    if n == 0:
        return out
    # R: survfit(Surv(time, event) ~ 1); for follow-up Surv(time, 1 - event), reversed above.
    fit = kaplan_meier(t, e, weights=w, conf_type=ep.conf_type, conf_level=ep.conf_level)
    q = fit.median(rule="quantile")  # R quantile(survfit(...), 0.5), as the protocol promises
    out |= {"median": _num(q.estimate), "ci_low": _num(q.lower), "ci_high": _num(q.upper)}
    if ep.at:  # R summary(survfit(...), times = at): nothing after the last observed time
        tmax = float(t.max())
        out["at"] = [{"time": a.time, "surv": _num(a.surv), "lower": _num(a.lower), "upper": _num(a.upper),
                      "n_risk": int(a.n_risk)} if a.time <= tmax else
                     {"time": a.time, "surv": None, "lower": None, "upper": None, "n_risk": 0}
                     for a in fit.at(list(ep.at), extend=True)]
    if q.estimate is None:
        warnings.append(_warning(ep, "median-not-reached",
                                 f"{ep.id}: the Kaplan-Meier median is not reached "
                                 f"({events} event(s) among {n}); report it as 'not reached'"))
    else:
        at_risk = fit.n_risk_at(q.estimate)
        out["n_risk_at_median"] = at_risk
        if at_risk < FEW_AT_RISK:
            warnings.append(_warning(ep, "few-at-risk",
                                     f"{ep.id}: the median is reached with only {at_risk} patient(s) at risk; "
                                     "it is unstable"))
    return out


def cumulative_incidence_endpoint(conn: sa.Connection, columns: Any, ep: Endpoint, where: sa.ColumnElement[bool],
                                  warnings: list[dict[str, Any]]) -> dict[str, Any]:
    """Aalen-Johansen cumulative incidence of the event (cause 1) and of the competing event (cause 2)
    at ``ep.at``, from ``(time, cause, count)`` rows (expanded to one row per patient for the IJ standard
    errors); R ``summary(survfit(Surv(time, factor(cause)) ~ 1), times = at)``."""
    rows = event_rows(conn, columns[ep.time], columns[f"{ep.outcome}_cause"], where)
    return cumulative_incidence_from_rows(rows, ep, warnings)


def cumulative_incidence_from_rows(rows: Sequence[Any], ep: Endpoint, warnings: list[dict[str, Any]]
                                   ) -> dict[str, Any]:
    """:func:`cumulative_incidence_endpoint` from ``(time, cause, count)`` rows (also pooled across centres)."""
    rows = _negative(rows, ep, warnings)
    t = np.asarray([r[0] for r in rows], dtype=float)
    c = np.asarray([int(r[1]) for r in rows], dtype=np.int64)
    w = np.asarray([r[2] for r in rows], dtype=float)
    n = int(w.sum())
    out: dict[str, Any] = {"n": n, "events": int(w[c == 1].sum()), "competing": int(w[c == 2].sum()),
                           "unit": ep.unit, "conf_type": "log", "outcome": ep.outcome,
                           "method": "Aalen-Johansen (R survfit with a factor status)",
                           "at": [{"time": x, "cif": None, "lower": None, "upper": None, "competing_cif": None}
                                  for x in ep.at]}
    if n == 0:
        return out
    # one row per patient: R's infinitesimal-jackknife variance sums over subjects, so counts are
    # frequencies here, not case weights (a weighted row is one subject in R's survfit)
    reps = w.astype(np.int64)
    fit = cumulative_incidence(np.repeat(t, reps), np.repeat(c, reps), conf_level=ep.conf_level)
    states = [str(s) for s in fit.states]
    k1 = states.index("1") if "1" in states else None
    k2 = states.index("2") if "2" in states else None
    tmax = float(t.max())
    at = []
    for x in ep.at:
        i = int(np.searchsorted(fit.time, x, side="right")) - 1
        if x > tmax:
            at.append({"time": x, "cif": None, "lower": None, "upper": None, "competing_cif": None})
            continue

        def value(k: int | None, arr: np.ndarray, j: int = i) -> float | None:
            if k is None or j < 0:
                return 0.0 if arr is fit.pstate else None
            return _num(float(arr[j, k]))

        at.append({"time": x, "cif": value(k1, fit.pstate), "lower": value(k1, fit.lower),
                   "upper": value(k1, fit.upper), "competing_cif": value(k2, fit.pstate)})
    out["at"] = at
    if out["events"] == 0:
        warnings.append(_warning(ep, "no-events", f"{ep.id}: no event among {n} patient(s)"))
    return out
