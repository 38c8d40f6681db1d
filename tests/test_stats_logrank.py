"""logrank_test against R survdiff (rho = 0), with and without strata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import SurvivalInputError, logrank_test
from test_stats_km import load

EXPECTED = json.loads((Path(__file__).parent / "reference" / "survival_expected.json").read_text())


@pytest.mark.parametrize(
    "case", EXPECTED["logrank"], ids=lambda c: f"{c['dataset']}-{c['group']}-{c['strata']}"
)
def test_matches_survdiff(case):
    d = load(case["dataset"])
    kw = {} if case["strata"] is None else {"strata": d[case["strata"]]}
    res = logrank_test(d["time"], d["status"], d[case["group"]], **kw)
    assert [str(g) if not isinstance(g, float) else f"{g:g}" for g in res.groups] == case["levels"]
    np.testing.assert_allclose(res.chisq, case["chisq"], rtol=1e-6)
    assert res.df == case["df"]
    np.testing.assert_allclose(res.p, case["p"], rtol=1e-6)
    np.testing.assert_array_equal(res.n, case["n"])
    np.testing.assert_array_equal(res.observed, case["observed"])
    np.testing.assert_allclose(res.expected, case["expected"], rtol=1e-6)
    np.testing.assert_allclose(res.variance, np.array(case["var"]), rtol=1e-6, atol=1e-12)
    out = res.to_dict()
    json.dumps(out)
    assert len(res.table()) == len(res.groups)


def test_large_float_and_integer_paths_agree():
    rng = np.random.default_rng(5)
    n = 40_000
    days = rng.integers(0, 1500, n)
    ev = rng.random(n) < 0.6
    g = rng.integers(0, 3, n)
    a = logrank_test(days, ev, g)
    b = logrank_test(days + 0.5, ev, g)  # radix path
    c = logrank_test(days[:10_000] + 0.5, ev[:10_000], g[:10_000])  # argsort path
    d = logrank_test(days[:10_000], ev[:10_000], g[:10_000])
    np.testing.assert_allclose(a.chisq, b.chisq, rtol=1e-10)
    np.testing.assert_allclose(a.expected, b.expected, rtol=1e-10)
    np.testing.assert_allclose(c.chisq, d.chisq, rtol=1e-10)


def test_one_level_is_an_error():
    with pytest.raises(SurvivalInputError, match="only 1 level"):
        logrank_test([1, 2, 3], [1, 0, 1], ["a", "a", "a"])


def test_missing_group_label_is_an_error():
    with pytest.raises(SurvivalInputError, match="missing group"):
        logrank_test([1, 2, 3], [1, 0, 1], ["a", None, "b"])
