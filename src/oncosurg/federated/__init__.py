"""Multi-centre studies without moving patient rows: a protocol runs at each centre, only aggregates travel.

* :mod:`.site` (node side) runs a protocol on the centre's own registry and returns aggregates only,
  after the disclosure rules of :mod:`.disclosure` (minimum cell count, coarsened times);
* :mod:`.central` pools them into the ``oncosurg analyze`` JSON, with a per-site breakdown and a
  ``disclosure`` section: sums of counts, Kaplan-Meier / log-rank / Aalen-Johansen from pooled
  (time, events, censored, entries) tables, exact medians by bisection over counts, and Cox models
  stratified by centre by federated Newton-Raphson.

The transport is vantage6 (the algorithm in ``federated/v6-oncosurg/``; ``oncosurg federate`` runs
it in-process through vantage6's ``MockAlgorithmClient``).  The node side needs only SQLAlchemy Core
(1.4 or 2.x), numpy, scipy and numba: it installs beside vantage6-algorithm-tools' pins.
"""
