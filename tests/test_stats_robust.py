"""Weighted, robust and left-truncated estimators against R survival 3.5.3.

Expected values: tests/reference/robust_reference.R -> tests/reference/robust_expected.json.
coxph(weights =, robust =, cluster =); survfit with non-integer weights (robust IJ variance),
delayed entry and clusters; Aalen-Johansen with left truncation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import coxph, cumulative_incidence, kaplan_meier

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "robust_expected.json").read_text())
RTOL = 1e-6


def data(name: str) -> pd.DataFrame:
    return pd.read_csv(REF / "datasets" / name)


def close(a, b, rtol: float = RTOL) -> None:  # type: ignore[no-untyped-def]
    a = np.asarray(a, float)
    a = np.where(np.isinf(a), np.nan, a)  # R's Inf is null in the JSON
    b = np.asarray([np.nan if v is None else v for v in np.ravel(b)], float).reshape(np.shape(a))
    np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12)


def test_versions_recorded() -> None:
    assert EXP["survival_version"] == "3.5.3"


def fit_cox(case: dict):  # type: ignore[no-untyped-def]
    d = data(case["file"])
    a = case["args"]
    if a["event"] == "death" and "death" not in d:
        d["death"] = (d["status"] == 2).astype(int)
    X = {}
    for c in a["X"]:
        X[c] = pd.Categorical(d[c], categories=a["levels"]) if c in a.get("factor", []) else d[c]
    return coxph(
        d[a["time"]], d[a["event"]], pd.DataFrame(X), ties=a.get("ties", "efron"),
        entry=d[a["entry"]] if "entry" in a else None, strata=d[a["strata"]] if "strata" in a else None,
        weights=d[a["weights"]] if "weights" in a else None,
        cluster=d[a["cluster"]] if "cluster" in a else None,
    )


@pytest.mark.parametrize("name", list(EXP["cox"]))
def test_cox_weights_robust_cluster(name: str) -> None:
    case = EXP["cox"][name]
    e = case["fit"]
    res = fit_cox(case)
    assert list(res.names) == e["names"]
    close([c.coef for c in res.coefficients], e["coef"])
    close(np.array(res.var).ravel(), e["var"])
    close([res.loglik_null, res.loglik], e["loglik"])
    close(res.score_chisq, e["score"])
    close(res.wald_chisq, e["wald"])
    close(res.concordance, e["concordance"])
    close(res.concordance_se, e["concordance_se"])
    assert res.n == e["n"] and res.events == e["nevent"]
    assert res.robust == (e["naive_var"] is not None)
    if res.robust:
        close(np.array(res.naive_var).ravel(), e["naive_var"])
        close(res.robust_score_chisq, e["rscore"])
        naive = np.reshape(e["naive_var"], (len(e["coef"]),) * 2)
        close([c.naive_se for c in res.coefficients], np.sqrt(np.diag(naive)))
        assert "robust_score_chisq" in res.to_dict()["extra"]
    # z, p and CI use the reported (robust) variance
    se = np.sqrt(np.diag(np.reshape(e["var"], (len(e["coef"]),) * 2)))
    close([c.se for c in res.coefficients], se)
    close([c.z for c in res.coefficients], np.array(e["coef"]) / se)


def test_integer_weights_equal_repeated_rows() -> None:
    d = data("lung_inst.csv")
    w = (np.arange(len(d)) % 3) + 1
    # Breslow ties: with Efron, repeated rows are tied deaths and are corrected as such (as in R)
    a = coxph(d.time, d.status, d[["age", "ph.ecog"]], weights=w, robust=False, ties="breslow")
    b = coxph(np.repeat(d.time, w), np.repeat(d.status, w), d[["age", "ph.ecog"]].loc[d.index.repeat(w)],
              ties="breslow")
    close(list(a.params.values()), list(b.params.values()), 1e-9)
    close(np.array(a.var), np.array(b.var), 1e-9)
    close(a.loglik, b.loglik, 1e-12)


@pytest.mark.parametrize("name", list(EXP["km"]))
def test_km_weights_entry_cluster(name: str) -> None:
    case = EXP["km"][name]
    e = case["fit"]
    d = data(case["file"])
    a = case["args"]
    if a["event"] == "death" and "death" not in d:
        d["death"] = (d["status"] == 2).astype(int)
    km = kaplan_meier(
        d[a["time"]], d[a["event"]], weights=d[a["weights"]] if "weights" in a else None,
        entry=d[a["entry"]] if "entry" in a else None, cluster=d[a["cluster"]] if "cluster" in a else None,
        robust=a.get("robust"),
    )
    close(km.time, e["time"], 1e-12)
    close(km.n_risk, e["n_risk"])
    close(km.surv, e["surv"])
    # R's std.err: SE of S for the robust (logse = FALSE) fits, of log S for Greenwood
    close(km.std_err if not e["logse"] else km.std_err_log, e["std_err"])
    close(km.lower, e["lower"])
    close(km.upper, e["upper"])


@pytest.mark.parametrize("name", list(EXP["aj"]))
def test_aalen_johansen_left_truncation(name: str) -> None:
    case = EXP["aj"][name]
    e = case["fit"]
    d = data(case["file"])
    a = case["args"]
    res = cumulative_incidence(
        d[a["time"]], d[a["cause"]], entry=d[a["entry"]] if "entry" in a else None,
        weights=d[a["weights"]] if "weights" in a else None,
        cluster=d[a["cluster"]] if "cluster" in a else None,
    )
    assert res.states == e["states"]
    close(res.time, e["time"], 1e-12)
    close(res.n_risk, e["n_risk"])
    for j in range(len(res.states)):
        close(res.pstate[:, j], e["pstate"][j])
        close(res.std_err[:, j], e["std_err"][j])


def test_aalen_johansen_cluster_equals_km_cluster_for_one_cause() -> None:
    """One cause: the event-free state is the Kaplan-Meier, so the clustered IJ variances agree
    (the Kaplan-Meier one is pinned to R's survfit(cluster =) above)."""
    d = data("colon.csv")
    d = d[d.etype == 2]
    aj = cumulative_incidence(d.time, d.status, weights=d.w, cluster=d.rx)
    km = kaplan_meier(d.time, d.status, weights=d.w, cluster=d.rx)
    close(aj.pstate[:, 0], km.surv, 1e-12)
    close(aj.std_err[:, 0], km.std_err, 1e-9)
    close(aj.std_err[:, 1], km.std_err, 1e-9)
