"""Survival statistics for oncosurg, validated against R's ``survival`` package (3.5.3).

See ``docs/statistics.md``.  Results are immutable objects with ``.to_dict()`` and ``.table()``.
"""

from oncosurg.stats._checks import SurvivalInputError
from oncosurg.stats.km import kaplan_meier, reverse_kaplan_meier
from oncosurg.stats.proportion import proportion_ci
from oncosurg.stats.results import AtTime, KaplanMeier, Quantile

__all__ = [
    "AtTime",
    "KaplanMeier",
    "Quantile",
    "SurvivalInputError",
    "kaplan_meier",
    "proportion_ci",
    "reverse_kaplan_meier",
]
