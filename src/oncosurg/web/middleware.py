"""ASGI middleware of the registry: request-body limits with authentication and CSRF checked before a
body is read, and the access log (one line per request, with the user name).

:class:`RequestGuard` handles every request that may carry a body (POST, PUT, PATCH, DELETE):

1. a ``Content-Length`` above the limit (``upload_max_mb`` for ``/upload``, ``form_max_kb`` for
   everything else) is refused with 413 before a byte of the body is read;
2. outside the sign-in pages, the session is checked (401) and a cross-site ``Origin`` refused (403)
   before the body is read; the CSRF token is checked from the ``X-CSRF-Token`` header, or, for a
   multipart upload, from its text fields before the first file (the upload form sends
   ``csrf_token`` first), so a forged or signed-out upload is refused after at most 64 KiB;
3. bodies without a length (chunked) are counted as they stream, and refused with 413 as soon as
   they pass the limit.

URL-encoded forms (at most ``form_max_kb``, kept in memory, never spooled) have their CSRF token
checked by the route's dependency (:func:`oncosurg.web.deps.csrf`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, urlsplit

from anyio import to_thread
from starlette.exceptions import HTTPException

from oncosurg.web import security
from oncosurg.web.errors import error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

access_log = logging.getLogger("oncosurg.web.access")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Paths whose POST needs no session (their forms carry the pre-sign-in CSRF token or a pending session).
PUBLIC_POSTS = ("/login", "/login/totp", "/login/enrol")
PEEK_BYTES = 64 * 1024


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {_size(limit)}: nothing was read past the limit")


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit // 1024} KB"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _cookie(scope: Scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value.strip('"') or None
    return None


def state_of(scope: Scope) -> dict[str, Any]:
    return scope.setdefault("state", {})


class RequestGuard:
    """Size limits, then authentication and CSRF, before a request body is read (see the module)."""

    def __init__(self, app: ASGIApp, *, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: settings, store, secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        settings = self.state.settings
        path = scope.get("path", "")
        limit = settings.upload_max_bytes if path == "/upload" else settings.form_max_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _refuse(scope, send, 400, "the Content-Length header is not a number")
                return
            if int(length) > limit:
                await _refuse(scope, send, 413, BodyTooLarge(limit).detail)
                return
        receive = _counting(receive, limit)
        if path in PUBLIC_POSTS or path.startswith("/reset/"):
            await self.app(scope, receive, send)
            return
        token = _cookie(scope, security.SESSION_COOKIE)
        user = None
        if token and len(token) <= 128:
            user, due = await to_thread.run_sync(self._user, token)  # the readers' pool
            if due:  # the write waits in the writers' pool
                from oncosurg.web.deps import touch, write_limiter

                await to_thread.run_sync(touch, self.state.store, self.state.settings, token, limiter=write_limiter())
        state_of(scope)["user"] = user
        if user is None:
            await _refuse(scope, send, 401, "sign in first (your session ended, or expired after "
                                            f"{settings.session_idle_minutes} idle minutes)")
            return
        origin = _header(scope, b"origin")
        if origin and origin != "null" and urlsplit(origin).netloc != (_header(scope, b"host") or ""):
            await _refuse(scope, send, 403, "cross-origin request refused")
            return
        given = _header(scope, b"x-csrf-token")
        content_type = (_header(scope, b"content-type") or "").lower()
        if given is None and content_type.startswith("multipart/form-data"):
            given, receive = await _peek_csrf(receive, content_type)
        elif given is None and not content_type.startswith("application/x-www-form-urlencoded"):
            given = ""  # no form to carry the token: refuse now
        if given is not None and not security.csrf_ok(self.state.secret, token, given):
            await _refuse(scope, send, 403, "missing or wrong CSRF token: reload the page and submit again "
                                            "(an upload sends csrf_token first, or in the X-CSRF-Token header)")
            return
        await self.app(scope, receive, send)

    def _user(self, token: str) -> tuple[Any, bool]:
        from oncosurg.web.deps import lookup_session

        return lookup_session(self.state.store, self.state.settings, token)


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


async def _peek_csrf(receive: Receive, content_type: str) -> tuple[str, Receive]:
    """The value of the ``csrf_token`` part if it precedes the first file ('' otherwise), reading at most
    :data:`PEEK_BYTES`; and a ``receive`` that replays what was read."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    buffered: list[Message] = []
    data = b""
    more = True
    found = ""
    while more and len(data) < PEEK_BYTES:
        message = await receive()
        buffered.append(message)
        if message["type"] != "http.request":
            break
        data += message.get("body", b"")
        more = message.get("more_body", False)
        value = _first_part(data, boundary.encode("latin-1"))
        if value is not None:
            found = value
            break
    pending = list(buffered)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return found, replay


def _first_part(data: bytes, boundary: bytes) -> str | None:
    """``csrf_token``'s value if it comes before the first file part; '' when a file part (or anything
    malformed) comes first; ``None`` when more bytes are needed."""
    if not boundary:
        return ""
    delimiter = b"--" + boundary
    if len(data) < len(delimiter) + 2:
        return None
    if not data.startswith(delimiter + b"\r\n"):
        return ""
    at = len(delimiter) + 2
    while True:
        head_end = data.find(b"\r\n\r\n", at)
        if head_end < 0:
            return None
        headers = data[at:head_end].decode("latin-1").lower()
        if "filename=" in headers:
            return ""
        value_end = data.find(b"\r\n" + delimiter, head_end + 4)
        if value_end < 0:
            return None
        if 'name="csrf_token"' in headers:
            return data[head_end + 4:value_end].decode("latin-1").strip()
        at = value_end + 2 + len(delimiter)
        if data[at:at + 2] == b"--":
            return ""  # the last part, and no token
        if len(data) < at + 2:
            return None
        at += 2  # the CRLF after the delimiter


async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
    """The one error shape for API clients; a browser signed out is sent to the sign-in page."""
    accept = _header(scope, b"accept") or ""
    headers: list[tuple[bytes, bytes]]
    if status == 401 and "text/html" in accept:
        referer = urlsplit(_header(scope, b"referer") or "")
        target = referer.path if referer.path.startswith("/") and not referer.path.startswith("//") else ""
        location = "/login" + (f"?next={quote(target)}" if target and target != "/login" else "")
        headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 303, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    body = json.dumps(error_body(message, [], status), separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class AccessLog:
    """One log line per request: client address, user name, request line, status, bytes, milliseconds.

    The client address (the socket's peer, or a trusted proxy's header) is put in the request state
    for the app; reset-link tokens are not logged, nor query strings (they may hold patient ids).
    """

    def __init__(self, app: ASGIApp, *, trusted: tuple[Any, ...], header: str) -> None:
        self.app = app
        self.trusted = trusted
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = security.client_address(scope, trusted=self.trusted, header=self.header)
        state_of(scope)["client_address"] = client
        started = time.perf_counter()
        status, size = 500, 0

        async def logged_send(message: Message) -> None:
            nonlocal status, size
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                size += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        finally:
            user = state_of(scope).get("user")
            name = getattr(user, "username", None) or "-"
            path = scope.get("path", "")
            if path.startswith("/reset/"):
                path = "/reset/…"
            access_log.info('%s - %s "%s %s HTTP/%s" %d %d %.1fms', client, name, scope.get("method"), path,
                            scope.get("http_version", "1.1"), status, size, (time.perf_counter() - started) * 1000)
