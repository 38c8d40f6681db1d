"""Words and numbers of the report: the results paragraph, estimates, p-values, labels.

Everything here turns *results* (the ``analyze`` JSON object) into display strings; nothing reads
the database.  The results paragraph is a list of segments, ``("text", s)`` or
``("ref", endpoint_id, s)``, so the HTML and PDF renderers can link each number to its endpoint row.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from oncosurg.report.spec import CONTEXT_FIELDS, PLACEHOLDER_RE
from oncosurg.report.terminal import NOT_ESTIMABLE, format_estimate

Segment = tuple[str, ...]

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_words(n: int) -> str:
    """English words for 0-99 (``27`` → ``twenty-seven``); digits beyond that, as journals do."""
    if n < 0 or n > 99:
        return str(n)
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens - 2] + (f"-{_ONES[ones]}" if ones else "")


def fmt_num(x: float | None, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "NR"
    return f"{x:.{digits}f}"


def fmt_p(p: float | None) -> str:
    """p-values as journals print them: <0.001, 0.004, 0.03, 0.41."""
    if p is None or math.isnan(p):
        return "—"
    if p < 0.001:
        return "<0.001"
    if p < 0.01:
        return f"{p:.3f}"
    return f"{p:.2f}"


def fmt_date(iso: str | None) -> str:
    """``2006-04-30`` → ``30 Apr 2006``."""
    if not iso:
        return "—"
    d = dt.date.fromisoformat(str(iso)[:10])
    return f"{d.day} {d:%b %Y}"


def display_path(value: Any, *, cwd: Path | None = None) -> str:
    """A file or database location as a report shows it: relative to the working folder, else the file name.

    ``sqlite:////home/me/registry.db`` run from ``/home/me`` → ``sqlite:///registry.db``; a path outside
    the working folder keeps only its name (a report never prints the author's folders); a file
    bundled with oncosurg is ``name (bundled with oncosurg)``; other URLs (PostgreSQL) are unchanged.
    """
    text = "" if value is None else str(value)
    if text.startswith("sqlite:///"):
        return "sqlite:///" + display_path(text[len("sqlite:///"):], cwd=cwd) if text[len("sqlite:///"):] else text
    if not text or "://" in text:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        return text
    here = (cwd or Path.cwd()).resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(here):
        return resolved.relative_to(here).as_posix()
    package = Path(__file__).resolve().parents[1]
    if resolved.is_relative_to(package) or resolved.parent == (package / "studies").resolve():
        return f"{path.name} (bundled with oncosurg)"
    return path.name


def unit_word(unit: str | None, value: float | None = None) -> str:
    unit = unit or ""
    if unit in ("months", "cycles") and value is not None and float(value) == 1:
        return unit[:-1]
    return unit


def _median_text(ep: dict[str, Any]) -> str:
    if not ep.get("n"):
        return NOT_ESTIMABLE
    if ep.get("median") is None:
        return "not reached"
    value = ep["median"]
    number = f"{value:g}" if float(value).is_integer() else f"{value:.1f}"
    return f"{number} {unit_word(ep.get('unit'), value)}".strip()


def _ci_text(ep: dict[str, Any]) -> str:
    level = "95%"
    if ep["kind"] == "proportion":
        if not ep["denominator"]:
            return ""
        return f"{level} CI {100 * ep['ci_low']:.1f}–{100 * ep['ci_high']:.1f}%"
    if not ep.get("n"):
        return ""
    low = "not estimable" if ep.get("ci_low") is None else f"{ep['ci_low']:.1f}"
    high = "not reached" if ep.get("ci_high") is None else f"{ep['ci_high']:.1f}"
    if ep.get("ci_low") is None and ep.get("ci_high") is None:
        return f"{level} CI not estimable"
    return f"{level} CI {low}–{high}"


def placeholder(ep: dict[str, Any], field: str | None) -> str:
    """The text of ``{endpoint}`` or ``{endpoint.field}`` (fields: :data:`spec.PLACEHOLDER_FIELDS`)."""
    kind = ep["kind"]
    if kind == "count":
        n = int(ep["n"])
        return {"words": number_words(n), "Words": number_words(n).capitalize()}.get(field or "n", str(n))
    if kind == "proportion":
        num, den = ep["numerator"], ep["denominator"]
        pct = NOT_ESTIMABLE if not den else f"{100 * ep['estimate']:.1f}%"
        values = {
            "numerator": str(num), "denominator": str(den), "pct": pct, "ci": _ci_text(ep),
            "frac": f"{num}/{den}", "n_pct": f"{num} ({pct})", "numerator_words": number_words(num),
            "Numerator_words": number_words(num).capitalize(),
            "full": f"{num}/{den} ({pct}; {_ci_text(ep)})" if den else NOT_ESTIMABLE,
        }
        if not den:
            values |= {"n_pct": NOT_ESTIMABLE, "ci": NOT_ESTIMABLE}
        return values.get(field or "", f"{num}/{den} ({pct})" if den else NOT_ESTIMABLE)
    if kind == "median":
        if ep.get("median") is None:
            return str(ep.get("n", 0)) if field == "n" else NOT_ESTIMABLE
        med = ep["median"]
        digits = 0 if all(float(ep[k]).is_integer() for k in ("q1", "q3", "median")) else 1
        words = number_words(int(med)) if float(med).is_integer() else _median_text(ep)
        values = {
            "median": _median_text(ep), "iqr": f"{ep['q1']:.{digits}f}–{ep['q3']:.{digits}f}",
            "range": f"{ep['min']:g}–{ep['max']:g}", "n": str(ep["n"]), "words": words,
            "Words": words.capitalize(),
        }
        return values.get(field or "", _median_text(ep))
    if kind == "cumulative_incidence":
        shown = [a for a in ep.get("at", []) if a.get("cif") is not None]
        unit = ep.get("unit") or "months"
        at = ", ".join(f"{100 * a['cif']:.1f}% at {a['time']:g} {unit_word(unit, a['time'])} "
                       f"(95% CI {_pct(a.get('lower'))}–{_pct(a.get('upper'))}%)" for a in shown) or "not estimable"
        values = {"at": at, "n": str(ep["n"]), "events": str(ep["events"]), "competing": str(ep["competing"])}
        return values.get(field or "at", at)
    values = {"median": _median_text(ep), "ci": _ci_text(ep), "n": str(ep["n"]), "events": str(ep["events"]),
              "full": f"{_median_text(ep)} ({_ci_text(ep)})"}
    if not ep.get("n"):
        values |= {"ci": NOT_ESTIMABLE, "full": NOT_ESTIMABLE}
    if field == "at":
        unit = ep.get("unit") or "months"
        return ", ".join(f"{100 * a['surv']:.1f}% at {a['time']:g} {unit_word(unit, a['time'])}"
                         for a in ep.get("at", []) if a.get("surv") is not None) or "not estimable"
    if field is None:
        return values["full"] if ep.get("median") is not None else values["median"]
    return values[field]


def _pct(x: float | None) -> str:
    return "NE" if x is None else f"{100 * x:.1f}"


def _month(iso: str | None) -> str:
    if not iso:
        return "—"
    d = dt.date.fromisoformat(str(iso)[:10])
    return f"{d:%B %Y}"


def _long_date(iso: str | None) -> str:
    if not iso:
        return "—"
    d = dt.date.fromisoformat(str(iso)[:10])
    return f"{d.day} {d:%B %Y}"


def context_placeholder(results: dict[str, Any], name: str, field: str) -> str:
    """``{accrual.start}`` (month and year), ``{accrual.start_date}``, ``{cohort.data_cut}``, ``{cohort.n}``…"""
    acc = results["protocol"]["accrual"]
    cohort = results["cohort"]
    if name == "accrual":
        value = acc["start" if field.startswith("start") else "end"]
        if value is None:
            return "the start of the registry" if field.startswith("start") else "the data cut"
        return _month(value) if field in ("start", "end") else _long_date(value)
    if field == "n":
        return str(cohort["n"])
    if field == "data_cut":
        return _long_date(cohort.get("data_cut"))
    return _month(cohort.get("index_first" if field == "first_index" else "index_last"))


def comparison_placeholder(cmp: dict[str, Any], field: str | None) -> str:
    """``{comparison}``: the hazard ratio with its CI; fields hr, ci, p, n, events, landmark, full."""
    hr = cmp.get("hr") or {}
    if hr and not hr.get("estimable", True):
        hr = {}
    test = cmp.get("test") or {}
    p = test.get("p") if test.get("p") is not None else hr.get("p")
    if hr.get("hr") is None:
        ratio = ci = "not estimable"
    else:
        ratio = f"{hr['hr']:.2f}"
        lo = "NE" if hr.get("lower") is None else f"{hr['lower']:.2f}"
        hi = "NE" if hr.get("upper") is None else f"{hr['upper']:.2f}"
        ci = f"95% CI {lo}–{hi}"
    p_text = fmt_p(p)
    p_text = f"p {'< ' + p_text[1:] if p_text.startswith('<') else '= ' + p_text}"
    landmark = cmp.get("landmark")
    values = {"hr": ratio, "ci": ci, "p": p_text, "n": str(cmp.get("n", "")),
              "events": str(hr.get("events", "")),
              "landmark": "—" if landmark is None else f"{landmark:g} {unit_word('months', landmark)}",
              "full": f"HR {ratio} ({ci}; {p_text})" if hr.get("hr") is not None else "not estimable"}
    return values.get(field or "", f"{ratio} ({ci})" if hr.get("hr") is not None else "not estimable")


def results_segments(results: dict[str, Any], template: str | None) -> list[list[Segment]]:
    """Paragraphs of segments; ``template`` is the protocol's ``report.results`` text (or None).

    Segments are ``("text", s)``, ``("ref", endpoint_id, s)`` (linked to the endpoint row) or
    ``("cref", comparison_id, s)`` (linked to the comparisons table).
    """
    endpoints = results["endpoints"]
    comparisons = results.get("comparisons", {})
    if template is None:
        paragraph: list[Segment] = []
        for eid, ep in endpoints.items():
            paragraph += [("text", f"{ep['label']}: "), ("ref", eid, placeholder(ep, None)), ("text", ". ")]
        return [paragraph] if paragraph else []
    paragraphs: list[list[Segment]] = []
    for block in [b for b in template.split("\n\n") if b.strip()]:
        block = " ".join(block.split())
        segments: list[Segment] = []
        pos = 0
        for match in PLACEHOLDER_RE.finditer(block):
            if match.start() > pos:
                segments.append(("text", block[pos:match.start()]))
            eid, fld = match.group(1), match.group(2)
            if eid in endpoints:
                segments.append(("ref", eid, placeholder(endpoints[eid], fld)))
            elif eid in comparisons:
                segments.append(("cref", eid, comparison_placeholder(comparisons[eid], fld)))
            elif eid in CONTEXT_FIELDS and fld:
                segments.append(("text", context_placeholder(results, eid, fld)))
            else:  # pragma: no cover - report_spec checked every placeholder
                segments.append(("text", match.group(0)))
            pos = match.end()
        if pos < len(block):
            segments.append(("text", block[pos:]))
        paragraphs.append(segments)
    return paragraphs


def endpoint_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """The endpoint table: one display row per endpoint (same formatter as the terminal table)."""
    rows = []
    for eid, ep in results["endpoints"].items():
        estimate, ci, n = format_estimate(ep)
        if ep["kind"] in ("km_median", "followup_median") and ep["n"] and ep.get("ci_low") is None \
                and ep.get("ci_high") is None:
            ci = f"not estimable ({ep['conf_type']})"
        rows.append({"id": eid, "label": ep["label"], "estimate": estimate, "ci": ci, "n": n,
                     "definition": ep.get("definition", ""), "population": ep.get("population", ""),
                     "published": ep.get("published", {}).get("text", ""), "kind": ep["kind"]})
    return rows


def comparison_rows(results: dict[str, Any]) -> list[dict[str, str]]:
    """The comparisons table: one display row per comparison (method, n, hazard ratio, test)."""
    from oncosurg.report.terminal import format_comparison

    rows = []
    for cid, cmp in results.get("comparisons", {}).items():
        hr, p, n = format_comparison(cmp)
        method = {"kaplan_meier": "Kaplan-Meier, log-rank", "landmark": "Landmark",
                  "time_dependent_cox": "Time-dependent Cox", "simon_makuch": "Simon-Makuch"}[cmp["method"]]
        if cmp.get("landmark") is not None:
            method += f" at {cmp['landmark']:g} months"
        if cmp.get("entry"):
            method += f"; entry at {cmp['entry'].replace('_', ' ')}"
        test = (cmp.get("test") or {}).get("name") or ("Wald test of the hazard ratio" if cmp.get("hr") else "")
        rows.append({"id": cid, "label": cmp["label"], "method": method, "n": n, "hr": hr, "p": p, "test": test,
                     "contrast": (cmp.get("hr") or {}).get("label", ""), "population": cmp.get("population", "")})
    return rows


#: Display names of analysis-view columns and codes (Table 1, figures).
COLUMN_LABELS: dict[str, str] = {
    "sex": "Sex", "age_at_cetuximab": "Age at cetuximab start, years", "primary_site": "Primary tumour site",
    "primary_side": "Primary tumour side", "ras_status": "RAS status", "liver_mets_count": "Number of liver metastases",
    "largest_met_mm": "Largest metastasis, mm", "bilobar": "Bilobar metastases",
    "extrahepatic_disease": "Extrahepatic disease", "prior_chemo_lines": "Prior chemotherapy lines",
    "cetuximab_partner": "Cetuximab partner drug", "cetuximab_cycles": "Cetuximab cycles",
    "best_response": "Best response (RECIST)", "referral": "Referral", "operated": "Operated",
    "hepatectomy": "Hepatectomy", "major_hepatectomy": "Major hepatectomy", "margin": "Resection margin",
    "os_months": "Overall survival, months", "pfs_months": "Progression-free survival, months",
    "followup_from_surgery_months": "Follow-up after surgery, months",
}
CODE_LABELS: dict[str, str] = {
    "F": "Female", "M": "Male", "in_house": "In-house", "referred": "Referred", "wild_type": "Wild-type",
    "mutant": "Mutant", "not_tested": "Not tested", "colon": "Colon", "rectum": "Rectum", "left": "Left",
    "right": "Right", "irinotecan": "Irinotecan", "oxaliplatin": "Oxaliplatin", "both": "Both",
    "none": "None", "other": "Other", "CR": "Complete response", "PR": "Partial response",
    "SD": "Stable disease", "PD": "Progressive disease", "NE": "Not evaluable",
    "hepatectomy": "Hepatectomy", "exploration_only": "Exploration only", "ablation_only": "Ablation only",
}
def time_axis(protocol: Any, time: str) -> str:
    """The x-axis label of a time column: where its clock starts (the outcome's origin)."""
    for outcome in getattr(protocol, "outcomes", ()):
        if time in (f"{outcome.id}_months", f"{outcome.id}_days"):
            unit = "Months" if time.endswith("_months") else "Days"
            origin = outcome.origin
            if origin == "index":
                label = protocol.index.label if protocol.index is not None else ""
                return f"{unit} since {label[0].lower()}{label[1:]}" if label else f"{unit} since the index"
            words = origin.split(" where ")[0].strip().replace("_", " ")
            return f"{unit} since the first {words}" if " where " in origin else f"{unit} since {words}"
    return column_label(time)


def column_label(name: str) -> str:
    return COLUMN_LABELS.get(name, name.replace("_", " ").capitalize())


def code_label(code: Any) -> str:
    if isinstance(code, bool):
        return "Yes" if code else "No"
    return CODE_LABELS.get(str(code), str(code))
