"""rmst against R print(survfit(...), rmean = tau): *rmean and *se(rmean), overall and per group."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import SurvivalInputError, rmst
from test_stats_km import load

EXPECTED = json.loads((Path(__file__).parent / "reference" / "survival_expected.json").read_text())


@pytest.mark.parametrize("case", EXPECTED["rmst"], ids=lambda c: f"{c['dataset']}-{c['tau']}-{c['group']}")
def test_matches_r(case):
    d = load(case["dataset"])
    kw = {} if case["group"] is None else {"group": d[case["group"]]}
    res = rmst(d["time"], d["status"], case["tau"], **kw)
    np.testing.assert_allclose(res.overall.rmst, case["rmst"], rtol=1e-6)
    np.testing.assert_allclose(res.overall.se, case["se"], rtol=1e-6, atol=1e-12)
    if case["group"] is not None:
        got = list(res.by_group.values())
        assert [f"{k:g}" if isinstance(k, float) else str(k) for k in res.by_group] == case["levels"]
        np.testing.assert_allclose([g.rmst for g in got], case["by_rmst"], rtol=1e-6)
        np.testing.assert_allclose([g.se for g in got], case["by_se"], rtol=1e-6, atol=1e-12)
    json.dumps(res.to_dict())
    assert res.table()[0]["rmst"] == res.overall.rmst


def test_tau_before_first_time_is_an_error():
    with pytest.raises(SurvivalInputError, match="tau"):
        rmst([2, 3, 4], [1, 0, 1], 1.0)


def test_weights_equal_expanded():
    d = load("aggregated")
    w = d["count"].astype(int)
    a = rmst(d["time"], d["status"], 7, weights=w)
    b = rmst(np.repeat(d["time"], w), np.repeat(d["status"], w), 7)
    np.testing.assert_allclose([a.overall.rmst, a.overall.se], [b.overall.rmst, b.overall.se], rtol=1e-12)


def test_group_with_zero_weight_rows():
    a = rmst([1, 2, 3, 4, 5, 6], [1, 1, 0, 1, 1, 0], 5, group=list("aabbab"), weights=[1, 0, 1, 1, 1, 1])
    b = rmst([1, 3, 4, 5, 6], [1, 0, 1, 1, 0], 5, group=list("abbab"))
    assert a.by_group["a"].rmst == pytest.approx(b.by_group["a"].rmst)
    assert a.by_group["b"].se == pytest.approx(b.by_group["b"].se)
