"""Comparisons that respect time: groups fixed at time zero, decisions taken later, delayed entry.

A ``[[comparisons]]`` table names an outcome, a population and a method.  The engine knows when a
grouping is decided (:func:`oncosurg.protocol.view.timing_of`):

* **fixed at time zero** (sex, RAS status, the index line's agents, MDT decisions before the
  index…): ``method = "kaplan_meier"`` draws one Kaplan-Meier curve per group and gives the
  log-rank test (R ``survfit(Surv(time, status) ~ g)``, ``survdiff``) and the Cox hazard ratio.
* **decided later** (resection, any column recorded after the index): a plain Kaplan-Meier or
  log-rank comparison is refused — the decided group had to survive until the decision
  (guarantee-time bias).  The decision is declared as an ``exposure`` with its date and compared by

  - ``landmark`` (landmark L): patients still event-free and followed at L, grouped by their status
    at L, time re-origined at L (R ``subset(d, time > L)``, ``survfit(Surv(time - L, status) ~ g)``,
    ``survdiff``, ``coxph``);
  - ``time_dependent_cox``: the exposure as a time-dependent covariate, each patient's follow-up split
    at the exposure (R ``tmerge(…, tdc(s))``, ``coxph(Surv(tstart, tstop, status) ~ exposed)``);
  - ``simon_makuch``: Kaplan-Meier curves by *current* exposure status on the split data (R
    ``survfit(Surv(tstart, tstop, status) ~ exposed)``) with the time-dependent Cox hazard ratio.
* **from the referral** (``referral``, ``referral_date``): referred patients enter the registry at
  their referral, so ``entry = "referral_date"`` is required: delayed entry (left truncation), R
  ``Surv(entry, time, status)``; the log-rank test is then the score test of that Cox model.

Data leave the database as ``(group, entry, exposure, time, event, count)`` rows (one per distinct
combination), expanded in memory for the Cox fits.  Times are months (days / 30.4375) from the
outcome's origin.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.protocol.expr import ExpressionError, days_between
from oncosurg.protocol.model import Comparison
from oncosurg.protocol.outcomes import date_spec
from oncosurg.protocol.view import timing_of
from oncosurg.schema import DAYS_PER_MONTH
from oncosurg.stats import coxph, kaplan_meier, logrank_test
from oncosurg.stats._checks import SurvivalInputError
from oncosurg.stats.cox import CoxConvergenceWarning

#: What each method computes, with its R equivalent (methods section of the report).
METHOD_TEXT = {
    "kaplan_meier": ("Kaplan-Meier estimates per group compared by the log-rank test, hazard ratio from a Cox model "
                     "(R: survfit(Surv(time, status) ~ group); survdiff(Surv(time, status) ~ group); "
                     "coxph(Surv(time, status) ~ group))"),
    "kaplan_meier_entry": ("Kaplan-Meier estimates per group with delayed entry (left truncation) at the entry date, "
                           "compared by the score (log-rank) test of a Cox model on the same (entry, time] data "
                           "(R: survfit(Surv(entry, time, status) ~ group); coxph(Surv(entry, time, status) ~ group))"),
    "landmark": ("Landmark analysis: patients still event-free and under follow-up at the landmark, grouped by their "
                 "exposure status at the landmark, time measured from the landmark; exposures after the landmark "
                 "are ignored (R: lm <- subset(d, time > L); survfit(Surv(time - L, status) ~ exposed, lm); "
                 "survdiff(...); coxph(Surv(time - L, status) ~ exposed, lm))"),
    "time_dependent_cox": ("Cox model with the exposure as a time-dependent covariate: each patient's follow-up is "
                           "split at the exposure, unexposed before and exposed after it (R: tmerge(d, d, id, "
                           "status = event(time, status), exposed = tdc(exposure)); coxph(Surv(tstart, tstop, status) "
                           "~ exposed))"),
    "simon_makuch": ("Simon-Makuch estimator: Kaplan-Meier curves by current exposure status, patients moving from "
                     "the unexposed to the exposed curve at their exposure (R: survfit(Surv(tstart, tstop, status) ~ "
                     "exposed) on the tmerge data), with the time-dependent Cox hazard ratio"),
}


@dataclass(frozen=True)
class Group:
    """How a comparison splits patients: SQL expression, levels in order, labels, HR contrast."""

    expr: Any
    levels: tuple[Any, ...]
    labels: dict[Any, str]
    title: str
    contrast: tuple[Any, Any] | None = None  # (compared, reference)


@dataclass(frozen=True)
class CompiledComparison:
    spec: Comparison
    where: Any
    time: Any
    event: Any
    group: Group | None = None
    exposure: Any = None  # months from the origin to the exposure (NULL: never)
    entry: Any = None  # months from the origin to the entry
    timing: str = "baseline"
    notes: tuple[str, ...] = field(default_factory=tuple)


def _months(origin: Any, date: Any) -> Any:
    return sa.cast(days_between(origin, date), sa.Float()) / sa.literal(DAYS_PER_MONTH, sa.Float())


def _words(name: str) -> str:
    return name.replace("_", " ")


def grouping_problem(cp: Any, name: str, *, entry: str | None, what: str) -> str | None:
    """Why a grouping (population or column) may not split patients from time zero, or None."""
    timing = cp.population_timing(name)
    if timing == "later":
        if name in cp.populations:
            compiled = cp.populations[name]
            reads = [c for c in compiled.columns if cp.view.timing.get(c, "later") == "later"]
            reads += [f"{q.table} after the index" for q in compiled.queries if not q.baseline]
        else:
            reads = [name]
        return (f"{what} {name!r} is decided after time zero (it reads {', '.join(dict.fromkeys(reads))}): a "
                "Kaplan-Meier/log-rank comparison from the origin would credit that group with the time before the "
                "decision (guarantee-time bias). Declare the decision as an exposure with its date and use method = "
                "'landmark', 'time_dependent_cox' or 'simon_makuch'")
    if timing == "referral" and entry is None:
        return (f"{what} {name!r} depends on the referral, known only from referral_date: referred patients are in "
                "this registry only from their referral, so their time before it is immortal. Add entry = "
                "\"referral_date\" (delayed entry, R Surv(entry, time, status))")
    return None


def make_group(cp: Any, name: str) -> Group:
    """A population (members vs the rest) or an enum/yes-no column of the view."""
    if name in cp.populations:
        words = _words(name)
        return Group(sa.case((cp.populations[name].sql, sa.literal(1)), else_=sa.literal(0)), (1, 0),
                     {1: words.capitalize(), 0: f"Not {words}"}, f"{words.capitalize()} vs not {words}", (1, 0))
    ctype = cp.view.types[name]
    col = cp.view.subquery.c[name]
    if ctype.kind == "bool":
        return Group(col, (True, False), {True: "Yes", False: "No"}, f"By {_words(name)}", (True, False))
    levels = tuple(ctype.choices)
    return Group(col, levels, {lv: _words(lv).capitalize() for lv in levels}, f"By {_words(name)}")


def compile_comparison(cp: Any, comp: Comparison, where_key: str, problems: list[str]) -> CompiledComparison | None:
    """Check a comparison against the view; refusals are problems with their key path."""
    view = cp.view
    c = view.subquery.c
    if comp.outcome not in cp.protocol.outcome_by_id:
        return None
    time, event, origin = c[f"{comp.outcome}_months"], c[f"{comp.outcome}_event"], c[f"{comp.outcome}_origin"]
    where = cp.cohort if comp.population == "all" else sa.and_(cp.cohort, cp.populations[comp.population].sql)
    notes: list[str] = []
    compiler = view.compiler(cp.protocol.parameters)
    entry = None
    if comp.entry is not None:
        try:
            spec = date_spec(comp.entry, compiler)
        except ExpressionError as exc:
            problems.append(f"{where_key}.entry: {exc}")
            return None
        # never before the origin: patients already in the registry at time zero enter at 0; a referred
        # patient without a referral date has an unknown entry (NULL: left out)
        unknown = sa.false()
        if comp.entry.strip() == "referral_date":
            unknown = sa.and_(c.referral == "referred", c.referral_date.is_(None))
        entry = sa.case((unknown, sa.null()), (spec.sql.is_(None), sa.literal(0.0)),
                        (spec.sql <= origin, sa.literal(0.0)), else_=_months(origin, spec.sql))
    competing = cp.protocol.outcome_by_id[comp.outcome].competing
    if competing:
        notes.append(f"Competing events ({', '.join(competing)}) are treated as censoring: the curves overstate the "
                     "probability of the event (1 - Kaplan-Meier), and the hazard ratio is cause-specific.")
    if comp.population != "all" and cp.population_timing(comp.population) == "later":
        notes.append(f"The population {comp.population!r} is defined by what happened after time zero; the comparison "
                     "describes patients who reached that stage.")
    group = None
    exposure = None
    timing = "baseline"
    if comp.method == "kaplan_meier" and comp.groups:
        if comp.groups not in cp.populations and comp.groups not in view.types:
            problems.append(f"{where_key}.groups: {comp.groups!r} is neither a population nor a column")
            return None
        if comp.groups not in cp.populations and view.types[comp.groups].kind not in ("text", "bool"):
            problems.append(f"{where_key}.groups: {comp.groups!r} is not an enum or yes/no column")
            return None
        refusal = grouping_problem(cp, comp.groups, entry=comp.entry, what="groups")
        if refusal:
            problems.append(f"{where_key}.groups: {refusal}")
            return None
        group = make_group(cp, comp.groups)
        timing = cp.population_timing(comp.groups)
    elif comp.exposure:
        anchor = c.index_date if "index_date" in view.types else None
        try:
            spec = date_spec(comp.exposure, compiler, anchor=anchor, index_table=view.index_table)
        except ExpressionError as exc:
            problems.append(f"{where_key}.exposure: {exc}")
            return None
        exposure = sa.case((spec.sql.is_(None), sa.null()), else_=_months(origin, spec.sql))
        timing = "later"
    return CompiledComparison(comp, where, time, event, group, exposure, entry, timing, tuple(notes))


# ------------------------------------------------------------------------------------------ running
def _rows(conn: sa.Connection, cc: CompiledComparison) -> dict[str, np.ndarray]:
    """Per-patient values, fetched as distinct combinations with their counts, expanded in memory."""
    cols: dict[str, Any] = {"time": cc.time, "event": cc.event}
    if cc.group is not None:
        cols["group"] = cc.group.expr
    if cc.exposure is not None:
        cols["exposure"] = cc.exposure
    if cc.entry is not None:
        cols["entry"] = cc.entry
    labelled = [v.label(k) for k, v in cols.items()]
    rows = conn.execute(sa.select(*labelled, sa.func.count())
                        .where(cc.where, cc.time.is_not(None), cc.event.is_not(None))
                        .group_by(*cols.values())).all()
    counts = np.asarray([int(r[-1]) for r in rows], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for j, key in enumerate(cols):
        values = [r[j] for r in rows]
        if key == "group":
            arr = np.asarray(values, dtype=object)
        elif key == "event":
            arr = np.asarray([bool(v) for v in values], dtype=np.int8)
        else:
            arr = np.asarray([np.nan if v is None else float(v) for v in values], dtype=float)
        out[key] = np.repeat(arr, counts)
    return out


def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _hr(t: np.ndarray, e: np.ndarray, x: np.ndarray, entry: np.ndarray | None, level: float, label: str,
        notes: list[str]) -> dict[str, Any] | None:
    if e.sum() == 0 or np.unique(x).size < 2:
        notes.append(f"No hazard ratio for {label}: " + ("no events." if e.sum() == 0 else "one group is empty."))
        return None
    try:
        with warnings.catch_warnings():  # a convergence problem is reported in fit.warnings (and the notes)
            warnings.simplefilter("ignore", CoxConvergenceWarning)
            fit = coxph(t, e, {"x": x}, entry=entry, conf_level=level)
    except SurvivalInputError as exc:
        notes.append(f"No hazard ratio for {label}: {exc}")
        return None
    co = fit.coefficients[0]
    notes.extend(fit.warnings)
    # a group without events (monotone likelihood): the coefficient runs off to infinity
    estimable = not any("infinite" in w for w in fit.warnings) and _num(co.hr_upper) is not None \
        and _num(co.hr_lower) not in (None, 0.0)
    if not estimable:
        notes.append(f"The hazard ratio for {label} is not estimable (one group has no event, or all of them); "
                     "its value is not reported.")
    return {"label": label, "hr": _num(co.hr), "lower": _num(co.hr_lower), "upper": _num(co.hr_upper),
            "coef": _num(co.coef), "se": _num(co.se), "p": _num(co.p), "score_p": _num(fit.score_p),
            "n": int(fit.n), "events": int(fit.events), "conf_level": level, "estimable": estimable}


def _km(t: np.ndarray, e: np.ndarray, entry: np.ndarray | None, conf_type: str, level: float) -> Any:
    return kaplan_meier(t, e, entry=entry, conf_type=conf_type, conf_level=level)


def _group_summary(key: Any, label: str, fit: Any) -> dict[str, Any]:
    q = fit.median(rule="quantile")
    return {"key": str(key), "label": label, "n": _int(fit.n), "events": _int(fit.events),
            "median": _num(q.estimate), "ci_low": _num(q.lower), "ci_high": _num(q.upper)}


def _int(x: Any) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


def split_rows(time: np.ndarray, event: np.ndarray, exposure: np.ndarray, entry: np.ndarray
               ) -> dict[str, np.ndarray]:
    """Counting-process rows (start, stop] split at the exposure, as R ``tmerge(…, tdc(exposure))``.

    Exposed from the start when the exposure is at or before the entry; never when it is missing or
    at or after the end of follow-up.  Rows come per patient, earlier interval first.
    """
    s = exposure
    known = ~np.isnan(s)
    split = known & (s > entry) & (s < time)
    exposed_all = known & (s <= entry)
    reps = np.where(split, 2, 1)
    ids = np.repeat(np.arange(time.size), reps)
    first = np.concatenate(([True], ids[1:] != ids[:-1])) if ids.size else np.zeros(0, bool)
    start, stop = entry[ids].copy(), time[ids].copy()
    ev = event[ids].copy()
    exposed = exposed_all[ids].astype(np.int8)
    pre, post = split[ids] & first, split[ids] & ~first
    stop[pre] = s[ids[pre]]
    ev[pre] = 0
    start[post] = s[ids[post]]
    exposed[post] = 1
    return {"start": start, "stop": stop, "event": ev, "exposed": exposed, "id": ids}


def run_comparison(conn: sa.Connection, cp: Any, cc: CompiledComparison, warnings: list[dict[str, Any]],
                   *, fits: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute one comparison; ``fits`` (if given) receives, per group key, the Kaplan-Meier fit and the group's
    (entry, time) arrays (entry ``None`` without delayed entry), for figures and numbers at risk."""
    comp = cc.spec
    d = _rows(conn, cc)
    notes = list(cc.notes)
    t, _e = d["time"], d["event"]
    entry = d.get("entry")
    n_rows = int(t.size)
    dropped = 0
    if entry is not None:
        unknown = np.isnan(entry)
        if unknown.any():
            notes.append(f"{int(unknown.sum())} patient(s) without a {comp.entry.replace('_', ' ')} are left out: "
                         "their entry into the registry is unknown.")
            d = {k: v[~unknown] for k, v in d.items()}
            t, _e, entry = d["time"], d["event"], d["entry"]
        keep = t > entry  # (entry, time] must be a real interval: R Surv(entry, time, status) refuses start >= stop
        dropped = int((~keep).sum())
        d = {k: v[keep] for k, v in d.items()}
        t, _e, entry = d["time"], d["event"], d["entry"]
        if dropped:
            notes.append(f"{dropped} patient(s) whose follow-up ended at or before their entry are left out.")
    negative = t < 0
    if negative.any():
        notes.append(f"{int(negative.sum())} patient(s) whose follow-up ends before the origin are left out.")
        d = {k: v[~negative] for k, v in d.items()}
        t, _e, entry = d["time"], d["event"], d.get("entry")
    method = comp.method + ("_entry" if comp.method == "kaplan_meier" and entry is not None else "")
    out: dict[str, Any] = {
        "label": comp.label, "method": comp.method, "method_text": METHOD_TEXT[method], "outcome": comp.outcome,
        "population": comp.population, "unit": "months", "entry": comp.entry, "landmark": comp.landmark,
        "exposure": comp.exposure, "groups_by": comp.groups, "n": int(t.size), "n_fetched": n_rows,
        "dropped_entry": dropped, "groups": [], "test": None, "hr": None, "notes": notes,
    }
    if comp.entry is not None:
        n_delayed = int((entry > 0).sum()) if entry is not None else 0
        what = comp.entry.replace("_", " ")
        notes.append(f"Delayed entry: {n_delayed} patient(s) enter the risk set at their {what} (left truncation); "
                     "their earlier time is not counted.")
    if t.size == 0:
        notes.append("No patient to compare.")
        return out
    level = comp.conf_level
    if comp.method == "kaplan_meier":
        _fixed(out, cc, d, level, fits)
    elif comp.method == "landmark":
        _landmark(out, cc, d, level, fits)
    else:
        _time_dependent(out, cc, d, level, fits)
    if comp.entry is None:  # groups fixed at time zero too: a referred patient's time before referral is immortal
        _referral_warning(conn, cp, cc, warnings)
    return out


def _exposure_labels(comp: Comparison) -> tuple[str, str]:
    name = comp.exposure_label or "Exposed"
    return name, f"Not {name[0].lower()}{name[1:]}"


def _fixed(out: dict[str, Any], cc: CompiledComparison, d: dict[str, np.ndarray], level: float,
           fits: dict[str, Any] | None) -> None:
    assert cc.group is not None
    g, t, e, entry = d["group"], d["time"], d["event"], d.get("entry")
    missing = np.asarray([v is None for v in g], dtype=bool)
    if missing.any():
        out["notes"].append(f"{int(missing.sum())} patient(s) without a value of {cc.spec.groups} are left out.")
        keep = ~missing
        g, t, e = g[keep], t[keep], e[keep]
        entry = None if entry is None else entry[keep]
    keys = [_key(v, cc.group) for v in g]
    present = [lv for lv in cc.group.levels if lv in set(keys)] or sorted(set(keys), key=str)
    codes = np.asarray([present.index(k) for k in keys], dtype=np.int64)
    out["group_title"] = cc.group.title
    for i, lv in enumerate(present):
        m = codes == i
        fit = _km(t[m], e[m], None if entry is None else entry[m], cc.spec.conf_type, level)
        out["groups"].append(_group_summary(lv, cc.group.labels.get(lv, str(lv)), fit))
        if fits is not None:
            fits[str(lv)] = (fit, None if entry is None else entry[m], t[m])
    if len(present) < 2:
        out["notes"].append("Only one group has patients: nothing to compare.")
        return
    if entry is None:
        lr = logrank_test(t, e.astype(bool), codes)
        out["test"] = {"name": "log-rank", "r": "survdiff(Surv(time, status) ~ group)", "chisq": _num(lr.chisq),
                       "df": int(lr.df), "p": _num(lr.p)}
    contrast = cc.group.contrast or (present[1], present[0])
    if len(present) == 2 and contrast[0] in present and contrast[1] in present:
        x = (codes == present.index(contrast[0])).astype(float)
        label = f"{cc.group.labels.get(contrast[0], contrast[0])} vs {cc.group.labels.get(contrast[1], contrast[1])}"
        out["hr"] = _hr(t, e, x, entry, level, label, out["notes"])
        if entry is not None and out["hr"] is not None:
            out["test"] = {"name": "log-rank with delayed entry (Cox score test)",
                           "r": "coxph(Surv(entry, time, status) ~ group) score test", "chisq": None, "df": 1,
                           "p": out["hr"]["score_p"]}


def _key(value: Any, group: Any) -> Any:
    if isinstance(group.levels[0], bool) and value is not None:
        return bool(value)
    if isinstance(value, bool):
        return int(value)
    return value


def _landmark(out: dict[str, Any], cc: CompiledComparison, d: dict[str, np.ndarray], level: float,
              fits: dict[str, Any] | None) -> None:
    L = float(cc.spec.landmark or 0.0)
    t, e, s = d["time"], d["event"], np.maximum(d["exposure"], 0.0)
    entry = d.get("entry")
    at_risk = t > L
    if entry is not None:
        at_risk &= entry <= L
    exposed = (~np.isnan(s)) & (s <= L)
    later = at_risk & ~exposed & ~np.isnan(s)
    tl, el, xl = t[at_risk] - L, e[at_risk], exposed[at_risk].astype(float)
    yes, no = _exposure_labels(cc.spec)
    out |= {"n": int(at_risk.sum()), "n_excluded": int((~at_risk).sum()), "n_exposed_after": int(later.sum()),
            "group_title": f"Status at the {L:g}-month landmark"}
    out["notes"].append(f"Landmark at {L:g} months: {int((~at_risk).sum())} patient(s) with an event or end of "
                        f"follow-up by then are left out; {int(later.sum())} exposed after the landmark stay in the "
                        "unexposed group; time is counted from the landmark.")
    for key, label, m in ((1, yes, xl == 1), (0, no, xl == 0)):
        if not m.any():
            continue
        fit = _km(tl[m], el[m], None, cc.spec.conf_type, level)
        out["groups"].append(_group_summary(key, label, fit))
        if fits is not None:
            fits[str(key)] = (fit, None, tl[m])
    if np.unique(xl).size < 2:
        out["notes"].append("One landmark group is empty: nothing to compare.")
        return
    lr = logrank_test(tl, el.astype(bool), xl.astype(np.int64))
    out["test"] = {"name": "log-rank from the landmark", "r": "survdiff(Surv(time - L, status) ~ exposed, lm)",
                   "chisq": _num(lr.chisq), "df": int(lr.df), "p": _num(lr.p)}
    out["hr"] = _hr(tl, el, xl, None, level, f"{yes} vs {no.lower()} by {L:g} months", out["notes"])


def _time_dependent(out: dict[str, Any], cc: CompiledComparison, d: dict[str, np.ndarray], level: float,
                    fits: dict[str, Any] | None) -> None:
    t, e, s = d["time"], d["event"], np.maximum(d["exposure"], 0.0)
    entry = d.get("entry")
    start0 = np.zeros_like(t) if entry is None else entry
    ok = t > start0
    if not ok.all():  # R tmerge/coxph: an interval (0, 0] does not exist
        out["notes"].append(f"{int((~ok).sum())} patient(s) with no follow-up time after the origin are left out.")
        t, e, s, start0 = t[ok], e[ok], s[ok], start0[ok]
    rows = split_rows(t, e.astype(np.int8), s, start0)
    yes, no = _exposure_labels(cc.spec)
    n_exposed = int(np.unique(rows["id"][rows["exposed"] == 1]).size)
    out |= {"n": int(t.size), "n_rows": int(rows["stop"].size), "n_exposed": n_exposed,
            "events_exposed": int(rows["event"][rows["exposed"] == 1].sum()),
            "events_unexposed": int(rows["event"][rows["exposed"] == 0].sum()),
            "group_title": f"Current status: {yes.lower()} or not"}
    out["hr"] = _hr(rows["stop"], rows["event"], rows["exposed"].astype(float), rows["start"], level,
                    f"{yes} (time-dependent) vs {no.lower()}", out["notes"])
    if cc.spec.method == "simon_makuch":
        for key, label in ((1, yes), (0, no)):
            m = rows["exposed"] == key
            if not m.any():
                continue
            fit = _km(rows["stop"][m], rows["event"][m], rows["start"][m], cc.spec.conf_type, level)
            out["groups"].append(_group_summary(key, label, fit))
            if fits is not None:
                fits[str(key)] = (fit, rows["start"][m], rows["stop"][m])
        out["notes"].append("Simon-Makuch curves: patients count as unexposed until their exposure and as exposed "
                            "after it; the exposed curve starts with few patients at risk.")


def _referral_warning(conn: sa.Connection, cp: Any, cc: CompiledComparison, warnings: list[dict[str, Any]]) -> None:
    """Referred patients whose referral follows the origin (or is unknown) bring immortal time."""
    c = cp.view.subquery.c
    origin = c[f"{cc.spec.outcome}_origin"]
    late = sa.and_(c.referral == "referred", sa.or_(c.referral_date.is_(None), c.referral_date > origin))
    n = conn.execute(sa.select(sa.func.count()).select_from(cp.view.subquery)
                     .where(cc.where, cc.time.is_not(None), late)).scalar_one()
    if n:
        warnings.append({"endpoint": None, "comparison": cc.spec.id, "code": "referral-after-origin",
                         "message": f"{cc.spec.id}: {n} referred patient(s) were referred after the origin (or on an "
                                    "unknown date): their time before referral is immortal; add entry = "
                                    "\"referral_date\" (delayed entry)"})


def timing_note(cp: Any, name: str) -> str:
    """'baseline', 'later' or 'referral' of a population or column (for messages and the report)."""
    if name in cp.populations:
        return timing_of(cp.populations[name], cp.view.timing)
    return cp.view.timing.get(name, "later")
