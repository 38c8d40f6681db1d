"""Kaplan-Meier, medians, quantiles and summary(times=) against R survival 3.5.3 (no R needed)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import SurvivalInputError, kaplan_meier, reverse_kaplan_meier
from oncosurg.stats._timefix import aeq_surv

REF = Path(__file__).parent / "reference"
EXPECTED = json.loads((REF / "survival_expected.json").read_text())
RTOL = 1e-6


def load(name: str) -> dict[str, np.ndarray]:
    with open(REF / "datasets" / f"{name}.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, np.ndarray] = {}
    for key in rows[0]:
        vals = [r[key] for r in rows]
        try:
            cols[key] = np.array([float(v) for v in vals])
        except ValueError:
            cols[key] = np.array(vals)
    return cols


def close(actual, expected, rtol=RTOL) -> None:
    """Arrays/scalars equal to R within rtol; R's NA (None) must be NaN/None here."""
    a = np.atleast_1d(np.asarray([np.nan if v is None else v for v in np.atleast_1d(actual)], dtype=float))
    e = np.atleast_1d(np.asarray([np.nan if v is None else v for v in np.atleast_1d(expected)], dtype=float))
    assert a.shape == e.shape, (a, e)
    a[~np.isfinite(a)] = np.nan  # the JSON writes R's NA, NaN and Inf as null
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"NA pattern differs: {a} vs {e}")
    ok = ~np.isnan(e)
    np.testing.assert_allclose(a[ok], e[ok], rtol=rtol, atol=1e-12)


def exact(actual, expected) -> None:
    a = [
        None if (v is None or (isinstance(v, float) and math.isnan(v))) else float(v)
        for v in np.atleast_1d(actual)
    ]
    e = [None if v is None else float(v) for v in np.atleast_1d(expected)]
    assert a == e


def fit_case(case, conf_type):
    d = load(case["dataset"])
    kw = {}
    if case["entry"]:
        kw["entry"] = d["entry"]
    if case.get("weights"):
        kw["weights"] = d[case["weights"]]
    return kaplan_meier(d["time"], d["status"], conf_type=conf_type, **kw)


CASES = [(c["dataset"], ct) for c in EXPECTED["km"] for ct in ("log", "log-log", "plain")]


@pytest.mark.parametrize(("dataset", "conf_type"), CASES)
def test_km_matches_r(dataset, conf_type):
    case = next(c for c in EXPECTED["km"] if c["dataset"] == dataset)
    r = case[conf_type]
    km = fit_case(case, conf_type)
    exact(km.time, r["time"])
    exact(km.n_risk, r["n_risk"])
    exact(km.n_event, r["n_event"])
    exact(km.n_censor, r["n_censor"])
    close(km.surv, r["surv"])
    close(km.std_err_log, r["std_err_log"])
    close(km.lower, r["lower"])
    close(km.upper, r["upper"])


@pytest.mark.parametrize(("dataset", "conf_type"), CASES)
def test_median_print_rule_matches_r(dataset, conf_type):
    case = next(c for c in EXPECTED["km"] if c["dataset"] == dataset)
    r = case[conf_type]["median"]
    q = fit_case(case, conf_type).median()
    exact([q.estimate, q.lower, q.upper], [r["median"], r["lower"], r["upper"]])


@pytest.mark.parametrize(("dataset", "conf_type"), CASES)
def test_quantiles_match_r(dataset, conf_type):
    case = next(c for c in EXPECTED["km"] if c["dataset"] == dataset)
    r = case[conf_type]["quantile"]
    km = fit_case(case, conf_type)
    for i, p in enumerate(r["p"]):
        q = km.quantile(p)
        exact([q.estimate, q.lower, q.upper], [r["estimate"][i], r["lower"][i], r["upper"][i]])


@pytest.mark.parametrize(("dataset", "conf_type"), CASES)
@pytest.mark.parametrize("extend", [False, True])
def test_at_times_matches_r_summary(dataset, conf_type, extend):
    case = next(c for c in EXPECTED["km"] if c["dataset"] == dataset)
    r = case[conf_type]["at_extend" if extend else "at"]
    km = fit_case(case, conf_type)
    rows = km.at(case[conf_type]["at_request"], extend=extend)
    exact([x.time for x in rows], r["time"])
    exact([x.n_risk for x in rows], r["n_risk"])
    exact([x.n_event for x in rows], r["n_event"])
    exact([x.n_censor for x in rows], r["n_censor"])
    close([x.surv for x in rows], r["surv"])
    close([x.std_err for x in rows], r["std_err"])
    close([x.lower for x in rows], r["lower"])
    close([x.upper for x in rows], r["upper"])
    if extend:
        for x in rows:
            assert km.n_risk_at(x.time) == x.n_risk


def test_flat_end_print_vs_quantile_rule():
    d = load("flat_end")
    km = kaplan_meier(d["time"], d["status"])
    assert km.median().estimate == 2.0  # print(fit): first time S reaches 0.5
    assert km.median(rule="quantile").estimate == 3.0  # quantile(fit, .5): midpoint with last time


def test_plateau_midpoint():
    d = load("plateau")
    assert kaplan_meier(d["time"], d["status"]).median().estimate == 4.0


@pytest.mark.parametrize(
    "spec", EXPECTED["km_by_group"], ids=lambda s: f"{s['dataset']}-{s['level']}-{s['conf_type']}"
)
def test_km_by_group_medians(spec):
    d = load(spec["dataset"])
    g = d[spec["group"]]
    lev = spec["level"]
    mask = (g == float(lev)) if g.dtype.kind == "f" else (g == lev)
    km = kaplan_meier(d["time"][mask], d["status"][mask], conf_type=spec["conf_type"])
    assert km.n == spec["n"]
    assert km.events == spec["events"]
    q = km.median()
    r = spec["median"]
    exact([q.estimate, q.lower, q.upper], [r["median"], r["lower"], r["upper"]])


@pytest.mark.parametrize("spec", EXPECTED["reverse"], ids=lambda s: s["dataset"])
def test_reverse_km(spec):
    d = load(spec["dataset"])
    rk = reverse_kaplan_meier(d["time"], d["status"])
    exact(rk.time, spec["time"])
    close(rk.surv, spec["surv"])
    close(rk.lower, spec["lower"])
    close(rk.upper, spec["upper"])
    q = rk.median()
    exact(
        [q.estimate, q.lower, q.upper],
        [spec["median"]["median"], spec["median"]["lower"], spec["median"]["upper"]],
    )


def test_weights_equal_expanded_rows():
    d = load("aggregated")
    w = d["count"].astype(int)
    a = kaplan_meier(d["time"], d["status"], weights=w)
    b = kaplan_meier(np.repeat(d["time"], w), np.repeat(d["status"], w))
    assert a.n == b.n == int(w.sum())
    assert a.events == b.events
    for f in ("time", "n_risk", "n_event", "n_censor"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    np.testing.assert_allclose(a.surv, b.surv, rtol=1e-12)
    np.testing.assert_allclose(a.std_err, b.std_err, rtol=1e-12)
    assert a.median() == b.median()


def test_zero_weight_rows_are_dropped():
    a = kaplan_meier([1, 2, 3, 4], [1, 0, 1, 1], weights=[1, 0, 1, 1])
    b = kaplan_meier([1, 3, 4], [1, 1, 1])
    np.testing.assert_array_equal(a.time, b.time)
    np.testing.assert_allclose(a.surv, b.surv)


@pytest.mark.parametrize("n", [50_000])
def test_fast_paths_agree(n):
    """Radix path (float), counting path (integer days) and the argsort path give the same fit."""
    rng = np.random.default_rng(7)
    days = rng.integers(0, 2000, n)
    ev = rng.random(n) < 0.6
    a = kaplan_meier(days, ev)  # integer counting pass
    b = kaplan_meier(days.astype(float) + 0.0, ev)  # integer-valued floats: counting pass too
    c = kaplan_meier(days.astype(float), ev, weights=np.ones(n) * 1.0 + (np.arange(n) == 0) * 0)
    d = kaplan_meier(days.astype(float) + 0.25, ev)  # non-integer: radix sort
    e = kaplan_meier(days.astype(float) + 0.25, ev, entry=np.zeros(n))  # argsort path
    for x in (b, c):
        np.testing.assert_array_equal(a.time, x.time)
        np.testing.assert_array_equal(a.n_risk, x.n_risk)
        np.testing.assert_allclose(a.surv, x.surv, rtol=1e-12)
    np.testing.assert_array_equal(d.n_risk, e.n_risk)
    np.testing.assert_array_equal(d.n_event, e.n_event)
    np.testing.assert_allclose(d.surv, e.surv, rtol=1e-12)
    np.testing.assert_allclose(d.time - 0.25, a.time)
    np.testing.assert_allclose(d.surv, a.surv, rtol=1e-12)


def test_distinct_float_times_radix_sorted():
    rng = np.random.default_rng(3)
    t = rng.exponential(10, 30_000)
    t[:5] = 0.0
    t[5] = -0.0
    e = rng.random(30_000) < 0.5
    km = kaplan_meier(t, e)
    u = np.unique(aeq_surv(t)[0])  # R merges practically-equal times (aeqSurv): 29,988 times as survfit
    np.testing.assert_array_equal(km.time, u)
    assert km.time.shape == (29_988,)
    assert km.n_risk[0] == 30_000
    assert int(km.n_event.sum()) == int(e.sum())


def test_pandas_and_polars_input():
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    d = load("ties")
    a = kaplan_meier(d["time"], d["status"])
    b = kaplan_meier(pd.Series(d["time"]), pd.Series(d["status"].astype(int)))
    c = kaplan_meier(pl.Series(d["time"]), pl.Series(d["status"].astype(bool)))
    np.testing.assert_allclose(a.surv, b.surv)
    np.testing.assert_allclose(a.surv, c.surv)


def test_result_is_immutable_and_serialisable():
    d = load("ties")
    km = kaplan_meier(d["time"], d["status"])
    with pytest.raises(AttributeError):
        km.n = 3
    out = km.to_dict()
    json.dumps(out)
    assert out["median"]["estimate"] == km.median().estimate
    rows = km.table()
    assert len(rows) == len(km.time) and set(rows[0]) >= {"time", "surv", "std_err", "lower", "upper"}


@pytest.mark.parametrize(
    ("time", "event", "kw", "match"),
    [
        ([1, -2, 3], [1, 0, 1], {}, "negative"),
        ([1, np.nan, 3], [1, 0, 1], {}, "missing"),
        ([1, None, 3], [1, 0, 1], {}, "missing"),
        ([1, 2, 3], [1, 2, 1], {}, "0 \\(censored\\) or 1"),
        ([1, 2, 3], [1, np.nan, 1], {}, "0 \\(censored\\) or 1"),
        ([1, 2, 3], [1, 0], {}, "one value per row"),
        ([], [], {}, "empty"),
        ([1, 2, 3], [1, 0, 1], {"weights": [1, -1, 1]}, ">= 0"),
        ([1, 2, 3], [1, 0, 1], {"entry": [0, 2, 1]}, "start 2 >= stop 2"),
        ([1, "x", 3], [1, 0, 1], {}, "numeric"),
        ([1, 2, 3], [1, 0, 1], {"conf_type": "logit"}, "conf_type"),
        ([1, 2, 3], [1, 0, 1], {"conf_level": 95}, "conf_level"),
    ],
)
def test_bad_input(time, event, kw, match):
    with pytest.raises(SurvivalInputError, match=match):
        kaplan_meier(time, event, **kw)


def test_bad_input_names_csv_column():
    with pytest.raises(SurvivalInputError, match="column 'os_months' \\(time\\)"):
        kaplan_meier([1, -1], [1, 1], names={"time": "os_months", "event": "dead"})
    with pytest.raises(SurvivalInputError, match=r"column 'dead' \(event\).*row 1"):
        kaplan_meier([1, 1], [1, 3], names={"time": "os_months", "event": "dead"})
