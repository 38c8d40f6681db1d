"""Passwords (argon2id), session and CSRF tokens, and the security headers of every response."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD_LENGTH = 12
SESSION_COOKIE = "oncosurg_session"
PRELOGIN_COOKIE = "oncosurg_prelogin"

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
_dummy_hash: str | None = None


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-work check: an unknown user still costs one argon2 verification."""
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = _hasher.hash(secrets.token_hex(16))
        password_hash = _dummy_hash
        with contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
            _hasher.verify(password_hash, password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or ``None``."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > 1024:
        return "the password is longer than 1024 characters"
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a session token (a stolen table does not yield live sessions)."""
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(secret: str, bound_to: str) -> str:
    """The CSRF token for a session (or a pre-sign-in nonce): HMAC-SHA256, nothing stored."""
    return hmac.new(secret.encode(), b"csrf:" + bound_to.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: str, bound_to: str | None, given: str | None) -> bool:
    if not bound_to or not given:
        return False
    return hmac.compare_digest(csrf_token(secret, bound_to), given)


#: Sent with every response.  No inline script or style is used, so the policy can be strict;
#: SVG presentation attributes (stroke, fill) are not CSS and stay allowed.
SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding :data:`SECURITY_HEADERS` (and HSTS when cookies are Secure)."""

    def __init__(self, app: Callable[..., Awaitable[None]], *, hsts: bool = False) -> None:
        self.app = app
        headers = dict(SECURITY_HEADERS)
        if hsts:
            headers["strict-transport-security"] = "max-age=31536000"
        self.raw = [(k.encode(), v.encode()) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in self.raw
                         if k not in present and not (static and k == b"cache-control")]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
