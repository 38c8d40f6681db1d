"""vantage6 algorithm of oncosurg: the node runs ``PKG_NAME.<method>`` from the task input.

* ``central_analyze`` (central, at one organisation): creates the partial subtasks round by round
  and pools them with :func:`oncosurg.federated.central.federate`;
* ``partial_summary``, ``partial_order_counts``, ``partial_cox`` (federated, at each centre): run
  :mod:`oncosurg.federated.site` on the centre's registry and return aggregates only.
"""

from v6_oncosurg.central import central_analyze
from v6_oncosurg.partial import partial_cox, partial_order_counts, partial_summary

__all__ = ["central_analyze", "partial_cox", "partial_order_counts", "partial_summary"]
