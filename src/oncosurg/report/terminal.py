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


def _pct(x: float | None) -> str:
    return "NE" if x is None else f"{100 * x:.1f}"


def format_comparison(cmp: dict[str, Any]) -> tuple[str, str, str]:
    """(hazard ratio with CI, p, n) of one comparison result."""
    hr = cmp.get("hr")
    test = cmp.get("test")
    p = (test or {}).get("p") if test else (hr or {}).get("p")
    if hr and not hr.get("estimable", True):
        text = "not estimable"
        p = (test or {}).get("p") if test else None
    elif hr and hr.get("hr") is not None:
        lo = "NE" if hr.get("lower") is None else f"{hr['lower']:.2f}"
        hi = "NE" if hr.get("upper") is None else f"{hr['upper']:.2f}"
        text = f"HR {hr['hr']:.2f} ({lo}–{hi})"
    else:
        text = "—"
    from oncosurg.report.text import fmt_p

    return text, ("" if p is None else fmt_p(p)), str(cmp.get("n", ""))


def format_estimate(ep: dict[str, Any]) -> tuple[str, str, str]:
    """(estimate, 95% CI, n) as display strings for one endpoint result."""
    kind = ep["kind"]
    if ep.get("withheld"):  # a federated result: a site withheld a count it needs (docs/federated.md)
        return "withheld (disclosure)", "", ""
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
                "" if ep["q1"] is None or ep["q3"] is None else f"IQR {ep['q1']:.1f}–{ep['q3']:.1f}", str(ep["n"]))
    unit = "mo" if ep.get("unit") == "months" else ep.get("unit", "")
    if ep["n"] == 0:
        return NOT_ESTIMABLE, "", "0"
    if kind == "cumulative_incidence":
        shown = [a for a in ep.get("at", []) if a.get("cif") is not None]
        estimate = "; ".join(f"{100 * a['cif']:.1f}% at {a['time']:g} {unit}" for a in shown) or "—"
        ci = "; ".join(f"{_pct(a.get('lower'))}–{_pct(a.get('upper'))}%" for a in shown)
        return estimate, ci, f"{ep['n']} ({ep['events']} events, {ep['competing']} competing)"
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
    if results.get("comparisons"):
        ctable = Table(show_lines=False, header_style="bold")
        for name, justify in (("Comparison", "left"), ("Method", "left"), ("Hazard ratio (95% CI)", "right"),
                              ("p", "right"), ("n", "right")):
            ctable.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for cid, cmp in results["comparisons"].items():
            hr, p, n = format_comparison(cmp)
            method = cmp["method"].replace("_", " ") + (f" at {cmp['landmark']:g} mo" if cmp.get("landmark") else "")
            ctable.add_row(f"{cmp['label']}\n[dim]{cid}[/dim]", method, hr, p, n)
        console.print(ctable)
    pooled = [w["endpoint"] for w in results["warnings"] if w["code"] == "pooled-referral"]
    for warning in results["warnings"]:
        if warning["code"] != "pooled-referral":
            console.print(f"[yellow]warning[/yellow] {warning['message']}")
    if pooled:
        console.print(f"[yellow]warning[/yellow] {', '.join(pooled)}: the denominator mixes in-house "
                      "(intention-to-treat) and referred (selected) patients; report the groups separately")
