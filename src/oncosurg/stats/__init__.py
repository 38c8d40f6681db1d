"""Survival statistics for oncosurg, validated against R's ``survival`` package (3.5.3).

See ``docs/statistics.md``.  Results are immutable objects with ``.to_dict()`` and ``.table()``.
"""

from oncosurg.stats._checks import SurvivalInputError
from oncosurg.stats.competing import cumulative_incidence
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

__all__ = [
    "AtTime",
    "CumulativeIncidence",
    "KaplanMeier",
    "LogRankResult",
    "Quantile",
    "RMSTEstimate",
    "RMSTResult",
    "SurvivalInputError",
    "cumulative_incidence",
    "kaplan_meier",
    "logrank_test",
    "proportion_ci",
    "reverse_kaplan_meier",
    "rmst",
]

# Cox proportional hazards and the time-varying-exposure helpers (cox.py, timevarying.py)
from oncosurg.stats.cox import CoxResult, coxph
from oncosurg.stats.timevarying import LandmarkData, SplitData, landmark, split_at_exposure

__all__ += ["CoxResult", "LandmarkData", "SplitData", "coxph", "landmark", "split_at_exposure"]
