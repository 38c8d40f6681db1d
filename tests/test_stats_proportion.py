"""proportion_ci against R binom.test (Clopper-Pearson) and prop.test(correct = FALSE) (Wilson)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from oncosurg.stats import SurvivalInputError, proportion_ci

EXPECTED = json.loads((Path(__file__).parent / "reference" / "survival_expected.json").read_text())


@pytest.mark.parametrize("case", EXPECTED["proportion"], ids=lambda c: f"{c['x']}/{c['n']}@{c['conf_level']}")
def test_matches_r(case):
    cp = proportion_ci(case["x"], case["n"], conf_level=case["conf_level"])
    np.testing.assert_allclose(cp, case["cp"], rtol=1e-9, atol=1e-15)
    wi = proportion_ci(case["x"], case["n"], method="wilson", conf_level=case["conf_level"])
    np.testing.assert_allclose(wi, case["wilson"], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize(
    ("x", "n", "kw"),
    [
        (3, 0, {}),
        (5, 3, {}),
        (-1, 3, {}),
        (1.5, 3, {}),
        (1, 3, {"method": "wald"}),
        (1, 3, {"conf_level": 1.0}),
    ],
)
def test_bad_input(x, n, kw):
    with pytest.raises(SurvivalInputError):
        proportion_ci(x, n, **kw)
