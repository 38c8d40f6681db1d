"""The report of a federated result (``oncosurg report --results FILE``): what aggregates allow.

A federated result (``oncosurg federate --json``) has the ``analyze`` JSON's endpoints and comparisons,
plus the Cox models stratified by centre, a per-site breakdown and the disclosure section.  Table 1
and the Kaplan-Meier figures need patient rows and are not drawn; the page says so.  One self-contained
HTML file (``templates/federated.html.j2`` with the study report's stylesheet), and results.json beside it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oncosurg.report.text import comparison_rows, endpoint_rows, fmt_p, results_segments


def is_federated(results: dict[str, Any]) -> bool:
    return bool(results.get("provenance", {}).get("federated")) and "disclosure" in results


def write_federated_report(results: dict[str, Any], folder: str | Path, *, results_template: str | None = None
                           ) -> list[Path]:
    """Write ``folder/index.html`` and ``folder/results.json`` for a federated result."""
    import jinja2

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    withheld = sum(1 for ep in results["endpoints"].values() if ep.get("withheld"))
    paragraphs = results_segments(results, results_template) if not withheld else []
    templates = Path(__file__).parent / "templates"
    css = (templates / "report.css").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    html = env.from_string((templates / "federated.html.j2").read_text(encoding="utf-8")).render(
        r=results, p=results["protocol"], d=results["disclosure"], sites=results["sites"], css=css,
        paragraphs=paragraphs, withheld=withheld, endpoints=endpoint_rows(results),
        comparisons=comparison_rows(results), fmt_p=fmt_p)
    (out / "index.html").write_text(html, encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return [out / "index.html", out / "results.json"]
