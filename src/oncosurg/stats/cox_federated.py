"""Cox partial likelihood pieces at given coefficients, per stratum: the building block of a
federated (multi-centre) Cox fit.

A stratified Cox model ``coxph(Surv(time, status) ~ x + strata(centre))`` has a log partial
likelihood that is a sum over strata, and so are its gradient (score) and information matrix.  Each
centre can therefore evaluate its own pieces at the current coefficients, send only those sums
(no patient rows), and a coordinator adds them and takes a Newton-Raphson step; iterated from
beta = 0 with R's rule (step halving when the log-likelihood falls, convergence when
``|1 - loglik_old / loglik_new| <= 1e-9``) this reproduces the pooled stratified fit.

>>> pieces = cox_partial_likelihood(time, status, X, beta, strata=centre)  # doctest: +SKIP
>>> total = sum_pieces(pieces)                                              # doctest: +SKIP
>>> beta = beta + np.linalg.solve(total.information, total.score)          # doctest: +SKIP

The pieces are exactly what R's ``coxfit6`` / ``agfit4`` accumulate (Efron or Breslow ties, case
weights, (start, stop] rows); covariates are centred per stratum first, which leaves all three
quantities unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from oncosurg.stats import _cox_kernels as _k
from oncosurg.stats._checks import (
    SurvivalInputError,
    check_event,
    check_group,
    check_same_length,
    check_time,
    check_weights,
)
from oncosurg.stats._cox_design import _design
from oncosurg.stats._timefix import aeq_surv

__all__ = ["CoxPieces", "cox_partial_likelihood", "sum_pieces"]


@dataclass(frozen=True, eq=False)
class CoxPieces:
    """Log partial likelihood, score (gradient) and information (minus the Hessian) of one stratum
    at the given coefficients.  ``stratum`` is the label (None for an unstratified fit)."""

    stratum: Any
    loglik: float
    score: np.ndarray = field(repr=False)  # (p,)
    information: np.ndarray = field(repr=False)  # (p, p)
    n: int = 0
    events: int = 0
    names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (what a centre would send): sums only, no patient rows."""
        return {
            "stratum": self.stratum,
            "loglik": float(self.loglik),
            "score": [float(v) for v in self.score],
            "information": [[float(v) for v in row] for row in self.information],
            "n": self.n,
            "events": self.events,
            "names": list(self.names),
        }


def sum_pieces(pieces: Sequence[CoxPieces]) -> CoxPieces:
    """Add the pieces of several strata (or centres): the pooled stratified model's values."""
    if not pieces:
        raise SurvivalInputError("no pieces to add")
    return CoxPieces(
        stratum=None,
        loglik=float(sum(p.loglik for p in pieces)),
        score=np.sum([p.score for p in pieces], axis=0),
        information=np.sum([p.information for p in pieces], axis=0),
        n=sum(p.n for p in pieces),
        events=sum(p.events for p in pieces),
        names=pieces[0].names,
    )


def cox_partial_likelihood(
    time: Any,
    event: Any,
    X: Any,
    beta: Any,
    *,
    strata: Any = None,
    entry: Any = None,
    weights: Any = None,
    ties: str = "efron",
    names: Sequence[str] | None = None,
) -> list[CoxPieces]:
    """Evaluate the Cox log partial likelihood, its score and information at ``beta``, per stratum.

    No iteration: this is one pass of R's ``coxfit6_iter`` (right-censored) or ``agfit4`` (with
    ``entry``: counting-process (entry, time] rows) per stratum, with times merged as R's
    ``aeqSurv``.  ``beta`` is on the scale of the covariates (categorical columns expanded as in
    :func:`oncosurg.stats.cox.coxph`).  Returns one :class:`CoxPieces` per stratum, in stratum
    order (one piece with ``stratum=None`` without strata).
    """
    if ties not in ("efron", "breslow"):
        raise SurvivalInputError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    stop = check_time(time, "time").astype(np.float64)
    n = stop.shape[0]
    ev = check_event(event, n, "event").astype(np.int8)
    Xm, colnames, _ = _design(X, names, n)
    b = np.asarray(beta, dtype=np.float64).reshape(-1)
    if b.shape[0] != Xm.shape[1]:
        raise SurvivalInputError(
            f"beta has {b.shape[0]} values but there are {Xm.shape[1]} covariate columns ({', '.join(colnames)})."
        )
    wt = np.ones(n) if weights is None else check_weights(weights, n, "weights")
    start = None
    if entry is not None:
        start = check_time(entry, "entry").astype(np.float64)
        check_same_length(n, start, "entry")
        start, stop = aeq_surv(start, stop)
        if np.any(stop <= start):
            raise SurvivalInputError("entry must be < time on every row (interval (entry, time]).")
    else:
        stop = aeq_surv(stop)[0]
    if strata is None:
        levels: list[Any] = [None]
        scode = np.zeros(n, dtype=np.intp)
    else:
        levels, scode = check_group(strata, n, "strata")
    efron = 1 if ties == "efron" else 0
    out = []
    for s, lab in enumerate(levels):
        rows = np.flatnonzero(scode == s)
        Xs = Xm[rows]
        Xs = Xs - Xs.mean(axis=0)  # the partial likelihood is invariant to centring
        e = ev[rows]
        w = wt[rows]
        if start is None:
            o = np.argsort(stop[rows], kind="stable")
            ll, u, imat = _k.cox_right_iter(
                np.ascontiguousarray(stop[rows][o]), np.ascontiguousarray(e[o]),
                np.zeros(rows.size, np.int64), np.ascontiguousarray(Xs[o]), b, efron,
                np.ascontiguousarray(w[o]),
            )
        else:
            st, sp = start[rows], stop[rows]
            sort2 = np.argsort(-sp, kind="stable")
            sort1 = np.argsort(-st, kind="stable")
            pos = np.empty(rows.size, np.int64)
            pos[sort2] = np.arange(rows.size)
            ll, u, imat = _k.cox_counting_iter(
                np.ascontiguousarray(st[sort2]), np.ascontiguousarray(sp[sort2]), np.ascontiguousarray(e[sort2]),
                np.zeros(rows.size, np.int64), np.ascontiguousarray(Xs[sort2]), b, pos[sort1],
                np.arange(rows.size, dtype=np.int64), rows.size, efron, np.ascontiguousarray(w[sort2]),
            )
        out.append(CoxPieces(
            stratum=lab, loglik=float(ll), score=np.asarray(u), information=np.asarray(imat),
            n=int(rows.size), events=int(e.sum()), names=tuple(colnames),
        ))
    return out
