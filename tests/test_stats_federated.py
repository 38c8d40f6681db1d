"""Per-stratum Cox pieces (loglik, score, information at given beta) summed across centres and
iterated reproduce R's pooled stratified coxph (values: tests/reference/robust_reference.R)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import coxph
from oncosurg.stats.cox_federated import cox_partial_likelihood, sum_pieces

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "robust_expected.json").read_text())["federated"]


def federated_fit(sites: list[dict], p: int, max_iter: int = 20, eps: float = 1e-9):  # type: ignore[no-untyped-def]
    """A coordinator: each site returns only its pieces; Newton-Raphson with R's step halving."""

    def pooled(beta: np.ndarray):  # type: ignore[no-untyped-def]
        pieces = [pc for s in sites for pc in cox_partial_likelihood(beta=beta, **s)]
        return sum_pieces(pieces)

    beta = np.zeros(p)
    cur = pooled(beta)
    ll0 = cur.loglik
    newbeta = beta + np.linalg.solve(cur.information, cur.score)
    halving = 0
    for _ in range(max_iter):
        new = pooled(newbeta)
        if abs(1 - cur.loglik / new.loglik) <= eps:
            return newbeta, np.linalg.inv(new.information), (ll0, new.loglik)
        if new.loglik < cur.loglik:
            halving += 1
            newbeta = (newbeta + halving * beta) / (halving + 1.0)
        else:
            halving = 0
            cur, beta = new, newbeta
            newbeta = newbeta + np.linalg.solve(new.information, new.score)
    raise AssertionError("did not converge")


@pytest.mark.parametrize("name", list(EXP))
def test_summed_site_pieces_reproduce_pooled_stratified_fit(name: str) -> None:
    case = EXP[name]
    d = pd.read_csv(REF / "datasets" / case["file"])
    if case["event"] == "death" and "death" not in d:
        d["death"] = (d["status"] == 2).astype(int)
    d = d.dropna(subset=[case["strata"]])
    sites = []
    for _, g in d.groupby(case["strata"]):  # each centre holds only its own rows
        sites.append({
            "time": g[case["time"]].to_numpy(), "event": g[case["event"]].to_numpy(),
            "X": g[case["X"]], "weights": g[case["weights"]].to_numpy() if "weights" in case else None,
        })
    coef, var, loglik = federated_fit(sites, len(case["X"]))
    np.testing.assert_allclose(coef, case["coef"], rtol=1e-6)
    np.testing.assert_allclose(var.ravel(), case["var"], rtol=1e-6)
    np.testing.assert_allclose(loglik, case["loglik"], rtol=1e-9)


def test_pieces_per_stratum_add_up_to_the_pooled_model() -> None:
    d = pd.read_csv(REF / "datasets" / "lung_inst.csv")
    beta = np.array([0.01, -0.5, 0.4])
    X = d[["age", "sex", "ph.ecog"]]
    pieces = cox_partial_likelihood(d.time, d.status, X, beta, strata=d.inst)
    assert [pc.stratum for pc in pieces] == sorted(d.inst.unique().astype(int).tolist())
    total = sum_pieces(pieces)
    # the same sums from one call per stratum, and the fit at its optimum has score 0
    fit = coxph(d.time, d.status, X, strata=d.inst)
    at_opt = sum_pieces(cox_partial_likelihood(d.time, d.status, X, list(fit.params.values()), strata=d.inst))
    np.testing.assert_allclose(at_opt.score, 0, atol=1e-6)
    assert at_opt.loglik == pytest.approx(fit.loglik, rel=1e-12)
    np.testing.assert_allclose(np.linalg.inv(at_opt.information), np.array(fit.var), rtol=1e-6)
    assert total.n == len(d) and total.events == int(d.status.sum())
    json.dumps(pieces[0].to_dict())


def test_counting_process_pieces_match_coxph() -> None:
    d = pd.read_csv(REF / "datasets" / "heart.csv")
    X = d[["age", "surgery", "transplant"]]
    fit = coxph(d.stop, d.event, X, entry=d.start)
    pc = sum_pieces(cox_partial_likelihood(d.stop, d.event, X, list(fit.params.values()), entry=d.start))
    assert pc.loglik == pytest.approx(fit.loglik, rel=1e-12)
    np.testing.assert_allclose(pc.score, 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.inv(pc.information), np.array(fit.var), rtol=1e-8)
