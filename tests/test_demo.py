"""`oncosurg demo` and `oncosurg analyze` reproduce the seed study's published figures from records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli

PUBLISHED_COUNTS = {"evaluated": 151, "in_house": 133, "referred": 18, "operated": 27, "hepatectomy": 25}
PUBLISHED_FRACTIONS = {
    "partner_irinotecan": (20, 27), "partner_oxaliplatin": (4, 27), "partner_both": (1, 27),
    "two_or_more_prior_lines": (18, 27), "resectability_in_house": (9, 133), "resectability_referred": (16, 18),
    "postoperative_mortality": (1, 27), "complications": (13, 26), "liver_abnormality": (9, 25),
    "pathologic_complete_response": (2, 25), "alive_at_last_contact": (23, 25),
    "disease_free_at_last_contact": (10, 25),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.output)


def test_demo_reproduces_every_published_figure(demo: tuple[Path, dict]) -> None:
    _, results = demo
    ep = results["endpoints"]
    for eid, n in PUBLISHED_COUNTS.items():
        assert ep[eid] == ep[eid] | {"kind": "count", "n": n}
    for eid, (num, den) in PUBLISHED_FRACTIONS.items():
        assert (ep[eid]["numerator"], ep[eid]["denominator"]) == (num, den), eid
        assert ep[eid]["ci_method"] == "clopper-pearson" and ep[eid]["missing"] == 0
    assert ep["cycles_before_surgery"]["median"] == 6
    assert ep["os_median"]["median"] is None  # KM median OS not reached with 2 deaths
    assert ep["os_observed_median"]["median"] == pytest.approx(20, abs=0.5)
    assert ep["pfs_median"]["median"] == pytest.approx(13, abs=0.5)
    assert ep["followup_median"]["median"] == pytest.approx(16, abs=0.5)
    assert ep["followup_median"]["method"].startswith("reverse Kaplan-Meier")


def test_json_shape(demo: tuple[Path, dict]) -> None:
    _, results = demo
    assert set(results) >= {"protocol", "cohort", "endpoints", "warnings"}
    assert isinstance(results["cohort"]["flow"], list)
    shapes = {
        "count": {"kind", "n"},
        "proportion": {"kind", "numerator", "denominator", "estimate", "ci_low", "ci_high", "ci_method", "missing"},
        "median": {"kind", "n", "median", "q1", "q3", "min", "max"},
        "km_median": {"kind", "n", "events", "median", "ci_low", "ci_high", "conf_type", "unit"},
        "followup_median": {"kind", "n", "events", "median", "ci_low", "ci_high", "conf_type", "unit", "method"},
    }
    for eid, ep in results["endpoints"].items():
        assert shapes[ep["kind"]] <= set(ep), eid
        assert ep["label"] and ep["definition"]
    assert results["endpoints"]["pfs_median"]["conf_type"] == "log-log"


def test_warnings(demo: tuple[Path, dict]) -> None:
    _, results = demo
    codes = {(w["endpoint"], w["code"]) for w in results["warnings"]}
    assert ("os_median", "median-not-reached") in codes
    assert ("partner_irinotecan", "pooled-referral") in codes
    assert ("resectability_in_house", "pooled-referral") not in codes  # separate denominators
    assert ("resectability_referred", "pooled-referral") not in codes


def test_demo_writes_results_and_registry(demo: tuple[Path, dict]) -> None:
    out, results = demo
    assert json.loads((out / "results.json").read_text()) == results
    assert (out / "oncosurg.db").is_file() and (out / "reference-cohort.csv").is_file()
    assert results["provenance"]["synthetic"] is True


def test_demo_table_shows_published_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "SYNTHETIC DATA" in result.output
    assert "9/133" in result.output and "Published" in result.output and "not reached" in result.output


def test_analyze_csv_equals_analyze_db(demo: tuple[Path, dict]) -> None:
    out, results = demo
    runner = CliRunner()
    by_csv = json.loads(runner.invoke(cli, ["analyze", "--csv", str(out / "reference-cohort.csv"), "--json"]).output)
    by_db = json.loads(runner.invoke(cli, ["analyze", "--db", f"sqlite:///{out / 'oncosurg.db'}", "--json"]).output)
    assert by_csv["endpoints"] == by_db["endpoints"] == results["endpoints"]


def test_analyze_refuses_bad_protocol(tmp_path: Path) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text('[protocol]\nid = "x"\ntitle = "x"\n[[endpoints]]\nid = "a"\nkind = "count"\nlabel = "a"\n'
                   'definition = "a"\npopulation = "nobody"\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["analyze", "--db", f"sqlite:///{tmp_path / 'x.db'}", "--protocol", str(bad)])
    assert result.exit_code == 2 and "unknown population 'nobody'" in result.output


def test_analyze_on_an_empty_registry_refuses_unless_allow_empty(tmp_path: Path) -> None:
    from oncosurg.store.engine import open_store

    db = f"sqlite:///{tmp_path / 'x.db'}"
    open_store(db).dispose()  # a registry with no patient (as `oncosurg user add` leaves it)
    refused = CliRunner().invoke(cli, ["analyze", "--db", db, "--json"])
    assert refused.exit_code == 3
    assert "the registry holds no patient" in refused.output
    result = CliRunner().invoke(cli, ["analyze", "--db", db, "--json", "--allow-empty"])
    assert result.exit_code == 0, result.output
    ep = json.loads(result.output)["endpoints"]
    assert ep["evaluated"]["n"] == 0 and ep["os_median"]["median"] is None
    assert ep["partner_irinotecan"]["estimate"] is None


def test_environment_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONCOSURG_DB", f"sqlite:///{tmp_path / 'env.db'}")
    csv = tmp_path / "r.csv"
    from oncosurg.reference import write_reference_csv

    write_reference_csv(csv)
    assert CliRunner().invoke(cli, ["import", str(csv)]).exit_code == 0
    assert (tmp_path / "env.db").is_file()
