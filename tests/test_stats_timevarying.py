"""Landmark and time-dependent-exposure helpers against R (tmerge + coxph), see cox_reference.R."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats.cox import SurvivalInputError, coxph
from oncosurg.stats.timevarying import landmark, split_at_exposure

REF = Path(__file__).parent / "reference"
TV = json.loads((REF / "cox_expected.json").read_text())["timevarying"]


def load() -> dict[str, np.ndarray]:
    with open(REF / "datasets" / TV["file"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0]}


def assert_cox(got: dict, exp: dict) -> None:
    for name, vals in exp["coefficients"].items():
        for key, v in vals.items():
            assert got["coefficients"][name][key] == pytest.approx(v, rel=1e-6), (name, key)
    for key in ("loglik_null", "loglik", "lr_chisq", "lr_p", "concordance", "n", "events"):
        assert got[key] == pytest.approx(exp[key], rel=1e-6), key
    for key, v in exp["extra"].items():
        assert got["extra"][key] == pytest.approx(v, rel=1e-6), key


def test_split_at_exposure_matches_tmerge() -> None:
    d = load()
    s = split_at_exposure(d["time"], d["status"], d["surgery"], covariates={"age": d["age"]})
    exp = TV["split"]
    assert s.n_rows == exp["n_rows"]
    np.testing.assert_array_equal(s.id, exp["id"])
    np.testing.assert_array_equal(s.start, exp["start"])
    np.testing.assert_array_equal(s.stop, exp["stop"])
    np.testing.assert_array_equal(s.event, exp["event"])
    np.testing.assert_array_equal(s.exposed, exp["exposed"])
    res = coxph(s.stop, s.event, {"exposed": s.exposed, "age": s.covariates["age"]}, entry=s.start)
    assert_cox(res.to_dict(), exp["cox"])


def test_split_edge_cases() -> None:
    # surgery at the origin, never, on the last day, after follow-up, in the middle
    s = split_at_exposure([10, 10, 5, 4, 8], [1, 0, 1, 1, 1], [0, None, 5, 7, 3])
    assert s.table() == [
        {"id": 0, "start": 0.0, "stop": 10.0, "event": 1, "exposed": 1},
        {"id": 1, "start": 0.0, "stop": 10.0, "event": 0, "exposed": 0},
        {"id": 2, "start": 0.0, "stop": 5.0, "event": 1, "exposed": 0},
        {"id": 3, "start": 0.0, "stop": 4.0, "event": 1, "exposed": 0},
        {"id": 4, "start": 0.0, "stop": 3.0, "event": 0, "exposed": 0},
        {"id": 4, "start": 3.0, "stop": 8.0, "event": 1, "exposed": 1},
    ]
    assert s.to_dict() == {"n_rows": 6, "n_patients": 5, "n_split": 1, "events": 4, "events_exposed": 2}


@pytest.mark.parametrize("L", ["3", "6"])
def test_landmark_matches_r(L: str) -> None:
    d = load()
    exp = TV["landmark"][L]
    lm = landmark(d["time"], d["status"], d["surgery"], float(L), covariates={"age": d["age"]})
    np.testing.assert_array_equal(lm.index, exp["index"])
    np.testing.assert_allclose(lm.time, exp["time"], rtol=1e-12)
    np.testing.assert_array_equal(lm.event, exp["event"])
    np.testing.assert_array_equal(lm.exposed, exp["exposed"])
    assert lm.n + lm.n_excluded == d["time"].size
    res = coxph(lm.time, lm.event, {"exposed": lm.exposed, "age": lm.covariates["age"]})
    assert_cox(res.to_dict(), exp["cox"])


def test_guarantee_time_bias_is_removed() -> None:
    """Surgery with no effect: naive 'ever operated' looks protective; the split data does not."""
    rng = np.random.default_rng(2013)
    n = 4000
    t = rng.exponential(12.0, n)
    surg = np.where(rng.random(n) < 0.5, rng.uniform(0, 10, n), np.nan)
    ev = np.ones(n)
    ever = (~np.isnan(surg) & (surg < t)).astype(float)
    naive = coxph(t, ev, {"operated": ever}).coefficients[0].hr
    s = split_at_exposure(t, ev, surg)
    tdep = coxph(s.stop, s.event, {"operated": s.exposed}, entry=s.start).coefficients[0]
    assert naive < 0.7  # the biased analysis finds a spurious benefit
    assert tdep.hr_lower < 1 < tdep.hr_upper
    lm = landmark(t, ev, surg, 5.0)
    lmfit = coxph(lm.time, lm.event, {"operated": lm.exposed}).coefficients[0]
    assert lmfit.hr_lower < 1 < lmfit.hr_upper


def test_bad_inputs() -> None:
    with pytest.raises(SurvivalInputError, match="exposure_time"):
        split_at_exposure([1, 2], [1, 0], [-1, None])
    with pytest.raises(SurvivalInputError, match="> 0"):
        split_at_exposure([0, 2], [1, 0], [None, None])
    with pytest.raises(SurvivalInputError, match="landmark_time"):
        landmark([1, 2], [1, 0], [None, 1], -3)
    with pytest.raises(SurvivalInputError, match="has 3 values"):
        landmark([1, 2], [1, 0], [None, 1, 2], 1)
