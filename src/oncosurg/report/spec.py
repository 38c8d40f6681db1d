"""The protocol's optional ``[report]`` table: what the study report shows, checked up front.

Every key is optional; without a ``[report]`` table the report draws one Kaplan-Meier figure per
``km_median``/``followup_median`` endpoint, shows Table 1 for the whole cohort and writes one
sentence per endpoint.  All problems are reported at once with their key paths, as for the rest of
the protocol (:class:`oncosurg.protocol.model.ProtocolError`).

.. code-block:: toml

    [report]
    table_one_by = ["resected", "referral"]     # populations (members vs the rest) or enum/bool columns
    table_one_variables = ["sex", "age_at_cetuximab"]   # default: the baseline columns
    results = "A total of {operated} patients underwent surgery ..."   # {endpoint} / {endpoint.field}

    [[report.km]]
    endpoint = "os_median"          # population, time, event and CI type come from the endpoint
    by = "resected"                 # optional: one curve per group
    population = "all"              # optional: override the endpoint's population
    title = "Overall survival"      # optional caption
    times = [0, 6, 12, 18, 24]      # optional: times of the numbers-at-risk table

    [[report.cox]]
    title = "Overall survival, baseline covariates"
    population = "all"
    outcome = "os"                  # or time = "os_months" and event = "os_event"
    entry = "referral_date"         # optional: delayed entry (referred patients enter at their referral)
    covariates = ["age_at_cetuximab", "sex", "extrahepatic_disease"]

Every ``[[comparisons]]`` of the protocol gets a figure (Kaplan-Meier, landmark or Simon-Makuch curves)
or a line of the comparisons table (time-dependent Cox model).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from oncosurg.protocol.model import Protocol, ProtocolError

#: Registry columns shown in Table 1 by default: what is known when cetuximab starts, plus the
#: cetuximab course itself (cycles are counted before surgery or stop).
DEFAULT_TABLE_ONE = (
    "sex", "age_at_cetuximab", "primary_site", "primary_side", "ras_status", "liver_mets_count",
    "largest_met_mm", "bilobar", "extrahepatic_disease", "prior_chemo_lines", "cetuximab_partner",
    "cetuximab_cycles", "best_response",
)

#: Fields a results-paragraph placeholder may name, by endpoint kind (``{id}`` alone = default).
PLACEHOLDER_FIELDS: dict[str, tuple[str, ...]] = {
    "count": ("n", "words", "Words"),
    "proportion": ("numerator", "denominator", "pct", "ci", "frac", "full", "n_pct", "numerator_words",
                   "Numerator_words"),
    "median": ("median", "iqr", "range", "n", "words", "Words"),
    "km_median": ("median", "ci", "n", "events", "full", "at"),
    "followup_median": ("median", "ci", "n", "events", "full"),
    "cumulative_incidence": ("at", "n", "events", "competing"),
}
#: Fields of a comparison placeholder (``{comparison_id}`` alone = the hazard ratio with its CI).
COMPARISON_FIELDS = ("hr", "ci", "p", "n", "events", "landmark", "full")
#: Placeholders from the protocol and the data rather than an endpoint: ``{accrual.start}``…
CONTEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "accrual": ("start", "end", "start_date", "end_date"),
    "cohort": ("n", "data_cut", "first_index", "last_index"),
}

PLACEHOLDER_RE = re.compile(r"\{([a-z][a-z0-9_]*)(?:\.([A-Za-z_]+))?\}")

_REPORT_KEYS = {"table_one_by", "table_one_variables", "results", "km", "cox"}
_KM_KEYS = {"endpoint", "by", "population", "title", "times"}
_COX_KEYS = {"title", "population", "time", "event", "outcome", "entry", "covariates", "ties"}


@dataclass(frozen=True, slots=True)
class KMSpec:
    """One Kaplan-Meier figure."""

    id: str
    endpoint: str
    population: str
    time: str
    event: str
    reverse: bool
    conf_type: str
    conf_level: float
    label: str
    by: str | None = None
    title: str | None = None
    times: tuple[float, ...] | None = None
    unit: str = "months"


@dataclass(frozen=True, slots=True)
class CoxSpec:
    """One Cox model, drawn as a forest plot."""

    id: str
    title: str
    population: str
    time: str
    event: str
    covariates: tuple[str, ...]
    ties: str = "efron"
    entry: str | None = None
    outcome: str | None = None


@dataclass(frozen=True, slots=True)
class ReportSpec:
    table_one_by: tuple[str, ...]
    table_one_variables: tuple[str, ...]
    results: str | None
    km: tuple[KMSpec, ...]
    cox: tuple[CoxSpec, ...]


def _strings(where: str, value: Any, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: must be a list of names")
        return ()
    return tuple(value)


def report_spec(protocol: Protocol, columns: set[str] | None = None) -> ReportSpec:
    """Check the protocol's ``[report]`` table; ``columns`` are the analysis view's column names."""
    raw = dict(protocol.report)
    problems: list[str] = []
    endpoints = {ep.id: ep for ep in protocol.endpoints}
    populations = set(protocol.populations)
    for key in sorted(set(raw) - _REPORT_KEYS):
        problems.append(f"report.{key}: unknown key (allowed: {', '.join(sorted(_REPORT_KEYS))})")

    def group_ok(where: str, name: str) -> None:
        if name not in populations and (columns is not None and name not in columns):
            problems.append(f"{where}: {name!r} is neither a population nor a column of the analysis view")

    by = _strings("report.table_one_by", raw.get("table_one_by", []), problems)
    for i, name in enumerate(by):
        group_ok(f"report.table_one_by[{i}]", name)
    variables = _strings("report.table_one_variables", raw.get("table_one_variables", list(DEFAULT_TABLE_ONE)),
                         problems)
    if columns is not None:
        for i, name in enumerate(variables):
            if name not in columns:
                problems.append(f"report.table_one_variables[{i}]: unknown column {name!r}")
    results = raw.get("results")
    if results is not None:
        if not isinstance(results, str) or not results.strip():
            problems.append("report.results: must be a non-empty string")
            results = None
        else:
            comparisons = {c.id for c in protocol.comparisons}
            for match in PLACEHOLDER_RE.finditer(results):
                eid, fld = match.group(1), match.group(2)
                if eid in CONTEXT_FIELDS and eid not in endpoints:
                    if fld not in CONTEXT_FIELDS[eid]:
                        problems.append(f"report.results: {match.group(0)}: use {{{eid}.<field>}} with a field of "
                                        f"{', '.join(CONTEXT_FIELDS[eid])}")
                elif eid in comparisons and eid not in endpoints:
                    if fld and fld not in COMPARISON_FIELDS:
                        problems.append(f"report.results: {match.group(0)}: a comparison has the fields "
                                        f"{', '.join(COMPARISON_FIELDS)}")
                elif eid not in endpoints:
                    problems.append(f"report.results: {match.group(0)} names no endpoint or comparison")
                elif fld and fld not in PLACEHOLDER_FIELDS[endpoints[eid].kind]:
                    allowed = ", ".join(PLACEHOLDER_FIELDS[endpoints[eid].kind])
                    problems.append(f"report.results: {match.group(0)}: a {endpoints[eid].kind} endpoint has "
                                    f"the fields {allowed}")
    km: list[KMSpec] = []
    raw_km = raw.get("km")
    if raw_km is None:
        raw_km = [{"endpoint": ep.id} for ep in protocol.endpoints if ep.kind in ("km_median", "followup_median")]
    if not isinstance(raw_km, list):
        problems.append("report.km: must be an array of tables ([[report.km]])")
        raw_km = []
    for i, item in enumerate(raw_km):
        where = f"report.km[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in sorted(set(item) - _KM_KEYS):
            problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_KM_KEYS))})")
        ep = endpoints.get(item.get("endpoint", ""))
        if ep is None or ep.kind not in ("km_median", "followup_median"):
            problems.append(f"{where}.endpoint: must name a km_median or followup_median endpoint")
            continue
        population = item.get("population", ep.population)
        if population != "all" and population not in populations:
            problems.append(f"{where}.population: unknown population {population!r}")
        group = item.get("by")
        if group is not None:
            if not isinstance(group, str):
                problems.append(f"{where}.by: must be a population or column name")
                group = None
            else:
                group_ok(f"{where}.by", group)
        times = item.get("times")
        if times is not None:
            ok = isinstance(times, list) and len(times) >= 2 and all(
                isinstance(t, int | float) and not isinstance(t, bool) and t >= 0 for t in times)
            if not ok or sorted(times) != times:
                problems.append(f"{where}.times: must be an increasing list of at least two times >= 0")
                times = None
        title = item.get("title")
        if title is not None and not isinstance(title, str):
            problems.append(f"{where}.title: must be a string")
            title = None
        fig_id = ep.id + ("" if population == ep.population else f"-{population}") + (f"-by-{group}" if group else "")
        km.append(KMSpec(id=fig_id, endpoint=ep.id, population=population, time=ep.time or "", event=ep.event or "",
                         reverse=ep.kind == "followup_median", conf_type=ep.conf_type, conf_level=ep.conf_level,
                         label=ep.label, by=group, title=title,
                         times=tuple(float(t) for t in times) if times else None, unit=ep.unit or "months"))
    cox: list[CoxSpec] = []
    raw_cox = raw.get("cox", [])
    if not isinstance(raw_cox, list):
        problems.append("report.cox: must be an array of tables ([[report.cox]])")
        raw_cox = []
    for i, item in enumerate(raw_cox):
        where = f"report.cox[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        for key in sorted(set(item) - _COX_KEYS):
            problems.append(f"{where}.{key}: unknown key (allowed: {', '.join(sorted(_COX_KEYS))})")
        outcome = item.get("outcome")
        if outcome is not None:
            if outcome not in {o.id for o in protocol.outcomes}:
                problems.append(f"{where}.outcome: unknown outcome {outcome!r}")
            elif item.get("time") or item.get("event"):
                problems.append(f"{where}: give either outcome or time/event, not both")
            else:
                item = {**item, "time": f"{outcome}_months", "event": f"{outcome}_event"}
        for key in ("time", "event", "title"):
            if not isinstance(item.get(key), str) or not item.get(key):
                problems.append(f"{where}.{key}: required (a string)" + (" (or give outcome)" if key != "title"
                                                                         else ""))
        entry = item.get("entry")
        if entry is not None and (not isinstance(entry, str) or not entry):
            problems.append(f"{where}.entry: must be a date column (delayed entry, e.g. \"referral_date\")")
            entry = None
        population = item.get("population", "all")
        if population != "all" and population not in populations:
            problems.append(f"{where}.population: unknown population {population!r}")
        covariates = _strings(f"{where}.covariates", item.get("covariates"), problems)
        for j, name in enumerate(covariates):
            group_ok(f"{where}.covariates[{j}]", name)
        for key in ("time", "event"):
            name = item.get(key)
            if columns is not None and isinstance(name, str) and name and name not in columns:
                problems.append(f"{where}.{key}: unknown column {name!r}")
        ties = item.get("ties", "efron")
        if ties not in ("efron", "breslow"):
            problems.append(f"{where}.ties: 'efron' or 'breslow'")
        cox.append(CoxSpec(id=f"cox-{i + 1}", title=str(item.get("title", "")), population=population,
                           time=str(item.get("time", "")), event=str(item.get("event", "")),
                           covariates=covariates, ties=str(ties), entry=entry, outcome=outcome))
    if problems:
        raise ProtocolError(protocol.source, problems)
    return ReportSpec(table_one_by=by, table_one_variables=variables, results=results, km=tuple(km),
                      cox=tuple(cox))
