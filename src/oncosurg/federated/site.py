"""Node side: run a protocol on the centre's own registry and release aggregates only.

Every function takes an engine on the centre's registry (SQLAlchemy Core, 1.4 or 2.x) and returns a
JSON-ready dictionary of counts and coarsened event tables (:mod:`.disclosure`); nothing per patient
leaves.  Values needed again in later rounds (a median's column, a Cox model's design) are kept in
memory for the session (``session``: an id chosen by the central part); a fresh process simply
recomputes them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.federated.disclosure import Coarsened, cell_ok, coarsen, effective_threshold
from oncosurg.protocol.model import Endpoint, Protocol

#: Site state kept between rounds of one federated run, by (registry URL, protocol id, session).
_STATE: dict[tuple[str, str, str], SiteState] = {}


@dataclass
class SiteState:
    medians: dict[str, np.ndarray] = field(default_factory=dict)  # endpoint id -> sorted values
    cox: dict[int, Any] = field(default_factory=dict)  # model index -> (kinds, complete rows)
    evaluators: dict[Any, Any] = field(default_factory=dict)  # (model, levels) -> beta -> (loglik, U, I)


def _state(engine: sa.Engine, protocol: Protocol, session: str) -> SiteState:
    key = (engine.url.render_as_string(hide_password=True), protocol.id, session)
    if len(_STATE) > 64:  # a long-lived process (tests, a centre trying runs) keeps the recent ones only
        _STATE.pop(next(iter(_STATE)))
    return _STATE.setdefault(key, SiteState())


class Released:
    """Counts checked against the threshold as they are released; withheld ones are named."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.withheld: list[dict[str, Any]] = []

    def count(self, what: str, n: int) -> int | None:
        n = int(n)
        if cell_ok(n, self.threshold):
            return n
        self.withheld.append({"quantity": what, "reason": f"a count between 1 and {self.threshold - 1}"})
        return None

    def table(self, what: str, table: Coarsened | None) -> dict[str, Any] | None:
        if table is None:
            self.withheld.append({"quantity": what, "reason": f"cells below {self.threshold} at every coarsening "
                                                              "width up to 60 months"})
            return None
        moved = table.moved if cell_ok(table.moved, self.threshold) else None  # a count like any other
        return {"rows": table.rows, "entries": table.entries, "width": table.width, "moved": moved}


# ------------------------------------------------------------------------------------------ round 1
def site_summary(engine: sa.Engine, protocol: Protocol, *, threshold: int, session: str) -> dict[str, Any]:
    """Cohort flow, every endpoint's and comparison's aggregates, and each Cox model's levels."""
    from oncosurg.protocol.engine import _flow, compile_protocol
    from oncosurg.protocol.materialize import materialized

    thr = effective_threshold(threshold)
    state = _state(engine, protocol, session)
    rel = Released(thr)
    with engine.connect() as conn, materialized(conn, compile_protocol(protocol)) as cp:
        flow = _flow(conn, cp)
        if flow[0]["n"] < thr:
            return {"refused": f"the registry holds fewer than {thr} patients (the disclosure threshold)",
                    "threshold": thr}
        c = cp.view.subquery.c
        out: dict[str, Any] = {
            "threshold": thr, "protocol": protocol.id, "sa_version": sa.__version__,
            "flow": [{"step": s["step"], "kind": s.get("kind"), "label": s["label"], "reason": s["reason"],
                      "n": rel.count(f"cohort.flow[{i}].n", s["n"]),
                      "excluded": rel.count(f"cohort.flow[{i}].excluded", s["excluded"])}
                     for i, s in enumerate(flow)],
        }
        last_contact, first_index, last_index = conn.execute(
            sa.select(sa.func.max(c.last_contact_date),
                      sa.func.min(c.index_date) if "index_date" in c else sa.null(),
                      sa.func.max(c.index_date) if "index_date" in c else sa.null()).where(cp.cohort)).one()
        out["dates"] = {"last_contact": _month(last_contact, thr, end=True),
                        "index_first": _month(first_index, thr, end=False),
                        "index_last": _month(last_index, thr, end=True), "coarsened": thr > 1}
        out["endpoints"] = {ep.id: _endpoint(conn, cp, ep, rel, state) for ep in protocol.endpoints}
        out["comparisons"] = {cid: _comparison(conn, cp, cc, rel) for cid, cc in cp.comparisons.items()}
        out["cox"] = _cox_summaries(conn, cp, rel, state)
    out["withheld"] = rel.withheld
    return out


def _month(value: Any, thr: int, *, end: bool) -> str | None:
    """A date as released: exact at threshold 1, else the first (or last) day of its month."""
    if value is None:
        return None
    d = value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
    if thr <= 1:
        return d.isoformat()
    if not end:
        return d.replace(day=1).isoformat()
    nxt = (d.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return (nxt - dt.timedelta(days=1)).isoformat()


def _days_unit(name: str) -> bool:
    return name.endswith("_days")


def _endpoint(conn: sa.Connection, cp: Any, ep: Endpoint, rel: Released, state: SiteState) -> dict[str, Any]:
    from oncosurg.protocol.engine import _count, population_where
    from oncosurg.protocol.outcomes import event_rows

    where = population_where(cp, ep.population)
    c = cp.view.subquery.c
    key = f"endpoints.{ep.id}"
    if ep.kind == "count":
        return {"n": rel.count(f"{key}.n", _count(conn, cp.view, where))}
    if ep.kind == "proportion":
        num = cp.numerators[ep.id]
        missing_cond = sa.and_(*[c[i].is_(None) for i in num.inputs]) if num.inputs else sa.false()
        one = sa.literal(1)
        late = c.referral == "referred"
        if "index_date" in c:
            late = sa.and_(late, sa.or_(c.index_date.is_(None), c.referral_date.is_(None),
                                        c.referral_date > c.index_date))
        total, missing, numerator, late_referred = (int(v or 0) for v in conn.execute(
            sa.select(sa.func.count(), sa.func.sum(sa.case((missing_cond, one), else_=0)),
                      sa.func.sum(sa.case((sa.and_(sa.not_(missing_cond), num.sql), one), else_=0)),
                      sa.func.sum(sa.case((sa.and_(sa.not_(missing_cond), late), one), else_=0)))
            .select_from(cp.view.subquery).where(where)).one())
        kinds = sorted(str(k) for (k,) in conn.execute(
            sa.select(c.referral).distinct().where(where, sa.not_(missing_cond), c.referral.is_not(None))))
        denominator = total - missing
        return {"numerator": rel.count(f"{key}.numerator", numerator),
                "non_events": rel.count(f"{key}.denominator - numerator", denominator - numerator),
                "missing": rel.count(f"{key}.missing", missing),
                "referral_kinds": kinds, "late_referred": late_referred > 0}
    if ep.kind == "median":
        col = c[ep.column]
        values = np.sort(np.asarray([v for (v,) in conn.execute(sa.select(col).where(where, col.is_not(None)))],
                                    dtype=float))
        state.medians[ep.id] = values
        total = _count(conn, cp.view, where)
        return {"n": rel.count(f"{key}.n", values.size), "missing": rel.count(f"{key}.missing", total - values.size)}
    status = c[f"{ep.outcome}_cause"] if ep.kind == "cumulative_incidence" else c[ep.event]
    rows = event_rows(conn, c[ep.time], status, where)
    negative = sum(int(r[2]) for r in rows if float(r[0]) < 0)
    kept = [(float(r[0]), int(r[1]), int(r[2])) for r in rows if float(r[0]) >= 0]
    return {"table": rel.table(f"{key} (time, status) table", coarsen(kept, rel.threshold,
                                                                        days=_days_unit(ep.time or ""))),
            "negative": rel.count(f"{key}.negative times", negative)}


# ------------------------------------------------------------------------------------- comparisons
def _comparison(conn: sa.Connection, cp: Any, cc: Any, rel: Released) -> dict[str, Any]:
    """The comparison's counting-process data reduced to per-group entry and exit tables."""
    from oncosurg.protocol.comparisons import _exposure_labels, _key, _rows, split_rows

    comp = cc.spec
    key = f"comparisons.{comp.id}"
    d = _rows(conn, cc)
    counts: dict[str, int] = {"n_fetched": int(d["time"].size)}
    entry = d.get("entry")
    if entry is not None:
        unknown = np.isnan(entry)
        counts["unknown_entry"] = int(unknown.sum())
        d = {k: v[~unknown] for k, v in d.items()}
        keep = d["time"] > d["entry"]
        counts["dropped_entry"] = int((~keep).sum())
        d = {k: v[keep] for k, v in d.items()}
    negative = d["time"] < 0
    counts["negative"] = int(negative.sum())
    d = {k: v[~negative] for k, v in d.items()}
    t, e, entry = d["time"], d["event"], d.get("entry")
    counts["n"] = int(t.size)
    if comp.entry is not None and entry is not None:
        counts["n_delayed"] = int((entry > 0).sum())
    groups: list[tuple[Any, str, np.ndarray | None, np.ndarray, np.ndarray]] = []
    if comp.method == "kaplan_meier":
        g = d["group"]
        missing = np.asarray([v is None for v in g], dtype=bool)
        counts["missing_group"] = int(missing.sum())
        g, t, e = g[~missing], t[~missing], e[~missing]
        entry = None if entry is None else entry[~missing]
        keys = np.asarray([_key(v, cc.group) for v in g], dtype=object)
        present = [lv for lv in cc.group.levels if lv in set(keys.tolist())] or sorted(set(keys.tolist()), key=str)
        for lv in present:
            m = np.asarray([k == lv for k in keys], dtype=bool)
            groups.append((lv, cc.group.labels.get(lv, str(lv)), None if entry is None else entry[m], t[m], e[m]))
    elif comp.method == "landmark":
        L = float(comp.landmark or 0.0)
        s = np.maximum(d["exposure"], 0.0)
        at_risk = t > L
        if entry is not None:
            at_risk &= entry <= L
        exposed = (~np.isnan(s)) & (s <= L)
        later = at_risk & ~exposed & ~np.isnan(s)
        counts |= {"n": int(at_risk.sum()), "n_excluded": int((~at_risk).sum()), "n_exposed_after": int(later.sum())}
        yes, no = _exposure_labels(comp)
        tl, el, xl = t[at_risk] - L, e[at_risk], exposed[at_risk]
        for k, label, m in ((1, yes, xl), (0, no, ~xl)):
            if m.any():
                groups.append((k, label, None, tl[m], el[m]))
    else:
        s = np.maximum(d["exposure"], 0.0)
        start0 = np.zeros_like(t) if entry is None else entry
        ok = t > start0
        counts["no_followup"] = int((~ok).sum())
        t, e, s, start0 = t[ok], e[ok], s[ok], start0[ok]
        rows = split_rows(t, e.astype(np.int8), s, start0)
        yes, no = _exposure_labels(comp)
        counts |= {"n": int(t.size), "n_rows": int(rows["stop"].size),
                   "n_exposed": int(np.unique(rows["id"][rows["exposed"] == 1]).size),
                   "events_exposed": int(rows["event"][rows["exposed"] == 1].sum()),
                   "events_unexposed": int(rows["event"][rows["exposed"] == 0].sum())}
        for k, label in ((1, yes), (0, no)):
            m = rows["exposed"] == k
            if m.any():
                groups.append((k, label, rows["start"][m], rows["stop"][m], rows["event"][m]))
    if comp.entry is None and comp.method != "kaplan_meier":
        counts["referral_after_origin"] = _referral_after_origin(conn, cp, cc)
    released: dict[str, Any] = {"counts": {k: rel.count(f"{key}.{k}", v) for k, v in counts.items()}, "groups": []}
    for lv, label, start, stop, ev in groups:
        exits = _tally(np.column_stack((stop, ev.astype(float))))
        entries = None if start is None else [[t0, n] for (t0, _), n in _tally(np.column_stack(
            (start, np.zeros_like(start)))).items()]
        table = coarsen([[t0, int(s0), n] for (t0, s0), n in exits.items()], rel.threshold, entries=entries)
        released["groups"].append({"key": _json_key(lv), "label": label,
                                   "table": rel.table(f"{key} group {label} table", table)})
    return released


def _tally(pairs: np.ndarray) -> dict[tuple[float, float], int]:
    if pairs.size == 0:
        return {}
    uniq, n = np.unique(pairs, axis=0, return_counts=True)
    return {(float(a), float(b)): int(k) for (a, b), k in zip(uniq, n, strict=True)}


def _json_key(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return None if value is None else str(value)


def _referral_after_origin(conn: sa.Connection, cp: Any, cc: Any) -> int:
    c = cp.view.subquery.c
    origin = c[f"{cc.spec.outcome}_origin"]
    late = sa.and_(c.referral == "referred", sa.or_(c.referral_date.is_(None), c.referral_date > origin))
    return int(conn.execute(sa.select(sa.func.count()).select_from(cp.view.subquery)
                            .where(cc.where, cc.time.is_not(None), late)).scalar_one())


# -------------------------------------------------------------------------------------------- Cox
def _cox_specs(protocol: Protocol) -> tuple[Any, ...]:
    from oncosurg.report.spec import report_spec

    return report_spec(protocol).cox if protocol.report else ()


def _cox_summaries(conn: sa.Connection, cp: Any, rel: Released, state: SiteState) -> list[dict[str, Any]]:
    from oncosurg.report.data import cox_rows

    out = []
    for i, spec in enumerate(_cox_specs(cp.protocol)):
        kinds, complete, header = cox_rows(conn, cp, spec)
        state.cox[i] = (kinds, complete)
        key = f"cox[{i}]"
        n, events = len(complete), sum(1 for r in complete if bool(r[1]))
        levels: dict[str, list[Any]] | None = {}
        rare: list[str] = []
        for j, (name, kind, _choices) in enumerate(kinds):
            counts: dict[Any, int] = {}
            for r in complete:
                counts[r[3 + j]] = counts.get(r[3 + j], 0) + 1
            if kind in ("enum", "binary"):  # which levels a site holds is itself a count: 0 or >= threshold
                rare += [name for c in counts.values() if not cell_ok(c, rel.threshold)][:1]
            if kind == "enum":
                levels[name] = sorted(str(v) for v in counts)
            elif len(counts) > 1:
                levels[name] = []
        if rare:
            rel.withheld.append({"quantity": f"{key} (this site's stratum)",
                                 "reason": f"a level of {', '.join(rare)} held by 1 to {rel.threshold - 1} patient(s)"})
            levels = None
        out.append({"kinds": [[name, kind, list(choices)] for name, kind, choices in kinds],
                    "n": rel.count(f"{key}.n", n), "events": rel.count(f"{key}.events", events),
                    "dropped_incomplete": rel.count(f"{key}.dropped_incomplete", header["dropped_incomplete"]),
                    "dropped_entry": rel.count(f"{key}.dropped_entry", header.get("dropped_entry", 0)),
                    "levels": levels if n >= rel.threshold else None})  # None: the site does not take part
    return out


def site_cox(engine: sa.Engine, protocol: Protocol, *, model: int, levels: Mapping[str, Sequence[Any]],
             beta: Sequence[float], session: str, threshold: int = 3) -> dict[str, Any]:
    """This centre's stratum of a Cox model at ``beta``: log partial likelihood, score and information
    (refused when the model holds fewer patients than the threshold)."""
    from oncosurg.report.data import cox_matrix
    from oncosurg.stats.cox import cox_score_information

    state = _state(engine, protocol, session)
    spec = _cox_specs(protocol)[model]
    if model not in state.cox:
        from oncosurg.protocol.engine import compile_protocol
        from oncosurg.protocol.materialize import materialized
        from oncosurg.report.data import cox_rows

        with engine.connect() as conn, materialized(conn, compile_protocol(protocol)) as cp:
            kinds, complete, _ = cox_rows(conn, cp, spec)
        state.cox[model] = (kinds, complete)
    kinds, complete = state.cox[model]
    thr = effective_threshold(threshold)
    for j, (name, kind, _choices) in enumerate(kinds):
        if kind in ("enum", "binary"):
            counts: dict[Any, int] = {}
            for r in complete:
                counts[r[3 + j]] = counts.get(r[3 + j], 0) + 1
            if not all(cell_ok(c, thr) for c in counts.values()):
                raise PermissionError(f"a level of {name} is held by fewer patients than the threshold ({thr}) at "
                                      "this site; it does not take part in the model")
    if len(complete) < effective_threshold(threshold):
        raise PermissionError(f"this site's Cox model holds fewer patients than the threshold "
                              f"({effective_threshold(threshold)}); it does not take part")
    cache_key = (model, tuple(sorted((k, tuple(v)) for k, v in levels.items())))
    evaluate = state.evaluators.get(cache_key)
    if evaluate is None:
        from oncosurg.protocol.engine import compile_protocol

        X, _terms = cox_matrix(compile_protocol(protocol), kinds, complete, {"warnings": []},
                               levels={k: list(v) for k, v in levels.items()})
        t = np.asarray([float(r[0]) for r in complete])
        e = np.asarray([bool(r[1]) for r in complete])
        entry = np.asarray([float(r[2]) for r in complete]) if spec.entry is not None else None
        matrix = np.column_stack(list(X.values())) if X else np.zeros((t.size, 0))
        evaluate = cox_score_information(t, e, matrix, entry=entry, ties=spec.ties)
        state.evaluators[cache_key] = evaluate
    loglik, u, imat = evaluate(np.asarray(beta, dtype=float))
    return {"loglik": float(loglik), "score": [float(x) for x in u],
            "information": [[float(x) for x in row] for row in np.asarray(imat)]}


# ------------------------------------------------------------------------------------ order counts
def site_order_counts(engine: sa.Engine, protocol: Protocol, *, probes: Mapping[str, Sequence[float]],
                      session: str) -> dict[str, list[int]]:
    """For each median endpoint, how many of this centre's values are <= each probe (bisection rounds)."""
    state = _state(engine, protocol, session)
    missing = [eid for eid in probes if eid not in state.medians]
    if missing:
        _reload_medians(engine, protocol, missing, state)
    return {eid: np.searchsorted(state.medians[eid], np.asarray(p, dtype=float), side="right").tolist()
            for eid, p in probes.items()}


def _reload_medians(engine: sa.Engine, protocol: Protocol, ids: Sequence[str], state: SiteState) -> None:
    from oncosurg.protocol.engine import compile_protocol, population_where
    from oncosurg.protocol.materialize import materialized

    with engine.connect() as conn, materialized(conn, compile_protocol(protocol)) as cp:
        for ep in protocol.endpoints:
            if ep.id in ids:
                col = cp.view.subquery.c[ep.column]
                state.medians[ep.id] = np.sort(np.asarray(
                    [v for (v,) in conn.execute(sa.select(col).where(population_where(cp, ep.population),
                                                                     col.is_not(None)))], dtype=float))


# ------------------------------------------------------------------------------------- entry point
PARTIALS = {"partial_summary": site_summary, "partial_order_counts": site_order_counts, "partial_cox": site_cox}


def registry_url(uri: str) -> str:
    """A node's database URI as a SQLAlchemy URL: a file path is a SQLite registry; PostgreSQL goes through
    psycopg2 under SQLAlchemy 1.4 (vantage6's pin, no psycopg 3 dialect), psycopg 3 when installed under 2.x."""
    import importlib.util
    from pathlib import Path

    if "://" not in uri:
        path = Path(uri)
        if not path.is_file():
            raise FileNotFoundError(f"no registry file at {uri}")
        return f"sqlite:///{path.resolve()}"
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise FileNotFoundError(f"no registry file at {uri[len('sqlite:///'):]}")
    if uri.startswith("postgres://"):
        uri = "postgresql://" + uri[len("postgres://"):]
    if uri.startswith(("postgresql://", "postgresql+psycopg://", "postgresql+psycopg2://")):
        sa2 = int(sa.__version__.split(".")[0]) >= 2
        driver = "psycopg" if sa2 and importlib.util.find_spec("psycopg") is not None else "psycopg2"
        uri = f"postgresql+{driver}://" + uri.split("://", 1)[1]
    return uri


def run_partial(method: str, uri: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Run one partial on the registry at ``uri``; any failure comes back as ``{"error": message}``, so that
    the central part names the site instead of pooling a smaller cohort."""
    from oncosurg.federated.central import parse_protocol

    try:
        args = dict(kwargs)
        protocol = parse_protocol(args.pop("protocol_toml"), args.pop("protocol_source", "<protocol>"))
        engine = sa.create_engine(registry_url(uri), future=True)
        try:
            return PARTIALS[method](engine, protocol, **args)
        finally:
            engine.dispose()
    except Exception as exc:  # reported to the central part, which refuses the run and names the site
        return {"error": f"{type(exc).__name__}: {exc}"}
