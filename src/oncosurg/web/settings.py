"""Settings of the registry web app: one typed object, overridable from ``ONCOSURG_WEB_*`` variables.

Like datasette's ``SETTINGS``, :data:`SETTINGS` is the single list of names, defaults and help
texts; ``docs/web.md`` lists it and :meth:`Settings.from_env` reads it.  There are no default
credentials: the first account is made with ``oncosurg user add``.  The secret key (signing the
sign-in form's CSRF token) comes from ``ONCOSURG_SECRET_KEY`` or is generated once and stored in
the database, so every process serving one database agrees on it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("protocol", "rescue-cetuximab-2007", "study protocol (id or TOML path) shown on the dashboard"),
    Setting("lock_days", 30, "records created more than this many days ago need a reason for every change"),
    Setting("review_cycles", 4, "an MDT resectability review is due after this many cetuximab cycles "
                                "since the start or the last review"),
    Setting("review_weeks", 8, "… or after this many weeks since the start or the last review"),
    Setting("review_horizon_weeks", 52, "a cetuximab line without a stop date and with no news (last contact or "
                                        "MDT review) for longer than this is 'status unknown', not due for review"),
    Setting("followup_overdue_months", 6, "follow-up is overdue when the last contact is older than this"),
    Setting("session_hours", 12, "a session expires this many hours after sign-in"),
    Setting("session_idle_minutes", 30, "a session also expires after this many minutes without a request"),
    Setting("login_max_failures", 5, "failed sign-ins of one (user name, client) pair before delays start"),
    Setting("login_window_minutes", 1440, "failures older than this (or before the pair's last success) are forgotten"),
    Setting("login_max_delay_seconds", 900, "the growing delay (1, 2, 4 … s) stops growing here"),
    Setting("login_global_per_minute", 100, "failed sign-ins per minute, all clients together, above which "
                                            "clients without a device cookie for the account wait"),
    Setting("trusted_proxies", "", "comma-separated addresses or networks of reverse proxies whose client "
                                   "header is believed"),
    Setting("client_ip_header", "x-forwarded-for", "the header a trusted proxy puts the client address in"),
    Setting("admin_totp_required", False, "admins must use a TOTP second factor (enrolled at next sign-in)"),
    Setting("password_min_score", 3, "the least zxcvbn strength score (0-4) of a new password"),
    Setting("reset_link_hours", 24, "a password-reset link expires this many hours after it is issued"),
    Setting("upload_max_mb", 50, "uploads larger than this are refused before they are read"),
    Setting("form_max_kb", 1024, "other request bodies larger than this are refused before they are read"),
    Setting("secure_cookies", False, "mark cookies Secure (set when served behind HTTPS)"),
    Setting("postop_window_days", DEFAULT_POSTOP_WINDOW_DAYS, "postoperative window of the Clavien-Dindo V rule"),
    Setting("page_size", 50, "patients per page of the patient list"),
    Setting("threads", 2, "threads per server process reading and rendering pages (writes wait in a pool of "
                          "their own); more only share one Python interpreter lock more thinly"),
    Setting("dashboard_refresh_seconds", 30, "after a change, the dashboard shows its last result (with its time) "
                                             "and is recomputed in the background at most this often "
                                             "(0: before answering)"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the app needs; ``create_app(Settings(db_url=...))``."""

    db_url: str | None = None
    secret_key: str | None = None
    protocol: str = "rescue-cetuximab-2007"
    lock_days: int = 30
    review_cycles: int = 4
    review_weeks: int = 8
    review_horizon_weeks: int = 52
    followup_overdue_months: int = 6
    session_hours: int = 12
    session_idle_minutes: int = 30
    login_max_failures: int = 5
    login_window_minutes: int = 1440
    login_max_delay_seconds: int = 900
    login_global_per_minute: int = 100
    trusted_proxies: str = ""
    client_ip_header: str = "x-forwarded-for"
    admin_totp_required: bool = False
    password_min_score: int = 3
    reset_link_hours: int = 24
    upload_max_mb: int = 50
    form_max_kb: int = 1024
    secure_cookies: bool = False
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS
    page_size: int = 50
    dashboard_refresh_seconds: int = 30
    threads: int = 2
    #: today's date; tests replace it to move the clock
    today: Callable[[], dt.date] = field(default=dt.date.today, compare=False)
    #: the time (naive UTC) for sessions, sign-in delays and reset links; tests replace it
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None),
                                           compare=False)

    @property
    def upload_max_bytes(self) -> int:
        return self.upload_max_mb * 1024 * 1024

    @property
    def form_max_bytes(self) -> int:
        return self.form_max_kb * 1024

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``ONCOSURG_WEB_<NAME>`` variables, then ``overrides``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"db_url": env.get("ONCOSURG_DB"), "secret_key": env.get("ONCOSURG_SECRET_KEY")}
        for s in SETTINGS:
            raw = env.get(f"ONCOSURG_WEB_{s.name.upper()}")
            if raw is None:
                continue
            if isinstance(s.default, bool):
                values[s.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            elif isinstance(s.default, int):
                try:
                    values[s.name] = int(raw)
                except ValueError:
                    raise ValueError(f"ONCOSURG_WEB_{s.name.upper()} must be an integer, got {raw!r}") from None
            else:
                values[s.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return dataclasses.replace(cls(), **values)
