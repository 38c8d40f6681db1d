"""Running a protocol against a store: cohort flow, populations, endpoints and comparisons.

Counting happens in the database (``COUNT``/``SUM(CASE …)`` over the analysis view); time-to-event
endpoints fetch ``(time, event, count)`` aggregated by ``GROUP BY`` and hand the counts to the
survival core (:mod:`oncosurg.stats`) as case weights, so the data leaving the database is one row
per distinct time, not per patient (:mod:`.outcomes`).  Comparisons (:mod:`.comparisons`) read one
row per patient only where their method needs it (Cox models, landmark data sets).  Results are
plain, JSON-ready dictionaries (the ``analyze`` JSON), built once here and rendered by
:mod:`oncosurg.report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg import __version__
from oncosurg.protocol.expr import Compiled, ExpressionError
from oncosurg.protocol.index import accrual_text
from oncosurg.protocol.model import Endpoint, Protocol, ProtocolError
from oncosurg.protocol.outcomes import FEW_AT_RISK, cumulative_incidence_endpoint, time_to_event
from oncosurg.protocol.view import AnalysisView, build_view, timing_of
from oncosurg.stats import proportion_ci

__all__ = ["FEW_AT_RISK", "CompiledProtocol", "compile_protocol", "run_protocol"]

#: A cohort that excludes more than this share of the registered patients earns a warning.
MOST_EXCLUDED = 0.5


@dataclass(frozen=True)
class CompiledProtocol:
    protocol: Protocol
    view: AnalysisView
    cohort_steps: tuple[tuple[str, Compiled], ...]
    cohort: sa.ColumnElement[bool]
    populations: Mapping[str, Compiled]
    numerators: Mapping[str, Compiled]
    #: Compiled comparisons (:class:`oncosurg.protocol.comparisons.CompiledComparison`) by id.
    comparisons: Mapping[str, Any] = field(default_factory=dict)
    #: Warnings found while compiling (eligibility reading the future, format-1 file…).
    warnings: tuple[dict[str, Any], ...] = ()
    #: Step kind of each cohort step (``index``, ``accrual``, ``eligibility``), in order.
    step_kinds: tuple[str, ...] = ()

    def population_timing(self, name: str) -> str:
        """``baseline``, ``later`` or ``referral`` for a population or a view column."""
        if name in self.populations:
            return timing_of(self.populations[name], self.view.timing)
        return self.view.timing.get(name, "later")


def compile_protocol(protocol: Protocol) -> CompiledProtocol:
    """Type-check every expression of ``protocol`` against the analysis view (all problems at once)."""
    problems: list[str] = []
    params = protocol.parameters
    try:
        view = build_view(postop_window_days=protocol.postop_window_days,
                          major_hepatectomy_segments=protocol.major_hepatectomy_segments,
                          derived=protocol.derived, params=params, index=protocol.index,
                          data_cut=protocol.data_cut, outcomes=protocol.outcomes)
    except ProtocolError as exc:
        raise ProtocolError(protocol.source, exc.problems) from None
    compiled_pops: dict[str, Compiled] = {}
    resolving: list[str] = []

    def population(name: str) -> Compiled | None:
        if name in compiled_pops:
            return compiled_pops[name]
        if name not in protocol.populations:
            return None
        if name in resolving:
            raise ExpressionError(f"population '{name}' refers to itself ({' → '.join([*resolving, name])})",
                                  protocol.populations[name])
        resolving.append(name)
        try:
            compiled_pops[name] = compiler.compile(protocol.populations[name])
        finally:
            resolving.pop()
        return compiled_pops[name]

    compiler = view.compiler(params, population)
    for name in protocol.populations:
        try:
            population(name)
        except ExpressionError as exc:
            problems.append(f"populations.{name}: {exc}")
    warnings: list[dict[str, Any]] = [{"endpoint": None, "code": "format-1", "message": n} for n in protocol.notices]
    steps: list[tuple[str, Compiled]] = []
    kinds: list[str] = []
    for i, inc in enumerate(protocol.scope):
        try:
            steps.append((inc.label, compiler.compile(inc.where)))
            kinds.append("scope")
        except ExpressionError as exc:
            problems.append(f"scope[{i}].where: {exc}")
    if protocol.index is not None and "index_date" in view.types:
        steps.append((protocol.index.label, compiler.compile("index_date is not null")))
        kinds.append("index")
    column = protocol.accrual_column
    if column not in view.types or view.types[column].kind != "date":
        problems.append(f"cohort.accrual_column: {column!r} is not a date column of the analysis view")
    else:
        text = accrual_text(column, protocol.accrual_start, protocol.accrual_end)
        if text is not None:
            steps.append((f"{column} within the accrual window", compiler.compile(text)))
            kinds.append("accrual")
    where_key = "eligibility" if protocol.format == 2 else "cohort.include"
    for i, inc in enumerate(protocol.include):
        try:
            compiled = compiler.compile(inc.where)
        except ExpressionError as exc:
            problems.append(f"{where_key}[{i}].where: {exc}")
            continue
        steps.append((inc.label, compiled))
        kinds.append("eligibility")
        if protocol.index is not None and timing_of(compiled, view.timing) == "later":
            warnings.append({"endpoint": None, "code": "eligibility-reads-the-future",
                             "message": f"eligibility '{inc.label}' reads information recorded after the index "
                                        f"({_later_reads(compiled, view)}): patients are selected on their "
                                        "future; bound episode queries with '… <= index_date'"})
    numerators: dict[str, Compiled] = {}
    for ep in protocol.endpoints:
        where = f"endpoints ({ep.id})"
        try:
            if ep.numerator:
                numerators[ep.id] = compiler.compile(ep.numerator)
            for key, kinds_ok in (("column", ("int", "float")), ("time", ("int", "float")), ("event", ("bool",))):
                name = getattr(ep, key)
                if name is None:
                    continue
                if name not in view.types:
                    problems.append(f"{where}.{key}: unknown column {name!r}")
                elif view.types[name].kind not in kinds_ok:
                    problems.append(f"{where}.{key}: column {name!r} is {view.types[name].kind}, "
                                    f"expected {' or '.join(kinds_ok)}")
        except ExpressionError as exc:
            problems.append(f"{where}.numerator: {exc}")
        if ep.kind == "cumulative_incidence" and ep.outcome:
            outcome = protocol.outcome_by_id.get(ep.outcome)
            if outcome is not None and not outcome.competing:
                warnings.append({"endpoint": ep.id, "code": "no-competing-event",
                                 "message": f"{ep.id}: outcome {ep.outcome} declares no competing event; its "
                                            "cumulative incidence is 1 - Kaplan-Meier"})
        if ep.kind in ("km_median", "followup_median") and ep.outcome:
            outcome = protocol.outcome_by_id.get(ep.outcome)
            if outcome is not None and outcome.competing and ep.kind == "km_median":
                warnings.append({"endpoint": ep.id, "code": "competing-censored",
                                 "message": f"{ep.id}: Kaplan-Meier treats the competing events of "
                                            f"{ep.outcome} as censoring, which overstates the event's probability; "
                                            "use a cumulative_incidence endpoint"})
    cohort = sa.and_(sa.true(), *[c.sql for _, c in steps])
    partial = CompiledProtocol(protocol, view, tuple(steps), cohort, compiled_pops, numerators,
                               warnings=tuple(warnings), step_kinds=tuple(kinds))
    from oncosurg.protocol.comparisons import compile_comparison

    comparisons = {}
    for i, comp in enumerate(protocol.comparisons):
        compiled_comp = compile_comparison(partial, comp, f"comparisons[{i}] ({comp.id})", problems)
        if compiled_comp is not None:
            comparisons[comp.id] = compiled_comp
    if problems:
        raise ProtocolError(protocol.source, problems)
    return CompiledProtocol(protocol, view, tuple(steps), cohort, compiled_pops, numerators, comparisons,
                            tuple(warnings), tuple(kinds))


def _later_reads(compiled: Compiled, view: AnalysisView) -> str:
    names = [c for c in compiled.columns if view.timing.get(c, "later") == "later"]
    names += [f"{q.table} after the index" for q in compiled.queries if not q.baseline]
    return ", ".join(dict.fromkeys(names)) or "later information"


def run_protocol(engine: sa.Engine, protocol: Protocol, *, provenance: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """Evaluate every endpoint and comparison; returns the ``analyze`` JSON object."""
    from oncosurg.protocol.materialize import materialized

    with engine.connect() as conn, materialized(conn, compile_protocol(protocol)) as cp:
        return evaluate(conn, cp, protocol, provenance=provenance)


def evaluate(conn: sa.Connection, cp: CompiledProtocol, protocol: Protocol, *,
             provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:func:`run_protocol` on a protocol compiled (and usually materialised) by the caller, who may
    read more from the same view (the web dashboard's curves)."""
    from oncosurg.protocol.comparisons import run_comparison

    warnings: list[dict[str, Any]] = list(cp.warnings)
    c = cp.view.subquery.c
    flow = _flow(conn, cp)
    warnings += _cohort_warnings(conn, cp, flow)
    warnings += _origin_warnings(conn, cp)
    endpoints = {ep.id: _endpoint(conn, cp, ep, warnings) for ep in protocol.endpoints}
    if flow[-1]["n"]:  # an empty cohort is one warning, not one per endpoint
        warnings += [_warning(ep, "not-estimable", f"{ep.id}: no patient of the cohort is in population "
                              f"'{ep.population}' with the data it needs; not estimable (n = 0)")
                     for ep in protocol.endpoints if _n(endpoints[ep.id]) == 0]
    comparisons = {cid: run_comparison(conn, cp, comp, warnings) for cid, comp in cp.comparisons.items()}
    last_contact, first_index, last_index = conn.execute(
        sa.select(sa.func.max(c.last_contact_date),
                  sa.func.min(c.index_date) if "index_date" in c else sa.null(),
                  sa.func.max(c.index_date) if "index_date" in c else sa.null()).where(cp.cohort)).one()
    data_cut = protocol.data_cut or last_contact
    return {
        "protocol": protocol.summary(),
        "cohort": {"flow": flow, "n": flow[-1]["n"] if flow else 0, "data_cut": _iso(data_cut),
                   "data_cut_declared": protocol.data_cut is not None, "last_contact": _iso(last_contact),
                   "index_first": _iso(first_index), "index_last": _iso(last_index)},
        "endpoints": endpoints,
        "comparisons": comparisons,
        "warnings": warnings,
        "provenance": {"oncosurg_version": __version__, **(provenance or {})},
    }


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)[:10]


def _cohort_warnings(conn: sa.Connection, cp: CompiledProtocol, flow: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A cohort that is empty, or excludes most registered patients, said out loud with the steps that did it."""
    total, kept = flow[0]["n"], flow[-1]["n"]
    if total == 0:
        return [{"endpoint": None, "code": "cohort-empty", "message": "the cohort is empty: the registry holds no "
                 "patient"}]
    excluded = total - kept
    if excluded <= MOST_EXCLUDED * total:
        return []
    why = "; ".join(f"{step['excluded']} by '{step['label']}'{_step_hint(conn, cp, step)}"
                    for step in flow[1:] if step["excluded"])
    if kept == 0:
        return [{"endpoint": None, "code": "cohort-empty",
                 "message": f"the cohort is empty: all {total} registered patient(s) were excluded ({why})"}]
    return [{"endpoint": None, "code": "cohort-most-excluded",
             "message": f"the cohort keeps {kept} of {total} registered patient(s): {excluded} "
                        f"({100 * excluded / total:.0f}%) were excluded ({why})"}]


def _origin_warnings(conn: sa.Connection, cp: CompiledProtocol) -> list[dict[str, Any]]:
    """Cohort patients whose outcome origin (a date column) falls before the index: they have no origin."""
    c = cp.view.subquery.c
    out = []
    for outcome in cp.protocol.outcomes:
        flag = f"_{outcome.id}_origin_before_index"
        if flag not in c:
            continue
        n = conn.execute(sa.select(sa.func.count()).select_from(cp.view.subquery)
                         .where(cp.cohort, c[flag] == 1)).scalar_one()
        if n:
            out.append({"endpoint": None, "code": "origin-before-index",
                        "message": f"outcomes.{outcome.id}: {n} patient(s) of the cohort have their origin "
                                   f"({outcome.origin}) before the index; an origin counts only on or after the "
                                   f"index (time zero), so they are left out of '{outcome.id}'"})
    return out


def _step_hint(conn: sa.Connection, cp: CompiledProtocol, step: dict[str, Any]) -> str:
    """For the accrual step: the protocol's window beside the registry's range of dates; for the index: the cut."""
    p = cp.protocol
    if step.get("kind") == "index" and p.data_cut is not None:
        return f": episodes dated after the data cut ({p.data_cut.isoformat()}) are ignored"
    if not step["label"].endswith("within the accrual window"):
        return ""
    column = cp.view.subquery.c[p.accrual_column]
    low, high, unknown = conn.execute(sa.select(sa.func.min(column), sa.func.max(column),
                                                sa.func.sum(sa.case((column.is_(None), 1), else_=0)))).one()
    window = f"{p.accrual_start or '…'} to {p.accrual_end or '…'}"
    seen = f"the registry's dates run from {_iso(low)} to {_iso(high)}" if low is not None else "no date recorded"
    missing = f", {int(unknown)} with none" if unknown else ""
    return f": the protocol's window is {window}; {seen}{missing}"


def _n(result: Mapping[str, Any]) -> int | None:
    """Patients behind an estimate (None for counts, which are never 'not estimable')."""
    if result["kind"] == "count":
        return None
    return int(result["denominator"] if result["kind"] == "proportion" else result["n"])


def _count(conn: sa.Connection, view: AnalysisView, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(view.subquery).where(where)).scalar_one())


def _flow(conn: sa.Connection, cp: CompiledProtocol) -> list[dict[str, Any]]:
    total = _count(conn, cp.view, sa.true())
    flow = [{"step": "registered", "label": "Patients in the registry", "n": total, "excluded": 0, "reason": None}]
    where: list[sa.ColumnElement[bool]] = []
    previous = total
    for (label, compiled), kind in zip(cp.cohort_steps, cp.step_kinds, strict=True):
        where.append(compiled.sql)
        n = _count(conn, cp.view, sa.and_(*where))
        reason = "no index event" if kind == "index" else f"not ({compiled.text})"
        flow.append({"step": "index" if kind == "index" else "include", "kind": kind, "label": label, "n": n,
                     "excluded": previous - n, "reason": reason})
        previous = n
    return flow


def population_where(cp: CompiledProtocol, name: str) -> sa.ColumnElement[bool]:
    if name == "all":
        return cp.cohort
    return sa.and_(cp.cohort, cp.populations[name].sql)


def _base(ep: Endpoint) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": ep.kind, "label": ep.label, "definition": ep.definition,
                           "population": ep.population}
    if ep.published is not None:
        out["published"] = {"value": ep.published.value, "text": ep.published.text}
    return out


def _endpoint(conn: sa.Connection, cp: CompiledProtocol, ep: Endpoint, warnings: list[dict[str, Any]]
              ) -> dict[str, Any]:
    where = population_where(cp, ep.population)
    c = cp.view.subquery.c
    out = _base(ep)
    if ep.kind == "count":
        out["n"] = _count(conn, cp.view, where)
    elif ep.kind == "proportion":
        num = cp.numerators[ep.id]
        missing_cond = sa.and_(*[c[i].is_(None) for i in num.inputs]) if num.inputs else sa.false()
        one = sa.literal(1)
        # referred patients whose referral follows time zero (or is undated) were selected after it
        late = c.referral == "referred"
        if "index_date" in c:
            late = sa.and_(late, sa.or_(c.index_date.is_(None), c.referral_date.is_(None),
                                        c.referral_date > c.index_date))
        row = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.sum(sa.case((missing_cond, one), else_=0)),
                sa.func.sum(sa.case((sa.and_(sa.not_(missing_cond), num.sql), one), else_=0)),
                sa.func.count(sa.distinct(sa.case((sa.not_(missing_cond), c.referral), else_=sa.null()))),
                sa.func.sum(sa.case((sa.and_(sa.not_(missing_cond), late), one), else_=0)),
            ).select_from(cp.view.subquery).where(where)
        ).one()
        total, missing, numerator, referral_kinds, late_referred = (int(v or 0) for v in row)
        denominator = total - missing
        estimate = numerator / denominator if denominator else None
        low, high = proportion_ci(numerator, denominator, method=ep.ci_method, conf_level=ep.conf_level) \
            if denominator else (None, None)
        out |= {"numerator": numerator, "denominator": denominator, "estimate": estimate, "ci_low": low,
                "ci_high": high, "ci_method": ep.ci_method, "missing": missing}
        if referral_kinds > 1 and late_referred:
            warnings.append(_warning(ep, "pooled-referral",
                                     f"{ep.id}: the denominator mixes in-house (intention-to-treat) and referred "
                                     "(selected) patients; report the two groups separately"))
        if missing:
            warnings.append(_warning(ep, "missing-inputs",
                                     f"{ep.id}: {missing} patient(s) left the denominator because every input "
                                     f"of the predicate was missing"))
    elif ep.kind == "median":
        col = c[ep.column]
        values = np.asarray([v for (v,) in conn.execute(sa.select(col).where(where, col.is_not(None)))],
                            dtype=float)
        if values.size:
            # q1/q3 with numpy's default (linear, R type 7) quantile
            q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75])
            out |= {"n": int(values.size), "median": float(med), "q1": float(q1), "q3": float(q3),
                    "min": float(values.min()), "max": float(values.max())}
        else:
            out |= {"n": 0, "median": None, "q1": None, "q3": None, "min": None, "max": None}
        if ep.unit:
            out["unit"] = ep.unit
        total = _count(conn, cp.view, where)
        if total > values.size:
            out["missing"] = total - int(values.size)
    elif ep.kind == "cumulative_incidence":
        out |= cumulative_incidence_endpoint(conn, c, ep, where, warnings)
    else:
        out |= time_to_event(conn, c, ep, where, warnings)
    return out


def _warning(ep: Endpoint, code: str, message: str) -> dict[str, Any]:
    return {"endpoint": ep.id, "code": code, "message": message}
