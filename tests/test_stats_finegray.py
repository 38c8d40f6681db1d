"""Fine-Gray (R's finegray + weighted coxph) and the cumulative incidence by group, against R.

Expected values: tests/reference/finegray_reference.R (R 4.2.2, survival 3.5.3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oncosurg.stats import SurvivalInputError
from oncosurg.stats.finegray import fine_gray, finegray_data

REF = Path(__file__).parent / "reference"
EXP = json.loads((REF / "finegray_expected.json").read_text())


def load(case: dict) -> pd.DataFrame:
    d = pd.read_csv(REF / "datasets" / case["file"])
    return d.dropna(subset=[case["group"]]).reset_index(drop=True)


@pytest.mark.parametrize("name", list(EXP["cases"]))
def test_fine_gray_matches_r(name: str) -> None:
    case = EXP["cases"][name]
    d = load(case)
    fg = fine_gray(d[case["time"]], d[case["cause"]], d[case["X"]], event=case["event"], group=d[case["group"]])
    e = case["data"]
    assert fg.data.row.size == e["n"]
    np.testing.assert_allclose(fg.data.start, e["fgstart"], rtol=1e-12)
    np.testing.assert_allclose(fg.data.stop, e["fgstop"], rtol=1e-12)
    np.testing.assert_array_equal(fg.data.status, e["fgstatus"])
    np.testing.assert_allclose(fg.data.wt, e["fgwt"], rtol=1e-12)
    f = case["fit"]
    np.testing.assert_allclose([c.coef for c in fg.cox.coefficients], f["coef"], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(fg.cox.var), f["var"], rtol=1e-6)
    np.testing.assert_allclose(np.ravel(fg.cox.naive_var), f["naive_var"], rtol=1e-6)
    np.testing.assert_allclose([fg.cox.loglik_null, fg.cox.loglik], f["loglik"], rtol=1e-9)
    assert fg.cox.concordance == pytest.approx(f["concordance"], rel=1e-6)
    k = fg.cif.states.index(case["event"])
    assert fg.cif_by_group is not None
    assert [str(g) for g in fg.cif_by_group] == list(case["cif_by_group"])
    for g, cif in fg.cif_by_group.items():
        ref = case["cif_by_group"][str(g)]
        np.testing.assert_allclose(cif.time, ref["time"], rtol=1e-12)
        np.testing.assert_allclose(cif.pstate[:, k], ref["cif"], rtol=1e-9)
        np.testing.assert_allclose(cif.std_err[:, k], ref["std_err"], rtol=1e-6, atol=1e-14)
    json.dumps(fg.to_dict())


def test_unknown_event_code() -> None:
    with pytest.raises(SurvivalInputError, match="not one of the observed causes"):
        finegray_data([1, 2, 3], [0, 1, 2], event=3)
