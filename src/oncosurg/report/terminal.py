"""Terminal rendering of ``analyze`` results with rich (one table, then the warnings)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

#: What an estimate over no patient is: never "not reached", never a bare dash.
NOT_ESTIMABLE = "not estimable (n = 0)"


def _num(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "NR"
    return f"{x:.{digits}f}"


def format_estimate(ep: dict[str, Any]) -> tuple[str, str, str]:
    """(estimate, 95% CI, n) as display strings for one endpoint result."""
    kind = ep["kind"]
    if kind == "count":
        return str(ep["n"]), "", ""
    if kind == "proportion":
        if not ep["denominator"]:
            return NOT_ESTIMABLE, "", "0" + (f" ({ep['missing']} missing)" if ep.get("missing") else "")
        pct = 100 * ep["estimate"]
        ci = f"{100 * ep['ci_low']:.1f}–{100 * ep['ci_high']:.1f}%"
        n = str(ep["denominator"]) + (f" ({ep['missing']} missing)" if ep.get("missing") else "")
        return f"{ep['numerator']}/{ep['denominator']} ({pct:.1f}%)", ci, n
    if kind == "median":
        if ep["median"] is None:
            return NOT_ESTIMABLE, "", "0" + (f" ({ep['missing']} missing)" if ep.get("missing") else "")
        unit = {"months": "mo"}.get(ep.get("unit") or "", ep.get("unit") or "")
        return (f"{ep['median']:g} {unit}".strip() if float(ep["median"]).is_integer()
                else f"{ep['median']:.1f} {unit}".strip(),
                f"IQR {ep['q1']:.1f}–{ep['q3']:.1f}", str(ep["n"]))
    unit = "mo" if ep.get("unit") == "months" else ep.get("unit", "")
    if ep["n"] == 0:
        return NOT_ESTIMABLE, "", "0"
    estimate = "not reached" if ep["median"] is None else f"{ep['median']:.1f} {unit}"
    ci = "" if ep["n"] == 0 else f"{_num(ep['ci_low'])}–{_num(ep['ci_high'])} ({ep['conf_type']})"
    if kind == "followup_median":
        return estimate, ci, f"{ep['n']} ({ep['events']} alive)"
    return estimate, ci, f"{ep['n']} ({ep['events']} events)"


def render_results(results: dict[str, Any], console: Console | None = None, *, published: bool = True) -> None:
    """Print the endpoint table (with the published column when any endpoint has one) and warnings."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # pipes and files: a fixed, comfortable width
            console = Console(width=120)
    proto = results["protocol"]
    console.print(f"[bold]{proto['title']}[/bold]")
    flow = " → ".join(f"{step['label']}: {step['n']}" for step in results["cohort"]["flow"])
    console.print(f"[dim]{proto['id']} · cohort {flow} · data cut {results['cohort'].get('data_cut') or '—'}[/dim]")
    show_published = published and any("published" in ep for ep in results["endpoints"].values())
    table = Table(show_lines=False, header_style="bold")
    table.add_column("Endpoint", overflow="fold")
    table.add_column("Result", justify="right")
    table.add_column("95% CI / IQR", justify="right")
    table.add_column("n", justify="right")
    if show_published:
        table.add_column("Published", justify="right")
    for eid, ep in results["endpoints"].items():
        estimate, ci, n = format_estimate(ep)
        row = [f"{ep['label']}\n[dim]{eid}[/dim]", estimate, ci, n]
        if show_published:
            row.append(ep.get("published", {}).get("text", ""))
        table.add_row(*row)
    console.print(table)
    pooled = [w["endpoint"] for w in results["warnings"] if w["code"] == "pooled-referral"]
    for warning in results["warnings"]:
        if warning["code"] != "pooled-referral":
            console.print(f"[yellow]warning[/yellow] {warning['message']}")
    if pooled:
        console.print(f"[yellow]warning[/yellow] {', '.join(pooled)}: the denominator mixes in-house "
                      "(intention-to-treat) and referred (selected) patients; report the groups separately")
