"""Report building blocks: Table 1 statistics, the [report] table checks, the results-paragraph wording."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from oncosurg.ingest.csv import read_registry_csv
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import ProtocolError, protocol_from_dict
from oncosurg.reference import write_reference_csv
from oncosurg.report.build import write_report
from oncosurg.report.data import km_times
from oncosurg.report.spec import report_spec
from oncosurg.report.table_one import Variable, categorical_test, smd_categorical, smd_numeric, table_one
from oncosurg.report.text import number_words, placeholder, results_segments
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_records

ROOT = Path(__file__).resolve().parents[1]
SEED = tomllib.loads((ROOT / "studies" / "rescue-cetuximab-2007.toml").read_text(encoding="utf-8"))


# ------------------------------------------------------------------------------------------ Table 1
def test_binary_smd_is_the_textbook_formula() -> None:
    p, q = 0.4, 0.2
    expected = abs(p - q) / math.sqrt((p * (1 - p) + q * (1 - q)) / 2)
    assert smd_categorical(np.array([1 - p, p]), np.array([1 - q, q])) == pytest.approx(expected)
    assert smd_categorical(np.array([p, 1 - p]), np.array([q, 1 - q])) == pytest.approx(expected)


def test_multinomial_smd_is_symmetric_and_zero_for_equal_groups() -> None:
    a, b = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.3, 0.5])
    assert smd_categorical(a, b) == pytest.approx(smd_categorical(b, a))
    assert smd_categorical(a, a) == 0.0


def test_numeric_smd_uses_the_pooled_sd() -> None:
    a, b = np.array([1.0, 2, 3, 4]), np.array([2.0, 4, 6, 8])
    expected = abs(a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert smd_numeric(a, b) == pytest.approx(expected)


def test_chi_square_with_yates_and_fisher_for_small_counts() -> None:
    big = np.array([[30.0, 20], [25, 40]])
    p, test = categorical_test(big)
    assert test == "chi-square"
    assert p == pytest.approx(stats.chi2_contingency(big, correction=True).pvalue)
    small = np.array([[3.0, 1], [1, 3]])
    p, test = categorical_test(small)
    assert test == "Fisher"
    assert p == pytest.approx(stats.fisher_exact(small.astype(int)).pvalue)  # R fisher.test: 0.4857
    assert p == pytest.approx(0.4857143, abs=1e-6)


def test_table_one_rows_from_counts() -> None:
    variables = [Variable("sex", "Sex", "categorical", ("F", "M")), Variable("bilobar", "Bilobar", "binary"),
                 Variable("age", "Age", "numeric")]
    counts = {
        "sex": {1: {"F": 3, "M": 1, None: 2}, 0: {"F": 1, "M": 3}},
        "bilobar": {1: {True: 2, False: 2, None: 2}, 0: {True: 4}},
        "age": {1: {50.0: 2, 60.0: 2, None: 2}, 0: {70.0: 3, 72.0: 1}},
    }
    table = table_one(variables, counts, [(1, "A", 6), (0, "B", 4)])
    rows = {(r["variable"], r["level"]): r for r in table["rows"]}
    # percentages of patients with a recorded value (3 of 4, not 3 of 6)
    assert rows[("sex", "F")]["cells"] == ["3 (75)", "1 (25)"]
    assert rows[("sex", None)]["missing"] == [2, 0]
    assert rows[("bilobar", None)]["cells"] == ["2 (50)", "4 (100)"]
    age = rows[("age", None)]
    assert age["cells"] == ["55.0 (50.0–60.0)", "70.0 (70.0–70.5)"]  # one number of decimals per row
    a, b = np.repeat([50.0, 60.0], 2), np.array([70.0, 70, 70, 72])
    assert age["p"] == pytest.approx(stats.mannwhitneyu(a, b, method="asymptotic").pvalue)
    assert age["test"] == "Wilcoxon"
    assert any("recorded value" in n for n in table["notes"])


def test_three_groups_use_kruskal_wallis_and_the_largest_smd() -> None:
    variables = [Variable("age", "Age", "numeric")]
    counts = {"age": {"a": {1.0: 1, 2.0: 1, 3.0: 1}, "b": {4.0: 1, 5.0: 1, 6.0: 1}, "c": {7.0: 1, 8.0: 1, 9.0: 1}}}
    table = table_one(variables, counts, [("a", "A", 3), ("b", "B", 3), ("c", "C", 3)])
    row = table["rows"][1]
    assert row["test"] == "Kruskal-Wallis"
    assert row["p"] == pytest.approx(stats.kruskal([1, 2, 3], [4, 5, 6], [7, 8, 9]).pvalue)
    assert row["smd"] == pytest.approx(6.0)  # (8 - 2) / 1


# -------------------------------------------------------------------------------- [report] checks
def _with_report(report: dict) -> dict:
    data = copy.deepcopy(SEED)
    data["report"] = report
    return data


@pytest.mark.parametrize(("report", "message"), [
    ({"tables": []}, "report.tables: unknown key"),
    ({"table_one_by": ["resectedd"]}, "report.table_one_by[0]: 'resectedd' is neither a population nor a column"),
    ({"table_one_variables": ["agee"]}, "report.table_one_variables[0]: unknown column 'agee'"),
    ({"results": "{nope} patients"}, "report.results: {nope} names no endpoint"),
    ({"results": "{operated.pct}"}, "report.results: {operated.pct}: a count endpoint has the fields"),
    ({"km": [{"endpoint": "operated"}]}, "report.km[0].endpoint: must name a km_median or followup_median"),
    ({"km": [{"endpoint": "os_median", "times": [12, 6]}]}, "report.km[0].times: must be an increasing list"),
    ({"km": [{"endpoint": "os_median", "by": "nowhere"}]}, "report.km[0].by: 'nowhere' is neither"),
    ({"cox": [{"title": "x", "time": "os_months", "event": "os_event", "covariates": ["agee"]}]},
     "report.cox[0].covariates[0]: 'agee' is neither"),
])
def test_report_table_problems_are_named(report: dict, message: str) -> None:
    from oncosurg.protocol.engine import compile_protocol

    protocol = protocol_from_dict(_with_report(report), source="seed.toml")
    columns = set(compile_protocol(protocol).view.types)
    with pytest.raises(ProtocolError) as info:
        report_spec(protocol, columns)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_report_must_be_a_table() -> None:
    data = copy.deepcopy(SEED)
    data["report"] = "yes"
    with pytest.raises(ProtocolError, match="report: must be a table"):
        protocol_from_dict(data)


def test_default_spec_draws_every_time_to_event_endpoint() -> None:
    data = copy.deepcopy(SEED)
    del data["report"]
    spec = report_spec(protocol_from_dict(data))
    assert [k.endpoint for k in spec.km] == ["os_median", "pfs_median", "followup_median"]
    assert spec.table_one_by == () and spec.results is None


# ------------------------------------------------------------------------------------------ wording
def test_number_words() -> None:
    assert [number_words(n) for n in (0, 6, 13, 20, 27, 99, 100)] == [
        "zero", "six", "thirteen", "twenty", "twenty-seven", "ninety-nine", "100"]


def test_placeholders() -> None:
    prop = {"kind": "proportion", "numerator": 9, "denominator": 133, "estimate": 9 / 133, "ci_low": 0.0314,
            "ci_high": 0.1246}
    assert placeholder(prop, None) == "9/133 (6.8%)"
    assert placeholder(prop, "ci") == "95% CI 3.1–12.5%"
    assert placeholder(prop, "n_pct") == "9 (6.8%)"
    km = {"kind": "km_median", "n": 25, "events": 15, "median": 13.01, "ci_low": 10.41, "ci_high": None,
          "unit": "months"}
    assert placeholder(km, None) == "13.0 months (95% CI 10.4–not reached)"
    assert placeholder({**km, "median": None, "ci_low": None}, None) == "not reached"
    med = {"kind": "median", "n": 27, "median": 6.0, "q1": 5.0, "q3": 7.0, "min": 4.0, "max": 10.0, "unit": "cycles"}
    assert (placeholder(med, "words"), placeholder(med, "iqr"), placeholder(med, None)) == ("six", "5–7", "6 cycles")


def test_results_paragraphs_split_on_blank_lines() -> None:
    results = {"endpoints": {"operated": {"kind": "count", "n": 27, "label": "Operated"}}}
    paragraphs = results_segments(results, "A total of {operated} patients.\n\n{operated.Words} again.")
    assert paragraphs == [[("text", "A total of "), ("ref", "operated", "27"), ("text", " patients.")],
                          [("ref", "operated", "Twenty-seven"), ("text", " again.")]]
    fallback = results_segments(results, None)
    assert fallback == [[("text", "Operated: "), ("ref", "operated", "27"), ("text", ". ")]]


def test_at_risk_times_are_round_months() -> None:
    assert km_times(37.0) == [0, 6, 12, 18, 24, 30, 36]
    assert km_times(100.0) == [0, 12, 24, 36, 48, 60, 72, 84, 96]
    assert km_times(5.0) == [0, 1, 2, 3, 4, 5]


# -------------------------------------------------------------------- a protocol without [report]
def test_a_protocol_without_report_table_still_reports(tmp_path: Path) -> None:
    csv_path = write_reference_csv(tmp_path / "ref.csv")
    parsed = read_registry_csv(csv_path)
    engine = open_store("sqlite://")
    import_records(engine, parsed.records, source=str(csv_path), sha256=parsed.sha256, rows=parsed.rows)
    data = copy.deepcopy(SEED)
    del data["report"]
    protocol = protocol_from_dict(data, source=str(ROOT / "studies" / "rescue-cetuximab-2007.toml"))
    results = run_protocol(engine, protocol, provenance={"source": "ref.csv", "records": parsed.rows})
    files = write_report(tmp_path / "out", engine, protocol, results, formats=("html",))
    html = (tmp_path / "out" / "index.html").read_text(encoding="utf-8")
    assert "Table 1." in html and "All patients" in html  # one Table 1 for the whole cohort
    # flow + 3 Kaplan-Meier figures + the landmark, Simon-Makuch and referral comparisons (the time-dependent Cox
    # model is a row of the comparisons table)
    assert html.count('<figure id="figure-') == 7
    assert "SYNTHETIC DATA" in html  # the reference centre is named '(synthetic)'
    assert not (tmp_path / "out" / "report.pdf").exists()
    assert files.seconds["total"] > 0


def test_the_report_docs_example_is_a_valid_report_table() -> None:
    import re

    from oncosurg.protocol.engine import compile_protocol

    text = (ROOT / "docs" / "report.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "[report]" in b)
    protocol = protocol_from_dict(_with_report(tomllib.loads(block)["report"]), source="docs/report.md")
    spec = report_spec(protocol, set(compile_protocol(protocol).view.types))
    assert spec.table_one_by == ("resected", "referral") and len(spec.km) == 1 and len(spec.cox) == 1


def test_an_empty_cohort_still_reports(tmp_path: Path) -> None:
    csv_path = write_reference_csv(tmp_path / "ref.csv")
    parsed = read_registry_csv(csv_path)
    engine = open_store("sqlite://")
    import_records(engine, parsed.records, source=str(csv_path), sha256=parsed.sha256, rows=parsed.rows)
    data = copy.deepcopy(SEED)
    data["cohort"]["accrual_start"], data["cohort"]["accrual_end"] = dt.date(2030, 1, 1), dt.date(2030, 12, 31)
    protocol = protocol_from_dict(data, source=str(ROOT / "studies" / "rescue-cetuximab-2007.toml"))
    results = run_protocol(engine, protocol, provenance={"source": "ref.csv", "records": parsed.rows})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_report(tmp_path / "out", engine, protocol, results, formats=("html",))
    report_data = json.loads((tmp_path / "out" / "report-data.json").read_text())
    assert report_data["flow"]["evaluated"] == 0
    assert report_data["flow"]["exclusions"][0]["n"] == 151
