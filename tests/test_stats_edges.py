"""Edges where oncosurg disagreed with R (issue 13, part 1).

Expected values: tests/reference/edges_reference.R (R 4.2.2, survival 3.5.3, recorded in the JSON).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.stats import SurvivalInputError, coxph, cumulative_incidence, kaplan_meier, logrank_test
from oncosurg.stats.cox import CoxConvergenceWarning

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "edges_expected.json").read_text())
DATA = REF / "datasets"


def close(a, b, rtol: float = 1e-6) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=rtol, atol=1e-12)


def test_reference_records_versions() -> None:
    assert EXP["survival_version"] == "3.5.3" and EXP["r_version"].startswith("R version 4.2.2")


# ---- huge times: timefix tolerance without overflow -----------------------------------------
def test_huge_times_are_not_merged() -> None:
    d = pd.read_csv(DATA / "huge_times.csv")
    e = EXP["huge"]
    km = kaplan_meier(d.time, d.status)
    close(km.time, e["km_time"], 1e-15)
    close(km.surv, e["km_surv"])
    assert km.surv[0] == pytest.approx(5 / 6)
    close(logrank_test(d.time, d.status, d.group).chisq, e["logrank_chisq"])
    strat = logrank_test(d.time, d.status, d.group, strata=np.zeros(len(d)))
    close(strat.chisq, e["logrank_chisq"])
    cx = coxph(d.time, d.status, {"x": d.x})
    close(cx.params["x"], e["cox_coef"])
    close([cx.loglik_null, cx.loglik], e["cox_loglik"])
    # the weighted / counting-process paths too
    close(kaplan_meier(d.time, d.status, weights=np.full(len(d), 2.0)).surv, e["km_surv"])
    cxc = coxph(d.time, d.status, {"x": d.x}, entry=np.zeros(len(d)), strata=np.repeat([1, 2], 3))
    assert math.isfinite(cxc.loglik)


# ---- cause codes: the observed codes are the states -------------------------------------------
@pytest.mark.parametrize("col", ["code13", "code19", "codebig", "codestr"])
def test_cause_codes_are_the_observed_states(col: str) -> None:
    d = pd.read_csv(DATA / "cause_codes.csv")
    e = EXP["causes"][col]
    res = cumulative_incidence(d.time, d[col], censor="cens" if col == "codestr" else 0)
    assert res.states == e["states"]
    close(res.time, e["time"], 1e-15)
    for j in range(len(res.states)):
        close(res.pstate[:, j], e["pstate"][j])
        close(res.std_err[:, j], e["std_err"][j])


# ---- group order: R's factor() levels ------------------------------------------------------------
def test_mixed_case_groups_in_r_factor_order() -> None:
    d = pd.read_csv(DATA / "group_case.csv")
    e = EXP["groups"]
    res = logrank_test(d.time, d.status, d.group)
    assert res.groups == e["levels"] == ["a", "A", "b", "c"]
    close(res.observed, e["observed"])
    close(res.expected, e["expected"])
    close(res.chisq, e["chisq"])
    assert list(res.to_dict()["groups"]) == e["levels"]


def test_cli_groups_in_r_factor_order() -> None:
    out = CliRunner().invoke(cli, ["survival", str(DATA / "group_case.csv"), "--time", "time",
                                   "--event", "status", "--group", "group", "--json"])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output)
    assert res["groups"] == EXP["groups"]["levels"]
    assert list(res["km_by_group"]) == EXP["groups"]["levels"]


# ---- Cox at the iteration limit -----------------------------------------------------------------
def test_cox_iteration_limit_matches_r_and_warns() -> None:
    d = pd.read_csv(DATA / "cox_lung.csv")
    e = EXP["iter_limit"]
    with pytest.warns(CoxConvergenceWarning, match="Ran out of iterations"):
        res = coxph(d.time, d.status, d[["age", "ph.ecog"]], max_iter=2)
    close(list(res.params.values()), e["coef"])
    close(np.array(res.var).ravel(), e["var"])
    close([res.loglik_null, res.loglik], e["loglik"])
    assert res.iterations == e["iter"] and not res.converged


# ---- categorical covariates ----------------------------------------------------------------------
def test_categorical_covariate_expands_like_factor() -> None:
    d = pd.read_csv(DATA / "cox_lung.csv")
    e = EXP["factor"]
    X = pd.DataFrame({"age": d.age, "factor(ph.ecog)": pd.Categorical(d["ph.ecog"])})
    res = coxph(d.time, d.status, X)
    assert list(res.names) == e["names"]
    close([c.coef for c in res.coefficients], e["coef"])
    close([c.se for c in res.coefficients], e["se"])
    close([res.loglik_null, res.loglik], e["loglik"])
    # the reference level is the first category, as R's relevel()
    X2 = X.assign(**{"factor(ph.ecog)": pd.Categorical(d["ph.ecog"], categories=[1, 0, 2, 3])})
    assert coxph(d.time, d.status, X2).names == ("age", "factor(ph.ecog)0", "factor(ph.ecog)2",
                                                 "factor(ph.ecog)3")


# ---- follow-up on (start, stop] rows: per patient ----------------------------------------------
@pytest.mark.parametrize("extra", [[], ["--id", "id"]])
def test_cli_followup_per_patient(extra: list[str]) -> None:
    out = CliRunner().invoke(cli, ["survival", str(DATA / "heart.csv"), "--time", "stop", "--event", "event",
                                   "--start", "start", *extra, "--json"])
    assert out.exit_code == 0, out.output
    fu = json.loads(out.output)["reverse_km_followup"]
    m = fu["median"]["log"]
    assert [m["median"], m["lower"], m["upper"]] == EXP["followup"]["per_patient"]
    assert fu["n_patients"] == EXP["followup"]["n_patients"]


# ---- error messages ------------------------------------------------------------------------------
def test_messages_show_plain_values() -> None:
    with pytest.raises(SurvivalInputError) as exc:
        kaplan_meier([1, 2, 3], [1, 0, 1], weights=np.array([1.0, -1.0, 1.0]))
    assert "np.float64" not in str(exc.value) and "is -1" in str(exc.value)
    with pytest.raises(SurvivalInputError) as exc:
        kaplan_meier([1, 2], [1, 0], conf_level=np.float64(1.5))
    assert "np." not in str(exc.value)


def test_at_names_its_argument() -> None:
    km = kaplan_meier([1, 2, 3], [1, 0, 1])
    with pytest.raises(SurvivalInputError, match="argument 'times'"):
        km.at(["a"])


def test_logrank_all_at_risk_die_message() -> None:
    with pytest.raises(SurvivalInputError, match="everyone at risk had the event"):
        logrank_test([3, 3, 3, 3], [1, 1, 1, 1], ["a", "b", "a", "b"])


def test_no_warnings_on_well_posed_fit() -> None:
    d = pd.read_csv(DATA / "cox_lung.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coxph(d.time, d.status, d[["age"]])


def test_cif_by_state_label() -> None:
    d = pd.read_csv(DATA / "cause_codes.csv")
    res = cumulative_incidence(d.time, d.codestr, censor="cens")
    np.testing.assert_array_equal(res.cif("Relapse"), res.pstate[:, 2])
    with pytest.raises(KeyError):
        res.cif("relapse ")
