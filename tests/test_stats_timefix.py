"""Practically-equal times are merged as R's aeqSurv does (timefix = TRUE) in every estimator.

Expected values: tests/reference/timefix_reference.R (R 4.2.2, survival 3.5.3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import coxph, cumulative_incidence, kaplan_meier, logrank_test
from oncosurg.stats._timefix import aeq_surv, tie_keep

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "timefix_expected.json").read_text())
D = np.genfromtxt(REF / "datasets" / "timefix.csv", delimiter=",", names=True)


def close(a, b) -> None:  # type: ignore[no-untyped-def]
    np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), rtol=1e-10, atol=1e-14)


def test_km_merges_like_survfit() -> None:
    km = kaplan_meier(D["time"], D["status"])
    np.testing.assert_array_equal(km.time, EXP["km_time"])
    np.testing.assert_array_equal(km.n_risk, EXP["km_n_risk"])
    close(km.surv, EXP["km_surv"])
    close(km.std_err_log, EXP["km_std_err"])
    assert km.quantile(0.5).estimate == EXP["km_median"][0]


@pytest.mark.parametrize("how", ["weights", "entry"])
def test_km_other_paths_merge_too(how: str) -> None:
    if how == "weights":
        km = kaplan_meier(D["time"], D["status"], weights=np.ones(len(D)))
    else:
        km = kaplan_meier(D["time"], D["status"], entry=np.zeros(len(D)))
    np.testing.assert_array_equal(km.time, EXP["km_time"])
    close(km.surv, EXP["km_surv"])


def test_logrank_merges_like_survdiff() -> None:
    res = logrank_test(D["time"], D["status"], D["group"])
    close(res.chisq, EXP["logrank_chisq"])
    strat = logrank_test(D["time"], D["status"], D["group"], strata=np.zeros(len(D)))
    close(strat.chisq, EXP["logrank_chisq"])


def test_aalen_johansen_merges_like_survfit() -> None:
    cif = cumulative_incidence(D["time"], D["cause"].astype(int))
    np.testing.assert_array_equal(cif.time, EXP["aj_time"])


def test_cox_merges_like_coxph() -> None:
    res = coxph(D["time"], D["status"], D["x"].reshape(-1, 1), names=["x"]).to_dict()
    close(res["coefficients"]["x"]["coef"], EXP["cox_coef"])
    close(res["loglik"], EXP["cox_loglik"][1])


def test_no_merge_for_ordinary_times() -> None:
    assert tie_keep(np.arange(1.0, 1000.0)) is None
    t = np.array([3.0, 1.0, 2.0])
    assert aeq_surv(t)[0] is t
