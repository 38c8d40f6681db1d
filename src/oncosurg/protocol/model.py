"""Study protocol files (TOML): loading and structural validation.

A protocol (format 2, ``docs/protocol.md``) declares the index event that sets each patient's time
zero, the accrual window on the index date and the data cut, eligibility at the index, parameters,
derived columns, named populations, outcomes (origin, events, competing events, censoring),
comparisons (groups and a method that respects time) and endpoints.  Every problem is reported at
once with its key path (``endpoints[3].numerator``), including typos in keys, which TOML would
otherwise accept silently.  Expressions are type-checked later against the analysis view
(:mod:`.engine`).  Format-1 files (no ``format = 2``) are converted on loading (:mod:`.convert`).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDPOINT_KINDS = ("count", "proportion", "median", "km_median", "followup_median", "cumulative_incidence")
TIME_TO_EVENT_KINDS = ("km_median", "followup_median", "cumulative_incidence")
CONF_TYPES = ("log-log", "log", "plain")
CI_METHODS = ("clopper-pearson", "wilson")
ENTRY_RULES = ("first",)
COMPARISON_METHODS = ("kaplan_meier", "landmark", "time_dependent_cox", "simon_makuch")
#: Methods named in the issue that need the statistics core of issue 13 (weighted Cox, robust variance).
PENDING_METHODS = {"clone_censor_weight": "clone-censor-weight emulation needs Cox models with case weights and a "
                                          "robust (sandwich) variance, which the statistics core does not have yet"}
TIME_UNITS = ("months", "days")
_ID_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ProtocolError(ValueError):
    """A protocol file is invalid; ``problems`` lists every finding as ``path: message``."""

    def __init__(self, source: str, problems: list[str]):
        self.source, self.problems = source, problems
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid protocol {source}: {len(problems)} problem(s)\n{listing}")


@dataclass(frozen=True, slots=True)
class Published:
    """A value printed in the source publication, shown beside ours (never used to compute)."""

    value: float | None
    text: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    kind: str
    label: str
    definition: str
    population: str
    numerator: str | None = None
    column: str | None = None
    time: str | None = None
    event: str | None = None
    conf_type: str = "log-log"
    ci_method: str = "clopper-pearson"
    conf_level: float = 0.95
    unit: str = "months"
    published: Published | None = None
    outcome: str | None = None
    at: tuple[float, ...] = ()


@dataclass(frozen=True, slots=True)
class Inclusion:
    """An eligibility criterion (format 1: a ``cohort.include`` step)."""

    label: str
    where: str


@dataclass(frozen=True, slots=True)
class IndexEvent:
    """Time zero: the patient's first episode matching ``episode`` (``TABLE where expr``)."""

    label: str
    episode: str
    entry: str = "first"


@dataclass(frozen=True, slots=True)
class Outcome:
    """A time-to-event outcome: from ``origin`` to the first of ``events`` (cause 1), else the first of
    ``competing`` (cause 2), else censored at the first of ``censor``, the last contact and the data cut."""

    id: str
    label: str
    origin: str = "index"
    events: tuple[str, ...] = ()
    competing: tuple[str, ...] = ()
    censor: tuple[str, ...] = ()
    definition: str = ""


@dataclass(frozen=True, slots=True)
class Comparison:
    """Groups compared on an outcome with a method that respects when the groups are decided."""

    id: str
    label: str
    outcome: str
    method: str
    population: str = "all"
    groups: str | None = None
    exposure: str | None = None
    exposure_label: str | None = None
    landmark: float | None = None
    entry: str | None = None
    conf_level: float = 0.95
    conf_type: str = "log-log"
    title: str | None = None


@dataclass(frozen=True, slots=True)
class Protocol:
    id: str
    title: str
    source: str
    description: str = ""
    reference: str = ""
    accrual_column: str = "cetuximab_start"
    accrual_start: dt.date | None = None
    accrual_end: dt.date | None = None
    include: tuple[Inclusion, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    populations: dict[str, str] = field(default_factory=dict)
    endpoints: tuple[Endpoint, ...] = ()
    #: The optional ``[report]`` table, kept as given; checked by :mod:`oncosurg.report.spec`.
    report: dict[str, Any] = field(default_factory=dict)
    format: int = 2
    index: IndexEvent | None = None
    data_cut: dt.date | None = None
    outcomes: tuple[Outcome, ...] = ()
    comparisons: tuple[Comparison, ...] = ()
    #: Messages about how the file was read (format-1 conversion), shown with the results.
    notices: tuple[str, ...] = ()
    #: Steps applied before anything else (not from the file: e.g. the web dashboard's centre restriction).
    scope: tuple[Inclusion, ...] = ()

    @property
    def postop_window_days(self) -> int:
        return int(self.parameters.get("postop_window_days", 60))

    @property
    def major_hepatectomy_segments(self) -> int:
        return int(self.parameters.get("major_hepatectomy_segments", 3))

    @property
    def eligibility(self) -> tuple[Inclusion, ...]:
        return self.include

    @property
    def outcome_by_id(self) -> dict[str, Outcome]:
        return {o.id: o for o in self.outcomes}

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "reference": self.reference,
            "source": self.source,
            "format": self.format,
            "index": None if self.index is None else {"label": self.index.label, "episode": self.index.episode,
                                                      "entry": self.index.entry},
            "accrual": {
                "column": self.accrual_column,
                "start": self.accrual_start.isoformat() if self.accrual_start else None,
                "end": self.accrual_end.isoformat() if self.accrual_end else None,
            },
            "data_cut": self.data_cut.isoformat() if self.data_cut else None,
            "include": [{"label": i.label, "where": i.where} for i in self.include],
            "parameters": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in self.parameters.items()},
            "populations": dict(self.populations),
            "derived": dict(self.derived),
            "outcomes": {o.id: {"label": o.label, "origin": o.origin, "events": list(o.events),
                                "competing": list(o.competing), "censor": list(o.censor),
                                "definition": o.definition} for o in self.outcomes},
        }


_TOP_KEYS = {"protocol", "parameters", "index", "cohort", "eligibility", "derived", "populations", "outcomes",
             "comparisons", "endpoints", "report"}
_PROTOCOL_KEYS = {"id", "title", "description", "reference", "format"}
_INDEX_KEYS = {"label", "episode", "entry"}
_COHORT_KEYS = {"accrual_column", "accrual_start", "accrual_end", "data_cut"}
_OUTCOME_KEYS = {"label", "origin", "events", "competing", "censor", "definition"}
_COMPARISON_KEYS = {"id", "label", "outcome", "method", "population", "groups", "exposure", "exposure_label",
                    "landmark", "entry", "conf_level", "conf_type", "title"}
_ENDPOINT_KEYS = {
    "id", "kind", "label", "definition", "population", "numerator", "column", "time", "event", "conf_type",
    "ci", "conf_level", "unit", "published", "outcome", "at",
}
_KIND_NEEDS = {
    "count": set(),
    "proportion": {"numerator"},
    "median": {"column"},
    "km_median": set(),
    "followup_median": set(),
    "cumulative_incidence": {"outcome", "at"},
}


def studies_dirs() -> list[Path]:
    """Where protocol ids are looked up: ``./studies`` then the bundled studies."""
    return [Path.cwd() / "studies", Path(__file__).resolve().parents[1] / "studies"]


def resolve_protocol(id_or_path: str) -> Path:
    """A protocol path, or a protocol id found in :func:`studies_dirs`."""
    path = Path(id_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ProtocolError(id_or_path, ["file not found"])
        return path
    for folder in studies_dirs():
        candidate = folder / f"{id_or_path}.toml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for d in studies_dirs() if d.is_dir() for p in d.glob("*.toml")})
    raise ProtocolError(id_or_path, [f"no protocol with this id; known ids: {', '.join(known) or 'none'}"])


def load_protocol(id_or_path: str) -> Protocol:
    """Load and structurally validate a protocol (raises :class:`ProtocolError`)."""
    path = resolve_protocol(id_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProtocolError(str(path), [f"not valid TOML: {exc}"]) from None
    return protocol_from_dict(data, source=str(path))


def protocol_from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Protocol:
    """A protocol from its TOML data; format-1 data (no ``[protocol] format = 2``) is converted first."""
    meta = data.get("protocol") if isinstance(data, dict) else None
    fmt = meta.get("format", 1) if isinstance(meta, dict) else 1
    notices: tuple[str, ...] = ()
    if fmt == 1:
        from oncosurg.protocol.convert import FORMAT_1_NOTICE, convert_v1

        data = convert_v1(data)
        notices = (FORMAT_1_NOTICE,)
    elif fmt != 2:
        raise ProtocolError(source, [f"protocol.format: {fmt!r} is not a known format (1 or 2)"])
    protocol = _from_dict(data, source)
    return protocol if not notices else _replace(protocol, format=1, notices=notices)


def _replace(protocol: Protocol, **changes: Any) -> Protocol:
    import dataclasses

    return dataclasses.replace(protocol, **changes)


class _Reader:
    """Collects problems while reading values from the TOML data."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def unknown(self, where: str, got: dict[str, Any], allowed: set[str]) -> None:
        for key in sorted(set(got) - allowed):
            self.problems.append(f"{where}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def text(self, where: str, value: Any, *, required: bool = True) -> str:
        if value is None:
            if required:
                self.problems.append(f"{where}: missing")
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            self.problems.append(f"{where}: must be a non-empty string")
            return ""
        return value

    def table(self, where: str, value: Any) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.append(f"{where}: must be a table")
            return {}
        return value

    def strings(self, where: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.problems.append(f"{where}: must be a string or a list of strings")
            return ()
        return tuple(value)

    def date(self, where: str, value: Any) -> dt.date | None:
        if value is None:
            return None
        if not (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            self.problems.append(f"{where}: must be a TOML date such as 2004-02-01 (no quotes)")
            return None
        return value

    def number(self, where: str, value: Any, *, positive: bool = False) -> float | None:
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 or (positive and value == 0):
            self.problems.append(f"{where}: must be a number {'> 0' if positive else '>= 0'}")
            return None
        return float(value)

    def level(self, where: str, value: Any) -> float:
        if value is None:
            return 0.95
        if not isinstance(value, float | int) or isinstance(value, bool) or not 0 < value < 1:
            self.problems.append(f"{where}: must be a number strictly between 0 and 1")
            return 0.95
        return float(value)


def _from_dict(data: dict[str, Any], source: str) -> Protocol:
    r = _Reader()
    problems = r.problems
    r.unknown("", data, _TOP_KEYS)
    meta = r.table("protocol", data.get("protocol", {}))
    r.unknown("protocol.", meta, _PROTOCOL_KEYS)
    pid = r.text("protocol.id", meta.get("id"))
    if pid and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", pid):
        problems.append("protocol.id: use lower-case letters, digits, '-', '_' or '.'")
    params = data.get("parameters", {})
    if not isinstance(params, dict) or any(isinstance(v, dict | list) for v in params.values()):
        problems.append("parameters: must be a table of scalar values")
        params = {}
    for key, value in params.items():
        if key == "postop_window_days" and (not isinstance(value, int) or value < 0):
            problems.append("parameters.postop_window_days: must be a non-negative integer of days")
    index = _index(r, data.get("index"))
    cohort = r.table("cohort", data.get("cohort", {}))
    if "include" in cohort:
        problems.append("cohort.include: format 2 lists eligibility criteria as [[eligibility]] tables "
                        "(label, where)")
        cohort = {k: v for k, v in cohort.items() if k != "include"}
    r.unknown("cohort.", cohort, _COHORT_KEYS)
    start = r.date("cohort.accrual_start", cohort.get("accrual_start"))
    end = r.date("cohort.accrual_end", cohort.get("accrual_end"))
    cut = r.date("cohort.data_cut", cohort.get("data_cut"))
    if start and end and start > end:
        problems.append("cohort: accrual_start is after accrual_end")
    if cut and start and cut < start:
        problems.append("cohort: data_cut is before accrual_start")
    column = cohort.get("accrual_column")
    if index is not None:
        if column not in (None, "index_date"):
            problems.append("cohort.accrual_column: with an [index] the accrual window applies to the index date; "
                            "remove accrual_column")
        column = "index_date"
    elif column is None:
        column = "cetuximab_start"
        if start or end:
            problems.append("cohort: an accrual window needs an [index] (time zero) or an accrual_column")
    elif not isinstance(column, str):
        problems.append("cohort.accrual_column: must be a column name")
        column = "cetuximab_start"
    include: list[Inclusion] = []
    raw_elig = data.get("eligibility", [])
    if not isinstance(raw_elig, list):
        problems.append("eligibility: must be an array of tables ([[eligibility]] with label and where)")
        raw_elig = []
    for i, item in enumerate(raw_elig):
        if not isinstance(item, dict) or set(item) - {"label", "where"}:
            problems.append(f"eligibility[{i}]: must be {{label = \"...\", where = \"...\"}}")
            continue
        include.append(Inclusion(r.text(f"eligibility[{i}].label", item.get("label")),
                                 r.text(f"eligibility[{i}].where", item.get("where"))))
    derived = _expr_table("derived", data.get("derived", {}), problems)
    populations = _expr_table("populations", data.get("populations", {}), problems)
    for name in set(derived) & set(populations):
        problems.append(f"populations.{name}: the name is also a derived column")
    outcomes = _outcomes(r, data.get("outcomes", {}), index is not None)
    outcome_ids = {o.id for o in outcomes}
    endpoints = _endpoints(r, data.get("endpoints", []), populations, outcome_ids)
    comparisons = _comparisons(r, data.get("comparisons", []), populations, outcome_ids)
    for i, comp in enumerate(comparisons):
        if comp.id in {e.id for e in endpoints}:
            problems.append(f"comparisons[{i}] ({comp.id}).id: an endpoint has this id; ids name both in the "
                            "results paragraph")
    report = data.get("report", {})
    if not isinstance(report, dict):
        problems.append("report: must be a table")
        report = {}
    if problems:
        raise ProtocolError(source, problems)
    return Protocol(
        id=pid, title=r.text("protocol.title", meta.get("title")), source=source,
        description=meta.get("description", ""), reference=meta.get("reference", ""),
        accrual_column=column, accrual_start=start, accrual_end=end, include=tuple(include),
        parameters=dict(params), derived=derived, populations=populations, endpoints=endpoints, report=report,
        format=2, index=index, data_cut=cut, outcomes=outcomes, comparisons=comparisons)


def _index(r: _Reader, raw: Any) -> IndexEvent | None:
    if raw is None:
        return None
    item = r.table("index", raw)
    r.unknown("index.", item, _INDEX_KEYS)
    entry = item.get("entry", "first")
    if entry not in ENTRY_RULES:
        r.problems.append(f"index.entry: {entry!r} is not supported yet: a patient enters once, at the first "
                          "qualifying index (entry = \"first\"); several entries per patient need estimators with "
                          "a robust variance clustered on the patient, which the statistics core does not have yet")
    return IndexEvent(label=r.text("index.label", item.get("label")), episode=r.text("index.episode",
                      item.get("episode")), entry=str(entry))


def _outcomes(r: _Reader, raw: Any, has_index: bool) -> tuple[Outcome, ...]:
    if not isinstance(raw, dict):
        r.problems.append("outcomes: must be tables [outcomes.<id>] (label, origin, events, competing, censor)")
        return ()
    out = []
    for oid, item in raw.items():
        where = f"outcomes.{oid}"
        if not _ID_RE.fullmatch(oid):
            r.problems.append(f"{where}: outcome ids use lower-case letters, digits and '_'")
            continue
        if not isinstance(item, dict):
            r.problems.append(f"{where}: must be a table")
            continue
        r.unknown(f"{where}.", item, _OUTCOME_KEYS)
        origin = r.text(f"{where}.origin", item.get("origin", "index"))
        if origin == "index" and not has_index:
            r.problems.append(f"{where}.origin: 'index' needs an [index] table (or give a date column or an "
                              "episode such as \"liver_procedure where procedure_type = 'hepatectomy'\")")
        events = r.strings(f"{where}.events", item.get("events"))
        if not events:
            r.problems.append(f"{where}.events: list at least one event (\"death\", a date column, or "
                              "\"TABLE where …\")")
        competing = r.strings(f"{where}.competing", item.get("competing"))
        censor = r.strings(f"{where}.censor", item.get("censor"))
        for key, others in (("competing", competing), ("censor", censor)):
            for text in sorted({" ".join(t.split()) for t in others} & {" ".join(t.split()) for t in events}):
                r.problems.append(f"{where}.{key}: {text!r} is also an event; a date is either the event, a "
                                  "competing event or a censoring, not two of them")
        out.append(Outcome(id=oid, label=r.text(f"{where}.label", item.get("label")), origin=origin,
                           events=events, competing=competing, censor=censor,
                           definition=r.text(f"{where}.definition", item.get("definition"), required=False)))
    return tuple(out)


def _endpoints(r: _Reader, raw: Any, populations: dict[str, str], outcomes: set[str]) -> tuple[Endpoint, ...]:
    problems = r.problems
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    if not isinstance(raw, list) or not raw:
        problems.append("endpoints: declare at least one [[endpoints]] table")
        raw = []
    for i, item in enumerate(raw):
        where = f"endpoints[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        r.unknown(f"{where}.", item, _ENDPOINT_KEYS)
        eid = r.text(f"{where}.id", item.get("id"))
        if eid:
            where = f"endpoints[{i}] ({eid})"
            if not _ID_RE.fullmatch(eid):
                problems.append(f"{where}.id: use lower-case letters, digits and '_' (start with a letter)")
            if eid in seen:
                problems.append(f"{where}.id: duplicate endpoint id")
            seen.add(eid)
        kind = r.text(f"{where}.kind", item.get("kind"))
        if kind and kind not in ENDPOINT_KINDS:
            problems.append(f"{where}.kind: {kind!r} is not one of {', '.join(ENDPOINT_KINDS)}")
        for key in sorted(_KIND_NEEDS.get(kind, set())):
            if not item.get(key):
                problems.append(f"{where}.{key}: required for kind {kind!r}")
        outcome = item.get("outcome")
        unit = item.get("unit", "months" if kind in TIME_TO_EVENT_KINDS else "")
        time, event = item.get("time"), item.get("event")
        if kind in ("km_median", "followup_median") and outcome is None and not (time and event):
            problems.append(f"{where}.outcome: required for kind {kind!r} (or time and event columns)")
        if outcome is not None:
            if outcome not in outcomes:
                problems.append(f"{where}.outcome: unknown outcome {outcome!r}"
                                + (f" (declared: {', '.join(sorted(outcomes))})" if outcomes else
                                   " (declare it as [outcomes.<id>])"))
            if time or event:
                problems.append(f"{where}: give either outcome or time/event, not both")
            if unit not in TIME_UNITS:
                problems.append(f"{where}.unit: {unit!r} is not one of {', '.join(TIME_UNITS)}")
                unit = "months"
            time, event = f"{outcome}_{unit}", f"{outcome}_event"
        at = ()
        if item.get("at") is not None:
            values = item["at"]
            ok = isinstance(values, list) and values and all(
                isinstance(t, int | float) and not isinstance(t, bool) and t > 0 for t in values)
            if not ok or sorted(values) != values:
                problems.append(f"{where}.at: must be an increasing list of times > 0")
            else:
                at = tuple(float(t) for t in values)
            if kind not in ("km_median", "cumulative_incidence"):
                problems.append(f"{where}.at: only for km_median and cumulative_incidence endpoints")
        conf_type = item.get("conf_type", "log" if kind == "cumulative_incidence" else "log-log")
        if conf_type not in CONF_TYPES:
            problems.append(f"{where}.conf_type: {conf_type!r} is not one of {', '.join(CONF_TYPES)}")
        if kind == "cumulative_incidence" and conf_type != "log":
            problems.append(f"{where}.conf_type: cumulative incidence intervals are on the log scale (R survfit "
                            "multi-state); remove conf_type")
        ci = item.get("ci", "clopper-pearson")
        if ci not in CI_METHODS:
            problems.append(f"{where}.ci: {ci!r} is not one of {', '.join(CI_METHODS)}")
        level = r.level(f"{where}.conf_level", item.get("conf_level"))
        population = item.get("population", "all")
        if population != "all" and population not in populations:
            problems.append(f"{where}.population: unknown population {population!r}")
        published = _published(f"{where}.published", item.get("published"), problems)
        endpoints.append(Endpoint(
            id=eid, kind=kind, label=r.text(f"{where}.label", item.get("label")),
            definition=r.text(f"{where}.definition", item.get("definition")), population=population,
            numerator=item.get("numerator"), column=item.get("column"), time=time, event=event,
            conf_type=conf_type, ci_method=ci, conf_level=level, unit=unit, published=published,
            outcome=outcome, at=at))
    return tuple(endpoints)


def _comparisons(r: _Reader, raw: Any, populations: dict[str, str], outcomes: set[str]
                 ) -> tuple[Comparison, ...]:
    problems = r.problems
    if not isinstance(raw, list):
        problems.append("comparisons: must be an array of tables ([[comparisons]])")
        return ()
    out: list[Comparison] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"comparisons[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        r.unknown(f"{where}.", item, _COMPARISON_KEYS)
        cid = r.text(f"{where}.id", item.get("id"))
        if cid:
            where = f"comparisons[{i}] ({cid})"
            if not _ID_RE.fullmatch(cid):
                problems.append(f"{where}.id: use lower-case letters, digits and '_' (start with a letter)")
            if cid in seen:
                problems.append(f"{where}.id: duplicate comparison id")
            seen.add(cid)
        outcome = r.text(f"{where}.outcome", item.get("outcome"))
        if outcome and outcome not in outcomes:
            problems.append(f"{where}.outcome: unknown outcome {outcome!r}")
        method = r.text(f"{where}.method", item.get("method"))
        if method in PENDING_METHODS:
            problems.append(f"{where}.method: {method!r} is not available yet: {PENDING_METHODS[method]}")
        elif method and method not in COMPARISON_METHODS:
            problems.append(f"{where}.method: {method!r} is not one of {', '.join(COMPARISON_METHODS)}")
        groups, exposure = item.get("groups"), item.get("exposure")
        if method == "kaplan_meier":
            if not isinstance(groups, str) or not groups:
                problems.append(f"{where}.groups: required for method 'kaplan_meier' (a population or an enum or "
                                "yes/no column fixed at time zero)")
            if exposure is not None:
                problems.append(f"{where}.exposure: a dated exposure is a decision taken after time zero; compare it "
                                "with method 'landmark', 'time_dependent_cox' or 'simon_makuch'")
        elif method in ("landmark", "time_dependent_cox", "simon_makuch"):
            if not isinstance(exposure, str) or not exposure.strip():
                problems.append(f"{where}.exposure: required for method {method!r}: the decision and its date "
                                "(\"TABLE where …\" or a date column)")
            if groups is not None:
                problems.append(f"{where}.groups: method {method!r} groups patients by the exposure; remove groups")
        landmark = r.number(f"{where}.landmark", item.get("landmark"), positive=True)
        if method == "landmark" and landmark is None:
            problems.append(f"{where}.landmark: required for method 'landmark' (time from the origin, in months)")
        if method != "landmark" and item.get("landmark") is not None:
            problems.append(f"{where}.landmark: only for method 'landmark'")
        population = item.get("population", "all")
        if population != "all" and population not in populations:
            problems.append(f"{where}.population: unknown population {population!r}")
        entry = item.get("entry")
        if entry is not None and (not isinstance(entry, str) or not entry):
            problems.append(f"{where}.entry: must be a date column (delayed entry, e.g. \"referral_date\")")
            entry = None
        conf_type = item.get("conf_type", "log-log")
        if conf_type not in CONF_TYPES:
            problems.append(f"{where}.conf_type: {conf_type!r} is not one of {', '.join(CONF_TYPES)}")
        title = item.get("title")
        out.append(Comparison(
            id=cid, label=r.text(f"{where}.label", item.get("label")), outcome=outcome, method=method,
            population=population, groups=groups if isinstance(groups, str) else None,
            exposure=exposure if isinstance(exposure, str) else None,
            exposure_label=r.text(f"{where}.exposure_label", item.get("exposure_label"), required=False) or None,
            landmark=landmark, entry=entry, conf_level=r.level(f"{where}.conf_level", item.get("conf_level")),
            conf_type=conf_type, title=title if isinstance(title, str) else None))
    return tuple(out)


def _expr_table(where: str, value: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        problems.append(f"{where}: must be a table of name = \"expression\"")
        return {}
    out: dict[str, str] = {}
    for name, expr in value.items():
        if not _ID_RE.fullmatch(name):
            problems.append(f"{where}.{name}: names use lower-case letters, digits and '_'")
        elif not isinstance(expr, str) or not expr.strip():
            problems.append(f"{where}.{name}: must be a non-empty expression string")
        else:
            out[name] = expr
    return out


def _published(where: str, value: Any, problems: list[str]) -> Published | None:
    if value is None:
        return None
    if isinstance(value, bool):
        problems.append(f"{where}: must be a number, a string, or {{value = ..., text = \"...\"}}")
        return None
    if isinstance(value, int | float):
        return Published(float(value), f"{value:g}")
    if isinstance(value, str):
        return Published(None, value)
    if isinstance(value, dict) and set(value) <= {"value", "text"} and "text" in value:
        v = value.get("value")
        return Published(float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None,
                         str(value["text"]))
    problems.append(f"{where}: must be a number, a string, or {{value = ..., text = \"...\"}}")
    return None
