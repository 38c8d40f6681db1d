"""Passwords (argon2id), session, CSRF and device tokens, TOTP codes, the client's address, and the
security headers of every response."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import ipaddress
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SESSION_COOKIE = "oncosurg_session"
PRELOGIN_COOKIE = "oncosurg_prelogin"
#: Set after a successful sign-in; lets that browser through the throttling of other clients' failures.
DEVICE_COOKIE = "oncosurg_device"
TOTP_ISSUER = "oncosurg registry"

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
_dummy_hash: str | None = None
#: Password hashes computed at once by this process.  Each argon2 computation keeps ``parallelism``
#: (4) threads busy for about 0.1 s: 20 sign-ins at once ran 80 such threads on 2 cores and made an
#: edit wait 2.9 s.  Queued here, a burst of sign-ins waits for itself, not everyone else.
HASHING = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) // 2))


def hash_password(password: str) -> str:
    with HASHING:
        return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Constant-work check: an unknown user still costs one argon2 verification."""
    global _dummy_hash
    if password_hash is None:
        if _dummy_hash is None:
            _dummy_hash = hash_password(secrets.token_hex(16))
        password_hash = _dummy_hash
        with HASHING, contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
            _hasher.verify(password_hash, password)
        return False
    try:
        with HASHING:
            return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def password_problem(password: str, *, min_score: int = 3, user_inputs: Iterable[str] = ()) -> str | None:
    """Why a new password is refused (length, breached list, zxcvbn score), or ``None``."""
    from oncosurg.web.passwords import problem

    return problem(password, min_score=min_score, user_inputs=user_inputs)


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


# ------------------------------------------------------------------------------------ device cookies

def device_cookie(secret: str, username: str, device: str | None = None) -> str:
    """``<device id>.<HMAC>`` binding a random device id to the account signed in from it."""
    device = device or secrets.token_hex(8)
    mac = hmac.new(secret.encode(), f"device:{username}:{device}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{device}.{mac}"


def device_id(secret: str, username: str, cookie: str | None) -> str | None:
    """The device id of a valid device cookie for ``username``, else ``None``."""
    if not cookie or len(cookie) > 80 or "." not in cookie:
        return None
    device = cookie.split(".", 1)[0]
    if not device.isalnum() or len(device) > 32:
        return None
    return device if hmac.compare_digest(device_cookie(secret, username, device), cookie) else None


# ------------------------------------------------------------------------------- TOTP (RFC 6238)

def new_totp_secret() -> str:
    import pyotp

    return pyotp.random_base32()  # 160 bits, as RFC 4226 recommends


def totp_uri(secret: str, username: str) -> str:
    import pyotp

    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, *, at: float, last_step: int | None) -> int | None:
    """The 30-second step that ``code`` matches (this step or one either side, for clock drift), or
    ``None``; a code of a step at or before ``last_step`` is refused, so each code is used once."""
    import pyotp

    code = (code or "").strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6) or not secret:
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(at) // totp.interval
    for step in (now_step, now_step - 1, now_step + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def totp_qr_svg(uri: str) -> str:
    """The provisioning URI as an SVG QR code (data URI, allowed by the CSP's ``img-src data:``)."""
    import segno

    return segno.make(uri, error="m").svg_data_uri(scale=4)


# ----------------------------------------------------------------------------- client addresses

def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.1, 192.168.0.0/24"`` → networks; raises ``ValueError`` naming a bad entry."""
    out = []
    for item in (text or "").replace(";", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {item!r} is not an IP address or network") from None
    return tuple(out)


def _in(address: str, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(scope: MutableMapping[str, Any], *, trusted: tuple[Any, ...], header: str) -> str:
    """The client's address: the socket's peer, unless that peer is a trusted proxy, in which case the
    last address of ``header`` that is not itself a trusted proxy (X-Forwarded-For lists the hops,
    the nearest last).  Without trusted proxies the header is ignored, so it cannot be spoofed."""
    peer = (scope.get("client") or ("unknown", 0))[0] or "unknown"
    if not trusted or not _in(peer, trusted):
        return peer[:64]
    name = header.lower().encode()
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == name]
    hops = [h.strip() for v in values for h in v.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _in(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer[:64]  # garbage from the proxy: fall back to the proxy itself
    return peer[:64]


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
