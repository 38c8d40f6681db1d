"""Study protocol files (TOML): loading and structural validation.

A protocol declares the cohort (accrual window, inclusion predicates), parameters, derived
predicates, named populations and endpoints.  Every problem is reported at once with its key
path (``endpoints[3].numerator``), including typos in keys, which TOML would otherwise accept
silently.  Expressions are type-checked later against the analysis view (:mod:`.engine`).
"""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENDPOINT_KINDS = ("count", "proportion", "median", "km_median", "followup_median")
CONF_TYPES = ("log-log", "log", "plain")
CI_METHODS = ("clopper-pearson", "wilson")
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


@dataclass(frozen=True, slots=True)
class Inclusion:
    label: str
    where: str


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

    @property
    def postop_window_days(self) -> int:
        return int(self.parameters.get("postop_window_days", 60))

    @property
    def major_hepatectomy_segments(self) -> int:
        return int(self.parameters.get("major_hepatectomy_segments", 3))

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "reference": self.reference,
            "source": self.source,
            "accrual": {
                "column": self.accrual_column,
                "start": self.accrual_start.isoformat() if self.accrual_start else None,
                "end": self.accrual_end.isoformat() if self.accrual_end else None,
            },
            "include": [{"label": i.label, "where": i.where} for i in self.include],
            "parameters": {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in self.parameters.items()},
            "populations": dict(self.populations),
            "derived": dict(self.derived),
        }


_TOP_KEYS = {"protocol", "parameters", "cohort", "derived", "populations", "endpoints", "report"}
_PROTOCOL_KEYS = {"id", "title", "description", "reference"}
_COHORT_KEYS = {"accrual_column", "accrual_start", "accrual_end", "include"}
_ENDPOINT_KEYS = {
    "id", "kind", "label", "definition", "population", "numerator", "column", "time", "event", "conf_type",
    "ci", "conf_level", "unit", "published",
}
_KIND_NEEDS = {
    "count": set(),
    "proportion": {"numerator"},
    "median": {"column"},
    "km_median": {"time", "event"},
    "followup_median": {"time", "event"},
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
    problems: list[str] = []

    def unknown(where: str, got: dict[str, Any], allowed: set[str]) -> None:
        for key in sorted(set(got) - allowed):
            problems.append(f"{where}{key}: unknown key (allowed: {', '.join(sorted(allowed))})")

    def text(where: str, value: Any, *, required: bool = True) -> str:
        if value is None:
            if required:
                problems.append(f"{where}: missing")
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            problems.append(f"{where}: must be a non-empty string")
            return ""
        return value

    unknown("", data, _TOP_KEYS)
    meta = data.get("protocol", {})
    if not isinstance(meta, dict):
        problems.append("protocol: must be a table")
        meta = {}
    unknown("protocol.", meta, _PROTOCOL_KEYS)
    pid = text("protocol.id", meta.get("id"))
    if pid and not re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", pid):
        problems.append("protocol.id: use lower-case letters, digits, '-', '_' or '.'")
    params = data.get("parameters", {})
    if not isinstance(params, dict) or any(isinstance(v, dict | list) for v in params.values()):
        problems.append("parameters: must be a table of scalar values")
        params = {}
    for key, value in params.items():
        if key == "postop_window_days" and (not isinstance(value, int) or value < 0):
            problems.append("parameters.postop_window_days: must be a non-negative integer of days")
    cohort = data.get("cohort", {})
    if not isinstance(cohort, dict):
        problems.append("cohort: must be a table")
        cohort = {}
    unknown("cohort.", cohort, _COHORT_KEYS)
    start, end = cohort.get("accrual_start"), cohort.get("accrual_end")
    for key, value in (("accrual_start", start), ("accrual_end", end)):
        if value is not None and not (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            problems.append(f"cohort.{key}: must be a TOML date such as 2004-02-01 (no quotes)")
    if isinstance(start, dt.date) and isinstance(end, dt.date) and start > end:
        problems.append("cohort: accrual_start is after accrual_end")
    include: list[Inclusion] = []
    for i, item in enumerate(cohort.get("include", [])):
        if not isinstance(item, dict) or set(item) - {"label", "where"}:
            problems.append(f"cohort.include[{i}]: must be {{label = \"...\", where = \"...\"}}")
            continue
        include.append(Inclusion(text(f"cohort.include[{i}].label", item.get("label")),
                                 text(f"cohort.include[{i}].where", item.get("where"))))
    derived = _expr_table("derived", data.get("derived", {}), problems)
    populations = _expr_table("populations", data.get("populations", {}), problems)
    for name in set(derived) & set(populations):
        problems.append(f"populations.{name}: the name is also a derived column")
    endpoints: list[Endpoint] = []
    seen: set[str] = set()
    raw_endpoints = data.get("endpoints", [])
    if not isinstance(raw_endpoints, list) or not raw_endpoints:
        problems.append("endpoints: declare at least one [[endpoints]] table")
        raw_endpoints = []
    for i, item in enumerate(raw_endpoints):
        where = f"endpoints[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be a table")
            continue
        unknown(f"{where}.", item, _ENDPOINT_KEYS)
        eid = text(f"{where}.id", item.get("id"))
        if eid:
            where = f"endpoints[{i}] ({eid})"
            if not _ID_RE.fullmatch(eid):
                problems.append(f"{where}.id: use lower-case letters, digits and '_' (start with a letter)")
            if eid in seen:
                problems.append(f"{where}.id: duplicate endpoint id")
            seen.add(eid)
        kind = text(f"{where}.kind", item.get("kind"))
        if kind and kind not in ENDPOINT_KINDS:
            problems.append(f"{where}.kind: {kind!r} is not one of {', '.join(ENDPOINT_KINDS)}")
        for key in sorted(_KIND_NEEDS.get(kind, set())):
            if not item.get(key):
                problems.append(f"{where}.{key}: required for kind {kind!r}")
        conf_type = item.get("conf_type", "log-log")
        if conf_type not in CONF_TYPES:
            problems.append(f"{where}.conf_type: {conf_type!r} is not one of {', '.join(CONF_TYPES)}")
        ci = item.get("ci", "clopper-pearson")
        if ci not in CI_METHODS:
            problems.append(f"{where}.ci: {ci!r} is not one of {', '.join(CI_METHODS)}")
        level = item.get("conf_level", 0.95)
        if not isinstance(level, float | int) or isinstance(level, bool) or not 0 < level < 1:
            problems.append(f"{where}.conf_level: must be a number strictly between 0 and 1")
            level = 0.95
        population = item.get("population", "all")
        if population != "all" and population not in populations:
            problems.append(f"{where}.population: unknown population {population!r}")
        published = _published(f"{where}.published", item.get("published"), problems)
        endpoints.append(Endpoint(
            id=eid, kind=kind, label=text(f"{where}.label", item.get("label")),
            definition=text(f"{where}.definition", item.get("definition")), population=population,
            numerator=item.get("numerator"), column=item.get("column"), time=item.get("time"),
            event=item.get("event"), conf_type=conf_type, ci_method=ci, conf_level=float(level),
            unit=item.get("unit", "months" if kind in ("km_median", "followup_median") else ""),
            published=published))
    report = data.get("report", {})
    if not isinstance(report, dict):
        problems.append("report: must be a table")
        report = {}
    if problems:
        raise ProtocolError(source, problems)
    return Protocol(
        id=pid, title=text("protocol.title", meta.get("title")), source=source,
        description=meta.get("description", ""), reference=meta.get("reference", ""),
        accrual_column=cohort.get("accrual_column", "cetuximab_start"), accrual_start=start, accrual_end=end,
        include=tuple(include), parameters=dict(params), derived=derived, populations=populations,
        endpoints=tuple(endpoints), report=report)


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
