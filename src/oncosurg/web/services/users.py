"""Accounts, roles, centre grants, sessions (absolute and idle timeouts), sign-in and the stored secret key.

An administrator grants only what they hold: an admin limited to some centres creates and changes
accounts of those centres only, never an all-centre account, and cannot change, deactivate or end
the sessions of an account that sees more than they do (:func:`may_grant`, :func:`managed_user`).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa

from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.web import security
from oncosurg.web.errors import Forbidden, Invalid, NotFound
from oncosurg.web.services import throttle
from oncosurg.web.settings import Settings

ROLES: tuple[str, ...] = ("admin", "data_manager", "investigator", "auditor")
ROLE_HELP: dict[str, str] = {
    "admin": "everything, including accounts and the whole audit trail",
    "data_manager": "registers and edits patients of the granted centres, uploads CSV files",
    "investigator": "reads patients, the worklist and the dashboard of the granted centres (read-only)",
    "auditor": "reads patients and the audit trail of the granted centres (read-only)",
}
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: A pending sign-in (password checked, second factor not yet) lasts this long.
PENDING_MINUTES = 10
#: ``last_seen_at`` is written at most this often per session (reads stay reads).
TOUCH_SECONDS = 60


@dataclass(frozen=True, slots=True)
class User:
    """A signed-in account with its grants (centre names)."""

    id: int
    username: str
    role: str
    all_centres: bool
    centres: frozenset[str]
    totp: bool = False

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "data_manager")

    @property
    def can_audit(self) -> bool:
        return self.role in ("admin", "auditor")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def sees(self, centre: str) -> bool:
        return self.all_centres or centre in self.centres

    def holds(self, *, all_centres: bool, centres: Iterable[str]) -> bool:
        """Whether these grants are within this user's own (an admin grants only what they hold)."""
        if self.all_centres:
            return True
        return not all_centres and set(centres) <= self.centres

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "role": self.role, "all_centres": self.all_centres,
                "centres": sorted(self.centres), "totp": self.totp}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


#: every centre's name, sorted (a user of every centre sees them all)
ALL_CENTRES = sa.select(t.centre.c.name).order_by(t.centre.c.name)


def visible_centres(conn: sa.Connection, *, user: User) -> list[str]:
    """Names of the centres the user may see, sorted."""
    if user.all_centres:
        return list(conn.execute(ALL_CENTRES).scalars())
    return sorted(user.centres)


def ensure_centre(conn: sa.Connection, *, name: str) -> int:
    found = conn.execute(sa.select(t.centre.c.id).where(t.centre.c.name == name)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(sa.insert(t.centre).values(name=name)).inserted_primary_key[0])


def may_grant(by: User | None, *, all_centres: bool, centres: Iterable[str]) -> None:
    """Refuse (:class:`Forbidden`) grants that ``by`` does not hold (``None`` = the command line)."""
    if by is None:
        return
    if not by.is_admin:
        raise Forbidden("only admins manage accounts")
    if not by.holds(all_centres=all_centres, centres=centres):
        what = "all centres" if all_centres else ", ".join(sorted(set(centres) - by.centres))
        raise Forbidden(f"you can grant only centres you hold yourself; not {what}")


def managed_user(conn: sa.Connection, *, by: User | None, user_id: int) -> dict[str, object]:
    """The account ``user_id`` if ``by`` may manage it (its grants are within ``by``'s), else raise."""
    row = conn.execute(sa.select(t.app_user).where(t.app_user.c.id == user_id)).mappings().first()
    if row is None:
        raise NotFound(f"no user {user_id}")
    names = set(conn.execute(sa.select(t.centre.c.name).join(t.user_centre, t.user_centre.c.centre_id == t.centre.c.id)
                             .where(t.user_centre.c.user_id == user_id)).scalars())
    if by is not None and not by.holds(all_centres=bool(row["all_centres"]), centres=names):
        raise Forbidden(f"'{row['username']}' sees centres you do not hold: only an administrator holding them "
                        "can change this account")
    return dict(row) | {"centres": sorted(names)}


def create_user(conn: sa.Connection, *, username: str, password: str, role: str,
                centres: Iterable[str] = (), all_centres: bool = False, actor: audit.Actor | None = None,
                by: User | None = None, min_score: int = 3) -> int:
    """Create an account (centres are created when new); raises :class:`Invalid` with every problem.

    ``by`` (the signed-in admin; ``None`` for the command line) may grant only what they hold.
    With ``actor`` the creation is recorded in the audit trail (role and grants, never the password).
    """
    problems: list[dict[str, str]] = []
    centres = [c.strip() for c in centres if c.strip()]
    may_grant(by, all_centres=all_centres, centres=centres)
    if not _USERNAME_RE.fullmatch(username):
        problems.append({"column": "username", "message": "1-64 characters from A-Z a-z 0-9 _ . @ -"})
    elif conn.execute(sa.select(t.app_user.c.id).where(t.app_user.c.username == username)).first():
        problems.append({"column": "username", "message": f"user '{username}' already exists"})
    if role not in ROLES:
        problems.append({"column": "role", "message": f"role must be one of {', '.join(ROLES)}"})
    problem = security.password_problem(password, min_score=min_score, user_inputs=[username, *centres])
    if problem:
        problems.append({"column": "password", "message": problem})
    if not all_centres and not centres:
        problems.append({"column": "centres", "message": "grant at least one centre, or all centres"})
    if any(len(c) > 120 for c in centres):
        problems.append({"column": "centres", "message": "a centre name has at most 120 characters"})
    if problems:
        raise Invalid("the account was not created", errors=problems)
    user_id = int(conn.execute(sa.insert(t.app_user).values(
        username=username, password_hash=security.hash_password(password), role=role, all_centres=all_centres,
        active=True, created_at=utcnow(), password_changed_at=utcnow())).inserted_primary_key[0])
    for name in sorted(set(centres)):
        conn.execute(sa.insert(t.user_centre).values(user_id=user_id, centre_id=ensure_centre(conn, name=name)))
    if actor is not None:
        grants = "all" if all_centres else "; ".join(sorted(set(centres)))
        audit.append(conn, actor=actor, entries=[
            {"action": "create", "entity": "app_user", "entity_id": user_id, "field": field, "new_value": value}
            for field, value in (("username", username), ("role", role), ("centres", grants))])
    return user_id


def load_user(conn: sa.Connection, *, user_id: int) -> User | None:
    row = conn.execute(sa.select(t.app_user).where(t.app_user.c.id == user_id, t.app_user.c.active.is_(True))
                       ).mappings().first()
    if row is None:
        return None
    names = conn.execute(sa.select(t.centre.c.name).join(t.user_centre, t.user_centre.c.centre_id == t.centre.c.id)
                         .where(t.user_centre.c.user_id == user_id)).scalars()
    return User(row["id"], row["username"], row["role"], bool(row["all_centres"]), frozenset(names),
                totp=bool(row["totp_secret"]))


def username_of(conn: sa.Connection, *, user_id: int) -> str | None:
    """The name of an active account."""
    return conn.execute(sa.select(t.app_user.c.username).where(t.app_user.c.id == user_id,
                                                               t.app_user.c.active.is_(True))).scalar()


def list_users(conn: sa.Connection, *, by: User | None = None) -> list[dict[str, object]]:
    """Every account; for a centre-limited admin, the accounts sharing a centre with them, each
    marked ``manageable`` when its grants are within theirs."""
    out = []
    for row in conn.execute(sa.select(t.app_user).order_by(t.app_user.c.username)).mappings():
        names = list(conn.execute(sa.select(t.centre.c.name)
                                  .join(t.user_centre, t.user_centre.c.centre_id == t.centre.c.id)
                                  .where(t.user_centre.c.user_id == row["id"]).order_by(t.centre.c.name)).scalars())
        if by is not None and not by.all_centres and not row["all_centres"] and not by.centres & set(names):
            continue
        out.append({"id": row["id"], "username": row["username"], "role": row["role"],
                    "all_centres": bool(row["all_centres"]), "active": bool(row["active"]), "centres": names,
                    "totp": bool(row["totp_secret"]),
                    "manageable": by is None or by.holds(all_centres=bool(row["all_centres"]), centres=names)})
    return out


def set_grants(conn: sa.Connection, *, user_id: int, role: str, centres: Iterable[str], all_centres: bool,
               actor: audit.Actor | None = None, by: User | None = None) -> None:
    """Change an account's role and centre grants (centres are created when new); ``by`` may change
    only accounts within their grants, and grant only what they hold."""
    managed_user(conn, by=by, user_id=user_id)
    row = conn.execute(sa.select(t.app_user.c.role, t.app_user.c.all_centres).where(t.app_user.c.id == user_id)).one()
    centres = sorted({c.strip() for c in centres if c.strip()})
    may_grant(by, all_centres=all_centres, centres=centres)
    problems = []
    if role not in ROLES:
        problems.append({"column": "role", "message": f"role must be one of {', '.join(ROLES)}"})
    if not all_centres and not centres:
        problems.append({"column": "centres", "message": "grant at least one centre, or all centres"})
    if any(len(c) > 120 or any(ord(ch) < 32 for ch in c) for c in centres):
        problems.append({"column": "centres", "message": "a centre name has at most 120 printable characters"})
    if problems:
        raise Invalid("the grants were not changed", errors=problems)
    before = conn.execute(sa.select(t.centre.c.name).join(t.user_centre, t.user_centre.c.centre_id == t.centre.c.id)
                          .where(t.user_centre.c.user_id == user_id).order_by(t.centre.c.name)).scalars().all()
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(role=role, all_centres=all_centres))
    conn.execute(sa.delete(t.user_centre).where(t.user_centre.c.user_id == user_id))
    for name in centres:
        conn.execute(sa.insert(t.user_centre).values(user_id=user_id, centre_id=ensure_centre(conn, name=name)))
    if actor is not None:
        old = {"role": row.role, "all_centres": bool(row.all_centres), "centres": "; ".join(before)}
        new = {"role": role, "all_centres": all_centres, "centres": "; ".join(centres)}
        audit.append(conn, actor=actor, entries=[
            {"action": "update", "entity": "app_user", "entity_id": user_id, "field": k, "old_value": old[k],
             "new_value": new[k]} for k in old if old[k] != new[k]])
    conn.execute(sa.delete(t.web_session).where(t.web_session.c.user_id == user_id))  # sign in again


def set_active(conn: sa.Connection, *, user_id: int, active: bool, actor: audit.Actor | None = None,
               by: User | None = None) -> None:
    before = managed_user(conn, by=by, user_id=user_id)["active"]
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(active=active))
    if actor is not None and bool(before) != active:
        audit.append(conn, actor=actor, entries=[{"action": "update", "entity": "app_user", "entity_id": user_id,
                                                 "field": "active", "old_value": bool(before), "new_value": active}])
    if not active:
        conn.execute(sa.delete(t.web_session).where(t.web_session.c.user_id == user_id))


def password_of(conn: sa.Connection, *, username: str, client: throttle.Client, settings: Settings,
                now: dt.datetime) -> tuple[int | None, str | None]:
    """First half of a sign-in, on a read connection: the active account's ``(id, password hash)``,
    ``(None, None)`` when there is none.

    Raises :class:`~oncosurg.web.errors.Throttled` while this (user name, client) pair must wait
    (:mod:`oncosurg.web.services.throttle`); never because of another client's failures.  The
    password itself is checked by :func:`check_password` after the connection is given back.
    """
    username = username[:64]
    throttle.check(conn, username=username, client=client, settings=settings, now=now)
    row = conn.execute(sa.select(t.app_user.c.id, t.app_user.c.password_hash)
                       .where(t.app_user.c.username == username, t.app_user.c.active.is_(True))).first()
    return (int(row.id), row.password_hash) if row else (None, None)


def check_password(user_id: int | None, password_hash: str | None, password: str) -> bool:
    """Second half: argon2 (about 0.1 s of CPU, a few at a time per process: :data:`security.HASHING`),
    outside any transaction, so that sign-ins never hold the registry's write lock nor a connection
    while they wait their turn; :func:`record_sign_in` finishes the attempt."""
    ok = security.verify_password(password_hash, password)
    return bool(ok and user_id is not None)


def record_sign_in(conn: sa.Connection, *, username: str, user_id: int | None, ok: bool, client: throttle.Client,
                   settings: Settings, now: dt.datetime) -> int | None:
    """Second half of a sign-in, in a write transaction: the user id when the password was right.

    The throttle is checked again under a lock (SQLite's one writer; on PostgreSQL a transaction
    lock on the account name, so that a sign-in never waits for an import), so that attempts sent
    in parallel (which all passed :func:`password_of`'s check) get no verdict beyond the pair's
    allowance: those the failures recorded meanwhile put over it raise
    :class:`~oncosurg.web.errors.Throttled`.
    Every attempt given a verdict is recorded; a user deactivated meanwhile is refused.
    """
    username = username[:64]
    if conn.dialect.name == "postgresql":  # attempts on one account one at a time (SQLite: one writer anyway)
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"oncosurg sign-in {username}"})
    throttle.check(conn, username=username, client=client, settings=settings, now=now)
    if ok and user_id is not None:
        ok = conn.execute(sa.select(t.app_user.c.id).where(t.app_user.c.id == user_id,
                                                           t.app_user.c.active.is_(True))).first() is not None
    throttle.record(conn, username=username, client=client, success=ok, now=now)
    return user_id if ok else None


def second_factor(conn: sa.Connection, *, user_id: int, settings: Settings) -> str | None:
    """What a signed-in password still needs: ``'totp'`` (a code), ``'enrol'`` (an admin must set up
    TOTP first, when ``admin_totp_required``), or ``None``."""
    row = conn.execute(sa.select(t.app_user.c.role, t.app_user.c.totp_secret).where(t.app_user.c.id == user_id)).one()
    if row.totp_secret:
        return "totp"
    if settings.admin_totp_required and row.role == "admin":
        return "enrol"
    return None


def create_session(conn: sa.Connection, *, user_id: int, hours: int, now: dt.datetime | None = None,
                   client: str | None = None, user_agent: str | None = None, pending: str | None = None) -> str:
    """A new session token (the database keeps its SHA-256); ``pending`` sessions only complete a sign-in."""
    token = security.new_token()
    now = now or utcnow()
    ends = now + (dt.timedelta(minutes=PENDING_MINUTES) if pending else dt.timedelta(hours=hours))
    conn.execute(sa.insert(t.web_session).values(
        token_hash=security.token_hash(token), user_id=user_id, created_at=now, expires_at=ends, last_seen_at=now,
        client=(client or "")[:64] or None, user_agent=(user_agent or "")[:200] or None, pending=pending))
    conn.execute(sa.delete(t.web_session).where(t.web_session.c.expires_at < now))
    return token


def _live(now: dt.datetime, idle_minutes: int) -> list[sa.ColumnElement[bool]]:
    s = t.web_session
    idle_since = now - dt.timedelta(minutes=idle_minutes)
    return [s.c.expires_at > now, sa.func.coalesce(s.c.last_seen_at, s.c.created_at) > idle_since]


def session_row(conn: sa.Connection, *, token: str, now: dt.datetime | None = None, idle_minutes: int = 30
                ) -> dict[str, object] | None:
    """The live session row of ``token`` (neither past its absolute end nor idle too long), pending or not."""
    now = now or utcnow()
    row = conn.execute(sa.select(t.web_session).where(t.web_session.c.token_hash == security.token_hash(token),
                                                      *_live(now, idle_minutes))).mappings().first()
    return dict(row) if row else None


def _session_and_user() -> sa.Select:
    """The session, its user and the user's granted centres: one row per grant (one, with no centre,
    for a user without grants)."""
    s, u, g = t.web_session, t.app_user, t.user_centre
    return (sa.select(s, u.c.username, u.c.role, u.c.all_centres, u.c.totp_secret,
                      t.centre.c.name.label("granted_centre"))
            .join(u, sa.and_(u.c.id == s.c.user_id, u.c.active.is_(True)))
            .outerjoin(g, g.c.user_id == s.c.user_id)
            .outerjoin(t.centre, t.centre.c.id == g.c.centre_id)
            .where(s.c.token_hash == sa.bindparam("token_hash"), s.c.expires_at > sa.bindparam("now"),
                   sa.func.coalesce(s.c.last_seen_at, s.c.created_at) > sa.bindparam("idle_since")))


#: Built once: a request's session lookup is one statement from SQLAlchemy's compiled cache.
SESSION_AND_USER = _session_and_user()


def live_session(conn: sa.Connection, *, token: str, now: dt.datetime, idle_minutes: int
                 ) -> tuple[dict[str, object], User | None] | None:
    """The live session row of ``token`` and its user (``None`` while the session is pending), read
    with one statement, the user's centre grants included (a second statement before: a round trip
    of every request of a centre-limited user on PostgreSQL); ``None`` without a live session of an
    active account.  Same rules as :func:`session_row` then :func:`load_user`."""
    rows = conn.execute(SESSION_AND_USER, {"token_hash": security.token_hash(token), "now": now,
                                           "idle_since": now - dt.timedelta(minutes=idle_minutes)}).mappings().all()
    if not rows:
        return None
    row = rows[0]
    session = {c.name: row[c.name] for c in t.web_session.c}
    if row["pending"]:
        return session, None
    centres = frozenset(r["granted_centre"] for r in rows if r["granted_centre"] is not None)
    return session, User(int(row["user_id"]), row["username"], row["role"], bool(row["all_centres"]), centres,
                         totp=bool(row["totp_secret"]))


def session_user(conn: sa.Connection, *, token: str, now: dt.datetime | None = None, idle_minutes: int = 30
                 ) -> User | None:
    """The user of a live, complete session (``None`` when expired, idle too long or pending)."""
    found = live_session(conn, token=token, now=now or utcnow(), idle_minutes=idle_minutes)
    return None if found is None else found[1]


def needs_touch(row: dict[str, object], now: dt.datetime) -> bool:
    seen = row.get("last_seen_at") or row["created_at"]
    return (now - seen).total_seconds() >= TOUCH_SECONDS  # type: ignore[operator]


def touch_session(conn: sa.Connection, *, token: str, now: dt.datetime) -> None:
    """Move the idle timeout on (written at most once per :data:`TOUCH_SECONDS`)."""
    conn.execute(sa.update(t.web_session).where(t.web_session.c.token_hash == security.token_hash(token))
                 .values(last_seen_at=now))


def end_session(conn: sa.Connection, *, token: str) -> None:
    conn.execute(sa.delete(t.web_session).where(t.web_session.c.token_hash == security.token_hash(token)))


def session_id(token_hash: str) -> str:
    """A session's public id: the first 16 hex digits of its token's SHA-256 (not usable to sign in)."""
    return token_hash[:16]


def list_sessions(conn: sa.Connection, *, user_id: int, now: dt.datetime, idle_minutes: int,
                  current: str | None = None) -> list[dict[str, object]]:
    """The user's live sessions, newest first; ``current`` (a token) is marked."""
    s = t.web_session
    current_hash = security.token_hash(current) if current else None
    rows = conn.execute(sa.select(s).where(s.c.user_id == user_id, s.c.pending.is_(None), *_live(now, idle_minutes))
                        .order_by(s.c.created_at.desc())).mappings()
    return [{"id": session_id(r["token_hash"]), "created_at": _iso(r["created_at"]),
             "last_seen_at": _iso(r["last_seen_at"] or r["created_at"]), "expires_at": _iso(r["expires_at"]),
             "client": r["client"], "user_agent": r["user_agent"], "current": r["token_hash"] == current_hash}
            for r in rows]


def end_sessions(conn: sa.Connection, *, user_id: int, which: str = "all", keep: str | None = None) -> int:
    """End ``which`` of the user's sessions: ``'all'``, or one session id; never the token ``keep``.
    Returns how many ended."""
    s = t.web_session
    where = [s.c.user_id == user_id]
    if which != "all":
        if not (len(which) == 16 and all(c in "0123456789abcdef" for c in which)):
            raise Invalid("no such session", errors=[{"column": "session", "value": which[:20],
                                                      "message": "a session id has 16 hexadecimal digits"}])
        where.append(s.c.token_hash.startswith(which))
    if keep:
        where.append(s.c.token_hash != security.token_hash(keep))
    return conn.execute(sa.delete(s).where(*where)).rowcount


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def secret_key(store_writer, *, configured: str | None) -> str:  # type: ignore[no-untyped-def]
    """``configured`` when given; otherwise the key stored in the database, generated on first use."""
    if configured:
        return configured
    with store_writer() as conn:
        found = conn.execute(sa.select(t.web_setting.c.value).where(t.web_setting.c.key == "secret_key")).scalar()
        if found:
            return str(found)
        key = secrets.token_urlsafe(48)
        conn.execute(sa.insert(t.web_setting).values(key="secret_key", value=key))
        return key
