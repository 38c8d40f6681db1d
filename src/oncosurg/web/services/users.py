"""Accounts, roles, centre grants, sessions, sign-in throttling and the stored secret key."""

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
from oncosurg.web.errors import Invalid, NotFound, Throttled

ROLES: tuple[str, ...] = ("admin", "data_manager", "investigator", "auditor")
ROLE_HELP: dict[str, str] = {
    "admin": "everything, including accounts and the whole audit trail",
    "data_manager": "registers and edits patients of the granted centres, uploads CSV files",
    "investigator": "reads patients, the worklist and the dashboard of the granted centres (read-only)",
    "auditor": "reads patients and the audit trail of the granted centres (read-only)",
}
_USERNAME_RE = re.compile(r"[A-Za-z0-9_.@-]{1,64}")


@dataclass(frozen=True, slots=True)
class User:
    """A signed-in account with its grants (centre names)."""

    id: int
    username: str
    role: str
    all_centres: bool
    centres: frozenset[str]

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

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "username": self.username, "role": self.role, "all_centres": self.all_centres,
                "centres": sorted(self.centres)}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def visible_centres(conn: sa.Connection, *, user: User) -> list[str]:
    """Names of the centres the user may see, sorted."""
    if user.all_centres:
        return list(conn.execute(sa.select(t.centre.c.name).order_by(t.centre.c.name)).scalars())
    return sorted(user.centres)


def ensure_centre(conn: sa.Connection, *, name: str) -> int:
    found = conn.execute(sa.select(t.centre.c.id).where(t.centre.c.name == name)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(sa.insert(t.centre).values(name=name)).inserted_primary_key[0])


def create_user(conn: sa.Connection, *, username: str, password: str, role: str,
                centres: Iterable[str] = (), all_centres: bool = False, actor: audit.Actor | None = None) -> int:
    """Create an account (centres are created when new); raises :class:`Invalid` with every problem.

    With ``actor`` the creation is recorded in the audit trail (role and grants, never the password).
    """
    problems: list[dict[str, str]] = []
    centres = [c.strip() for c in centres if c.strip()]
    if not _USERNAME_RE.fullmatch(username):
        problems.append({"column": "username", "message": "1-64 characters from A-Z a-z 0-9 _ . @ -"})
    elif conn.execute(sa.select(t.app_user.c.id).where(t.app_user.c.username == username)).first():
        problems.append({"column": "username", "message": f"user '{username}' already exists"})
    if role not in ROLES:
        problems.append({"column": "role", "message": f"role must be one of {', '.join(ROLES)}"})
    problem = security.password_problem(password)
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
        active=True, created_at=utcnow())).inserted_primary_key[0])
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
    return User(row["id"], row["username"], row["role"], bool(row["all_centres"]), frozenset(names))


def list_users(conn: sa.Connection) -> list[dict[str, object]]:
    out = []
    for row in conn.execute(sa.select(t.app_user).order_by(t.app_user.c.username)).mappings():
        names = conn.execute(sa.select(t.centre.c.name)
                             .join(t.user_centre, t.user_centre.c.centre_id == t.centre.c.id)
                             .where(t.user_centre.c.user_id == row["id"]).order_by(t.centre.c.name)).scalars()
        out.append({"id": row["id"], "username": row["username"], "role": row["role"],
                    "all_centres": bool(row["all_centres"]), "active": bool(row["active"]), "centres": list(names)})
    return out


def set_grants(conn: sa.Connection, *, user_id: int, role: str, centres: Iterable[str], all_centres: bool,
               actor: audit.Actor | None = None) -> None:
    """Change an account's role and centre grants (centres are created when new)."""
    row = conn.execute(sa.select(t.app_user.c.role, t.app_user.c.all_centres).where(t.app_user.c.id == user_id)).first()
    if row is None:
        raise NotFound(f"no user {user_id}")
    centres = sorted({c.strip() for c in centres if c.strip()})
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


def set_active(conn: sa.Connection, *, user_id: int, active: bool, actor: audit.Actor | None = None) -> None:
    before = conn.execute(sa.select(t.app_user.c.active).where(t.app_user.c.id == user_id)).scalar()
    if before is None:
        raise NotFound(f"no user {user_id}")
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(active=active))
    if actor is not None and bool(before) != active:
        audit.append(conn, actor=actor, entries=[{"action": "update", "entity": "app_user", "entity_id": user_id,
                                                 "field": "active", "old_value": bool(before), "new_value": active}])
    if not active:
        conn.execute(sa.delete(t.web_session).where(t.web_session.c.user_id == user_id))


def sign_in(conn: sa.Connection, *, username: str, password: str, client: str, max_failures: int,
            window_minutes: int) -> int | None:
    """The user id when the password is right; ``None`` when wrong.

    Raises :class:`Throttled` (without checking the password) after ``max_failures`` failures for
    the user name, or from the client, within the window.  Every attempt is recorded.
    """
    now = utcnow()
    since = now - dt.timedelta(minutes=window_minutes)
    a = t.login_attempt
    username, client = username[:64], client[:64]
    failures = conn.execute(sa.select(
        sa.func.count().filter(a.c.username == username),
        sa.func.count().filter(a.c.client == client),
    ).where(a.c.at >= since, a.c.success.is_(False))).one()
    if max(failures) >= max_failures:
        raise Throttled(f"too many failed sign-ins; wait {window_minutes} minutes and try again")
    row = conn.execute(sa.select(t.app_user.c.id, t.app_user.c.password_hash)
                       .where(t.app_user.c.username == username, t.app_user.c.active.is_(True))).first()
    ok = security.verify_password(row.password_hash if row else None, password)
    conn.execute(sa.insert(a).values(username=username, client=client, at=now, success=ok))
    conn.execute(sa.delete(a).where(a.c.at < now - dt.timedelta(days=30)))
    return int(row.id) if ok and row else None


def create_session(conn: sa.Connection, *, user_id: int, hours: int) -> str:
    token = security.new_token()
    now = utcnow()
    conn.execute(sa.insert(t.web_session).values(token_hash=security.token_hash(token), user_id=user_id,
                                                 created_at=now, expires_at=now + dt.timedelta(hours=hours)))
    conn.execute(sa.delete(t.web_session).where(t.web_session.c.expires_at < now))
    return token


def session_user(conn: sa.Connection, *, token: str) -> User | None:
    row = conn.execute(sa.select(t.web_session.c.user_id).where(
        t.web_session.c.token_hash == security.token_hash(token), t.web_session.c.expires_at > utcnow())).first()
    return load_user(conn, user_id=row.user_id) if row else None


def end_session(conn: sa.Connection, *, token: str) -> None:
    conn.execute(sa.delete(t.web_session).where(t.web_session.c.token_hash == security.token_hash(token)))


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
