"""Central side: pool the centres' aggregates into the ``oncosurg analyze`` JSON.

:func:`federate` drives the rounds through ``ask(method, kwargs, sites)``, which runs a partial
(:mod:`.site`) at the given centres and returns their replies in order: vantage6 subtasks in the
algorithm (``federated/v6-oncosurg/``), or a direct call in tests.  Pooling is exact where the
mathematics allows it:

* counts and proportions: sums of counts, then the same exact CI (:func:`oncosurg.stats.proportion_ci`);
* Kaplan-Meier, reverse Kaplan-Meier and Aalen-Johansen: the pooled ``(time, status, count)`` table
  is the one a pooled registry would give, and goes through the same estimator code;
* comparisons (log-rank, Cox hazard ratio of a group, delayed entry, landmark, time-dependent):
  from per-group entry and exit tables.  Kaplan-Meier, the log-rank test and a Cox model whose
  only covariate is the group depend on the data only through the number at risk and the events
  of each group at each time, which the tables give exactly; the estimators run on pseudo-patients
  pairing the i-th earliest entry with the i-th earliest exit (valid intervals with the same risk
  sets).  This is also the Cox model with a shared baseline hazard that is feasible without rows:
  for a continuous covariate every centre would have to release, at every event time, sums of
  ``exp(beta x)`` over its risk set, which identify individual values once a risk set is small;
* medians of a continuous column: each order statistic is found exactly by bisection over the
  bit patterns of doubles, the centres returning only how many of their values lie at or below
  each probe (:func:`order_statistics`), then numpy's type-7 quantile on those values;
* Cox models stratified by centre (``[[report.cox]]``): Newton-Raphson where each centre returns
  its stratum's log partial likelihood, score and information at the current coefficients (R
  ``coxph(Surv(time, status) ~ x + strata(centre))``, same iterations and step halving).
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from oncosurg import __version__
from oncosurg.federated.disclosure import DEFAULT_THRESHOLD
from oncosurg.protocol.model import Endpoint, Protocol

Ask = Callable[[str, Mapping[str, Any], Sequence[int]], list[Any]]
SMALL_SITE_POLICIES = ("refuse", "suppress")
#: Probes per order statistic and round: 1023 cut the interval 1024-fold, so 7 rounds find any double.
PROBES = 1023


def parse_protocol(text: str, source: str) -> Protocol:
    """A protocol from the TOML text the central part sends to every centre."""
    import tomllib

    from oncosurg.protocol.model import ProtocolError, protocol_from_dict

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProtocolError(source, [f"not valid TOML: {exc}"]) from None
    return protocol_from_dict(data, source=source)


class FederationError(Exception):
    """A federated run that cannot give a result: a centre failed or refused.  ``sites``: status by name."""

    def __init__(self, message: str, sites: Mapping[str, str]) -> None:
        super().__init__(message)
        self.sites = dict(sites)


def federate(ask: Ask, protocol_text: str, *, source: str, sites: Sequence[str], threshold: int = DEFAULT_THRESHOLD,
             small_site: str = "refuse", provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run a protocol (its TOML text, sent to every centre) and pool: the ``analyze`` JSON plus ``sites``
    and ``disclosure``.  ``sites``: one name per centre, in the order ``ask`` addresses them."""
    if small_site not in SMALL_SITE_POLICIES:
        raise ValueError(f"small_site must be one of {SMALL_SITE_POLICIES}, got {small_site!r}")
    protocol = parse_protocol(protocol_text, source)
    session = uuid.uuid4().hex
    names = list(sites)
    run = _Run(ask, names, session, protocol_text, source)
    replies = run.call("partial_summary", {"threshold": int(threshold)}, range(len(names)))
    disclosure: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []
    active: list[int] = []
    statuses: dict[str, str] = {}
    for i, reply in enumerate(replies):
        if "refused" in reply:
            statuses[names[i]] = "refused: " + reply["refused"]
            disclosure.append({"site": names[i], "quantity": "everything", "action": "refused",
                               "reason": reply["refused"]})
        else:
            statuses[names[i]] = "ok"
            active.append(i)
    refused = [n for n, s in statuses.items() if s != "ok"]
    if refused and small_site == "refuse":
        raise FederationError("federated analysis refused: " + "; ".join(f"site {n} {statuses[n]}" for n in refused)
                              + " (pass small_site='suppress' / --small-site suppress to pool the other sites, "
                              "named in the result)", statuses)
    if not active:
        raise FederationError("no site can take part in the analysis", statuses)
    for n in refused:
        statuses[n] = "suppressed (" + statuses[n] + ")"
        warnings.append({"endpoint": None, "code": "site-suppressed",
                         "message": f"site {n} is left out of every pooled figure: {statuses[n]}"})
    run.active = active
    summaries = {i: replies[i] for i in active}
    thr = max(s["threshold"] for s in summaries.values())
    for i, s in summaries.items():
        disclosure += [{"site": names[i], "action": "withheld", **w} for w in s["withheld"]]
        if s["dates"]["coarsened"]:
            disclosure.append({"site": names[i], "quantity": "cohort dates (data cut, first and last index)",
                               "action": "coarsened", "reason": "released to the month (first or last day)"})
    pooler = _Pooler(run, protocol, summaries, names, disclosure, warnings, thr)
    flow = pooler.flow()
    endpoints = {ep.id: pooler.endpoint(ep) for ep in protocol.endpoints}
    pooler.medians(endpoints)
    if flow[-1]["n"]:
        warnings += [{"endpoint": ep.id, "code": "not-estimable",
                      "message": f"{ep.id}: no patient of the cohort is in population '{ep.population}' with the "
                                 "data it needs; not estimable (n = 0)"}
                     for ep in protocol.endpoints if _n(endpoints[ep.id]) == 0]
    comparisons = {cid: pooler.comparison(cid) for cid in pooler.cp.comparisons}
    cox = [pooler.cox(k) for k in range(len(next(iter(summaries.values()))["cox"]))]
    dates = [s["dates"] for s in summaries.values()]
    last_contact = max((d["last_contact"] for d in dates if d["last_contact"]), default=None)
    data_cut = protocol.data_cut.isoformat() if protocol.data_cut else last_contact
    return {
        "protocol": protocol.summary(),
        "cohort": {"flow": flow, "n": flow[-1]["n"], "data_cut": data_cut,
                   "data_cut_declared": protocol.data_cut is not None, "last_contact": last_contact,
                   "index_first": min((d["index_first"] for d in dates if d["index_first"]), default=None),
                   "index_last": max((d["index_last"] for d in dates if d["index_last"]), default=None)},
        "endpoints": endpoints,
        "comparisons": comparisons,
        "cox_stratified": cox,
        "warnings": pooler.cp.warnings + tuple(_cohort_warnings(flow)) + tuple(warnings),
        "provenance": {"oncosurg_version": __version__, "federated": True, **(provenance or {})},
        "sites": pooler.site_breakdown(statuses),
        "disclosure": {"threshold": thr, "small_site": small_site, "rules": DISCLOSURE_RULES,
                       "rounds": run.rounds, "items": disclosure},
    }


DISCLOSURE_RULES = [
    "Each site releases a count only when it is 0 or at least the threshold (DataSHIELD nfilter.tab); a pooled "
    "figure that needs a withheld count is not reported.",
    "Event and entry tables are released at full resolution when every cell passes, else with times coarsened "
    "(exits to the end, entries to the start of intervals of one week, 1, 3, 6, 12, 24 or 60 months).",
    "An order statistic (median, quartile, minimum, maximum) is reported only with at least threshold patients "
    "at or below and at or above it; to find it, each site tells how many of its values lie at or below each "
    "probe of the bisection, which converges on one patient's value: the order statistic itself.",
    "A Cox model stratified by centre receives, per site and iteration, the log partial likelihood, score and "
    "information at the current coefficients; a site with fewer patients than the threshold does not take part.",
    "A site registering fewer patients than the threshold releases nothing; the run is refused or pools the "
    "other sites (small_site), and the result names it.",
]


class _Run:
    """The rounds: partials called at the active sites, failures turned into :class:`FederationError`."""

    def __init__(self, ask: Ask, names: list[str], session: str, protocol_text: str, source: str) -> None:
        self.ask, self.names, self.session = ask, names, session
        self.protocol = {"protocol_toml": protocol_text, "protocol_source": source}
        self.active: list[int] = list(range(len(names)))
        self.rounds: dict[str, int] = {}

    def call(self, method: str, kwargs: Mapping[str, Any], sites: Sequence[int] | None = None) -> list[Any]:
        sites = list(self.active if sites is None else sites)
        full = {**self.protocol, "session": self.session, **kwargs}
        self.rounds[method] = self.rounds.get(method, 0) + 1
        try:
            replies = self.ask(method, full, sites)
        except Exception as exc:  # the transport itself failed: no site's reply can be trusted
            raise FederationError(f"federated round {method} failed: {type(exc).__name__}: {exc}",
                                  {self.names[i]: "unknown" for i in sites}) from exc
        failed = {self.names[i]: r for i, r in zip(sites, replies, strict=False)
                  if not isinstance(r, dict) or "error" in r}
        if len(replies) != len(sites) or failed:
            statuses = {self.names[i]: "ok" for i in sites}
            for i in sites[len(replies):]:
                statuses[self.names[i]] = "failed: no reply"
            for name, r in failed.items():
                statuses[name] = "failed: " + (r["error"] if isinstance(r, dict) else "no reply")
            bad = "; ".join(f"site {n} {s}" for n, s in statuses.items() if s != "ok")
            raise FederationError(f"federated analysis failed in round {method} ({self.rounds[method]}): {bad}. "
                                  "No pooled result is given: a smaller cohort would be silently wrong.", statuses)
        return replies


def _sum(values: Sequence[int | None]) -> int | None:
    return None if any(v is None for v in values) else int(sum(values))  # type: ignore[arg-type]


def _n(result: Mapping[str, Any]) -> int | None:
    if result["kind"] == "count":
        return None
    n = result["denominator"] if result["kind"] == "proportion" else result["n"]
    return None if n is None else int(n)


def _cohort_warnings(flow: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from oncosurg.protocol.engine import MOST_EXCLUDED

    total, kept = flow[0]["n"], flow[-1]["n"]
    if total is None or kept is None:
        return []
    if total == 0:
        return [{"endpoint": None, "code": "cohort-empty", "message": "the cohort is empty: no site holds a patient"}]
    excluded = total - kept
    if excluded <= MOST_EXCLUDED * total:
        return []
    why = "; ".join(f"{s['excluded']} by '{s['label']}'" for s in flow[1:] if s["excluded"])
    if kept == 0:
        return [{"endpoint": None, "code": "cohort-empty",
                 "message": f"the cohort is empty: all {total} registered patient(s) were excluded ({why})"}]
    return [{"endpoint": None, "code": "cohort-most-excluded",
             "message": f"the cohort keeps {kept} of {total} registered patient(s): {excluded} "
                        f"({100 * excluded / total:.0f}%) were excluded ({why})"}]


# ------------------------------------------------------------------------------------ order statistics
_MASK = 0x7FFFFFFFFFFFFFFF


def float_key(x: float) -> int:
    """An integer that orders like the double ``x`` (its bit pattern, negatives mirrored)."""
    b = struct.unpack("<q", struct.pack("<d", float(x)))[0]
    return b if b >= 0 else -(b & _MASK) - 1


def key_float(k: int) -> float:
    bits = k if k >= 0 else (-k - 1) | (1 << 63)
    return struct.unpack("<d", struct.pack("<Q", bits))[0]


def order_statistics(count_at_or_below: Callable[[dict[str, list[float]]], dict[str, list[int]]],
                     targets: Mapping[str, Sequence[int]]) -> dict[tuple[str, int], float]:
    """The exact k-th smallest value of each column (``targets``: column -> ranks, 1-based).

    ``count_at_or_below(probes)`` returns, per column, how many values (over all centres) are at or
    below each probe.  Bisection over :func:`float_key`: the k-th value is the smallest double ``v``
    with ``F(v) >= k``; ``PROBES`` probes per target and round narrow the interval 1024-fold.
    """
    lo = {(c, k): float_key(-math.inf) for c, ranks in targets.items() for k in ranks}
    hi = {t: float_key(math.inf) for t in lo}
    while any(hi[t] - lo[t] > 1 for t in lo):
        probes: dict[str, set[int]] = {}
        for t in lo:
            gap = hi[t] - lo[t]
            if gap > 1:
                step = max(1, gap // (PROBES + 1))
                probes.setdefault(t[0], set()).update(range(lo[t] + step, hi[t], step))
        keys = {c: sorted(ks) for c, ks in probes.items()}
        counts = count_at_or_below({c: [key_float(k) for k in ks] for c, ks in keys.items()})
        for t in lo:
            if t[0] not in keys:
                continue
            for k, f in zip(keys[t[0]], counts[t[0]], strict=True):
                if lo[t] < k < hi[t]:
                    if f >= t[1]:
                        hi[t] = k
                    else:
                        lo[t] = k
    return {t: key_float(hi[t]) for t in lo}


def quantile_ranks(n: int) -> dict[str, list[int]]:
    """1-based ranks behind numpy's default (type 7) q1, median and q3, and the minimum and maximum."""
    out: dict[str, list[int]] = {"min": [1], "max": [n]}
    for name, p in (("q1", 0.25), ("median", 0.5), ("q3", 0.75)):
        h = (n - 1) * p
        j = math.floor(h)
        out[name] = [j + 1] + ([j + 2] if h > j and j + 2 <= n else [])
    return out


def quantiles_from_ranks(n: int, values: Mapping[int, float]) -> dict[str, float]:
    """numpy's quantiles of a length-``n`` sample of which only the order statistics ``values`` are known."""
    ranks = sorted(values)
    arr = np.empty(n)
    for a, b in zip(ranks, [*ranks[1:], n + 1], strict=True):
        arr[a - 1:b - 1] = values[a]
    arr[:ranks[0] - 1] = values[ranks[0]]
    q1, med, q3 = np.quantile(arr, [0.25, 0.5, 0.75])
    return {"q1": float(q1), "median": float(med), "q3": float(q3)}


# ------------------------------------------------------------------------------------- pseudo patients
def pseudo_patients(entries: Sequence[Sequence[float]] | None, exits: Sequence[Sequence[Any]]
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(entry, stop, event) per patient from a group's tables: the i-th earliest entry with the i-th earliest exit.

    With the true data valid (entry < stop), so is this pairing, and every risk set, event count and
    hence every Kaplan-Meier, log-rank and group-only Cox figure is the true data's.
    """
    ex = sorted((float(t), int(s), int(n)) for t, s, n in exits)
    stop = np.repeat([t for t, _, _ in ex], [n for _, _, n in ex]).astype(float)
    event = np.repeat([s for _, s, _ in ex], [n for _, _, n in ex]).astype(np.int8)
    if entries is None:
        return None, stop, event
    en = sorted((float(t), int(n)) for t, n in entries)
    start = np.repeat([t for t, _ in en], [n for _, n in en]).astype(float)
    return start, stop, event


def _merge(tables: Sequence[Mapping[str, Any]]) -> tuple[list[list[Any]], list[list[float]] | None]:
    rows: dict[tuple[float, int], int] = {}
    ents: dict[float, int] | None = None if tables[0]["entries"] is None else {}
    for tb in tables:
        for t, s, n in tb["rows"]:
            rows[(float(t), int(s))] = rows.get((float(t), int(s)), 0) + int(n)
        if ents is not None:
            for t, n in tb["entries"] or ():
                ents[float(t)] = ents.get(float(t), 0) + int(n)
    return ([[t, s, n] for (t, s), n in sorted(rows.items())],
            None if ents is None else [[t, n] for t, n in sorted(ents.items())])


class _Pooler:
    def __init__(self, run: _Run, protocol: Protocol, summaries: dict[int, dict[str, Any]], names: list[str],
                 disclosure: list[dict[str, Any]], warnings: list[dict[str, Any]], threshold: int) -> None:
        from oncosurg.protocol.engine import compile_protocol

        self.run, self.protocol, self.s, self.names = run, protocol, summaries, names
        self.disclosure, self.warnings, self.threshold = disclosure, warnings, threshold
        self.cp = compile_protocol(protocol)

    def _unavailable(self, what: str, out: dict[str, Any] | None = None) -> None:
        if out is not None:
            out["withheld"] = True
        self.warnings.append({"endpoint": what, "code": "withheld",
                              "message": f"{what}: not reported, a site withheld a count it needs (disclosure "
                                         f"threshold {self.threshold}); see the disclosure section"})

    def _coarsened(self, i: int, what: str, table: Mapping[str, Any], unit: str) -> None:
        if table["width"] is not None:
            self.disclosure.append({"site": self.names[i], "quantity": what, "action": "coarsened",
                                    "width": table["width"], "unit": unit, "moved": table["moved"],
                                    "reason": f"cells below {self.threshold} at full resolution; every time moved "
                                              f"by less than {table['width']:g} {unit}"})

    def flow(self) -> list[dict[str, Any]]:
        steps = next(iter(self.s.values()))["flow"]
        out = []
        for j, step in enumerate(steps):
            pooled = {k: step[k] for k in ("step", "kind", "label", "reason") if step.get(k) is not None or k != "kind"}
            pooled["n"] = _sum([s["flow"][j]["n"] for s in self.s.values()])
            pooled["excluded"] = _sum([s["flow"][j]["excluded"] for s in self.s.values()])
            if step["step"] == "registered":
                pooled["excluded"] = 0
            out.append(pooled)
        return out

    # ---------------------------------------------------------------------------------- endpoints
    def endpoint(self, ep: Endpoint) -> dict[str, Any]:
        from oncosurg.protocol.engine import _base
        from oncosurg.protocol.outcomes import cumulative_incidence_from_rows, time_to_event_from_rows
        from oncosurg.stats import proportion_ci

        parts = [s["endpoints"][ep.id] for s in self.s.values()]
        out = _base(ep)
        if ep.kind == "count":
            out["n"] = _sum([p["n"] for p in parts])
            if out["n"] is None:
                self._unavailable(ep.id, out)
            return out
        if ep.kind == "proportion":
            num, non, missing = (_sum([p[k] for p in parts]) for k in ("numerator", "non_events", "missing"))
            if num is None or non is None:
                self._unavailable(ep.id, out)
                return out | {"numerator": num, "denominator": None, "estimate": None, "ci_low": None,
                              "ci_high": None, "ci_method": ep.ci_method, "missing": missing}
            den = num + non
            low, high = proportion_ci(num, den, method=ep.ci_method, conf_level=ep.conf_level) if den else (None, None)
            out |= {"numerator": num, "denominator": den, "estimate": num / den if den else None, "ci_low": low,
                    "ci_high": high, "ci_method": ep.ci_method, "missing": missing}
            kinds = {k for p in parts for k in p["referral_kinds"]}
            if len(kinds) > 1 and any(p["late_referred"] for p in parts):
                self.warnings.append({"endpoint": ep.id, "code": "pooled-referral",
                                      "message": f"{ep.id}: the denominator mixes in-house (intention-to-treat) and "
                                                 "referred (selected) patients; report the two groups separately"})
            if missing:
                self.warnings.append({"endpoint": ep.id, "code": "missing-inputs",
                                      "message": f"{ep.id}: {missing} patient(s) left the denominator because every "
                                                 "input of the predicate was missing"})
            return out
        if ep.kind == "median":
            n, missing = _sum([p["n"] for p in parts]), _sum([p["missing"] for p in parts])
            out |= {"n": n, "median": None, "q1": None, "q3": None, "min": None, "max": None}
            if ep.unit:
                out["unit"] = ep.unit
            if missing:
                out["missing"] = missing
            if n is None:
                self._unavailable(ep.id, out)
            return out
        tables = [p["table"] for p in parts]
        negative = _sum([p["negative"] for p in parts])
        if any(tb is None for tb in tables) or negative is None:
            skeleton = (cumulative_incidence_from_rows if ep.kind == "cumulative_incidence"
                        else time_to_event_from_rows)([], ep, [])
            out |= skeleton | {"n": None, "events": None}
            self._unavailable(ep.id, out)
            return out
        for i, tb in zip(self.s, tables, strict=True):
            self._coarsened(i, f"endpoints.{ep.id} (time, status) table", tb,
                            "days" if (ep.time or "").endswith("_days") else "months")
        rows, _ = _merge(tables)
        if negative:
            self.warnings.append({"endpoint": ep.id, "code": "origin-after-end",
                                  "message": f"{ep.id}: {negative} patient(s) whose follow-up ends before the origin "
                                             f"({ep.time}) are left out; check their dates"})
        if ep.kind == "cumulative_incidence":
            return out | cumulative_incidence_from_rows(rows, ep, self.warnings)
        return out | time_to_event_from_rows(rows, ep, self.warnings)

    def medians(self, endpoints: dict[str, dict[str, Any]]) -> None:
        """Fill the median endpoints' order statistics by federated bisection (one round per 2^10 narrowing)."""
        targets: dict[str, list[int]] = {}
        plans: dict[str, dict[str, list[int]]] = {}
        for eid, out in endpoints.items():
            if out["kind"] == "median" and out["n"]:
                plans[eid] = quantile_ranks(out["n"])
                targets[eid] = sorted({k for ranks in plans[eid].values() for k in ranks})
        if not targets:
            return

        def count(probes: dict[str, list[float]]) -> dict[str, list[int]]:
            replies = self.run.call("partial_order_counts", {"probes": probes})
            return {c: [int(x) for x in np.sum([r[c] for r in replies], axis=0)] for c in probes}

        values = order_statistics(count, targets)
        thr = self.threshold
        for eid, plan in plans.items():
            n = endpoints[eid]["n"]
            ok = {k: k >= thr and n - k + 1 >= thr for k in targets[eid]}
            known = {k: values[(eid, k)] for k in targets[eid]}
            q = quantiles_from_ranks(n, known)
            for name in ("q1", "median", "q3", "min", "max"):
                if all(ok[k] for k in plan[name]):
                    endpoints[eid][name] = q[name] if name in q else known[plan[name][0]]
                else:
                    self.disclosure.append({"site": None, "quantity": f"endpoints.{eid}.{name}", "action": "withheld",
                                            "reason": f"fewer than {thr} patients at or below / at or above it"})

    # -------------------------------------------------------------------------------- comparisons
    def comparison(self, cid: str) -> dict[str, Any]:
        from oncosurg.protocol.comparisons import (
            METHOD_TEXT,
            _exposure_labels,
            _group_summary,
            _hr,
            _km,
            _num,
        )
        from oncosurg.stats import logrank_test

        cc = self.cp.comparisons[cid]
        comp = cc.spec
        parts = [s["comparisons"][cid] for s in self.s.values()]
        counts = {k: _sum([p["counts"].get(k) for p in parts]) for k in parts[0]["counts"]}
        has_entry = comp.entry is not None
        method = comp.method + ("_entry" if comp.method == "kaplan_meier" and has_entry else "")
        notes = list(cc.notes)
        out: dict[str, Any] = {
            "label": comp.label, "method": comp.method, "method_text": METHOD_TEXT[method], "outcome": comp.outcome,
            "population": comp.population, "unit": "months", "entry": comp.entry, "landmark": comp.landmark,
            "exposure": comp.exposure, "groups_by": comp.groups, "n": counts.get("n"),
            "n_fetched": counts.get("n_fetched"), "dropped_entry": counts.get("dropped_entry", 0), "groups": [],
            "test": None, "hr": None, "notes": notes,
        }
        if counts.get("unknown_entry"):
            notes.append(f"{counts['unknown_entry']} patient(s) without a {comp.entry.replace('_', ' ')} are left "
                         "out: their entry into the registry is unknown.")
        if counts.get("dropped_entry"):
            notes.append(f"{counts['dropped_entry']} patient(s) whose follow-up ended at or before their entry are "
                         "left out.")
        if counts.get("negative"):
            notes.append(f"{counts['negative']} patient(s) whose follow-up ends before the origin are left out.")
        if has_entry:
            notes.append(f"Delayed entry: {counts.get('n_delayed')} patient(s) enter the risk set at their "
                         f"{comp.entry.replace('_', ' ')} (left truncation); their earlier time is not counted.")
        if counts.get("referral_after_origin"):
            self.warnings.append({"endpoint": None, "comparison": cid, "code": "referral-after-origin",
                                  "message": f"{cid}: {counts['referral_after_origin']} referred patient(s) were "
                                             "referred after the origin (or on an unknown date): their time before "
                                             "referral is immortal; add entry = \"referral_date\" (delayed entry)"})
        # pooled group tables
        keys: list[Any] = []
        labels: dict[Any, str] = {}
        tables: dict[Any, list[Mapping[str, Any]]] = {}
        withheld = False
        for i, p in zip(self.s, parts, strict=True):
            for g in p["groups"]:
                if g["table"] is None:
                    withheld = True
                    continue
                k = g["key"]
                if k not in tables:
                    keys.append(k)
                    tables[k] = []
                labels[k] = g["label"]
                tables[k].append(g["table"])
                self._coarsened(i, f"comparisons.{cid} group {g['label']} tables", g["table"], "months")
        if withheld or any(v is None for k, v in counts.items() if k in ("n", "n_fetched")):
            self._unavailable(cid, out)
            notes.append("Not reported: a site withheld a table or count it needs (disclosure threshold).")
            return out
        if not out["n"]:
            notes.append("No patient to compare.")
            return out
        data = {k: pseudo_patients(*reversed(_merge(tables[k]))) for k in keys}
        level = comp.conf_level
        yes, no = _exposure_labels(comp) if comp.exposure else ("", "")
        if comp.method == "kaplan_meier":
            if counts.get("missing_group"):
                notes.append(f"{counts['missing_group']} patient(s) without a value of {comp.groups} are left out.")
            from oncosurg.federated.site import _json_key

            present = [lv for lv in cc.group.levels if _json_key(lv) in tables]
            present += [k for k in keys if k not in [_json_key(lv) for lv in present]]
            out["group_title"] = cc.group.title
            for lv in present:
                start, stop, ev = data[_json_key(lv)]
                fit = _km(stop, ev, start, comp.conf_type, level)
                out["groups"].append(_group_summary(lv, cc.group.labels.get(lv, str(lv)), fit))
            if len(present) < 2:
                notes.append("Only one group has patients: nothing to compare.")
                return out
            t = np.concatenate([data[_json_key(lv)][1] for lv in present])
            e = np.concatenate([data[_json_key(lv)][2] for lv in present])
            codes = np.concatenate([np.full(data[_json_key(lv)][1].size, j) for j, lv in enumerate(present)])
            entry = None if not has_entry else np.concatenate([data[_json_key(lv)][0] for lv in present])
            if entry is None:
                lr = logrank_test(t, e.astype(bool), codes)
                out["test"] = {"name": "log-rank", "r": "survdiff(Surv(time, status) ~ group)",
                               "chisq": _num(lr.chisq), "df": int(lr.df), "p": _num(lr.p)}
            contrast = cc.group.contrast or (present[1], present[0])
            if len(present) == 2 and contrast[0] in present and contrast[1] in present:
                x = (codes == present.index(contrast[0])).astype(float)
                label = (f"{cc.group.labels.get(contrast[0], contrast[0])} vs "
                         f"{cc.group.labels.get(contrast[1], contrast[1])}")
                out["hr"] = _hr(t, e, x, entry, level, label, notes)
                if entry is not None and out["hr"] is not None:
                    out["test"] = {"name": "log-rank with delayed entry (Cox score test)",
                                   "r": "coxph(Surv(entry, time, status) ~ group) score test", "chisq": None,
                                   "df": 1, "p": out["hr"]["score_p"]}
            return out
        if comp.method == "landmark":
            L = float(comp.landmark or 0.0)
            out |= {"n_excluded": counts.get("n_excluded"), "n_exposed_after": counts.get("n_exposed_after"),
                    "group_title": f"Status at the {L:g}-month landmark"}
            notes.append(f"Landmark at {L:g} months: {counts.get('n_excluded')} patient(s) with an event or end of "
                         f"follow-up by then are left out; {counts.get('n_exposed_after')} exposed after the landmark "
                         "stay in the unexposed group; time is counted from the landmark.")
            for key, label in ((1, yes), (0, no)):
                if key in data:
                    out["groups"].append(_group_summary(key, label, _km(data[key][1], data[key][2], None,
                                                                        comp.conf_type, level)))
            if len(data) < 2:
                notes.append("One landmark group is empty: nothing to compare.")
                return out
            t = np.concatenate([data[1][1], data[0][1]])
            e = np.concatenate([data[1][2], data[0][2]])
            x = np.concatenate([np.ones(data[1][1].size), np.zeros(data[0][1].size)])
            lr = logrank_test(t, e.astype(bool), x.astype(np.int64))
            out["test"] = {"name": "log-rank from the landmark", "r": "survdiff(Surv(time - L, status) ~ exposed, lm)",
                           "chisq": _num(lr.chisq), "df": int(lr.df), "p": _num(lr.p)}
            out["hr"] = _hr(t, e, x, None, level, f"{yes} vs {no.lower()} by {L:g} months", notes)
            return out
        # time-dependent Cox and Simon-Makuch: tables of the split (start, stop] rows by current exposure
        if counts.get("no_followup"):
            notes.append(f"{counts['no_followup']} patient(s) with no follow-up time after the origin are left out.")
        out |= {k: counts.get(k) for k in ("n_rows", "n_exposed", "events_exposed", "events_unexposed")}
        out["group_title"] = f"Current status: {yes.lower()} or not"
        present = [k for k in (1, 0) if k in data]
        start = np.concatenate([data[k][0] for k in present])
        stop = np.concatenate([data[k][1] for k in present])
        ev = np.concatenate([data[k][2] for k in present])
        x = np.concatenate([np.full(data[k][1].size, float(k)) for k in present])
        out["hr"] = _hr(stop, ev, x, start, level, f"{yes} (time-dependent) vs {no.lower()}", notes)
        if comp.method == "simon_makuch":
            for key, label in ((1, yes), (0, no)):
                if key in data:
                    s0, s1, e0 = data[key]
                    out["groups"].append(_group_summary(key, label, _km(s1, e0, s0, comp.conf_type, level)))
            notes.append("Simon-Makuch curves: patients count as unexposed until their exposure and as exposed "
                         "after it; the exposed curve starts with few patients at risk.")
        return out

    # ------------------------------------------------------------------------------------------ Cox
    def cox(self, k: int) -> dict[str, Any]:
        """Cox model ``k`` of ``[report]`` stratified by centre, by federated Newton-Raphson."""
        from scipy import stats as sps

        from oncosurg.report.data import cox_matrix
        from oncosurg.report.spec import report_spec
        from oncosurg.stats._checks import SurvivalInputError
        from oncosurg.stats.cox import _EPS, _newton

        spec = report_spec(self.protocol).cox[k]
        parts = {i: s["cox"][k] for i, s in self.s.items()}
        out: dict[str, Any] = {"id": spec.id, "title": spec.title, "population": spec.population, "time": spec.time,
                               "event": spec.event, "ties": spec.ties, "entry": spec.entry,
                               "strata": "centre (one stratum per site)",
                               "r": "coxph(Surv(" + ("entry, " if spec.entry else "") + "time, status) ~ "
                                    + " + ".join(spec.covariates) + " + strata(centre))",
                               "terms": [], "warnings": [], "sites": []}
        joining = [i for i, p in parts.items() if p["levels"] is not None]
        for i, p in parts.items():
            if p["levels"] is None:
                out["warnings"].append(f"site {self.names[i]} does not take part: fewer than {self.threshold} "
                                       "patients in the model or in one of its covariate levels (disclosure)")
        for key in ("n", "events", "dropped_incomplete", "dropped_entry"):
            out[key] = _sum([parts[i][key] for i in joining])
        out["sites"] = [self.names[i] for i in joining]
        if not joining:
            out["warnings"].append("no site can take part: the model was not fitted")
            return out
        kinds = [(name, kind, list(choices)) for name, kind, choices in parts[joining[0]]["kinds"]]
        levels: dict[str, list[Any]] = {}
        for name, kind, choices in kinds:
            seen = [parts[i]["levels"].get(name) for i in joining]
            # stratified by centre, a covariate is estimable only if it varies within some centre
            if kind == "enum" and any(lv is not None and len(lv) > 1 for lv in seen):
                union = {str(v) for lv in seen if lv for v in lv}
                levels[name] = [c for c in choices if c in union] or sorted(union)
            elif kind != "enum" and any(lv is not None for lv in seen):
                levels[name] = []
            else:
                out["warnings"].append(f"{name} does not vary within any centre: not estimable with strata(centre); "
                                       "left out of the model")
        X, terms = cox_matrix(self.cp, kinds, [], {"warnings": []}, levels=levels)
        p = len(X)
        if not p or not out["events"]:
            out["warnings"].append("no covariate or no events: the model was not fitted")
            return out

        def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            replies = self.run.call("partial_cox", {"model": k, "levels": levels, "beta": [float(b) for b in beta],
                                                    "threshold": self.threshold}, joining)
            return (float(sum(r["loglik"] for r in replies)), np.sum([r["score"] for r in replies], axis=0),
                    np.sum([r["information"] for r in replies], axis=0))

        try:
            beta, var, _u, ll0, ll1, sctest, iters, flag, _rank = _newton(
                evaluate, p, 20, 1e-9, _EPS**0.75, agreg=spec.entry is not None, Xc=np.zeros((1, p)), names=list(X))
        except SurvivalInputError as exc:
            out["warnings"].append(f"the model was not fitted: {exc}")
            return out
        se = np.sqrt(np.diag(var))
        z = float(sps.norm.ppf(0.975))
        for j, term in enumerate(terms):
            term |= {"coef": float(beta[j]), "se": float(se[j]), "hr": float(np.exp(beta[j])),
                     "lower": float(np.exp(beta[j] - z * se[j])), "upper": float(np.exp(beta[j] + z * se[j])),
                     "p": float(sps.chi2.sf((beta[j] / se[j]) ** 2, 1))}
        out |= {"terms": terms, "loglik": [float(ll0), float(ll1)], "lr_p": float(sps.chi2.sf(2 * (ll1 - ll0), p)),
                "score_p": float(sps.chi2.sf(sctest, p)), "iterations": int(iters), "converged": flag != 1000,
                "concordance": None}
        self.disclosure.append({"site": None, "quantity": f"cox_stratified[{k}].concordance", "action": "withheld",
                                "reason": "needs every pair of patients across the rows"})
        return out

    def site_breakdown(self, statuses: Mapping[str, str]) -> list[dict[str, Any]]:
        out = []
        for i, name in enumerate(self.names):
            entry: dict[str, Any] = {"name": name, "status": statuses[name]}
            s = self.s.get(i)
            if s is not None:
                entry |= {"threshold": s["threshold"], "registered": s["flow"][0]["n"], "cohort_n": s["flow"][-1]["n"],
                          "endpoints": {eid: _site_figure(ep) for eid, ep in s["endpoints"].items()},
                          "withheld": len(s["withheld"])}
            out.append(entry)
        return out


def _site_figure(part: Mapping[str, Any]) -> dict[str, Any]:
    if "numerator" in part:
        num, non = part["numerator"], part["non_events"]
        den = None if num is None or non is None else num + non
        return {"numerator": part["numerator"], "denominator": den}
    if "table" in part:
        tb = part["table"]
        return {"n": None if tb is None else int(sum(r[2] for r in tb["rows"])),
                "resolution": None if tb is None else ("full" if tb["width"] is None else tb["width"])}
    return {"n": part["n"]}
