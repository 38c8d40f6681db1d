"""Build the study report: results + report data → figures, tables, HTML, PDF, JSON in one folder.

``write_report`` is what ``oncosurg report`` and ``oncosurg demo`` call.  It assembles one *model*
(a plain dictionary: the ``analyze`` results, the report data, the figures as PNG/SVG bytes, the
results paragraph as segments, the methods and every warning) and hands it to each renderer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from oncosurg import __version__
from oncosurg.protocol.model import Protocol
from oncosurg.report.text import display_path, fmt_date, fmt_p, results_segments

Progress = Callable[[str], None]
FORMATS = ("html", "pdf")


@dataclass
class ReportFiles:
    folder: Path
    files: list[Path] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, path: Path, content: bytes | str) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
        self.files.append(path)
        return path


def _generated_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = dt.datetime.fromtimestamp(int(epoch), dt.UTC) if epoch else dt.datetime.now(dt.UTC)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("numpy", "scipy", "sqlalchemy", "matplotlib"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _synthetic(engine: sa.Engine, results: dict[str, Any]) -> bool:
    """The reference cohort (and the test registries) name their centre '... (synthetic)'."""
    if results["provenance"].get("synthetic"):
        return True
    from oncosurg.store import tables as t

    with engine.connect() as conn:
        names = conn.execute(sa.select(t.centre.c.name)).scalars().all()
    return bool(names) and all("synthetic" in str(n).lower() for n in names)


def methods(results: dict[str, Any], data: dict[str, Any]) -> list[tuple[str, str]]:
    """Methods paragraphs as (heading, text): what was computed and with which R-equivalent options."""
    proto = results["protocol"]
    acc = proto["accrual"]
    eps = results["endpoints"].values()
    kinds = {ep["kind"] for ep in eps}
    out: list[tuple[str, str]] = []
    window = (f"between {fmt_date(acc['start'])} and {fmt_date(acc['end'])}" if acc["start"] and acc["end"]
              else f"from {fmt_date(acc['start'])}" if acc["start"] else
              f"until {fmt_date(acc['end'])}" if acc["end"] else "at any date")
    steps = "; ".join(i["label"] for i in proto.get("include", []))
    index = proto.get("index")
    cohort = results["cohort"]
    if index:
        time_zero = (f"Time zero (the index) is each patient's first episode matching: {index['label']} "
                     f"({index['episode']}); a patient enters the study once, at that first index (R: the episodes "
                     "filtered, ordered by date, first row per patient). ")
        who = f"Patients whose index fell {window} (inclusive)"
    else:
        time_zero = ""
        who = f"Patients whose {acc['column'].replace('_', ' ')} fell {window} (inclusive)"
    if cohort.get("data_cut_declared"):
        cut = (f"Data cut {fmt_date(cohort['data_cut'])}: episodes after it are ignored, follow-up is truncated at "
               "it (a patient seen alive after the cut is censored at the cut; R pmin(time, cut)).")
    else:
        cut = (f"No data cut is declared: records are used up to the latest last contact in the cohort "
               f"({fmt_date(cohort['data_cut'])}).")
    out.append(("Cohort", time_zero + who + (f", and who met at the index: {steps}" if steps else "") + ". " + cut
                + " Times in months are days / 30.4375."))
    outcomes = proto.get("outcomes") or {}
    if outcomes:
        parts = []
        for oid, o in outcomes.items():
            origin = "the index" if o["origin"] == "index" else o["origin"]
            text = f"{o['label'] or oid}: from {origin} to the first of {', '.join(o['events'])}"
            if o["competing"]:
                text += f" (competing: {', '.join(o['competing'])})"
            if o["censor"]:
                text += f", censored at the first of {', '.join(o['censor'])}"
            parts.append(text + ", else censored at the last contact")
        out.append(("Outcomes", "; ".join(parts) + ". An event dated before the origin does not count; an episode is "
                    "never the event of its own origin (R: time = pmin(event dates) - origin, status = 1 for the "
                    "event, 2 for a competing event, 0 censored)."))
    if "proportion" in kinds:
        methods_used = {ep.get("ci_method") for ep in eps if ep["kind"] == "proportion"}
        names = {"clopper-pearson": "Clopper-Pearson exact intervals (R binom.test)",
                 "wilson": "Wilson score intervals (R prop.test, correct = FALSE)"}
        out.append(("Proportions", "95% confidence intervals are " + " or ".join(names[m] for m in sorted(methods_used))
                   + ". A patient whose every input to a predicate is missing leaves the denominator (counted as "
                   "missing)."))
    if "median" in kinds:
        out.append(("Medians", "Medians of observed values are given with the interquartile range "
                               "(R quantile type 7)."))
    if kinds & {"km_median", "followup_median"} or data["km"]:
        cts = sorted({ep["conf_type"] for ep in eps if ep["kind"] in ("km_median", "followup_median")}
                     | {k["conf_type"] for k in data["km"]})
        out.append(("Survival", "Kaplan-Meier estimates with Greenwood variance and pointwise 95% confidence intervals "
                   f"on the {', '.join(cts)} scale (R survfit, conf.type = {', '.join(repr(c) for c in cts)}); "
                   "medians and their intervals as R quantile(survfit, 0.5), reported as 'not reached' when the "
                   "curve does not fall to 50%. Median follow-up by the reverse Kaplan-Meier method (Schemper & "
                   "Smith 1996: death censors follow-up). Numbers at risk at time t count patients with a time "
                   "≥ t (R summary(survfit, times = t)); censored and event counts are cumulative up to t. Groups "
                   "are compared with the log-rank test (R survdiff, rho = 0)."))
    if "cumulative_incidence" in kinds:
        out.append(("Competing risks", "Cumulative incidence by the Aalen-Johansen estimator with the competing event "
                    "as a second state, infinitesimal-jackknife standard errors and log-scale 95% intervals (R "
                    "survfit(Surv(time, factor(status)) ~ 1); summary(fit, times = t))."))
    from oncosurg.protocol.comparisons import METHOD_TEXT

    used = []
    for cmp in results.get("comparisons", {}).values():
        key = cmp["method"] + ("_entry" if cmp["method"] == "kaplan_meier" and cmp.get("entry") else "")
        text = METHOD_TEXT[key]
        if cmp.get("landmark") is not None:
            text = text.replace("at the landmark", f"at the {cmp['landmark']:g}-month landmark", 1)
        if cmp.get("entry") and cmp["method"] != "kaplan_meier":
            text += (f"; delayed entry at the {cmp['entry'].replace('_', ' ')} (left truncation, R "
                     "Surv(entry, time, status))")
        if text not in used:
            used.append(text)
    if used:
        out.append(("Comparisons", "Groups decided after time zero (such as resection) are never compared from time "
                    "zero, which would credit them with the time before the decision (guarantee-time bias). "
                    + ". ".join(f"{t[0].upper()}{t[1:]}" for t in used) + "."))
    if data["cox"]:
        out.append(("Cox models", "Proportional hazards with Efron's method for ties (R coxph default), Wald 95% "
                   "confidence intervals for the hazard ratios, complete cases only. The proportional-hazards "
                   "assumption is checked under each model with the Grambsch-Therneau score test on the "
                   "Kaplan-Meier transform of time (R cox.zph, transform = \"km\"), per covariate and global, and "
                   "shown with the scaled Schoenfeld residuals."))
    if data["table_one"]:
        out.append(("Table 1", "Categorical characteristics as n (%) of patients with a recorded value, numeric ones "
                   "as median (IQR); chi-square tests (Fisher's exact test when an expected count is below 5) and "
                   "Wilcoxon rank-sum tests (Kruskal-Wallis for more than two groups); standardised mean "
                   "differences as R tableone. p-values are descriptive and not adjusted for multiplicity."))
    out.append(("Reproducibility", "All estimates are computed by oncosurg from the patient-level records at the "
                                   "time of this report; no number is typed in. The survival core is checked "
                                   "against R survival 3.5.3."))
    return out


def notes(results: dict[str, Any], data: dict[str, Any], figures: Sequence[dict[str, Any]] = ()
          ) -> list[dict[str, str]]:
    """Every warning (the engine's, the figures', the Cox models', Table 1's), each with a link to its source."""
    numbers = {f["id"]: f["number"] for f in figures if "number" in f}
    out: list[dict[str, str]] = []
    pooled = [w["endpoint"] for w in results["warnings"] if w["code"] == "pooled-referral"]
    for w in results["warnings"]:
        if w["code"] == "pooled-referral":
            continue
        if w.get("endpoint"):
            out.append({"code": w["code"], "message": w["message"], "href": f"#ep-{w['endpoint']}", "ref": "Table 2"})
        elif w.get("comparison"):
            out.append({"code": w["code"], "message": w["message"], "href": f"#cmp-{w['comparison']}",
                        "ref": "Comparisons"})
        else:  # the cohort's warnings point at the flow diagram
            number = numbers.get("flow")
            out.append({"code": w["code"], "message": w["message"], "href": f"#figure-{number}" if number else "",
                        "ref": f"Figure {number}" if number else ""})
    if pooled:
        out.append({"code": "pooled-referral", "href": "#endpoints", "ref": "Table 2",
                    "message": f"{len(pooled)} endpoints ({', '.join(pooled)}) have denominators that mix in-house "
                               "(intention-to-treat) and referred (selected) patients; report the groups separately "
                               "where the distinction matters."})
    for fig in data.get("comparisons", []):
        number = numbers.get(fig["id"])
        for message in fig["warnings"]:
            out.append({"code": "comparison", "message": f"{fig['label']}: {message}",
                        "href": f"#figure-{number}" if number else "#comparisons",
                        "ref": f"Figure {number}" if number else "Comparisons"})
    for fig in data["km"]:
        number = numbers.get(f"km-{fig['id']}")
        for message in fig["warnings"]:
            code = "guarantee-time-bias" if message.startswith("Guarantee-time") else "kaplan-meier"
            out.append({"code": code, "message": message, "href": f"#figure-{number}" if number else "",
                        "ref": f"Figure {number}" if number else ""})
    for model in data["cox"]:
        number = numbers.get(model["id"])
        for message in model["warnings"]:
            out.append({"code": "cox", "message": message, "href": f"#figure-{number}" if number else "",
                        "ref": f"Figure {number}" if number else ""})
    for i, table in enumerate(data["table_one"]):
        suffix = chr(ord("a") + i) if len(data["table_one"]) > 1 else ""
        for message in table["notes"]:
            if message.startswith("Groups are defined by"):
                out.append({"code": "post-baseline-groups", "message": message, "href": f"#{table['id']}",
                            "ref": f"Table 1{suffix}"})
    return out


def build_model(engine: sa.Engine, protocol: Protocol, results: dict[str, Any], data: dict[str, Any],
                figures: list[dict[str, Any]]) -> dict[str, Any]:
    from oncosurg.report.text import comparison_rows, endpoint_rows

    paragraphs = results_segments(results, data.get("results_template"))
    if not results["cohort"]["n"]:  # said out loud instead of a paragraph of "not estimable"
        why = next((w["message"] for w in results["warnings"] if w["code"] == "cohort-empty"), "the cohort is empty")
        paragraphs = [[("text", f"No estimate: {why}. Every endpoint is not estimable (n = 0).")]]
    return {
        "results": results, "data": data, "figures": figures,
        "paragraphs": paragraphs,
        "endpoint_rows": endpoint_rows(results), "comparison_rows": comparison_rows(results),
        "methods": methods(results, data),
        "notes": notes(results, data, figures),
        "meta": {"generated_at": _generated_at(), "oncosurg_version": __version__, "versions": _versions(),
                 "protocol_path": display_path(protocol.source), "protocol_sha256": _sha256(protocol.source),
                 "source": display_path(results["provenance"].get("source")),
                 "description": protocol.description,
                 "synthetic": _synthetic(engine, results)},
    }


def _figures(data: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
    from oncosurg.report import plots
    from oncosurg.report.flow import flow_figure

    figures: list[dict[str, Any]] = []
    progress("figure: cohort flow")
    flow = data["flow"]
    pathway = flow.get("pathway", True)
    figures.append({"id": "flow", "kind": "flow", "title": "Cohort flow",
                    "caption": "Patients in the registry, exclusions by the protocol's cohort definition, "
                               + ("and the pathway from the index treatment to hepatectomy." if pathway else
                                  "and the evaluated patients treated in-house or referred."),
                    "alt": (f"Flow diagram: {flow['registered']} in the registry, {flow['evaluated']} evaluated, "
                            + " and ".join(f"{a['n']} {a['key'].replace('_', '-')}" for a in flow["arms"])
                            + (f", {flow['operated']} operated, {flow['hepatectomy']} hepatectomies" if pathway
                               else "")),
                    **plots.save(flow_figure(flow))})
    for km in data["km"]:
        progress(f"figure: {km['id']}")
        ci = f"{km['conf_type']} transform (R survfit conf.type = \"{km['conf_type']}\")"
        rows = ("numbers at risk" if km["by"] else
                "numbers at risk with cumulative censored patients and events")
        what = "Reverse Kaplan-Meier estimate of follow-up" if km["reverse"] else "Kaplan-Meier estimate"
        caption = (f"{what}, {km['population_text']}"
                   + (f", {km['by_title'].lower()}" if km["by"] else "")
                   + f". Shaded: pointwise 95% confidence band, {ci}; ticks: censored patients; dashed lines: "
                     f"median. Below the axis: {rows} at each time shown.")
        figures.append({"id": f"km-{km['id']}", "kind": "km", "title": km["title"], "caption": caption,
                        "warnings": km["warnings"], "data": km,
                        "alt": f"Kaplan-Meier plot: {km['title']}", **plots.save(plots.km_figure(km))})
    for cmp in data.get("comparisons", []):
        progress(f"figure: {cmp['id']}")
        what = {"kaplan_meier": "Kaplan-Meier estimates by group",
                "landmark": f"Landmark analysis at {cmp['result'].get('landmark') or 0:g} months: patients alive and "
                            "under follow-up at the landmark, grouped by their status then, time from the landmark",
                "simon_makuch": "Simon-Makuch estimates: patients count in the unexposed group until their exposure "
                                "and in the exposed group after it"}[cmp["method"]]
        entry = cmp["result"].get("entry")
        caption = (f"{what}" + (f"; delayed entry at the {entry.replace('_', ' ')} (left truncation)" if entry else "")
                   + f". Shaded: pointwise 95% confidence band ({cmp['conf_type']}); ticks: censored patients. "
                   + ("Statistics in the figure: " + "; ".join(cmp["stats_lines"]) + "." if cmp["stats_lines"] else ""))
        figures.append({"id": cmp["id"], "kind": "km", "title": cmp["title"], "caption": caption,
                        "warnings": cmp["warnings"], "data": cmp, "alt": f"Comparison: {cmp['title']}",
                        **plots.save(plots.km_figure(cmp))})
    for model in data["cox"]:
        if not model["terms"]:
            continue
        progress(f"figure: {model['id']}")
        caption = (f"Hazard ratios with Wald 95% confidence intervals from a Cox model ({model['ties']} ties); "
                   f"{model['n']} patients, {model['events']} events"
                   + (f", {model['dropped_incomplete']} left out for a missing covariate" if model["dropped_incomplete"]
                      else "") + f"; concordance {model['concordance']:.2f}.")
        ph = model.get("ph")
        if ph:
            caption += (" Proportional hazards (R cox.zph, KM transform): "
                        + "; ".join(f"{t['label']} p = {fmt_p(t['p'])}" for t in ph["terms"])
                        + f"; global p = {fmt_p(ph['global']['p'])} ({ph['global']['df']} df).")
        figures.append({"id": model["id"], "kind": "forest", "title": model["title"], "caption": caption,
                        "warnings": model["warnings"], "alt": f"Forest plot: {model['title']}",
                        **plots.save(plots.forest_figure(model))})
        if ph:
            progress(f"figure: {model['id']} proportional hazards")
            figures.append({
                "id": f"{model['id']}-ph", "kind": "schoenfeld", "title": f"{model['title']}: proportional hazards",
                "caption": "Scaled Schoenfeld residuals (R cox.zph) against the Kaplan-Meier transform of time, one "
                           "panel per coefficient; line: least-squares slope (flat when the hazard ratio is constant), "
                           "dashed: the fitted log hazard ratio. "
                           + "; ".join(f"{t['label']}: chi-square {t['chisq']:.2f}, p = {fmt_p(t['p'])}"
                                       for t in ph["terms"])
                           + f"; global chi-square {ph['global']['chisq']:.2f} on {ph['global']['df']} df, "
                             f"p = {fmt_p(ph['global']['p'])}.",
                "warnings": [], "alt": f"Scaled Schoenfeld residual plots: {model['title']}",
                **plots.save(plots.schoenfeld_figure(ph))})
    for i, fig in enumerate(figures, start=1):
        fig["number"] = i
        fig["stem"] = f"figure-{i}-{fig['id']}"
    return figures


def write_report(folder: str | Path, engine: sa.Engine, protocol: Protocol, results: dict[str, Any], *,
                 formats: Sequence[str] = FORMATS, progress: Progress | None = None) -> ReportFiles:
    """Write the report for ``results`` (the ``analyze`` JSON of ``protocol`` on ``engine``) into ``folder``."""
    from oncosurg.report.data import report_data
    from oncosurg.report.export import table_one_csv, table_one_docx, table_one_xlsx

    step = progress or (lambda _m: None)
    out = ReportFiles(Path(folder))
    out.folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    out.add(out.folder / "results.json", json.dumps(results, indent=2))
    data = report_data(engine, protocol, results, progress=step)
    out.seconds["data"] = time.perf_counter() - started
    t0 = time.perf_counter()
    figures = _figures(data, step)
    for fig in figures:
        out.add(out.folder / "figures" / f"{fig['stem']}.png", fig["png"])
        out.add(out.folder / "figures" / f"{fig['stem']}.svg", fig["svg"])
    out.seconds["figures"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    step("Table 1 files")
    tables = data["table_one"]
    for i, table in enumerate(tables):
        suffix = chr(ord("a") + i) if len(tables) > 1 else ""
        out.add(out.folder / "tables" / f"table-1{suffix}-{table['by'] or 'all'}.csv", table_one_csv(table))
    out.add(out.folder / "tables" / "table-1.xlsx", table_one_xlsx(tables))
    out.add(out.folder / "tables" / "table-1.docx", table_one_docx(tables, results["protocol"]["title"]))
    model = build_model(engine, protocol, results, data, figures)
    model["files"] = [str(p.relative_to(out.folder)) for p in out.files]
    if "pdf" in formats:
        model["files"].append("report.pdf")
    if "html" in formats:
        model["files"].append("index.html")
    model["files"].append("report-data.json")
    serialisable = {k: v for k, v in data.items()}
    out.add(out.folder / "report-data.json", json.dumps(serialisable, indent=1, default=str))
    out.seconds["tables"] = time.perf_counter() - t0
    if "html" in formats:
        from oncosurg.report.html import render_html

        step("HTML")
        t0 = time.perf_counter()
        out.add(out.folder / "index.html", render_html(model))
        out.seconds["html"] = time.perf_counter() - t0
    if "pdf" in formats:
        from oncosurg.report.pdf import render_pdf

        step("PDF")
        t0 = time.perf_counter()
        out.add(out.folder / "report.pdf", render_pdf(model))
        out.seconds["pdf"] = time.perf_counter() - t0
    out.seconds["total"] = time.perf_counter() - started
    return out
