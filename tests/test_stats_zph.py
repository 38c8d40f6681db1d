"""cox.zph (proportional-hazards test and scaled Schoenfeld residuals) against R survival 3.5.3.

Expected values: tests/reference/zph_reference.R -> tests/reference/zph_expected.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import SurvivalInputError, coxph
from oncosurg.stats.cox_zph import cox_zph

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "zph_expected.json").read_text())


def close(a, b, rtol: float = 1e-6) -> None:  # type: ignore[no-untyped-def]
    b = np.array([np.nan if v is None else v for v in np.ravel(b)], float)
    np.testing.assert_allclose(np.ravel(np.asarray(a, float)), b, rtol=rtol, atol=1e-10)


def fit_case(case: dict):  # type: ignore[no-untyped-def]
    d = pd.read_csv(REF / "datasets" / case["file"])
    if "subset" in case:
        d = d.query(case["subset"]).reset_index(drop=True)
    if case["event"] == "death" and "death" not in d:
        d["death"] = (d["status"] == 2).astype(int)
    X = pd.DataFrame({
        c: pd.Categorical(d[c], categories=case["levels"]) if c in case.get("factor", []) else d[c]
        for c in case["X"]
    })
    return coxph(
        d[case["time"]], d[case["event"]], X, ties=case.get("ties", "efron"),
        entry=d[case["entry"]] if "entry" in case else None,
        strata=d[case["strata"]] if "strata" in case else None,
        weights=d[case["weights"]] if "weights" in case else None,
        robust=False,
    )


@pytest.mark.parametrize("name", list(EXP["cases"]))
def test_cox_zph_matches_r(name: str) -> None:
    case = EXP["cases"][name]
    e = case["fit"]
    z = fit_case(case).zph(case["transform"])
    assert list(z.terms) == e["terms"]
    close(z.chisq, e["chisq"])
    close(z.df, e["df"])
    close(z.p, e["p"])
    close(z.x, e["x"], 1e-9)
    close(z.time, e["time"], 1e-12)
    for j in range(z.y.shape[1]):
        close(z.y[:, j], e["y"][j])
    close(z.var, e["var"])
    assert z.table()[-1]["term"] == "GLOBAL"


def test_bad_transform() -> None:
    d = pd.read_csv(REF / "datasets" / "lung_inst.csv")
    with pytest.raises(SurvivalInputError, match="transform"):
        cox_zph(coxph(d.time, d.status, d[["age"]]), "sqrt")
