"""Central function: one subtask per centre and round, pooled by ``oncosurg.federated.central``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vantage6.algorithm.client import AlgorithmClient
from vantage6.algorithm.tools.decorators import algorithm_client
from vantage6.algorithm.tools.util import info

from oncosurg.federated.central import FederationError, federate


@algorithm_client
def central_analyze(client: AlgorithmClient, protocol_toml: str, protocol_source: str = "<protocol>",
                    organizations: list[int] | None = None, site_names: list[str] | None = None,
                    threshold: int = 3, small_site: str = "refuse") -> dict[str, Any]:
    """The pooled ``analyze`` JSON, or ``{"error": …, "sites": {name: status}}`` when a centre failed or refused."""
    if not organizations:
        organizations = [org["id"] for org in client.organization.list()]
    names = list(site_names or [str(o) for o in organizations])
    if len(names) != len(organizations):
        return {"error": f"{len(names)} site names for {len(organizations)} organizations", "sites": {}}

    def ask(method: str, kwargs: Mapping[str, Any], sites: Sequence[int]) -> list[Any]:
        # one subtask per centre, so that each reply is known to come from its centre
        tasks = [client.task.create(input_={"method": method, "kwargs": dict(kwargs)},
                                    organizations=[organizations[i]], name=f"oncosurg {method}",
                                    description=f"oncosurg {method} at {names[i]}") for i in sites]
        replies = []
        for task in tasks:
            results = client.wait_for_results(task_id=task["id"])
            replies.append(results[0] if results else None)
        return replies

    info(f"oncosurg: pooling {protocol_source} over {len(names)} site(s)")
    try:
        return federate(ask, protocol_toml, source=protocol_source, sites=names, threshold=threshold,
                        small_site=small_site)
    except FederationError as exc:
        return {"error": str(exc), "sites": exc.sites}
