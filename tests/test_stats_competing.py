"""cumulative_incidence (Aalen-Johansen) against R's multi-state survfit: pstate, IJ std.err, CI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import SurvivalInputError, cumulative_incidence, kaplan_meier
from test_stats_km import close, load

EXPECTED = json.loads((Path(__file__).parent / "reference" / "survival_expected.json").read_text())


@pytest.mark.parametrize("case", EXPECTED["aalen_johansen"], ids=lambda c: c["dataset"])
def test_matches_r(case):
    d = load(case["dataset"])
    cause = d["cause"] if "cause" in d else d["status"]
    res = cumulative_incidence(d["time"], cause)
    assert res.states == case["states"]
    np.testing.assert_array_equal(res.time, case["time"])
    np.testing.assert_array_equal(res.n_risk, case["n_risk"])
    for j in range(len(res.states)):
        close(res.pstate[:, j], case["pstate"][j])
        close(res.std_err[:, j], case["std_err"][j])
        close(res.lower[:, j], case["lower"][j])
        close(res.upper[:, j], case["upper"][j])
    json.dumps(res.to_dict())
    assert len(res.table()) == len(res.time) * len(res.states)


def test_event_free_state_is_kaplan_meier():
    d = load("competing")
    res = cumulative_incidence(d["time"], d["cause"])
    km = kaplan_meier(d["time"], d["cause"] > 0)
    np.testing.assert_allclose(res.pstate[:, 0], km.surv, rtol=1e-12)
    np.testing.assert_allclose(res.pstate.sum(axis=1), 1.0, rtol=1e-12)


def test_weights_equal_expanded():
    """Integer weights give the expanded data's estimate; the IJ variance, as R's, treats each row as
    one subject (sum (w_i U_i)^2), so it differs from the expanded data's (checked against R in
    tests/test_stats_robust.py)."""
    rng = np.random.default_rng(2)
    t = rng.integers(1, 15, 40).astype(float)
    c = rng.integers(0, 3, 40)
    w = rng.integers(1, 4, 40)
    a = cumulative_incidence(t, c, weights=w)
    b = cumulative_incidence(np.repeat(t, w), np.repeat(c, w))
    np.testing.assert_allclose(a.pstate, b.pstate, rtol=1e-12)
    # expanded rows in one cluster per original row = the weighted fit's IJ variance
    cl = cumulative_incidence(np.repeat(t, w), np.repeat(c, w), cluster=np.repeat(np.arange(40), w))
    np.testing.assert_allclose(a.std_err, cl.std_err, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("cause", [[0, np.inf, 1], [0, np.nan, 1], ["0", None, "1"]])
def test_bad_cause(cause):
    with pytest.raises(SurvivalInputError, match="cause"):
        cumulative_incidence([1, 2, 3], cause)


def test_no_events_leaves_the_event_free_state():
    res = cumulative_incidence([1, 2, 3], [0, 0, 0])
    assert res.states == ["(s0)"] and (res.pstate == 1).all()
