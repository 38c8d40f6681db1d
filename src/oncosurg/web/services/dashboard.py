"""The dashboard: the chosen protocol's endpoints and Kaplan-Meier curves, live, for the user's centres.

The protocol runs unchanged through :func:`oncosurg.protocol.engine.run_protocol`; a user who may
not see every centre gets the same protocol with one more cohort step, ``centre in (…)``, placed
first so that no count in the flow covers other centres.  Results are cached per (protocol,
centres) and recomputed as soon as the data change: the cache key includes a fingerprint of the
registry (patient count, last id, last audit row, last import batch), which a web edit, a CSV
upload and a command-line import (``--update`` too: it opens a batch) all change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections import OrderedDict
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.protocol.engine import compile_protocol, run_protocol
from oncosurg.protocol.model import Inclusion, Protocol, ProtocolError, load_protocol
from oncosurg.stats import kaplan_meier
from oncosurg.store import tables as t
from oncosurg.web.errors import Forbidden
from oncosurg.web.services.svg import km_svg
from oncosurg.web.services.users import User, visible_centres

_CURVE_KINDS = ("km_median", "followup_median")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restrict(protocol: Protocol, centres: list[str]) -> Protocol:
    """``protocol`` limited to ``centres``: the centre step comes first, before the index and the accrual window."""
    step = Inclusion(f"Patients of {', '.join(centres)}", f"centre in ({', '.join(_quote(c) for c in centres)})")
    return dataclasses.replace(protocol, scope=(step, *protocol.scope))


def fingerprint(conn: sa.Connection) -> tuple[Any, ...]:
    """Changes whenever the registry does: web writes move the audit head, imports add a batch."""
    p = t.patient
    row = conn.execute(sa.select(sa.func.count(), sa.func.max(p.c.id))).one()
    head = conn.execute(sa.select(t.audit_head.c.last_id).where(t.audit_head.c.id == 1)).scalar()
    batch = conn.execute(sa.select(sa.func.max(t.import_batch.c.id))).scalar()
    return (*row, head, batch)


class Dashboard:
    """Loads the protocol once and caches results per (centres, data fingerprint)."""

    def __init__(self, protocol_ref: str, *, size: int = 64) -> None:
        self.protocol_ref = protocol_ref
        self._protocol: Protocol | None = None
        self.error: str | None = None
        self._cache: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @property
    def protocol(self) -> Protocol | None:
        if self._protocol is None and self.error is None:
            try:
                self._protocol = load_protocol(self.protocol_ref)
                compile_protocol(self._protocol)
            except ProtocolError as exc:
                self.error = str(exc)
                self._protocol = None
        return self._protocol

    def compute(self, engine: sa.Engine, *, user: User, centre: str = "") -> dict[str, Any]:
        protocol = self.protocol
        with engine.connect() as conn:
            allowed = visible_centres(conn, user=user)
            if centre and centre not in allowed:
                raise Forbidden(f"centre '{centre}' is not granted to you")
            key_fp = fingerprint(conn)
        centres = [centre] if centre else allowed
        restricted = bool(centre) or not user.all_centres
        base = {"centres": centres, "all_centres": not restricted, "available_centres": allowed,
                "protocol_error": self.error}
        if protocol is None:
            return base | {"protocol": None, "results": None, "curves": [], "cached": False}
        if restricted and not centres:
            return base | {"protocol": protocol.summary(), "results": None, "curves": [], "cached": False}
        key = (protocol.id, tuple(centres) if restricted else None, key_fp)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit | {"cached": True}
        effective = restrict(protocol, centres) if restricted else protocol
        results = run_protocol(engine, effective, provenance={"data": "live registry"})
        if restricted:
            flow = results["cohort"]["flow"][1:]
            flow[0] = flow[0] | {"excluded": None, "reason": None}
            results["cohort"]["flow"] = flow
        out = base | {"protocol": protocol.summary(), "results": results, "curves": self._curves(engine, effective),
                      "computed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "cached": False}
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return out

    @staticmethod
    def _curves(engine: sa.Engine, protocol: Protocol) -> list[dict[str, Any]]:
        from oncosurg.protocol.materialize import materialized

        curves = []
        with engine.connect() as conn, materialized(conn, compile_protocol(protocol)) as cp:
            for ep in protocol.endpoints:
                if ep.kind not in _CURVE_KINDS:
                    continue
                where = cp.cohort if ep.population == "all" else sa.and_(cp.cohort, cp.populations[ep.population].sql)
                time, event = cp.view.subquery.c[ep.time], cp.view.subquery.c[ep.event]
                rows = conn.execute(sa.select(time, event, sa.func.count())
                                    .where(where, time.is_not(None), event.is_not(None)).group_by(time, event)).all()
                if not rows:
                    continue
                tt = np.asarray([r[0] for r in rows], dtype=float)
                ee = np.asarray([bool(r[1]) for r in rows], dtype=float)
                ww = np.asarray([r[2] for r in rows], dtype=float)
                if ep.kind == "followup_median":
                    ee = 1 - ee
                fit = kaplan_meier(tt, ee, weights=ww, conf_type=ep.conf_type)
                median = fit.median(rule="quantile").estimate
                median = None if median is None or np.isnan(median) else float(median)
                title = ep.label + (" (reverse Kaplan-Meier)" if ep.kind == "followup_median" else "")
                curves.append({"endpoint": ep.id, "label": title, "n": int(ww.sum()), "median": median,
                               "svg": km_svg(time=fit.time, surv=fit.surv, n_risk=fit.n_risk, n_censor=fit.n_censor,
                                             n=int(ww.sum()), title=title, unit=ep.unit, median=median)})
        return curves
