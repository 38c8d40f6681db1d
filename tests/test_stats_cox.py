"""Cox model against R survival 3.5.3 (values in tests/reference/cox_expected.json).

The expected values are written by tests/reference/cox_reference.R; these tests never run R.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats.cox import CoxConvergenceWarning, CoxResult, SurvivalInputError, coxph

REF = Path(__file__).parent / "reference"
EXPECTED = json.loads((REF / "cox_expected.json").read_text())
RTOL = 1e-6


def read_csv(name: str) -> dict[str, list[str]]:
    with open(REF / "datasets" / name, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: [r[k] for r in rows] for k in rows[0]}


def num(col: list[str]) -> np.ndarray:
    return np.array([float(v) if v != "" else np.nan for v in col])


def fit_case(case: dict) -> CoxResult:
    data = read_csv(case["file"])
    X = {c: num(data[c]) for c in case["covariates"]}
    return coxph(
        num(data[case["time"]]),
        num(data[case["event"]]),
        X,
        ties=case["ties"],
        entry=None if case["entry"] is None else num(data[case["entry"]]),
        strata=None if case["strata"] is None else data[case["strata"]],
    )


def assert_close(got, exp, path: str = "") -> None:
    """Every key of the expected dict, recursively, within 1e-6 relative (exact for ints/strings)."""
    if isinstance(exp, dict):
        for key, val in exp.items():
            assert key in got, f"missing key {path}/{key}"
            assert_close(got[key], val, f"{path}/{key}")
    elif exp is None:  # R's Inf (e.g. an infinite CI limit) is written as null
        assert got is None or not math.isfinite(got), f"{path}: expected Inf/NA, got {got}"
    elif isinstance(exp, str | bool):
        assert got == exp, f"{path}: {got!r} != {exp!r}"
    else:
        assert got == pytest.approx(exp, rel=RTOL, abs=1e-300), f"{path}: {got!r} != {exp!r}"


REGULAR = [k for k in EXPECTED["cases"] if k != "separation"]


@pytest.mark.parametrize("name", REGULAR)
def test_agrees_with_r(name: str) -> None:
    case = EXPECTED["cases"][name]
    res = fit_case(case)
    got = res.to_dict()
    assert_close(got, case["expected"])
    assert got["converged"] is True
    assert got["warnings"] == []
    # the to_dict() shape required by the CLI's --json
    assert set(got) >= {
        "coefficients", "loglik_null", "loglik", "lr_chisq", "lr_df", "lr_p", "concordance", "extra",
        "n", "events", "ties", "iterations", "converged", "warnings",
    }
    assert set(got["extra"]) == {
        "concordance_se", "wald_chisq", "wald_df", "wald_p", "score_chisq", "score_df", "score_p",
    }


def test_efron_and_breslow_differ_with_heavy_ties() -> None:
    e = EXPECTED["cases"]["ties_3cov_efron"]["expected"]["coefficients"]["x1"]["coef"]
    b = EXPECTED["cases"]["ties_3cov_breslow"]["expected"]["coefficients"]["x1"]["coef"]
    assert abs(e - b) > 1e-3  # the reference really exercises the tie correction


def test_separation_warns_and_returns_finite() -> None:
    case = EXPECTED["cases"]["separation"]
    with pytest.warns(CoxConvergenceWarning, match=r"Loglik converged before variable 1 \(x\)"):
        res = fit_case(case)
    d = res.to_dict()
    assert d["iterations"] <= 20
    assert math.isfinite(d["coefficients"]["x"]["coef"]) and d["coefficients"]["x"]["coef"] > 10
    assert d["warnings"] and "coefficient may be infinite" in d["warnings"][0]
    exp = case["expected"]
    # same Newton path as coxfit6: the log-likelihoods, tests and the well-determined covariate agree
    for key in ("loglik_null", "loglik", "lr_chisq", "concordance"):
        assert d[key] == pytest.approx(exp[key], rel=RTOL)
    for key in ("score_chisq", "concordance_se"):
        assert d["extra"][key] == pytest.approx(exp["extra"][key], rel=RTOL)
    assert_close(d["coefficients"]["z"], exp["coefficients"]["z"])
    assert d["iterations"] == exp["iterations"]


def test_separation_respects_max_iter() -> None:
    case = EXPECTED["cases"]["separation"]
    data = read_csv(case["file"])
    with pytest.warns(CoxConvergenceWarning):
        res = coxph(num(data["time"]), num(data["status"]), {"x": num(data["x"])}, max_iter=4)
    assert res.iterations == 5 and not res.converged  # R's fit$iter: iter.max + 1 (coxfit6.c)


def test_collinear_raises_naming_columns() -> None:
    info = EXPECTED["collinear"]
    assert info["r_na_coefficients"] == ["x3"]
    data = read_csv(info["file"])
    with pytest.raises(SurvivalInputError, match="collinear") as exc:
        coxph(num(data["time"]), num(data["status"]), {c: num(data[c]) for c in info["covariates"]})
    msg = str(exc.value)
    assert "'x3' is a linear combination of 'x1', 'x2'" in msg
    assert "drop" in msg


def test_constant_covariate_raises() -> None:
    t = np.arange(1.0, 11.0)
    e = np.ones(10)
    with pytest.raises(SurvivalInputError, match="'c' has no variation"):
        coxph(t, e, {"a": np.sin(t), "c": np.full(10, 3.0)})


def test_non_numeric_covariate_error_names_column() -> None:
    with pytest.raises(SurvivalInputError, match="covariate 'sex' is not numeric"):
        coxph([1, 2, 3, 4], [1, 0, 1, 1], {"age": [50, 60, 70, 80], "sex": ["F", "M", "F", "M"]})


def test_missing_covariate_error_names_rows() -> None:
    with pytest.raises(SurvivalInputError, match=r"'age' has missing .* row 2"):
        coxph([1, 2, 3, 4], [1, 0, 1, 1], {"age": [50, 60, float("nan"), 80]})


def test_stop_not_after_start_names_rows() -> None:
    with pytest.raises(SurvivalInputError, match=r"stop <= start at rows 1, 3 \(0-based\)"):
        coxph([2, 3, 4, 5], [1, 0, 1, 1], {"x": [1, 2, 3, 4]}, entry=[0, 3, 1, 6])


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"time": [1, -2, 3], "event": [1, 0, 1]}, r"'time' has negative times \(first at row 1"),
        ({"time": [1, float("nan"), 3], "event": [1, 0, 1]}, r"'time' has missing"),
        ({"time": [1, 2, 3], "event": [1, 2, 1]}, r"'event' must be 0 \(censored\) or 1"),
        ({"time": [1, 2, 3], "event": [0, 0, 0]}, r"no events"),
        ({"time": [], "event": []}, r"is empty"),
    ],
)
def test_bad_time_event(kwargs, pattern) -> None:
    n = len(kwargs["time"])
    with pytest.raises(SurvivalInputError, match=pattern):
        coxph(kwargs["time"], kwargs["event"], {"x": np.arange(n, dtype=float)})


def test_bad_ties_argument() -> None:
    with pytest.raises(SurvivalInputError, match="ties"):
        coxph([1, 2], [1, 1], [[1.0], [2.0]], ties="exact")


def test_input_types_agree() -> None:
    pd = pytest.importorskip("pandas")
    pl = pytest.importorskip("polars")
    case = EXPECTED["cases"]["lung_efron"]
    data = read_csv(case["file"])
    cols = case["covariates"]
    t, e = num(data["time"]), num(data["status"])
    Xn = np.column_stack([num(data[c]) for c in cols])
    ref = coxph(t, e, Xn, names=cols).to_dict()
    dfp = pd.DataFrame(Xn, columns=cols)
    dfl = pl.DataFrame({c: Xn[:, j] for j, c in enumerate(cols)})
    for res in (
        coxph(pd.Series(t), pd.Series(e.astype(int)), dfp),
        coxph(pl.Series(t), pl.Series(e.astype(bool)), dfl),
        coxph(t.tolist(), e.tolist(), Xn.tolist(), names=cols),
    ):
        assert res.to_dict() == ref
    assert_close(ref, case["expected"])


def test_row_order_invariance() -> None:
    case = EXPECTED["cases"]["counting_strata"]
    data = read_csv(case["file"])
    perm = np.random.default_rng(1).permutation(len(data["stop"]))
    X = {c: num(data[c])[perm] for c in case["covariates"]}
    res = coxph(
        num(data["stop"])[perm], num(data["status"])[perm], X,
        entry=num(data["start"])[perm], strata=np.array(data["centre"])[perm],
    )
    assert_close(res.to_dict(), case["expected"])


def test_result_is_immutable_and_tabular() -> None:
    res = fit_case(EXPECTED["cases"]["lung_efron"])
    with pytest.raises(AttributeError):
        res.loglik = 0.0  # type: ignore[misc]
    tab = res.table()
    assert [r["term"] for r in tab] == ["age", "sex", "ph.ecog"]
    assert tab[1]["hr"] == pytest.approx(math.exp(tab[1]["coef"]))
    assert "Concordance" in str(res)
    assert res.var[0][0] == pytest.approx(res.coefficients[0].se**2)


def test_conf_level() -> None:
    res = fit_case(EXPECTED["cases"]["lung_efron"])
    data = read_csv("cox_lung.csv")
    r90 = coxph(num(data["time"]), num(data["status"]), {c: num(data[c]) for c in ("age", "sex", "ph.ecog")},
                conf_level=0.90)
    c95, c90 = res.coefficients[1], r90.coefficients[1]
    assert c95.hr_lower < c90.hr_lower < c90.hr < c90.hr_upper < c95.hr_upper
    z90 = 1.6448536269514722
    assert c90.hr_lower == pytest.approx(math.exp(c90.coef - z90 * c90.se), rel=1e-12)


def test_large_right_censored_matches_counting_process_path() -> None:
    rng = np.random.default_rng(42)
    n = 20_000
    X = rng.normal(size=(n, 3))
    t = np.ceil(rng.exponential(np.exp(-X @ np.array([0.3, -0.2, 0.1]))) * 50)
    e = (rng.random(n) < 0.7).astype(float)
    a = coxph(t, e, X).to_dict()
    b = coxph(t, e, X, entry=np.zeros(n) - 0.0).to_dict()
    for key in ("loglik", "loglik_null", "concordance"):
        assert a[key] == pytest.approx(b[key], rel=1e-9)
    assert a["extra"]["concordance_se"] == pytest.approx(b["extra"]["concordance_se"], rel=1e-9)
    for name in a["coefficients"]:
        assert a["coefficients"][name]["coef"] == pytest.approx(b["coefficients"][name]["coef"], rel=1e-7)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(12, 60),
    shift=st.floats(-50, 50, allow_nan=False),
    ties=st.sampled_from(["efron", "breslow"]),
)
def test_property_row_order_and_covariate_shift(seed: int, n: int, shift: float, ties: str) -> None:
    """The fit is invariant to row order, and shifting a covariate changes no coefficient."""
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 8, n).astype(float)  # heavy ties
    e = (rng.random(n) < 0.6).astype(float)
    e[0] = 1.0
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 2, n)]).astype(float)
    X[:2, 1] = [0.0, 1.0]
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            base = coxph(t, e, X, ties=ties)
            perm = rng.permutation(n)
            other = coxph(t[perm], e[perm], X[perm] + np.array([shift, 0.0]), ties=ties)
    except SurvivalInputError:
        return  # e.g. a covariate without variation in the risk sets
    if not (base.converged and not base.warnings):
        return
    for a, b in zip(base.coefficients, other.coefficients, strict=True):
        assert b.coef == pytest.approx(a.coef, rel=1e-6, abs=1e-9)
        assert b.se == pytest.approx(a.se, rel=1e-6, abs=1e-9)
    assert other.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert other.concordance == pytest.approx(base.concordance, rel=1e-12)
