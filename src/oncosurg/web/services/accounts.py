"""A user's own account: password change, one-time reset links issued by an admin, and the TOTP
second factor (RFC 6238, optional per user, required for admins when ``admin_totp_required``).

Every change is recorded in the audit trail (entity ``app_user``; never a password or a secret).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.web import security
from oncosurg.web.errors import Forbidden, Invalid, NotFound
from oncosurg.web.services import throttle
from oncosurg.web.services.users import User, end_sessions, managed_user
from oncosurg.web.settings import Settings


def _password_row(conn: sa.Connection, user_id: int) -> Any:
    row = conn.execute(sa.select(t.app_user).where(t.app_user.c.id == user_id, t.app_user.c.active.is_(True))
                       ).mappings().first()
    if row is None:
        raise NotFound(f"no active user {user_id}")
    return row


def _new_password_problems(password: str, confirm: str | None, *, username: str, settings: Settings
                           ) -> list[dict[str, str]]:
    problems = []
    problem = security.password_problem(password, min_score=settings.password_min_score, user_inputs=[username])
    if problem:
        problems.append({"column": "new_password", "message": problem})
    if confirm is not None and confirm != password:
        problems.append({"column": "confirm_password", "message": "the two new passwords differ"})
    return problems


def _set_password(conn: sa.Connection, *, user_id: int, password: str, now: dt.datetime) -> None:
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(
        password_hash=security.hash_password(password), password_changed_at=now))


def password_ok(store: Any, *, user: User, password: str, client: throttle.Client, settings: Settings,
                now: dt.datetime) -> bool:
    """Check the signed-in user's own password before a sensitive change, throttled like a sign-in.

    ``store``: the app's :class:`~oncosurg.web.db.WebStore`.  As for a sign-in, argon2 runs outside
    any transaction; the throttle is checked again in the short write that records a wrong password
    as a failure, so that attempts sent in parallel get no verdict beyond the allowance."""
    with store.read() as conn:
        throttle.check(conn, username=user.username, client=client, settings=settings, now=now)
        password_hash = _password_row(conn, user.id)["password_hash"]
    ok = security.verify_password(password_hash, password)
    with store.write() as conn:
        throttle.check(conn, username=user.username, client=client, settings=settings, now=now)
        if not ok:
            throttle.record(conn, username=user.username, client=client, success=False, now=now)
    return ok


def change_password(conn: sa.Connection, *, user: User, current: str, new: str, confirm: str | None,
                    settings: Settings, now: dt.datetime, keep: str | None) -> int:
    """Change the signed-in user's password (``current`` was checked by :func:`password_ok`); the
    user's other sessions end.  Returns how many sessions ended."""
    problems = _new_password_problems(new, confirm, username=user.username, settings=settings)
    if new == current:
        problems.append({"column": "new_password", "message": "the new password is the current one"})
    if problems:
        raise Invalid("the password was not changed", errors=problems)
    _set_password(conn, user_id=user.id, password=new, now=now)
    ended = end_sessions(conn, user_id=user.id, keep=keep)
    audit.append(conn, actor=audit.Actor(user.id, user.username), entries=[
        {"action": "update", "entity": "app_user", "entity_id": user.id, "field": "password",
         "new_value": "changed by the user", "reason": f"{ended} other session(s) ended"}])
    return ended


# ---------------------------------------------------------------------------------- reset links

def issue_reset(conn: sa.Connection, *, by: User | None, actor: audit.Actor, user_id: int, settings: Settings,
                now: dt.datetime) -> dict[str, Any]:
    """A one-time password-reset token for ``user_id`` (valid ``reset_link_hours``; earlier unused links
    of that user stop working).  Only its SHA-256 is stored; the caller shows the link once."""
    target = managed_user(conn, by=by, user_id=user_id)
    if not target["active"]:
        raise Invalid("the account is deactivated", errors=[{"column": "user", "message": "reactivate it first"}])
    r = t.password_reset
    conn.execute(sa.delete(r).where(sa.or_(r.c.user_id == user_id, r.c.expires_at < now)))
    token = security.new_token()
    expires = now + dt.timedelta(hours=settings.reset_link_hours)
    conn.execute(sa.insert(r).values(token_hash=security.token_hash(token), user_id=user_id,
                                     issued_by=actor.username[:64], created_at=now, expires_at=expires))
    audit.append(conn, actor=actor, entries=[
        {"action": "update", "entity": "app_user", "entity_id": user_id, "field": "password_reset_link",
         "new_value": f"issued, valid until {expires.isoformat(timespec='minutes')}Z"}])
    return {"ok": True, "user_id": user_id, "username": target["username"], "token": token,
            "path": f"/reset/{token}", "expires_at": expires.isoformat(timespec="seconds") + "Z"}


def reset_target(conn: sa.Connection, *, token: str, now: dt.datetime) -> dict[str, Any]:
    """The account a reset token is for; :class:`NotFound` when unknown, used, expired or deactivated."""
    r, u = t.password_reset, t.app_user
    row = conn.execute(sa.select(r.c.token_hash, r.c.expires_at, u.c.id, u.c.username)
                       .join(u, u.c.id == r.c.user_id)
                       .where(r.c.token_hash == security.token_hash(token or ""), r.c.used_at.is_(None),
                              r.c.expires_at > now, u.c.active.is_(True))).mappings().first()
    if row is None:
        raise NotFound("this reset link is unknown, already used or expired: ask an administrator for a new one")
    return {"user_id": row["id"], "username": row["username"],
            "expires_at": row["expires_at"].isoformat(timespec="seconds") + "Z"}


def use_reset(conn: sa.Connection, *, token: str, new: str, confirm: str | None, settings: Settings,
              now: dt.datetime) -> str:
    """Set the password through a reset token (used once); every session of the account ends.
    The second factor, if any, stays required.  Returns the user name."""
    target = reset_target(conn, token=token, now=now)
    problems = _new_password_problems(new, confirm, username=target["username"], settings=settings)
    if problems:
        raise Invalid("the password was not set", errors=problems)
    done = conn.execute(sa.update(t.password_reset).where(t.password_reset.c.token_hash == security.token_hash(token),
                                                          t.password_reset.c.used_at.is_(None))
                        .values(used_at=now)).rowcount
    if not done:
        raise NotFound("this reset link was just used")
    _set_password(conn, user_id=target["user_id"], password=new, now=now)
    end_sessions(conn, user_id=target["user_id"])
    audit.append(conn, actor=audit.Actor(target["user_id"], target["username"]), entries=[
        {"action": "update", "entity": "app_user", "entity_id": target["user_id"], "field": "password",
         "new_value": "set through a reset link", "reason": "every session ended"}])
    return str(target["username"])


# ----------------------------------------------------------------------------------------- TOTP

def totp_setup(username: str, secret: str | None = None) -> dict[str, str]:
    """A new secret (or ``secret``) with its otpauth URI and QR code, for enrolment."""
    secret = secret or security.new_totp_secret()
    uri = security.totp_uri(secret, username)
    return {"secret": secret, "uri": uri, "qr": security.totp_qr_svg(uri)}


def _valid_secret(secret: str) -> bool:
    return 16 <= len(secret) <= 64 and all(c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for c in secret)


def verify_code(conn: sa.Connection, *, user_id: int, username: str, code: str, client: throttle.Client,
                settings: Settings, now: dt.datetime) -> bool:
    """Check a sign-in code against the user's secret (throttled like a password; each code once)."""
    throttle.check(conn, username=username, client=client, settings=settings, now=now)
    row = conn.execute(sa.select(t.app_user.c.totp_secret, t.app_user.c.totp_last_step)
                       .where(t.app_user.c.id == user_id)).one()
    step = security.totp_step(row.totp_secret or "", code, at=_epoch(now), last_step=row.totp_last_step)
    throttle.record(conn, username=username, client=client, success=step is not None, now=now)
    if step is None:
        return False
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(totp_last_step=step))
    return True


def enable_totp(conn: sa.Connection, *, user_id: int, username: str, secret: str, code: str, now: dt.datetime,
                actor: audit.Actor) -> None:
    """Turn the second factor on with ``secret`` once ``code`` proves the authenticator has it."""
    secret = (secret or "").strip().upper()
    if not _valid_secret(secret):
        raise Invalid("two-factor sign-in was not turned on", errors=[
            {"column": "secret", "message": "the secret is not a base32 key; reload the page"}])
    step = security.totp_step(secret, code, at=_epoch(now), last_step=None)
    if step is None:
        raise Invalid("two-factor sign-in was not turned on", errors=[
            {"column": "code", "message": "the code does not match: check the authenticator's clock and type the "
                                          "6 digits it shows now"}])
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(totp_secret=secret,
                                                                                  totp_last_step=step))
    audit.append(conn, actor=actor, entries=[{"action": "update", "entity": "app_user", "entity_id": user_id,
                                              "field": "totp", "old_value": None, "new_value": "enabled"}])


def disable_totp(conn: sa.Connection, *, user: User, settings: Settings) -> None:
    """Turn one's own second factor off (the password was checked by :func:`password_ok`; admins keep
    it when it is required)."""
    if user.is_admin and settings.admin_totp_required:
        raise Forbidden("administrators must keep two-factor sign-in (admin_totp_required)")
    _clear_totp(conn, user_id=user.id, actor=audit.Actor(user.id, user.username), why="turned off by the user")


def reset_totp(conn: sa.Connection, *, by: User | None, actor: audit.Actor, user_id: int) -> None:
    """An admin (or the command line) removes a user's second factor (a lost phone); their sessions end."""
    target = managed_user(conn, by=by, user_id=user_id)
    if not target["totp_secret"]:
        raise Invalid("this account has no second factor", errors=[{"column": "totp", "message": "nothing to reset"}])
    _clear_totp(conn, user_id=user_id, actor=actor, why="reset by an administrator")
    end_sessions(conn, user_id=user_id)


def _clear_totp(conn: sa.Connection, *, user_id: int, actor: audit.Actor, why: str) -> None:
    conn.execute(sa.update(t.app_user).where(t.app_user.c.id == user_id).values(totp_secret=None,
                                                                                  totp_last_step=None))
    audit.append(conn, actor=actor, entries=[{"action": "update", "entity": "app_user", "entity_id": user_id,
                                              "field": "totp", "old_value": "enabled", "new_value": None,
                                              "reason": why}])


def _epoch(now: dt.datetime) -> float:
    return now.replace(tzinfo=dt.UTC).timestamp()
