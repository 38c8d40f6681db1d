"""Confidence intervals for a binomial proportion, as R ``binom.test`` and ``prop.test``.

* ``clopper-pearson`` (default): the exact interval of ``binom.test``:
  lower = qbeta(a/2, x, n - x + 1) (0 when x = 0), upper = qbeta(1 - a/2, x + 1, n - x) (1 when x = n).
* ``wilson``: the score interval of ``prop.test(x, n, correct = FALSE)``, including R's rule that
  the limit is exactly 0 (1) when x = 0 (x = n).
"""

from __future__ import annotations

import math
import numbers

from scipy.special import betaincinv, ndtri

from oncosurg.stats._checks import SurvivalInputError, check_conf_level, show

__all__ = ["proportion_ci"]

METHODS = ("clopper-pearson", "wilson")


def proportion_ci(
    x: int, n: int, *, method: str = "clopper-pearson", conf_level: float = 0.95
) -> tuple[float, float]:
    """Two-sided confidence interval (lower, upper) for the proportion x / n."""
    for name, v in (("x", x), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not float(v).is_integer():
            raise SurvivalInputError(f"argument '{name}' must be a whole number of patients; got {show(v)}.")
    x, n = int(x), int(n)
    if n <= 0:
        raise SurvivalInputError(f"argument 'n' must be >= 1 (the number of patients); got {n}.")
    if not 0 <= x <= n:
        raise SurvivalInputError(f"argument 'x' must be between 0 and n = {n}; got {x}.")
    if method not in METHODS:
        raise SurvivalInputError(f"method must be one of {', '.join(map(repr, METHODS))}; got {show(method)}.")
    cl = check_conf_level(conf_level)
    alpha = 1.0 - cl
    if method == "clopper-pearson":
        lower = 0.0 if x == 0 else float(betaincinv(x, n - x + 1, alpha / 2))
        upper = 1.0 if x == n else float(betaincinv(x + 1, n - x, 1 - alpha / 2))
        return lower, upper
    # prop.test(correct = FALSE): YATES = 0
    z = float(ndtri((1 + cl) / 2))
    est = x / n
    z22n = z * z / (2 * n)
    p_u = (
        1.0
        if est >= 1
        else (est + z22n + z * math.sqrt(est * (1 - est) / n + z22n / (2 * n))) / (1 + 2 * z22n)
    )
    p_l = (
        0.0
        if est <= 0
        else (est + z22n - z * math.sqrt(est * (1 - est) / n + z22n / (2 * n))) / (1 + 2 * z22n)
    )
    return max(p_l, 0.0), min(p_u, 1.0)
