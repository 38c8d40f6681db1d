"""Sign-in throttling that slows guessing down without ever locking the right password out.

* **Per (account, client) pair**: after ``login_max_failures`` failed sign-ins of one user name from
  one client, each further attempt from that client waits 1, 2, 4, 8 … seconds after the last
  failure, up to ``login_max_delay_seconds``.  Failures older than ``login_window_minutes``, or
  before the pair's last success, are forgotten.  Another client is not slowed down by them, so a
  guesser cannot lock the account's owner out.
* **The client** is the device cookie the browser got at its last successful sign-in to that account
  (:data:`oncosurg.web.security.DEVICE_COOKIE`) when it presents one, otherwise its address (the
  socket's peer, or the client header of a configured trusted proxy): a guesser behind the same
  proxy as the account's owner does not slow the owner's browser down either.
* **Globally**: when more than ``login_global_per_minute`` sign-ins failed in the last minute, all
  clients together (a distributed guess), clients without a device cookie for the account wait
  until the rate drops; browsers that signed in before pass.

Only attempts whose password was checked count as failures (a refused attempt checks nothing), and
a wrong second-factor code counts as a failure of the pair.  Every checked attempt is recorded in
``login_attempt``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.web.errors import Throttled
from oncosurg.web.settings import Settings


@dataclass(frozen=True, slots=True)
class Client:
    """Who tries to sign in: an address, and the device id of a valid device cookie for the account."""

    address: str
    device: str | None = None


def _pair(username: str, client: Client) -> list[sa.ColumnElement[bool]]:
    a = t.login_attempt
    if client.device:
        return [a.c.username == username, a.c.device == client.device]
    return [a.c.username == username, a.c.client == client.address, a.c.device.is_(None)]


def retry_after(conn: sa.Connection, *, username: str, client: Client, settings: Settings, now: dt.datetime
                ) -> int:
    """Seconds this client must still wait before trying ``username`` again (0 = may try now)."""
    a = t.login_attempt
    since = now - dt.timedelta(minutes=settings.login_window_minutes)
    pair = _pair(username, client)
    last_ok = conn.execute(sa.select(sa.func.max(a.c.at)).where(*pair, a.c.success.is_(True), a.c.at >= since)
                           ).scalar()
    start = max(since, last_ok) if last_ok else since
    failures, last = conn.execute(sa.select(sa.func.count(), sa.func.max(a.c.at))
                                  .where(*pair, a.c.success.is_(False), a.c.at >= start)).one()
    wait = 0.0
    if failures >= settings.login_max_failures and last is not None:
        delay = min(2.0 ** (failures - settings.login_max_failures), float(settings.login_max_delay_seconds))
        wait = max(wait, delay - (now - last).total_seconds())
    if client.device is None and settings.login_global_per_minute > 0:
        minute = now - dt.timedelta(minutes=1)
        recent = conn.execute(sa.select(a.c.at).where(a.c.success.is_(False), a.c.at >= minute)
                              .order_by(a.c.at.desc()).limit(1).offset(settings.login_global_per_minute - 1)
                              ).scalar()
        if recent is not None:  # the limit is reached: wait until that failure leaves the last minute
            wait = max(wait, 60 - (now - recent).total_seconds())
    return max(0, math.ceil(wait))


def check(conn: sa.Connection, *, username: str, client: Client, settings: Settings, now: dt.datetime) -> None:
    """Raise :class:`Throttled` (with ``retry_after``) when this client must wait; checks no password."""
    wait = retry_after(conn, username=username, client=client, settings=settings, now=now)
    if wait > 0:
        error = Throttled(f"too many failed sign-ins from this client: wait {_duration(wait)} and try again "
                          "(other browsers and devices are not affected)")
        error.retry_after = wait  # type: ignore[attr-defined]
        raise error


def record(conn: sa.Connection, *, username: str, client: Client, success: bool, now: dt.datetime) -> None:
    """Record a checked attempt (and forget attempts older than 30 days)."""
    a = t.login_attempt
    conn.execute(sa.insert(a).values(username=username[:64], client=client.address[:64], device=client.device,
                                     at=now, success=success))
    conn.execute(sa.delete(a).where(a.c.at < now - dt.timedelta(days=30)))


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} second(s)"
    return f"{math.ceil(seconds / 60)} minute(s)"
