"""Dependencies of the route handlers: the store, the signed-in user, role checks, CSRF, rendering.

Handlers stay thin: route → these dependencies → one keyword-only service call → :func:`page`,
which returns the data itself for a ``.json`` twin (FastAPI serialises it with the route's
response model) or the rendered template for a browser.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import weakref
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import jinja2
import jinja2.compiler
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from oncosurg import __version__
from oncosurg.report.terminal import format_estimate
from oncosurg.web import field_html, security
from oncosurg.web.db import WebStore
from oncosurg.web.errors import Forbidden, Invalid, NotSignedIn
from oncosurg.web.services import throttle, users
from oncosurg.web.services.patients import Context
from oncosurg.web.settings import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

T = TypeVar("T")
#: the names a dict answers as attributes (``items``, ``values``…): a template's ``d.values`` stays the method
_DICT_ATTRIBUTES = frozenset(dir(dict))


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """Jinja's code generator, writing ``{{ … }}`` of an autoescaped template through
    :func:`~oncosurg.web.field_html.escape_text` (``environment.escape_output``) instead of ``escape``."""

    def _output_child_pre(self, node: Any, frame: Any, finalize: Any) -> None:
        if frame.eval_ctx.volatile or not frame.eval_ctx.autoescape:
            super()._output_child_pre(node, frame, finalize)
            return
        self.write("environment.escape_output(")
        if finalize.src is not None:
            self.write(finalize.src)


class _Environment(jinja2.Environment):
    """Jinja's environment, but a template's ``d.name`` reads a dict's key first, and ``{{ value }}``
    is escaped to text without a Markup object per value (:func:`~oncosurg.web.field_html.escape_text`).

    Jinja tries ``getattr(d, "name")`` first, which on a dict (most of a page's values are dicts)
    raises an ``AttributeError`` before the key is read: 8 % of the server's CPU under load (py-spy,
    web benchmark on PostgreSQL).  The result is the same: a dict has no other attributes than
    :data:`_DICT_ATTRIBUTES`, which still resolve as Jinja resolves them.  Both leave every page
    byte-identical (tests compare with stock Jinja)."""

    escape_output = staticmethod(field_html.escape_text)
    if hasattr(jinja2.compiler.CodeGenerator, "_output_child_pre"):  # else: Jinja's own (slower) escaping
        code_generator_class = _CodeGenerator

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


TEMPLATES = Jinja2Templates(env=_Environment(loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
                                             autoescape=jinja2.select_autoescape()))
TEMPLATES.env.auto_reload = False  # templates ship with the package: no stat() of each one per page
TEMPLATES.env.globals["version"] = __version__
TEMPLATES.env.globals["field"] = field_html.field  # a form field (was a macro: most of a patient page's rendering)
TEMPLATES.env.globals["fields"] = field_html.fields  # the fields of a form
for _name in ("error_summary", "general_errors", "reason_field", "edit_forms", "add_form"):  # were macros too
    TEMPLATES.env.globals[_name] = getattr(field_html, _name)
TEMPLATES.env.filters["estimate"] = format_estimate


# The dependencies that neither read nor write are coroutines: FastAPI runs a plain function
# dependency in a worker thread, a hop per dependency per request.
async def get_store(request: Request) -> WebStore:
    return request.app.state.store


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


StoreDep = Annotated[WebStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def session_token(request: Request) -> str | None:
    token = request.cookies.get(security.SESSION_COOKIE)
    return token if token and len(token) <= 128 else None


def lookup_session(store: WebStore, settings: Settings, token: str, *, conn: sa.Connection | None = None
                   ) -> tuple[users.User | None, bool]:
    """The user of a live session (absolute and idle timeouts), and whether its idle timeout is due
    to be moved on (:func:`touch`, at most once a minute); on ``conn`` if given."""
    now = settings.now()
    # the session and its user in one statement (centres in a second)
    with nullcontext(conn) if conn is not None else store.read_one() as c:
        found = users.live_session(c, token=token, now=now, idle_minutes=settings.session_idle_minutes)
    if found is None or found[1] is None:
        return None, False
    row, user = found
    return user, users.needs_touch(row, now)


def touch(store: WebStore, settings: Settings, token: str) -> None:
    """Move a session's idle timeout on (writes ``last_seen_at``)."""
    from oncosurg.web.services.access import side_write

    with side_write(store) as conn:
        users.touch_session(conn, token=token, now=settings.now())


def lookup_user(store: WebStore, settings: Settings, token: str, *, conn: sa.Connection | None = None
                ) -> users.User | None:
    """:func:`lookup_session`, moving the idle timeout on when due."""
    user, due = lookup_session(store, settings, token, conn=conn)
    if due:
        touch(store, settings, token)
    return user


def _request_user(request: Request, store: WebStore, conn: sa.Connection | None = None) -> users.User | None:
    """The request's signed-in user (``None`` if none), looked up once per request (on ``conn`` if given)."""
    if hasattr(request.state, "user"):
        return request.state.user
    token = session_token(request)
    user = lookup_user(store, request.app.state.settings, token, conn=conn) if token else None
    request.state.user = user
    return user


def optional_user(request: Request, store: StoreDep) -> users.User | None:
    return _request_user(request, store)


async def session_cookie(request: Request) -> str:
    """The session token of a request that must be signed in, for the handlers that look the session
    up themselves, on their reading thread (:func:`reading_user`); refused at once without one."""
    token = session_token(request)
    if token is None:
        raise NotSignedIn("sign in first")
    return token


SessionCookie = Annotated[str, Depends(session_cookie)]


def reading_user(request: Request, store: WebStore, conn: sa.Connection) -> users.User:
    """The signed-in user of a request whose handler depends on :data:`SessionCookie` rather than
    :data:`CurrentUser`, looked up by the reading thread on its own connection: the most frequent
    pages (a patient, its JSON twin, the list, the worklist, the dashboard) take one trip through the
    readers' pool instead of two (:data:`CurrentUser`'s lookup is a trip of its own, so under load a
    request waited twice in the pool's queue), and mostly one connection.  :class:`NotSignedIn` if the
    session ended; the idle timeout moves on as with :func:`lookup_user`."""
    user = _request_user(request, store, conn)
    if user is None:
        raise NotSignedIn("sign in first")
    return user


def client_address(request: Request) -> str:
    """The client's address (the socket's peer, or the header of a configured trusted proxy)."""
    found = getattr(request.state, "client_address", None)
    if found:
        return found
    settings = request.app.state.settings
    return security.client_address(request.scope, trusted=request.app.state.trusted, header=settings.client_ip_header)


def record_access(request: Request, user: users.User, rows: list[dict[str, Any]], *,
                  conn: sa.Connection | None = None) -> None:
    """Record reads or exports in the access trail (blocking until recorded: call from a thread).

    Each row gives ``action``, ``resource``, ``fmt`` and optionally ``centre``, ``patient_pk``,
    ``patient_id``, ``patients``, ``detail`` (:func:`oncosurg.web.services.access.row`).  ``conn``:
    the read connection that may insert the rows (PostgreSQL; see
    :meth:`oncosurg.web.services.access.AccessRecorder.record`)."""
    from oncosurg.web.services import access

    now, client = request.app.state.settings.now(), client_address(request)
    request.app.state.access.record([access.row(user, client=client, now=now, **r) for r in rows], conn=conn)


def records_in_reader(request: Request) -> bool:
    """Whether a read's access row can be recorded by the reading thread itself (SQLite journal, or
    the read's own PostgreSQL connection) rather than waiting for the write lock in the writers' pool."""
    return request.app.state.access.in_reader


def sign_in_client(request: Request, username: str) -> throttle.Client:
    """Who signs in, for throttling: the device cookie bound to ``username`` when valid, and the address."""
    device = security.device_id(request.app.state.secret, username, request.cookies.get(security.DEVICE_COOKIE))
    return throttle.Client(client_address(request), device)


async def current_user(user: Annotated[users.User | None, Depends(optional_user)]) -> users.User:
    if user is None:
        raise NotSignedIn("sign in first")
    return user


CurrentUser = Annotated[users.User, Depends(current_user)]


async def writer(user: CurrentUser) -> users.User:
    if not user.can_write:
        raise Forbidden(f"role '{user.role}' is read-only")
    return user


async def auditor(user: CurrentUser) -> users.User:
    if not user.can_audit:
        raise Forbidden("only admins and auditors read the audit trail")
    return user


async def admin(user: CurrentUser) -> users.User:
    if not user.is_admin:
        raise Forbidden("only admins manage accounts")
    return user


Writer = Annotated[users.User, Depends(writer)]
Auditor = Annotated[users.User, Depends(auditor)]
Admin = Annotated[users.User, Depends(admin)]


def make_context(user: users.User, settings: Settings) -> Context:
    return Context(user=user, today=settings.today(), lock_days=settings.lock_days,
                   postop_window_days=settings.postop_window_days)


def csrf_for(request: Request) -> str | None:
    token = session_token(request)
    return security.csrf_token(request.app.state.secret, token) if token else None


async def form_data(request: Request) -> dict[str, str]:
    """The submitted form (text fields only), parsed once per request."""
    if not hasattr(request.state, "form_data"):
        form = await request.form()
        request.state.form_data = no_nul({k: v for k, v in form.items() if isinstance(v, str)})
    return request.state.form_data


def no_nul(values: dict[str, str]) -> dict[str, str]:
    """Refuse NUL characters in submitted text (no rule accepts them; PostgreSQL cannot store them)."""
    bad = [k for k, v in values.items() if "\x00" in k or "\x00" in v]
    if bad:
        raise Invalid("the form contains NUL characters", status=400, errors=[
            {"column": k[:64].replace("\x00", ""), "message": "NUL characters are not allowed"} for k in bad[:20]])
    return values


async def csrf(request: Request) -> None:
    """Every state-changing request: same origin, and the session's CSRF token in the form or header."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise Forbidden("cross-origin request refused")
    given = request.headers.get("x-csrf-token")
    content_type = request.headers.get("content-type", "")
    if given is None and content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        given = (await form_data(request)).get("csrf_token")
    if not security.csrf_ok(request.app.state.secret, session_token(request), given):
        raise Forbidden("missing or wrong CSRF token: reload the page and submit again")


CsrfDep = Depends(csrf)


def wants_json(request: Request) -> bool:
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def page(request: Request, template: str, data: dict[str, Any], *, status: int = 200) -> Any:
    """The JSON twin returns ``data``; a browser gets ``template`` rendered with it."""
    if wants_json(request):
        return data
    return render(request, template, data, status=status)


def render(request: Request, template: str, data: dict[str, Any], *, status: int = 200) -> HTMLResponse:
    user = getattr(request.state, "user", None)
    context = {"data": data, "user": user, "csrf": csrf_for(request) if user else None,
               "json_url": _json_url(request), "today": request.app.state.settings.today(), **data}
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status)


def _json_url(request: Request) -> str | None:
    path = request.url.path
    if path.endswith(".json") or path in ("/login",):
        return None
    twin = (path.rstrip("/") or "") + ".json"
    return twin + (f"?{request.url.query}" if request.url.query else "")


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


#: Threads waiting for the registry's write lock (edits, access-trail rows, session times) come
#: from their own pool, so that they never take the places of the threads reading and rendering
#: pages (anyio's default pool, sized by the ``threads`` setting when served).
WRITE_THREADS = 40
_WRITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def write_limiter() -> anyio.CapacityLimiter:
    """This event loop's pool of writing threads."""
    loop = asyncio.get_running_loop()
    limiter = _WRITERS.get(loop)
    if limiter is None:
        limiter = _WRITERS[loop] = anyio.CapacityLimiter(WRITE_THREADS)
    return limiter


async def threaded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking work that may wait for the write lock off the event loop, in the writers' pool."""
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=write_limiter())


async def read_threaded(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking reading and rendering off the event loop, in the readers' pool."""
    return await run_in_threadpool(fn, *args, **kwargs)


def safe_next(target: str | None) -> str:
    """Only same-site relative paths are followed after sign-in."""
    if target and target.startswith("/") and not target.startswith(("//", "/\\")) and len(target) < 500:
        return target
    return "/patients"


def no_content() -> Response:
    return Response(status_code=204)


def as_date(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.date) else value
