"""Survival curves from a Cox model (R's survfit(coxph_fit, newdata =)) against R survival 3.5.3.

Expected values: tests/reference/cox_survfit_reference.R.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import SurvivalInputError, coxph
from oncosurg.stats.cox_survfit import survfit_cox

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "cox_survfit_expected.json").read_text())


def close(a, b, rtol: float = 1e-6) -> None:  # type: ignore[no-untyped-def]
    a = np.asarray(a, float)
    a = np.where(np.isinf(a), np.nan, a)
    b = np.array([np.nan if v is None else v for v in np.ravel(b)], float)
    np.testing.assert_allclose(np.ravel(a), b, rtol=rtol, atol=1e-12)


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
    return coxph(d[case["time"]], d[case["event"]], X, ties=case.get("ties", "efron"),
                 entry=d[case["entry"]] if "entry" in case else None,
                 strata=d[case["strata"]] if "strata" in case else None,
                 weights=d[case["weights"]] if "weights" in case else None)


@pytest.mark.parametrize("name", list(EXP["cases"]))
def test_survfit_coxph_matches_r(name: str) -> None:
    case = EXP["cases"][name]
    fit = fit_case(case)
    res = survfit_cox(fit, case["newdata"], conf_type=case.get("conf_type", "log"))
    assert len(res.curves) == len(case["curves"])
    for curve, (label, e) in zip(res.curves, case["curves"].items(), strict=True):
        if label != "all":
            assert float(curve.stratum) == float(label)
        close(curve.time, e["time"], 1e-12)
        close(curve.n_risk, e["n_risk"])
        close(curve.n_event, e["n_event"])
        for k in range(curve.surv.shape[1]):
            close(curve.surv[:, k], e["surv"][k])
            close(curve.std_err[:, k], e["std_err"][k])
            close(curve.lower[:, k], e["lower"][k])
            close(curve.upper[:, k], e["upper"][k])
    json.dumps(res.to_dict())


def test_newdata_must_name_every_covariate() -> None:
    case = EXP["cases"]["lung_efron"]
    fit = fit_case(case)
    with pytest.raises(SurvivalInputError, match=r"newdata has no column 'ph\.ecog'"):
        survfit_cox(fit, {"age": [60], "sex": [1]})
