"""logrank_test(rho=, gamma=): R's survdiff(rho =) and the Fleming-Harrington G(rho, gamma) test.

Expected values: tests/reference/logrank_family_reference.R (R 4.2.2, survival 3.5.3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import SurvivalInputError, logrank_test

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "logrank_family_expected.json").read_text())


@pytest.mark.parametrize("name", list(EXP["cases"]))
def test_matches_r(name: str) -> None:
    case = EXP["cases"][name]
    d = pd.read_csv(REF / "datasets" / case["file"])
    if case["file"] == "colon.csv":
        d = d[d.etype == 2]
    if case["event"] == "death" and "death" not in d:
        d["death"] = (d["status"] == 2).astype(int)
    d = d.dropna(subset=[case["group"]])
    res = logrank_test(d[case["time"]], d[case["event"]], d[case["group"]],
                       strata=d[case["strata"]] if case["strata"] else None, rho=case["rho"], gamma=case["gamma"])
    e = case["expected"]
    assert [str(g) for g in res.groups] == e["groups"]
    np.testing.assert_allclose(res.observed, e["observed"], rtol=1e-9)
    np.testing.assert_allclose(res.expected, e["expected"], rtol=1e-9)
    assert res.chisq == pytest.approx(e["chisq"], rel=1e-9)
    assert res.df == e["df"]
    assert res.to_dict()["rho"] == case["rho"] and res.to_dict()["gamma"] == case["gamma"]


def test_rho_zero_is_the_log_rank_test() -> None:
    d = pd.read_csv(REF / "datasets" / "lung_inst.csv")
    a = logrank_test(d.time, d.status, d.sex)
    b = logrank_test(d.time, d.status, d.sex, rho=0.0, gamma=0.0)
    assert a.chisq == b.chisq


@pytest.mark.parametrize("bad", [-1, float("nan"), "x"])
def test_bad_weights(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SurvivalInputError, match="rho"):
        logrank_test([1, 2, 3, 4], [1, 1, 0, 1], [0, 1, 0, 1], rho=bad)
