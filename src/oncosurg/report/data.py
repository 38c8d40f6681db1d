"""What the report shows beyond the endpoints: cohort flow, Table 1, Kaplan-Meier curves, Cox models.

Queries run on the analysis view through the protocol's compiled expressions
(:func:`oncosurg.protocol.engine.compile_protocol`), so the report's cohort and populations are the
engine's.  As in the engine, the database aggregates: Table 1 fetches ``(groups, value, count)``
rows and Kaplan-Meier figures ``(group, time, event, count)`` rows; only a Cox model reads one row
per patient.  The output is a plain JSON-ready dictionary; the renderers draw from it and never
touch the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.protocol.comparisons import grouping_problem, run_comparison
from oncosurg.protocol.engine import CompiledProtocol, compile_protocol
from oncosurg.protocol.materialize import materialized
from oncosurg.protocol.model import Protocol, ProtocolError
from oncosurg.protocol.outcomes import date_spec
from oncosurg.report.spec import CoxSpec, KMSpec, ReportSpec, report_spec
from oncosurg.report.table_one import Variable, table_one
from oncosurg.report.text import code_label, column_label, display_path, fmt_date, time_axis
from oncosurg.schema import DAYS_PER_MONTH, FIELD_BY_NAME
from oncosurg.stats import coxph, kaplan_meier, logrank_test
from oncosurg.stats.compiled import kernels_cached

Progress = Callable[[str], None]
_FIRST_RUN = " (first run: compiling the {} kernels, cached for later runs)"

def _later_reads(cp: CompiledProtocol, name: str) -> list[str]:
    """What a grouping (population or column) reads that is recorded after time zero (empty: fixed at zero)."""
    if cp.population_timing(name) != "later":
        return []
    if name not in cp.populations:
        return [name]
    compiled = cp.populations[name]
    reads = [c for c in compiled.columns if cp.view.timing.get(c, "later") == "later"]
    reads += [f"{q.table} after the index" for q in compiled.queries if not q.baseline]
    return list(dict.fromkeys(reads)) or [name]


class Grouping:
    """A split of the cohort: a population (members vs the rest) or an enum/bool column."""

    def __init__(self, cp: CompiledProtocol, name: str):
        self.name = name
        c = cp.view.subquery.c
        if name in cp.populations:
            pop = cp.populations[name]
            self.expr: sa.ColumnElement[Any] = sa.case((pop.sql, sa.literal(1)), else_=sa.literal(0))
            words = name.replace("_", " ")
            self.levels: list[Any] = [1, 0]
            self.labels = {1: words.capitalize(), 0: f"Not {words}"}
            self.columns: tuple[str, ...] = pop.columns
            self.title = f"{words.capitalize()} vs not {words}"
        else:
            ctype = cp.view.types[name]
            self.expr = c[name]
            self.columns = (name,)
            if ctype.kind == "bool":
                self.levels = [True, False]
            elif ctype.choices:
                self.levels = list(ctype.choices)
            else:
                self.levels = []  # filled from the data
            self.labels = {lv: code_label(lv) for lv in self.levels}
            self.title = f"By {column_label(name).lower()}"
        self.bool_column = name not in cp.populations and cp.view.types[name].kind == "bool"

    def key(self, value: Any) -> Any:
        if value is None:
            return None
        if self.bool_column:
            return bool(value)
        if isinstance(value, bool):
            return int(value)
        return value

    def label(self, value: Any) -> str:
        return self.labels.get(value) or code_label(value)


def _where(cp: CompiledProtocol, population: str) -> sa.ColumnElement[bool]:
    return cp.cohort if population == "all" else sa.and_(cp.cohort, cp.populations[population].sql)


# ------------------------------------------------------------------------------------------- flow
def cohort_flow(conn: sa.Connection, cp: CompiledProtocol, results: dict[str, Any]) -> dict[str, Any]:
    """Registry → cohort (exclusions) → in-house / referred → operated → hepatectomy, with counts."""
    c = cp.view.subquery.c
    rows = conn.execute(sa.select(c.referral, c.surgery_type, sa.func.count()).where(cp.cohort)
                        .group_by(c.referral, c.surgery_type)).all()
    arms: dict[str, dict[str, Any]] = {}
    for key, label in (("in_house", "Treated in-house"), ("referred", "Referred after cetuximab elsewhere")):
        arms[key] = {"key": key, "label": label, "n": 0, "operated": 0, "not_operated": 0, "hepatectomy": 0,
                     "exploration_only": 0, "ablation_only": 0}
    for referral, surgery_type, n in rows:
        arm = arms.setdefault(str(referral), {"key": str(referral), "label": code_label(referral), "n": 0,
                                              "operated": 0, "not_operated": 0, "hepatectomy": 0,
                                              "exploration_only": 0, "ablation_only": 0})
        arm["n"] += int(n)
        if surgery_type is None:
            arm["not_operated"] += int(n)
        else:
            arm["operated"] += int(n)
            arm[str(surgery_type)] = arm.get(str(surgery_type), 0) + int(n)
    protocol = results["protocol"]
    exclusions = []
    steps = results["cohort"]["flow"]
    accrual = protocol["accrual"]
    for step in steps[1:]:
        if step.get("kind") == "index" and not step["excluded"]:
            continue  # everyone has an index event: nothing to say
        if step.get("kind") == "index":
            reason = f"no index event ({step['label'][0].lower()}{step['label'][1:]})"
        elif step["label"].endswith("within the accrual window"):
            reason = (f"{accrual['column'].replace('_', ' ')} outside the accrual window "
                      f"({fmt_date(accrual['start'])} – {fmt_date(accrual['end'])})")
        else:
            reason = f"not meeting: {step['label']}"
        exclusions.append({"reason": reason, "n": step["excluded"]})
    total = sum(a["n"] for a in arms.values())
    sums = {k: sum(a[k] for a in arms.values()) for k in ("operated", "not_operated", "hepatectomy",
                                                            "exploration_only", "ablation_only")}
    index = cp.protocol.index
    # the operated / hepatectomy stages follow a treatment given before surgery (the seed study's pathway)
    pathway = index is None or cp.view.index_table == "therapy_line"
    label = "Evaluated" if index is None else f"Evaluated: {index.label[0].lower()}{index.label[1:]}"
    texts = {}
    if pathway and index is not None:
        texts = {"in_house_text": "index treatment given at the centre", "referred_text": "index treatment given "
                 "elsewhere"}
    return {"registered": steps[0]["n"], "exclusions": exclusions, "evaluated": total,
            "arms": list(arms.values()), "pathway": pathway, "evaluated_label": label, **texts, **sums}


# ---------------------------------------------------------------------------------------- table 1
def table_one_data(conn: sa.Connection, cp: CompiledProtocol, spec: ReportSpec) -> list[dict[str, Any]]:
    """One Table 1 per grouping in ``report.table_one_by`` (the whole cohort when there is none)."""
    c = cp.view.subquery.c
    groupings = [Grouping(cp, name) for name in spec.table_one_by]
    gcols = [g.expr.label(f"g{i}") for i, g in enumerate(groupings)]
    per_var: dict[str, list[tuple[tuple[Any, ...], Any, int]]] = {}
    for name in spec.table_one_variables:
        col = c[name]
        rows = conn.execute(sa.select(*gcols, col, sa.func.count()).where(cp.cohort)
                            .group_by(*[g.expr for g in groupings], col)).all()
        per_var[name] = [(tuple(r[: len(groupings)]), r[len(groupings)], int(r[-1])) for r in rows]
    variables = []
    for name in spec.table_one_variables:
        ctype = cp.view.types[name]
        kind = "numeric" if ctype.kind in ("int", "float") else "binary" if ctype.kind == "bool" else "categorical"
        levels = list(ctype.choices) if ctype.choices else None
        field = FIELD_BY_NAME.get(name)
        variables.append(Variable(name, column_label(name), kind, levels, unit=field.unit if field else ""))
    tables = []
    splits: list[Grouping | None] = [*groupings] if groupings else [None]
    for gi, grouping in enumerate(splits):
        counts: dict[str, dict[Any, dict[Any, int]]] = {}
        group_n: dict[Any, int] = {}
        for var in variables:
            per_group: dict[Any, dict[Any, int]] = {}
            for gvals, value, n in per_var[var.name]:
                gkey = "all" if grouping is None else grouping.key(gvals[gi])
                if var.kind == "binary" and value is not None:
                    value = bool(value)
                bucket = per_group.setdefault(gkey, {})
                bucket[value] = bucket.get(value, 0) + n
            counts[var.name] = per_group
        first = per_var[variables[0].name] if variables else []
        for gvals, _value, n in first:
            gkey = "all" if grouping is None else grouping.key(gvals[gi])
            group_n[gkey] = group_n.get(gkey, 0) + n
        if grouping is None:
            order, labels, title, missing_group = ["all"], {"all": "All patients"}, "All patients", 0
        else:
            levels = grouping.levels or sorted(k for k in group_n if k is not None)
            order = [lv for lv in levels if group_n.get(lv)] or levels
            labels = {lv: grouping.label(lv) for lv in order}
            title, missing_group = grouping.title, group_n.get(None, 0)
        table = table_one(variables, counts, [(k, labels[k], group_n.get(k, 0)) for k in order])
        table |= {"id": f"table-one-{grouping.name if grouping else 'all'}", "by": grouping.name if grouping else None,
                  "title": title, "group_missing": missing_group}
        if grouping is not None and _later_reads(cp, grouping.name):
            table["notes"].append(f"Groups are defined by {', '.join(_later_reads(cp, grouping.name))}, known "
                                  "only after time zero; differences describe who reached that stage, not an "
                                  "effect of it.")
        tables.append(table)
    return tables


# ---------------------------------------------------------------------------------- Kaplan-Meier
def _nice_step(tmax: float) -> float:
    for step in (1, 2, 3, 6, 12, 24, 36, 60, 120):
        if tmax / step <= 9:
            return float(step)
    return float(10 ** math.ceil(math.log10(max(tmax, 1) / 8)))


def km_times(tmax: float) -> list[float]:
    """At-risk times: 0 and multiples of a step in months that keeps the row readable (6 for 3 years)."""
    step = _nice_step(tmax)
    return [i * step for i in range(math.floor(tmax / step + 1e-9) + 1)]


def _curve(fit: Any, reverse: bool, start: float = 0.0) -> dict[str, Any]:
    """The step curve from ``start`` (0, or the first entry of a group with delayed entry)."""
    lo, up = fit.bands()
    t = np.concatenate(([start], fit.time))
    s = np.concatenate(([1.0], fit.surv))
    lo = np.concatenate(([1.0], lo))
    up = np.concatenate(([1.0], up))
    cens = fit.n_censor > 0

    def clean(v: np.ndarray) -> list[float | None]:
        return [None if not math.isfinite(x) else round(float(x), 10) for x in v]

    return {"time": clean(t), "surv": clean(s), "lower": clean(lo), "upper": clean(up),
            "censored": {"time": clean(fit.time[cens]), "surv": clean(fit.surv[cens])}}


def _groups_from_fits(order: list[Any], fits: dict[Any, Any], labels: dict[Any, str], times: list[float],
                      reverse: bool = False, rows: dict[Any, tuple[Any, Any]] | None = None) -> list[dict[str, Any]]:
    """Figure data per group; ``rows`` gives (entry, time) arrays of groups with delayed entry, whose numbers
    at risk at t count the patients who have entered (entry <= t) and are still followed (time >= t)."""
    groups = []
    for key in order:
        fit = fits[key]
        entry, stop = (rows or {}).get(key, (None, None))
        q = fit.median(rule="quantile")  # as the engine (R quantile(survfit))
        at = fit.at(times, extend=True)
        risk, ev_cum, ce_cum = [], 0.0, 0.0
        for a in at:
            ev_cum += a.n_event
            ce_cum += a.n_censor
            n_risk = int(a.n_risk) if entry is None else int(((entry <= a.time) & (stop >= a.time)).sum())
            risk.append({"time": a.time, "n_risk": n_risk, "events": int(ev_cum), "censored": int(ce_cum),
                         "surv": a.surv, "lower": a.lower, "upper": a.upper})
        start = 0.0 if entry is None or not len(entry) else float(np.min(entry))
        groups.append({"key": str(key), "label": labels[key], "n": int(fit.n), "events": int(fit.events),
                       "median": q.estimate, "ci_low": q.lower, "ci_high": q.upper,
                       "n_risk_at_median": None if q.estimate is None else int(fit.n_risk_at(q.estimate)),
                       "curve": _curve(fit, reverse, start), "risk": risk})
    return groups


def _median_warnings(groups: list[dict[str, Any]], grouped: bool) -> list[str]:
    warnings = []
    for g in groups:
        if g["median"] is None and grouped:  # single curves: the endpoint's warning says it
            warnings.append(f"{g['label']}: median not reached ({g['events']} event(s) among {g['n']}).")
        elif g["n_risk_at_median"] is not None and g["n_risk_at_median"] < 5:
            warnings.append(f"{g['label']}: the median is reached with only {g['n_risk_at_median']} patient(s) "
                            "at risk; it is unstable.")
    return warnings


def km_figure(conn: sa.Connection, cp: CompiledProtocol, spec: KMSpec) -> dict[str, Any]:
    c = cp.view.subquery.c
    time, event = c[spec.time], c[spec.event]
    grouping = Grouping(cp, spec.by) if spec.by else None
    later = _later_reads(cp, spec.by) if spec.by else []
    referral = spec.by is not None and not later and cp.population_timing(spec.by) == "referral"
    gexpr = grouping.expr if grouping else sa.literal(1)
    rows = conn.execute(
        sa.select(gexpr.label("g"), time, event, sa.func.count())
        .where(_where(cp, spec.population), time.is_not(None), event.is_not(None))
        .group_by(gexpr, time, event)).all()
    data: dict[Any, list[tuple[float, float, int]]] = {}
    for g, t, e, n in rows:
        if t is None or float(t) < 0:
            continue
        key = grouping.key(g) if grouping else "all"
        ev = float(bool(e))
        data.setdefault(key, []).append((float(t), 1.0 - ev if spec.reverse else ev, int(n)))
    warnings: list[str] = []
    missing_group = len(data.pop(None, []))
    if missing_group:
        warnings.append(f"patients with no {spec.by} recorded are left out of the grouped curves")
    order = [lv for lv in (grouping.levels or sorted(data)) if lv in data] if grouping is not None else list(data)
    tmax = max((t for rows_ in data.values() for t, _, _ in rows_), default=0.0)
    times = list(spec.times) if spec.times else km_times(tmax)
    fits = {}
    for key in order:
        arr = np.asarray(data[key], dtype=float)
        fits[key] = kaplan_meier(arr[:, 0], arr[:, 1], weights=arr[:, 2], conf_type=spec.conf_type,
                                 conf_level=spec.conf_level)
    labels = {key: "All patients" if grouping is None else grouping.label(key) for key in order}
    groups = _groups_from_fits(order, fits, labels, times, spec.reverse)
    logrank = None
    caveat = None
    if later or referral:
        # a split decided after time zero: drawn only as a description, without a test (format-1 files)
        what = ", ".join(later) if later else "the referral (referred patients enter at referral)"
        caveat = (f"Descriptive only: groups defined by {what}, after time zero. No test: the comparison is biased "
                  "(guarantee time). See the protocol's [[comparisons]].")
        warnings.append(
            f"Guarantee-time bias: the groups are defined by {what}, which happens after the time origin. Patients in "
            f"the {grouping.label(grouping.levels[0]).lower() if grouping and grouping.levels else 'first'} group "
            "had to survive long enough to reach that stage, so the comparison favours them by construction; it is "
            "descriptive only and no p-value is shown. Compare with a landmark analysis, a time-dependent Cox model "
            "or a Simon-Makuch plot ([[comparisons]] in the protocol).")
    elif len(groups) > 1:
        t_all = np.concatenate([np.repeat(np.asarray(data[k])[:, 0], np.asarray(data[k])[:, 2].astype(int))
                                for k in order])
        e_all = np.concatenate([np.repeat(np.asarray(data[k])[:, 1], np.asarray(data[k])[:, 2].astype(int))
                                for k in order])
        g_all = np.concatenate([np.full(int(np.asarray(data[k])[:, 2].sum()), i) for i, k in enumerate(order)])
        lr = logrank_test(t_all, e_all.astype(bool), g_all)
        logrank = {"chisq": float(lr.chisq), "df": int(lr.df), "p": float(lr.p)}
    if not groups:
        warnings.append("No patient in this population has the data: not estimable (n = 0).")
    warnings += _median_warnings(groups, grouping is not None)
    population = "all evaluated patients" if spec.population == "all" else \
        f"population {spec.population} ({cp.protocol.populations[spec.population]})"
    return {
        "id": spec.id, "endpoint": spec.endpoint, "title": spec.title or spec.label.split(",")[0],
        "label": spec.label, "population": spec.population, "population_text": population, "by": spec.by,
        "by_title": grouping.title if grouping else None, "time": spec.time, "event": spec.event,
        "reverse": spec.reverse, "conf_type": spec.conf_type, "conf_level": spec.conf_level, "unit": spec.unit,
        "time_label": time_axis(cp.protocol, spec.time),
        "y_label": ("Remaining under follow-up (%)" if spec.reverse else f"{spec.label.split(',')[0]} (%)"),
        "times": times, "groups": groups, "logrank": logrank, "warnings": warnings, "caveat": caveat,
        "event_noun": "deaths" if _is_death(cp, spec.event) else "events",
    }


def _is_death(cp: CompiledProtocol, event: str) -> bool:
    outcome = cp.protocol.outcome_by_id.get(event.removesuffix("_event"))
    return outcome is not None and tuple(outcome.events) == ("death",)


def comparison_figure(conn: sa.Connection, cp: CompiledProtocol, cid: str) -> dict[str, Any]:
    """Curves of a comparison (per group, per landmark group, or Simon-Makuch) with its valid statistics."""
    cc = cp.comparisons[cid]
    comp = cc.spec
    raw: dict[str, Any] = {}
    result = run_comparison(conn, cp, cc, [], fits=raw)
    order = [g["key"] for g in result["groups"]]
    enum = comp.method == "kaplan_meier" and comp.groups in cp.view.types and cp.view.types[comp.groups].choices
    labels = {g["key"]: code_label(g["key"]) if enum else g["label"] for g in result["groups"]}
    fits = {k: v[0] for k, v in raw.items()}
    rows = {k: (v[1], v[2]) for k, v in raw.items() if v[1] is not None}
    tmax = max((float(f.time.max()) for f in fits.values() if f.time.size), default=0.0)
    times = km_times(tmax)
    groups = _groups_from_fits(order, fits, labels, times, rows=rows)
    outcome = cp.protocol.outcome_by_id[comp.outcome]
    axis = time_axis(cp.protocol, f"{comp.outcome}_months")
    if comp.method == "landmark":
        axis = f"Months since the {comp.landmark:g}-month landmark"
    method_line = {
        "kaplan_meier": "Kaplan-Meier by group" + (f", delayed entry at {comp.entry.replace('_', ' ')}"
                                                  if comp.entry else ""),
        "landmark": f"Landmark analysis at {comp.landmark:g} months: status at the landmark, time from it"
        if comp.landmark is not None else "Landmark analysis",
        "simon_makuch": "Simon-Makuch: patients change group at the exposure" + (
            f"; delayed entry at {comp.entry.replace('_', ' ')}" if comp.entry else ""),
        "time_dependent_cox": "Time-dependent Cox model",
    }[comp.method]
    from oncosurg.report.text import fmt_p

    stats_lines = []
    hr = result.get("hr")
    if hr and not hr.get("estimable", True):
        stats_lines.append(f"Hazard ratio not estimable ({hr['label']}): a group has no event")
    elif hr and hr.get("hr") is not None:
        stats_lines.append(f"HR {hr['hr']:.2f} (95% CI {_f2(hr['lower'])}–{_f2(hr['upper'])}), "
                           f"p {_p_words(fmt_p(hr['p']))}: {hr['label']}")
    test = result.get("test")
    if test and test.get("p") is not None:
        stats_lines.append(f"{test['name'][0].upper()}{test['name'][1:]}: p {_p_words(fmt_p(test['p']))}")
    title_unit = "months"
    return {
        "id": f"cmp-{cid}", "comparison": cid, "title": comp.title or comp.label, "label": comp.label,
        "method": comp.method, "method_line": method_line, "stats_lines": stats_lines, "result": result,
        "population": comp.population, "by": comp.groups or "exposure", "by_title": result.get("group_title"),
        "reverse": False, "conf_type": comp.conf_type, "conf_level": comp.conf_level, "unit": title_unit,
        "time_label": axis, "y_label": f"{outcome.label} (%)", "times": times,
        "groups": groups, "logrank": None, "warnings": list(result["notes"]), "caveat": None,
        "event_noun": "deaths" if tuple(outcome.events) == ("death",) else "events",
    }


def _f2(x: float | None) -> str:
    return "NE" if x is None else f"{x:.2f}"


def _p_words(p: str) -> str:
    return f"< {p[1:]}" if p.startswith("<") else f"= {p}"


# ------------------------------------------------------------------------------------------- Cox
def cox_rows(conn: sa.Connection, cp: CompiledProtocol, spec: CoxSpec
             ) -> tuple[list[tuple[str, str, list[Any]]], list[Any], dict[str, Any]]:
    """Covariate kinds, complete-case rows ``(time, event, entry, x…)`` and the model's header."""
    c = cp.view.subquery.c
    covariate_cols: list[sa.ColumnElement[Any]] = []
    kinds: list[tuple[str, str, list[Any]]] = []
    for i, name in enumerate(spec.covariates):
        if name in cp.populations:
            covariate_cols.append(sa.case((cp.populations[name].sql, sa.literal(1)), else_=sa.literal(0))
                                  .label(f"x{i}"))
            kinds.append((name, "binary", []))
        else:
            ctype = cp.view.types[name]
            covariate_cols.append(c[name].label(f"x{i}"))
            kind = "numeric" if ctype.kind in ("int", "float") else "binary" if ctype.kind == "bool" else "enum"
            kinds.append((name, kind, list(ctype.choices)))
    time, event = c[spec.time], c[spec.event]
    entry_col: Any = sa.literal(0.0)
    if spec.entry is not None:
        outcome = spec.outcome or spec.time.rsplit("_", 1)[0]
        origin = c[f"{outcome}_origin"] if f"{outcome}_origin" in cp.view.types else None
        if origin is None:
            raise ProtocolError(cp.protocol.source, [f"report.cox ({spec.title}).entry: needs an outcome"])
        try:
            date = date_spec(spec.entry, cp.view.compiler(cp.protocol.parameters)).sql
        except Exception as exc:  # ExpressionError
            raise ProtocolError(cp.protocol.source, [f"report.cox ({spec.title}).entry: {exc}"]) from None
        unknown = sa.and_(c.referral == "referred", c.referral_date.is_(None)) \
            if spec.entry.strip() == "referral_date" else sa.false()
        months = sa.cast(_days(origin, date), sa.Float()) / sa.literal(DAYS_PER_MONTH, sa.Float())
        entry_col = sa.case((unknown, sa.null()), (date.is_(None), sa.literal(0.0)), (date <= origin, sa.literal(0.0)),
                            else_=months)
    rows = conn.execute(sa.select(time, event, entry_col.label("entry"), *covariate_cols)
                        .where(_where(cp, spec.population))).all()
    complete = [r for r in rows if all(v is not None for v in r)]
    dropped = len(rows) - len(complete)
    out: dict[str, Any] = {"id": spec.id, "title": spec.title, "population": spec.population, "time": spec.time,
                           "event": spec.event, "ties": spec.ties, "entry": spec.entry, "dropped_incomplete": dropped,
                           "terms": [], "warnings": []}
    if spec.entry is not None:
        before = len(complete)
        complete = [r for r in complete if float(r[0]) > float(r[2])]
        out["dropped_entry"] = before - len(complete)
    return kinds, complete, out


def cox_matrix(cp: CompiledProtocol, kinds: list[tuple[str, str, list[Any]]], complete: list[Any],
               out: dict[str, Any], levels: Mapping[str, list[Any]] | None = None
               ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Design columns and their terms; ``levels`` (federated: decided on every centre's data) fixes the
    levels of enum covariates and which numeric ones are kept, instead of reading them off ``complete``."""
    X: dict[str, np.ndarray] = {}
    terms: list[dict[str, Any]] = []
    for j, (name, kind, choices) in enumerate(kinds):
        values = [r[3 + j] for r in complete]
        if kind in ("numeric", "binary"):
            column = np.asarray([float(v) for v in values])
            constant = name not in levels if levels is not None else column.size and np.all(column == column[0])
            if constant:
                out["warnings"].append(f"{name} has one value only among the patients analysed; left out of the model")
                continue
            X[name] = column
            label = name.replace("_", " ").capitalize() if name in cp.populations else column_label(name)
            field = FIELD_BY_NAME.get(name)
            unit = field.unit if field else ""
            if kind == "numeric":
                label = label.removesuffix(f", {unit}") if unit else label
                contrast = f"per {unit.removesuffix('s')}" if unit else "per +1"
            else:
                contrast = "yes vs no"
            terms.append({"covariate": name, "label": f"{label} ({contrast})", "contrast": contrast, "name": name})
        else:
            present = list(levels[name]) if levels is not None and name in levels else \
                [ch for ch in (choices or sorted(set(values))) if ch in set(values)]
            if len(present) < 2:
                out["warnings"].append(f"{name} has one value only among the patients analysed; left out of the model")
            for level in present[1:]:
                key = f"{name}={level}"
                X[key] = np.asarray([1.0 if v == level else 0.0 for v in values])
                terms.append({"covariate": name,
                              "label": f"{column_label(name)}: {code_label(level)} vs {code_label(present[0]).lower()}",
                              "contrast": f"vs {code_label(present[0])}", "name": key})
    return X, terms


def cox_model(conn: sa.Connection, cp: CompiledProtocol, spec: CoxSpec) -> dict[str, Any]:
    kinds, complete, out = cox_rows(conn, cp, spec)
    X, terms = cox_matrix(cp, kinds, complete, out)
    if not complete or not X:
        out["warnings"].append("no complete cases: the model was not fitted")
        return out
    t = np.asarray([float(r[0]) for r in complete])
    e = np.asarray([bool(r[1]) for r in complete])
    entry = np.asarray([float(r[2]) for r in complete]) if spec.entry is not None else None
    if not e.any():
        out["warnings"].append("no events: the model was not fitted")
        return out
    fit = coxph(t, e, X, ties=spec.ties, entry=entry)
    coefs = {co.name: co for co in fit.coefficients}
    for term in terms:
        co = coefs[term["name"]]
        term |= {"hr": co.hr, "lower": co.hr_lower, "upper": co.hr_upper, "p": co.p}
    out |= {"terms": terms, "n": fit.n, "events": fit.events, "concordance": fit.concordance, "lr_p": fit.lr_p,
            "warnings": out["warnings"] + list(fit.warnings)}
    out["ph"] = _ph_test(fit, terms)
    if out["ph"] and out["ph"]["global"]["p"] is not None and out["ph"]["global"]["p"] < 0.05:
        out["warnings"].append(
            f"Proportional hazards: the cox.zph test rejects it (global p = {out['ph']['global']['p']:.3g}); "
            "see the scaled Schoenfeld residuals and consider a time-varying effect or stratification.")
    if out["dropped_incomplete"]:
        out["warnings"].append(f"{out['dropped_incomplete']} patient(s) with a missing covariate are left out "
                               "(complete cases)")
    if out.get("dropped_entry"):
        out["warnings"].append(f"{out['dropped_entry']} patient(s) whose follow-up ended at or before their entry are "
                               "left out")
    if spec.entry is not None:
        out["warnings"].append(f"Delayed entry: patients enter the risk set at their {spec.entry.replace('_', ' ')} "
                               "(R coxph(Surv(entry, time, status) ~ …)); referred patients without a referral date "
                               "are left out.")
    post = [k[0] for k in kinds if _later_reads(cp, k[0])]
    if post:
        out["warnings"].append(f"Guarantee-time bias: {', '.join(post)} are known only after the time origin; "
                               "their hazard ratios are biased in favour of reaching them.")
    if fit.events < 10 * max(1, len(X)):
        out["warnings"].append(f"{fit.events} events for {len(X)} coefficient(s): fewer than 10 events per "
                               "coefficient; estimates may be unstable.")
    return out


def _ph_test(fit: Any, terms: list[dict[str, Any]]) -> dict[str, Any] | None:
    """R's ``cox.zph(fit)`` (transform "km"): test per coefficient and global, and the scaled
    Schoenfeld residuals against the transformed time for the figure."""
    try:
        z = fit.zph("km", terms=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    labels = {t["name"]: t["label"] for t in terms}
    rows = [{"name": name, "label": labels.get(name, name), "chisq": float(z.chisq[i]), "df": int(z.df[i]),
             "p": float(z.p[i]), "coef": float(fit.params[name]),
             "residuals": [None if not np.isfinite(v) else float(v) for v in z.y[:, i]]}
            for i, name in enumerate(z.terms[:-1])]
    return {"transform": "km", "terms": rows, "x": [float(v) for v in z.x],
            "global": {"chisq": float(z.chisq[-1]), "df": int(z.df[-1]), "p": float(z.p[-1])}}
def _days(a: Any, b: Any) -> Any:
    from oncosurg.protocol.expr import days_between

    return days_between(a, b)


def check_report_groupings(cp: CompiledProtocol, spec: ReportSpec) -> None:
    """Format 2: a figure split or Cox covariate decided after time zero is refused (use [[comparisons]])."""
    if cp.protocol.format != 2:
        return
    problems = []
    for i, km in enumerate(spec.km):
        if km.by:
            problem = grouping_problem(cp, km.by, entry=None, what="by")
            if problem:
                problems.append(f"report.km[{i}].by: {problem}; draw it as a [[comparisons]] table instead")
    for i, cox in enumerate(spec.cox):
        for name in cox.covariates:
            problem = grouping_problem(cp, name, entry=cox.entry, what="covariate")
            if problem:
                problems.append(f"report.cox[{i}].covariates: {problem}")
    if problems:
        raise ProtocolError(cp.protocol.source, problems)


# ---------------------------------------------------------------------------------------- driver
def _last_import(conn: sa.Connection) -> dict[str, Any] | None:
    from oncosurg.store import tables as t

    try:
        row = conn.execute(sa.select(t.import_batch.c.source, t.import_batch.c.sha256, t.import_batch.c.rows,
                                     t.import_batch.c.imported_at)
                           .order_by(t.import_batch.c.id.desc()).limit(1)).first()
    except sa.exc.DBAPIError:
        return None
    if row is None:
        return None
    return {"source": display_path(row[0]), "sha256": row[1], "rows": row[2],
            "imported_at": row[3].isoformat() if hasattr(row[3], "isoformat") else str(row[3])}


def report_data(engine: sa.Engine, protocol: Protocol, results: dict[str, Any], *,
                progress: Progress | None = None) -> dict[str, Any]:
    """Everything the renderers need besides ``results``: flow, Table 1, KM figures, Cox models."""
    step = progress or (lambda _msg: None)
    cp = compile_protocol(protocol)
    spec = report_spec(protocol, set(cp.view.types))
    for name in spec.table_one_by:
        if name not in cp.populations and cp.view.types[name].kind not in ("text", "bool"):
            raise ProtocolError(protocol.source, [f"report.table_one_by: {name!r} is not an enum or yes/no column"])
    check_report_groupings(cp, spec)
    out: dict[str, Any] = {}
    with engine.connect() as conn, materialized(conn, cp) as cp:
        step("cohort flow")
        out["flow"] = cohort_flow(conn, cp, results)
        step("Table 1")
        out["table_one"] = table_one_data(conn, cp, spec)
        out["km"] = []
        for km in spec.km:
            step(f"Kaplan-Meier: {km.id}" + (_FIRST_RUN.format("log-rank") if km.by and not kernels_cached("logrank")
                                              else ""))
            out["km"].append(km_figure(conn, cp, km))
        out["comparisons"] = []
        for cid, cc in cp.comparisons.items():
            if cc.spec.method == "time_dependent_cox":
                continue  # a hazard ratio, no curve: it is in the comparisons table
            step(f"comparison: {cid}")
            out["comparisons"].append(comparison_figure(conn, cp, cid))
        out["cox"] = []
        for cox in spec.cox:
            step(f"Cox model: {cox.title}" + ("" if kernels_cached("_cox_kernels") else _FIRST_RUN.format("Cox")))
            out["cox"].append(cox_model(conn, cp, cox))
        out["last_import"] = _last_import(conn)
    out["results_template"] = spec.results
    return out
