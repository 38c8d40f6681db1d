"""``oncosurg survival``: JSON against the R reference values; bad input -> one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli

REF = Path(__file__).parent / "reference"
EXPECTED = json.loads((REF / "survival_expected.json").read_text())
LUNG = str(REF / "datasets" / "lung.csv")


def run(*args: str):
    return CliRunner().invoke(cli, ["survival", *args])


def test_json_matches_r_on_lung():
    res = run(
        LUNG,
        "--time",
        "time",
        "--event",
        "status",
        "--group",
        "sex",
        "--at",
        "0,180,365,730,1000",
        "--rmst-tau",
        "365",
        "--json",
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["n"] == 228 and out["events"] == 165 and out["groups"] == [1, 2]
    ref = next(c for c in EXPECTED["km"] if c["dataset"] == "lung")
    for ct in ("log", "log-log"):
        m = ref[ct]["median"]
        assert out["km"]["median"][ct] == {"median": m["median"], "lower": m["lower"], "upper": m["upper"]}
        at = ref[ct]["at_extend"]
        for i, a in enumerate(out["km"]["at_times"]):
            assert a["time"] == at["time"][i] and a["n_risk"] == at["n_risk"][i]
            assert a["surv"] == pytest.approx(at["surv"][i], rel=1e-6)
            assert a["std_err"] == pytest.approx(at["std_err"][i], rel=1e-6, abs=1e-12)
            assert a[ct]["lower"] == pytest.approx(at["lower"][i], rel=1e-6)
    for spec in (s for s in EXPECTED["km_by_group"] if s["dataset"] == "lung"):
        g = out["km_by_group"][spec["level"]]
        assert g["n"] == spec["n"] and g["events"] == spec["events"]
        m = spec["median"]
        assert g["median"][spec["conf_type"]] == {
            "median": m["median"],
            "lower": m["lower"],
            "upper": m["upper"],
        }
    lr = next(c for c in EXPECTED["logrank"] if c["dataset"] == "lung" and c["strata"] is None)
    assert out["logrank"]["chisq"] == pytest.approx(lr["chisq"], rel=1e-6)
    assert out["logrank"]["df"] == lr["df"]
    assert out["logrank"]["p"] == pytest.approx(lr["p"], rel=1e-6)
    assert out["logrank"]["groups"]["2"]["expected"] == pytest.approx(lr["expected"][1], rel=1e-6)
    rv = next(c for c in EXPECTED["reverse"] if c["dataset"] == "lung")
    assert out["reverse_km_followup"]["median"]["log"]["median"] == rv["median"]["median"]
    rm = next(c for c in EXPECTED["rmst"] if c["dataset"] == "lung" and c["tau"] == 365)
    assert out["rmst"]["tau"] == 365
    assert out["rmst"]["overall"]["rmst"] == pytest.approx(rm["rmst"], rel=1e-6)
    assert out["rmst"]["by_group"]["1"]["se"] == pytest.approx(rm["by_se"][0], rel=1e-6)


def test_not_reached_is_null_and_table_output():
    path = str(REF / "datasets" / "not_reached.csv")
    res = run(path, "--time", "time", "--event", "status", "--json")
    assert res.exit_code == 0
    out = json.loads(res.output)
    assert out["km"]["median"]["log"]["upper"] is None
    assert "cox" not in out and "logrank" not in out
    res = run(path, "--time", "time", "--event", "status")
    assert res.exit_code == 0 and "NR" in res.output


def test_cox_keys_present():
    res = run(LUNG, "--time", "time", "--event", "status", "--covariates", "age,sex", "--json")
    assert res.exit_code == 0, res.output
    cox = json.loads(res.output)["cox"]
    assert cox["covariates"] == ["age", "sex"]
    for ties in ("efron", "breslow"):
        assert set(cox[ties]["coefficients"]["age"]) == {"coef", "se", "hr", "hr_lower", "hr_upper", "z", "p"}
        assert {"loglik_null", "loglik", "lr_chisq", "lr_df", "lr_p", "concordance", "extra"} <= set(
            cox[ties]
        )


@pytest.mark.parametrize(
    ("content", "args", "needle"),
    [
        (
            "t,e\n1,1\n-2,0\n",
            ["--time", "t", "--event", "e"],
            "column 't' (time) has negative times (first at line 3",
        ),
        ("t,e\n1,1\n,0\n", ["--time", "t", "--event", "e"], "missing"),
        ("t,e\n1,1\n2,2\n", ["--time", "t", "--event", "e"], "column 'e' (event) must be 0 (censored) or 1"),
        ("t,e\n1,1\nx,0\n", ["--time", "t", "--event", "e"], "column 't' must be numeric; line 3"),
        ("t,e\n", ["--time", "t", "--event", "e"], "no data rows"),
        ("t,e\n1,1\n", ["--time", "os", "--event", "e"], "column 'os' not found"),
        ("t,e,g\n1,1,a\n2,0,a\n", ["--time", "t", "--event", "e", "--group", "g"], "only 1 level"),
        (
            "s,t,e\n1,1,1\n0,2,0\n",
            ["--time", "t", "--event", "e", "--start", "s"],
            "line 2 has start 1 >= stop 1",
        ),
        (
            "t,e,x\n1,1,a\n2,0,b\n",
            ["--time", "t", "--event", "e", "--covariates", "x"],
            "column 'x' must be numeric",
        ),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, content, args, needle):
    f = tmp_path / "d.csv"
    f.write_text(content)
    res = run(str(f), *args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output


def test_missing_file_exit_2(tmp_path):
    res = run(str(tmp_path / "nope.csv"), "--time", "t", "--event", "e")
    assert res.exit_code == 2 and "cannot read" in res.output
