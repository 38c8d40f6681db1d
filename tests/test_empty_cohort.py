"""Empty and mostly excluded cohorts are said out loud (issue 9, item 4).

A registry whose records all fall outside the protocol's accrual window must not produce a
confident study: estimates are "not estimable (n = 0)" (never "not reached"), the exclusion is a
warning naming how many records and which flow step, and ``analyze``/``report`` exit non-zero
unless ``--allow-empty``.
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.protocol.model import resolve_protocol
from oncosurg.report.terminal import format_estimate

NOT_ESTIMABLE = "not estimable (n = 0)"

SEED_TEXT = resolve_protocol("rescue-cetuximab-2007").read_text(encoding="utf-8")


def _protocol(tmp_path: Path, start: str, end: str) -> str:
    text = re.sub(r"(?m)^accrual_start = .*$", f"accrual_start = {start}", SEED_TEXT)
    text = re.sub(r"(?m)^accrual_end = .*$", f"accrual_end = {end}", text)
    path = tmp_path / f"window-{start}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, reference_csv: Path) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('empty') / 'registry.db'}"
    assert CliRunner().invoke(cli, ["import", str(reference_csv), "--db", url]).exit_code == 0
    return url


def test_analyze_refuses_a_cohort_outside_the_window(tmp_path: Path, registry: str) -> None:
    protocol = _protocol(tmp_path, "1990-01-01", "1990-12-31")
    result = CliRunner().invoke(cli, ["analyze", "--db", registry, "--protocol", protocol])
    assert result.exit_code == 3
    assert "the cohort is empty: all 151 registered patient(s) were excluded" in result.output
    assert "151 by 'index_date within the accrual window'" in result.output
    assert "1990-01-01 to 1990-12-31" in result.output  # the protocol's window beside the registry's dates
    assert "--allow-empty" in result.output
    assert "not reached" not in result.output
    assert NOT_ESTIMABLE in result.output


def test_allow_empty_gives_not_estimable_results_and_the_warning(tmp_path: Path, registry: str) -> None:
    protocol = _protocol(tmp_path, "1990-01-01", "1990-12-31")
    result = CliRunner().invoke(cli, ["analyze", "--db", registry, "--protocol", protocol, "--json",
                                      "--allow-empty"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    assert results["cohort"]["n"] == 0
    (warning,) = [w for w in results["warnings"] if w["code"] == "cohort-empty"]
    assert "151" in warning["message"] and "accrual window" in warning["message"]
    for ep in results["endpoints"].values():
        if ep["kind"] != "count":
            assert format_estimate(ep)[0] == NOT_ESTIMABLE, ep


def test_report_writes_nothing_for_an_empty_cohort(tmp_path: Path, registry: str) -> None:
    protocol = _protocol(tmp_path, "1990-01-01", "1990-12-31")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--db", registry, "--protocol", protocol, "--out", str(out)])
    assert result.exit_code == 3
    assert "the cohort is empty" in result.output
    assert not out.exists()


@pytest.mark.slow
def test_report_with_allow_empty_says_so(tmp_path: Path, registry: str) -> None:
    protocol = _protocol(tmp_path, "1990-01-01", "1990-12-31")
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--db", registry, "--protocol", protocol, "--out", str(out),
                                      "--allow-empty"])
    assert result.exit_code == 0, result.output
    html = unescape((out / "index.html").read_text(encoding="utf-8"))
    assert "not reached" not in html.replace("'not reached' when the curve does not fall to 50%", "")
    assert NOT_ESTIMABLE in html
    assert "the cohort is empty: all 151 registered patient(s) were excluded" in html
    data = json.loads((out / "results.json").read_text())
    assert data["warnings"] and data["cohort"]["n"] == 0


def test_a_cohort_that_excludes_most_records_is_a_warning(tmp_path: Path, registry: str) -> None:
    protocol = _protocol(tmp_path, "2004-02-01", "2004-05-31")
    result = CliRunner().invoke(cli, ["analyze", "--db", registry, "--protocol", protocol, "--json"])
    assert result.exit_code == 0, result.output
    results = json.loads(result.output)
    kept = results["cohort"]["n"]
    assert 0 < kept < 151 / 2
    (warning,) = [w for w in results["warnings"] if w["code"] == "cohort-most-excluded"]
    assert f"the cohort keeps {kept} of 151 registered patient(s): {151 - kept}" in warning["message"]
    assert "by 'index_date within the accrual window'" in warning["message"]


def test_the_seed_cohort_has_no_cohort_warning(registry: str) -> None:
    results = json.loads(CliRunner().invoke(cli, ["analyze", "--db", registry, "--json"]).output)
    assert not [w for w in results["warnings"] if w["code"].startswith("cohort-")]


def test_an_empty_population_is_not_estimable_never_not_reached() -> None:
    km = {"kind": "km_median", "n": 0, "events": 0, "median": None, "ci_low": None, "ci_high": None,
          "conf_type": "log-log", "unit": "months"}
    assert format_estimate(km) == (NOT_ESTIMABLE, "", "0")
    reached_not = {**km, "n": 5, "events": 1}
    assert format_estimate(reached_not)[0] == "not reached"
    prop = {"kind": "proportion", "numerator": 0, "denominator": 0, "estimate": None, "ci_low": None,
            "ci_high": None, "missing": 0}
    assert format_estimate(prop)[0] == NOT_ESTIMABLE
    from oncosurg.report.text import placeholder

    assert placeholder(km, None) == NOT_ESTIMABLE and placeholder(km, "ci") == NOT_ESTIMABLE
