"""The report as one self-contained HTML file: inline CSS, figures as inline SVG data, no script, no network.

Rendered with Jinja2 (autoescaped) from the report model of :mod:`oncosurg.report.build`.  It prints
on A4 (``@media print``): figures and table rows do not break across pages, table headers repeat.
"""

from __future__ import annotations

import base64
from importlib import resources
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from oncosurg.report.text import fmt_date

_TEMPLATES = resources.files("oncosurg.report") / "templates"


def _environment() -> Environment:
    return Environment(loader=FileSystemLoader(str(_TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def cohort_text(results: dict[str, Any]) -> str:
    proto = results["protocol"]
    acc = proto["accrual"]
    parts = []
    if proto.get("index"):
        parts.append(f"an index event ({proto['index']['label']})")
    if acc["start"] or acc["end"]:
        parts.append(f"{acc['column'].replace('_', ' ')} within the accrual window")
    parts += [i["label"] for i in proto.get("include", [])]
    return ("Patients with " + "; ".join(parts)) if parts else "Every patient in the registry"


def accrual_text(results: dict[str, Any]) -> str:
    acc = results["protocol"]["accrual"]
    if not (acc["start"] or acc["end"]):
        return "none"
    return f"{fmt_date(acc['start'])} – {fmt_date(acc['end'])} ({acc['column']}, inclusive)"


def context(model: dict[str, Any]) -> dict[str, Any]:
    results = model["results"]
    data = model["data"]
    figures = []
    for fig in model["figures"]:
        figures.append({**{k: v for k, v in fig.items() if k not in ("png", "svg")},
                        "svg_b64": base64.b64encode(fig["svg"]).decode("ascii")})
    tables = []
    for i, t in enumerate(data["table_one"]):
        tables.append({**t, "suffix": chr(ord("a") + i) if len(data["table_one"]) > 1 else ""})
    ep_titles = {}
    for row in model["endpoint_rows"]:
        bits = [row["label"], row["estimate"]]
        if row["ci"]:
            bits.append(row["ci"])
        ep_titles[row["id"]] = " · ".join(bits)
    cmp_titles = {r["id"]: " · ".join(x for x in (r["label"], r["hr"], f"p {r['p']}" if r["p"] else "") if x)
                  for r in model.get("comparison_rows", [])}
    description = model["meta"].get("description") or ""
    return {
        "css": (_TEMPLATES / "report.css").read_text(encoding="utf-8"),
        "meta": model["meta"], "proto": results["protocol"], "prov": results["provenance"],
        "proto_description": " ".join(description.split()),
        "cohort": results["cohort"], "data_cut": fmt_date(results["cohort"].get("data_cut")),
        "cohort_text": cohort_text(results), "accrual_text": accrual_text(results),
        "last_import": data.get("last_import"), "paragraphs": model["paragraphs"], "ep_titles": ep_titles,
        "flow_fig": figures[0], "survival_figs": figures[1:], "tables": tables,
        "endpoint_table_number": 2, "endpoint_rows": model["endpoint_rows"], "cmp_titles": cmp_titles,
        "comparison_rows": model.get("comparison_rows", []),
        "show_published": any(r["published"] for r in model["endpoint_rows"]),
        "methods": model["methods"], "notes": model["notes"], "files": model.get("files", []),
    }


def render_html(model: dict[str, Any]) -> str:
    """The whole report as one HTML document (a string)."""
    return _environment().get_template("report.html.j2").render(**context(model))
