"""The dashboard: the chosen protocol's endpoints and Kaplan-Meier curves, for the user's centres.

The protocol runs unchanged through :func:`oncosurg.protocol.engine.run_protocol`; a user who may
not see every centre gets the same protocol with one more cohort step, ``centre in (…)``, placed
first so that no count in the flow covers other centres.

With the endpoints the dashboard shows the pathway today (patients on a current therapy line, recent
MDT reviews: the ``pathway`` callable), computed with them and served from the same snapshot (on a
busy registry that query cost 80 % of a dashboard request when it ran per request).

Results are kept per (protocol, centres) with the fingerprint of the registry they were computed
from (its :func:`~oncosurg.web.services.roster.marks`: last audit row, last patient id, last import
batch: a web edit, a CSV upload and a command-line import, ``--update`` too, all change it) and the
date. When the registry has changed, the last result is served at once, with its time
(``computed_at``) and ``stale: true``, and one recomputation is started in the background, at most
once per ``refresh_seconds`` per centre set: under a stream of edits the protocol runs twice a
minute, not once per request (``refresh_seconds = 0`` recomputes before answering, one request at a
time per centre set). Only the very first request for a centre set waits for its computation;
:meth:`Dashboard.warm` starts the all-centre one with the server.

The server's worker processes share their results (:class:`SharedResults`: a file per key in a
private directory, one computation at a time per key under a file lock, each file signed with the
database's secret key): a process about to recompute first takes a result another process computed
from the same registry, or less than ``refresh_seconds`` ago, so the protocol runs at most once per
interval for all workers together (with 2 workers each recomputed: a sixth of the server's CPU
under the web benchmark).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from oncosurg.protocol.model import Inclusion, Protocol, ProtocolError, load_protocol
from oncosurg.web.errors import Forbidden
from oncosurg.web.services.roster import centres_and_marks, marks
from oncosurg.web.services.svg import km_svg
from oncosurg.web.services.users import User

_CURVE_KINDS = ("km_median", "followup_median")


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def restrict(protocol: Protocol, centres: list[str]) -> Protocol:
    """``protocol`` limited to ``centres``: the centre step comes first, before the index and the accrual window."""
    step = Inclusion(f"Patients of {', '.join(centres)}", f"centre in ({', '.join(_quote(c) for c in centres)})")
    return dataclasses.replace(protocol, scope=(step, *protocol.scope))


log = logging.getLogger("oncosurg.web.dashboard")


class SharedResults:
    """Dashboard results shared by the server's processes: one JSON file per key in ``directory``
    (created private to this user; a directory others may write is refused), written whole
    (temporary file, then rename) and signed with ``secret`` (HMAC-SHA256: a file not written by a
    process holding the database's key is ignored).  :meth:`turn` is a lock file per key (``flock``),
    so that processes compute a key one at a time and the later ones find the earlier's result."""

    #: Files untouched this long are removed when a server starts (registries gone, old centre sets).
    KEEP_DAYS = 7

    def __init__(self, directory: Path, secret: str, identity: str) -> None:
        directory.parent.mkdir(mode=0o700, exist_ok=True)
        directory.mkdir(mode=0o700, exist_ok=True)
        for folder in (directory.parent, directory):  # nobody else may swap the directory or write in it
            info = folder.lstat()
            if folder.is_symlink() or info.st_uid != os.getuid() or info.st_mode & 0o022:
                raise PermissionError(f"{folder}: not a private directory of this user")
        self.directory, self._secret, self._identity = directory, secret.encode(), identity
        self._forget(older_than=time.time() - self.KEEP_DAYS * 86400)

    def _forget(self, *, older_than: float) -> None:
        """Remove old files (a lock file removed while in use only lets two processes compute once each)."""
        for path in self.directory.iterdir():
            try:
                if path.suffix in (".json", ".lock", ".tmp") and path.lstat().st_mtime < older_than:
                    path.unlink()
            except OSError:
                continue

    @classmethod
    def default(cls, secret: str, identity: str) -> SharedResults | None:
        """In the system's temporary directory; ``None`` where files cannot be locked (no ``fcntl``)."""
        try:
            import fcntl  # noqa: F401 - POSIX only
            return cls(Path(tempfile.gettempdir()) / f"oncosurg-{os.getuid()}" / "dashboard", secret, identity)
        except (ImportError, OSError) as exc:
            log.warning("dashboard results are not shared between processes: %s", exc)
            return None

    def _path(self, key: tuple[Any, ...], suffix: str) -> Path:
        name = hmac.new(self._secret, f"{self._identity}|{key!r}".encode(), hashlib.sha256).hexdigest()[:40]
        return self.directory / (name + suffix)

    @contextlib.contextmanager
    def turn(self, key: tuple[Any, ...]) -> Iterator[None]:
        import fcntl

        with open(self._path(key, ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def load(self, key: tuple[Any, ...]) -> tuple[dict[str, Any], tuple[Any, ...], float] | None:
        """(result, fingerprint, wall-clock start of its computation), or ``None``."""
        try:
            signature, _, body = self._path(key, ".json").read_bytes().partition(b"\n")
        except OSError:
            return None
        if not hmac.compare_digest(signature.decode(errors="replace"), self._sign(body)):
            return None
        data = json.loads(body)
        return data["result"], tuple(data["fingerprint"]), float(data["started"])

    def save(self, key: tuple[Any, ...], result: dict[str, Any], fp: tuple[Any, ...], started: float) -> None:
        body = json.dumps({"result": result, "fingerprint": list(fp), "started": started}).encode()
        path = self._path(key, ".json")
        with tempfile.NamedTemporaryFile(dir=self.directory, delete=False, suffix=".tmp") as handle:
            handle.write(self._sign(body).encode() + b"\n" + body)
        os.replace(handle.name, path)

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._secret, body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class _Entry:
    """The last result for one (protocol, centres) key and its refresh state."""

    snapshot: tuple[dict[str, Any], tuple[Any, ...]] | None = None  # (result, fingerprint it was computed from)
    started: float = float("-inf")  # time.monotonic() of the last computation's start
    pending: bool = False  # a background refresh is scheduled or running
    lock: threading.Lock = field(default_factory=threading.Lock)  # one computation per key at a time
    compiled: Any = None  # the protocol compiled for these centres (compiled and rewritten once)


class Dashboard:
    """Loads the protocol once; keeps the last result per centre set, refreshed at most once per
    ``refresh_seconds`` in the background (see the module docstring)."""

    def __init__(self, protocol_ref: str, *, size: int = 64, refresh_seconds: float = 30.0,
                 pathway: Callable[[sa.Connection, list[str] | None], dict[str, Any]] | None = None,
                 today: Callable[[], dt.date] = dt.date.today, shared: SharedResults | None = None) -> None:
        self.protocol_ref = protocol_ref
        self.shared = shared  # results shared with the server's other processes
        self.pathway = pathway  # the pathway today of some centres (None: all), computed with the protocol
        self.today = today
        self.refresh_seconds = refresh_seconds
        self._protocol: Protocol | None = None
        self.error: str | None = None
        self._entries: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()
        self._background = threading.Semaphore(1)  # background recomputations run one at a time
        self.computations = 0  # how many times the protocol ran (tests, benchmarks)
        self.adopted = 0  # how many results were taken from another process (tests)

    @property
    def protocol(self) -> Protocol | None:
        if self._protocol is None and self.error is None:
            from oncosurg.protocol.engine import compile_protocol

            try:
                self._protocol = load_protocol(self.protocol_ref)
                compile_protocol(self._protocol)
            except ProtocolError as exc:
                self.error = str(exc)
                self._protocol = None
        return self._protocol

    def compute(self, engine: sa.Engine, conn: sa.Connection, *, user: User, centre: str = "") -> dict[str, Any]:
        """The dashboard of ``user``'s centres (or of ``centre``, one of them).  ``conn``, the request's
        connection, reads the centres and the registry's fingerprint; a computation, when one is
        needed, has a connection of ``engine``'s."""
        protocol = self.protocol
        allowed, fp = centres_and_marks(conn, user=user)
        if centre and centre not in allowed:
            raise Forbidden(f"centre '{centre}' is not granted to you")
        now_fp = (*fp, self.today().isoformat())
        centres = [centre] if centre else allowed
        restricted = bool(centre) or not user.all_centres
        base = {"centres": centres, "all_centres": not restricted, "available_centres": allowed,
                "protocol_error": self.error}
        if protocol is None or (restricted and not centres):
            with engine.connect() as conn:
                pathway = None if self.pathway is None else self.pathway(conn, centres if restricted else None)
            return base | {"protocol": protocol and protocol.summary(), "results": None, "curves": [],
                           "pathway": pathway, "cached": False}
        key = (protocol.id, tuple(centres) if restricted else None)
        return base | self._serve(engine, key, now_fp, protocol, centres if restricted else None)

    def warm(self, engine: sa.Engine) -> threading.Thread | None:
        """Compute the all-centre dashboard in the background (the server calls it at start-up)."""
        protocol = self.protocol
        if protocol is None:
            return None

        def run() -> None:
            try:
                with engine.connect() as conn:
                    now_fp = (*marks(conn), self.today().isoformat())
                self._serve(engine, (protocol.id, None), now_fp, protocol, None)
            except Exception:  # a failed warm-up only means the first request computes
                log.exception("dashboard warm-up failed")

        thread = threading.Thread(target=run, name="dashboard-warm", daemon=True)
        thread.start()
        return thread

    def _entry(self, key: tuple[Any, ...]) -> _Entry:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(key)
            return entry

    def _serve(self, engine: sa.Engine, key: tuple[Any, ...], now_fp: tuple[Any, ...], protocol: Protocol,
               centres: list[str] | None) -> dict[str, Any]:
        entry = self._entry(key)

        def run() -> None:
            self._run(engine, key, entry, protocol, centres)

        snapshot = entry.snapshot
        if snapshot is not None and snapshot[1] == now_fp:
            return snapshot[0] | {"cached": True, "stale": False}
        if snapshot is not None and self.refresh_seconds > 0:
            self._schedule(entry, run)
            return snapshot[0] | {"cached": True, "stale": True}
        with entry.lock:  # the first computation, or refresh_seconds == 0: one at a time, the others wait
            snapshot = entry.snapshot
            if snapshot is not None and snapshot[1] == now_fp:
                return snapshot[0] | {"cached": True, "stale": False}
            run()
            assert entry.snapshot is not None
            return entry.snapshot[0] | {"cached": False, "stale": entry.snapshot[1] != now_fp}

    def _schedule(self, entry: _Entry, run: Callable[[], None]) -> None:
        """One background refresh, no earlier than ``refresh_seconds`` after the last computation started."""
        with self._lock:
            if entry.pending:
                return
            entry.pending = True
        delay = max(0.0, entry.started + self.refresh_seconds - time.monotonic())

        def refresh() -> None:
            try:
                with self._background, entry.lock:
                    run()
            except Exception:  # the last result stays; the next stale request retries
                log.exception("dashboard refresh failed")
            finally:
                entry.pending = False

        timer = threading.Timer(delay, refresh)
        timer.daemon = True
        timer.start()

    def _run(self, engine: sa.Engine, key: tuple[Any, ...], entry: _Entry, protocol: Protocol,
             centres: list[str] | None) -> None:
        """The result for the registry as it is now (the caller holds ``entry.lock``): another
        process's (:class:`SharedResults`) when it is of this registry or recent enough, else computed."""
        if self.shared is None:
            self._compute(engine, entry, protocol, centres)
            return
        with self.shared.turn(key):
            with engine.connect() as conn:
                now_fp = (*marks(conn), self.today().isoformat())
            found = self.shared.load(key)
            if found is not None:
                result, fp, started = found
                age = time.time() - started
                if fp == now_fp or 0 <= age < self.refresh_seconds:
                    entry.started = time.monotonic() - age  # the next refresh counts from its computation
                    entry.snapshot = (result, fp)
                    self.adopted += 1
                    return
            started = time.time()
            self._compute(engine, entry, protocol, centres)
            assert entry.snapshot is not None
            try:
                self.shared.save(key, entry.snapshot[0], entry.snapshot[1], started)
            except OSError as exc:  # the other processes compute their own
                log.warning("dashboard result not shared: %s", exc)

    def _compute(self, engine: sa.Engine, entry: _Entry, protocol: Protocol, centres: list[str] | None) -> None:
        """Run the protocol on the registry as it is now: one connection, the analysis view
        materialised once for the endpoints and the curves."""
        from oncosurg.protocol.engine import compile_protocol, evaluate
        from oncosurg.protocol.materialize import materialized

        entry.started = time.monotonic()
        effective = restrict(protocol, centres) if centres is not None else protocol
        with engine.connect() as conn:
            now_fp = (*marks(conn), self.today().isoformat())  # read first: a change meanwhile refreshes again
            pathway = None if self.pathway is None else self.pathway(conn, centres)
            conn.rollback()
            if entry.compiled is None:
                entry.compiled = compile_protocol(effective)
            with materialized(conn, entry.compiled) as cp:
                results = evaluate(conn, cp, effective, provenance={"data": "live registry"})
                curves = self._curves(conn, cp, effective)
        if centres is not None:
            flow = results["cohort"]["flow"][1:]
            flow[0] = flow[0] | {"excluded": None, "reason": None}
            results["cohort"]["flow"] = flow
        result = {"protocol": protocol.summary(), "results": results, "curves": curves,
                  "pathway": pathway,
                  "computed_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "refresh_seconds": self.refresh_seconds}
        entry.snapshot = (result, now_fp)  # one assignment: readers see a result with its own fingerprint
        self.computations += 1

    @staticmethod
    def _curves(conn: sa.Connection, cp: Any, protocol: Protocol) -> list[dict[str, Any]]:
        """The Kaplan-Meier curves of the protocol's median endpoints, read from ``cp``'s view."""
        from oncosurg.stats import kaplan_meier

        curves = []
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
