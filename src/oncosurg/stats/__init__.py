"""Survival statistics for oncosurg, validated against R's ``survival`` package (3.5.3).

See ``docs/statistics.md``.  Results are immutable objects with ``.to_dict()`` and ``.table()``.

Names are imported on first use (PEP 562): ``from oncosurg.stats import kaplan_meier`` loads the
Kaplan-Meier module only, not the Cox model and scipy.stats, so a command pays for what it uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from oncosurg.stats.compiled import ensure_writable_cache

ensure_writable_cache()  # before any kernel module imports numba

#: Public name → the module that defines it.
_WHERE = {
    "SurvivalInputError": "_checks",
    "cumulative_incidence": "competing",
    "kaplan_meier": "km",
    "reverse_kaplan_meier": "km",
    "logrank_test": "logrank",
    "proportion_ci": "proportion",
    "AtTime": "results",
    "CumulativeIncidence": "results",
    "KaplanMeier": "results",
    "LogRankResult": "results",
    "Quantile": "results",
    "RMSTEstimate": "results",
    "RMSTResult": "results",
    "rmst": "rmst",
    # Cox proportional hazards and the time-varying-exposure helpers
    "CoxResult": "cox",
    "coxph": "cox",
    "LandmarkData": "timevarying",
    "SplitData": "timevarying",
    "landmark": "timevarying",
    "split_at_exposure": "timevarying",
    # per-stratum Cox pieces for federated fits, PH test, curves from a Cox model, Fine-Gray
    "CoxPieces": "cox_federated",
    "cox_partial_likelihood": "cox_federated",
    "sum_pieces": "cox_federated",
    "CoxZph": "cox_zph",
    "cox_zph": "cox_zph",
    "CoxCurve": "cox_survfit",
    "CoxSurvival": "cox_survfit",
    "survfit_cox": "cox_survfit",
    "FineGray": "finegray",
    "FineGrayData": "finegray",
    "fine_gray": "finegray",
    "finegray_data": "finegray",
}

__all__ = [
    "AtTime",
    "CoxCurve",
    "CoxPieces",
    "CoxResult",
    "CoxSurvival",
    "CoxZph",
    "CumulativeIncidence",
    "FineGray",
    "FineGrayData",
    "KaplanMeier",
    "LandmarkData",
    "LogRankResult",
    "Quantile",
    "RMSTEstimate",
    "RMSTResult",
    "SplitData",
    "SurvivalInputError",
    "cox_partial_likelihood",
    "cox_zph",
    "coxph",
    "cumulative_incidence",
    "fine_gray",
    "finegray_data",
    "kaplan_meier",
    "landmark",
    "logrank_test",
    "proportion_ci",
    "reverse_kaplan_meier",
    "rmst",
    "split_at_exposure",
    "sum_pieces",
    "survfit_cox",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'oncosurg.stats' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"oncosurg.stats.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


if TYPE_CHECKING:
    from oncosurg.stats._checks import SurvivalInputError
    from oncosurg.stats.competing import cumulative_incidence
    from oncosurg.stats.cox import CoxResult, coxph
    from oncosurg.stats.cox_federated import CoxPieces, cox_partial_likelihood, sum_pieces
    from oncosurg.stats.cox_survfit import CoxCurve, CoxSurvival, survfit_cox
    from oncosurg.stats.cox_zph import CoxZph, cox_zph
    from oncosurg.stats.finegray import FineGray, FineGrayData, fine_gray, finegray_data
    from oncosurg.stats.km import kaplan_meier, reverse_kaplan_meier
    from oncosurg.stats.logrank import logrank_test
    from oncosurg.stats.proportion import proportion_ci
    from oncosurg.stats.results import (
        AtTime,
        CumulativeIncidence,
        KaplanMeier,
        LogRankResult,
        Quantile,
        RMSTEstimate,
        RMSTResult,
    )
    from oncosurg.stats.rmst import rmst
    from oncosurg.stats.timevarying import LandmarkData, SplitData, landmark, split_at_exposure
