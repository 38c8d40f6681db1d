"""Federated (node-side) functions: the centre's registry in, aggregates out (``oncosurg.federated.site``)."""

from __future__ import annotations

from typing import Any

from oncosurg.federated.site import run_partial
from v6_oncosurg.source import registry_source


@registry_source
def partial_summary(uri: str, **kwargs: Any) -> dict[str, Any]:
    """Cohort flow, endpoint and comparison aggregates, Cox model levels (round 1)."""
    return run_partial("partial_summary", uri, kwargs)


@registry_source
def partial_order_counts(uri: str, **kwargs: Any) -> dict[str, Any]:
    """Counts of values at or below each probe, per median endpoint (bisection rounds)."""
    return run_partial("partial_order_counts", uri, kwargs)


@registry_source
def partial_cox(uri: str, **kwargs: Any) -> dict[str, Any]:
    """This centre's stratum at the current coefficients (Newton-Raphson rounds)."""
    return run_partial("partial_cox", uri, kwargs)
