"""Immutable result objects returned by :mod:`oncosurg.stats`.

Every result has ``.to_dict()`` (plain JSON-ready Python: NaN / not reached -> ``None``) and
``.table()`` (a tidy list of row dicts; ``.to_pandas()`` turns it into a DataFrame when pandas is
installed -- pandas is not a runtime dependency).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

__all__ = [
    "AtTime",
    "CumulativeIncidence",
    "KaplanMeier",
    "LogRankResult",
    "Quantile",
    "RMSTEstimate",
    "RMSTResult",
    "clean",
]


def clean(v: Any) -> Any:
    """numpy scalars/arrays -> Python; NaN/inf -> None (R's NA)."""
    if isinstance(v, np.ndarray):
        return [clean(x) for x in v.tolist()]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    return v


class _Tabular:
    def table(self) -> list[dict[str, Any]]:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_pandas(self) -> Any:
        """The tidy table as a pandas DataFrame (imports pandas lazily)."""
        import pandas as pd

        return pd.DataFrame(self.table())


@dataclass(frozen=True)
class Quantile:
    """A survival-time quantile: the time when S(t) first reaches 1 - p.  None = not reached."""

    p: float
    estimate: float | None
    lower: float | None
    upper: float | None
    conf_type: str

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "p": self.p,
                "estimate": self.estimate,
                "lower": self.lower,
                "upper": self.upper,
                "conf_type": self.conf_type,
            }
        )


@dataclass(frozen=True)
class AtTime:
    """Kaplan-Meier summary at one requested time (as R ``summary(fit, times=)``)."""

    time: float
    n_risk: float
    n_event: float
    n_censor: float
    surv: float
    std_err: float | None
    lower: float | None
    upper: float | None

    def to_dict(self) -> dict[str, Any]:
        return clean(dict(self.__dict__))


def _num(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() else x


@dataclass(frozen=True, eq=False)
class KaplanMeier(_Tabular):
    """Kaplan-Meier estimate at the distinct observed times (events and censorings), as R ``survfit``.

    ``std_err_log`` is R's ``fit$std.err`` (Greenwood SE of log S); ``std_err`` is the SE of S
    (R's ``summary(fit)$std.err``).  ``lower``/``upper`` are the pointwise bands for ``conf_type``,
    computed on first use.  ``n_risk``/``n_event``/``n_censor`` are int32 for unweighted data with
    fewer than 2**31 rows, otherwise int64 (float for non-integer weights).
    """

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray
    n_censor: np.ndarray
    surv: np.ndarray
    std_err_log: np.ndarray
    n: int | float
    events: int | float
    conf_type: str = "log"
    conf_level: float = 0.95
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def std_err(self) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return self.std_err_log * self.surv

    def bands(self, conf_type: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise (lower, upper) confidence bands for ``conf_type`` (default: the fit's)."""
        from oncosurg.stats import km as _km

        ct = self.conf_type if conf_type is None else conf_type
        if ct not in self._cache:
            self._cache[ct] = _km.confint(self.surv, self.std_err_log, ct, self.conf_level)
        return self._cache[ct]

    @property
    def lower(self) -> np.ndarray:
        return self.bands()[0]

    @property
    def upper(self) -> np.ndarray:
        return self.bands()[1]

    def median(self, conf_type: str | None = None, *, rule: str = "print") -> Quantile:
        """Median survival with CI.

        ``rule="print"`` (default) is R's ``print(fit)`` / ``summary(fit)$table`` median (the
        first time S <= 0.5; the midpoint rule when S == 0.5 on an interval and the curve drops
        later; the first time it reaches 0.5 when it never drops again).  ``rule="quantile"`` is
        ``quantile(fit, 0.5)``, which differs only when the curve ends flat at exactly 0.5 (it then
        returns the midpoint of that time and the last follow-up time).
        """
        from oncosurg.stats import km as _km

        if rule == "quantile":
            return self.quantile(0.5, conf_type)
        if rule != "print":
            raise ValueError(f"rule must be 'print' or 'quantile', got {rule!r}")
        return _km.median_print(self, conf_type)

    def quantile(self, p: float, conf_type: str | None = None) -> Quantile:
        """Time when 1 - S(t) reaches ``p`` (R ``quantile.survfit``), with CI limits from the bands."""
        from oncosurg.stats import km as _km

        return _km.quantile_findq(self, p, conf_type)

    def at(self, times: Any, conf_type: str | None = None, *, extend: bool = False) -> list[AtTime]:
        """Estimates at ``times`` as R ``summary(fit, times=times, extend=extend)``.

        Like R the times are sorted, and without ``extend`` times after the last observed time are
        dropped.  ``n_event``/``n_censor`` count the interval since the previous requested time.
        """
        from oncosurg.stats import km as _km

        return _km.at_times(self, times, conf_type, extend=extend)

    def n_risk_at(self, t: float) -> int | float:
        """Number at risk at time ``t`` (R ``summary(fit, times=t, extend=TRUE)$n.risk``)."""
        return _num(self.at([t], extend=True)[0].n_risk)

    def to_dict(self) -> dict[str, Any]:
        lo, up = self.bands()
        return clean(
            {
                "n": self.n,
                "events": self.events,
                "conf_type": self.conf_type,
                "conf_level": self.conf_level,
                "time": self.time,
                "n_risk": self.n_risk,
                "n_event": self.n_event,
                "n_censor": self.n_censor,
                "surv": self.surv,
                "std_err": self.std_err,
                "lower": lo,
                "upper": up,
                "median": self.median().to_dict(),
            }
        )

    def table(self) -> list[dict[str, Any]]:
        lo, up = self.bands()
        cols = {
            "time": self.time,
            "n_risk": self.n_risk,
            "n_event": self.n_event,
            "n_censor": self.n_censor,
            "surv": self.surv,
            "std_err": self.std_err,
            "lower": lo,
            "upper": up,
        }
        lists = {k: clean(v) for k, v in cols.items()}
        return [dict(zip(lists, row, strict=True)) for row in zip(*lists.values(), strict=True)]


@dataclass(frozen=True, eq=False)
class LogRankResult(_Tabular):
    """Log-rank family test (R ``survdiff``; Fleming-Harrington G(rho, gamma)), optionally stratified."""

    chisq: float
    df: int
    p: float
    groups: list[Any]
    n: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    variance: np.ndarray
    n_strata: int = 1
    rho: float = 0.0  # Fleming-Harrington weights S(t-)^rho (1 - S(t-))^gamma; (0, 0) = log-rank
    gamma: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "rho": self.rho,
                "gamma": self.gamma,
                "chisq": self.chisq,
                "df": self.df,
                "p": self.p,
                "n_strata": self.n_strata,
                "groups": {
                    str(g): {"n": self.n[i], "observed": self.observed[i], "expected": self.expected[i]}
                    for i, g in enumerate(self.groups)
                },
                "variance": self.variance,
            }
        )

    def table(self) -> list[dict[str, Any]]:
        return [
            clean(
                {
                    "group": g,
                    "n": self.n[i],
                    "observed": self.observed[i],
                    "expected": self.expected[i],
                    "o_minus_e": self.observed[i] - self.expected[i],
                }
            )
            for i, g in enumerate(self.groups)
        ]


@dataclass(frozen=True)
class RMSTEstimate:
    """Restricted mean survival time up to tau with its SE (R ``print(fit, rmean=tau)``)."""

    rmst: float
    se: float
    n: int | float
    events: int | float

    def to_dict(self) -> dict[str, Any]:
        return clean({"rmst": self.rmst, "se": self.se, "n": self.n, "events": self.events})


@dataclass(frozen=True, eq=False)
class RMSTResult(_Tabular):
    tau: float
    overall: RMSTEstimate
    by_group: dict[Any, RMSTEstimate] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"tau": clean(self.tau), "overall": self.overall.to_dict()}
        if self.by_group is not None:
            d["by_group"] = {str(k): v.to_dict() for k, v in self.by_group.items()}
        return d

    def table(self) -> list[dict[str, Any]]:
        rows = [{"group": None, "tau": self.tau, **self.overall.to_dict()}]
        for k, v in (self.by_group or {}).items():
            rows.append({"group": k, "tau": self.tau, **v.to_dict()})
        return clean(rows)


@dataclass(frozen=True, eq=False)
class CumulativeIncidence(_Tabular):
    """Aalen-Johansen state probabilities for competing risks (R multi-state ``survfit``).

    ``pstate[:, 0]`` is the event-free probability, ``pstate[:, k]`` the cumulative incidence of
    cause k; ``std_err`` is the infinitesimal-jackknife SE R reports.
    """

    time: np.ndarray
    n_risk: np.ndarray
    n_event: np.ndarray  # (ntime, ncause)
    n_censor: np.ndarray
    states: list[str]
    pstate: np.ndarray
    std_err: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    n: int | float
    conf_level: float = 0.95

    def cif(self, cause: int | str) -> np.ndarray:
        """Cumulative incidence of a cause: its state label (``"1"``, ``"relapse"``) or its column
        index in ``pstate`` (0 is the event-free state)."""
        if isinstance(cause, str):
            if cause not in self.states:
                raise KeyError(f"no state {cause!r}; states are {', '.join(self.states)}")
            return self.pstate[:, self.states.index(cause)]
        return self.pstate[:, cause]

    def at(self, times: Any) -> list[dict[str, Any]]:
        """State probabilities at ``times`` (step function, value 1/0 before the first time)."""
        t = np.atleast_1d(np.asarray(times, dtype=float))
        idx = np.searchsorted(self.time, t, side="right") - 1
        out = []
        for tt, i in zip(t, idx, strict=True):
            if i < 0:
                p = np.zeros(len(self.states))
                p[0] = 1.0
                se = np.zeros(len(self.states))
            else:
                p, se = self.pstate[i], self.std_err[i]
            out.append(clean({"time": tt, "pstate": p, "std_err": se}))
        return out

    def to_dict(self) -> dict[str, Any]:
        return clean(
            {
                "n": self.n,
                "states": self.states,
                "time": self.time,
                "n_risk": self.n_risk,
                "n_event": self.n_event,
                "pstate": self.pstate,
                "std_err": self.std_err,
                "lower": self.lower,
                "upper": self.upper,
            }
        )

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for i, t in enumerate(self.time.tolist()):
            for k, s in enumerate(self.states):
                rows.append(
                    {
                        "time": t,
                        "state": s,
                        "n_risk": self.n_risk[i],
                        "pstate": self.pstate[i, k],
                        "std_err": self.std_err[i, k],
                        "lower": self.lower[i, k],
                        "upper": self.upper[i, k],
                    }
                )
        return clean(rows)
