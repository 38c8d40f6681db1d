"""``create_app(settings)``: the ASGI app of the registry (FastAPI, Jinja2 templates, no SPA)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from oncosurg import __version__
from oncosurg.web.db import WebStore
from oncosurg.web.deps import optional_user, read_threaded, render, session_cookie, wants_json
from oncosurg.web.errors import NotSignedIn, WebError, error_body
from oncosurg.web.middleware import AccessLog, RequestGuard
from oncosurg.web.models import ErrorBody
from oncosurg.web.security import SecurityHeadersMiddleware, parse_networks
from oncosurg.web.services.access import AccessRecorder
from oncosurg.web.services.dashboard import Dashboard, SharedResults
from oncosurg.web.services.roster import Roster
from oncosurg.web.services.users import secret_key
from oncosurg.web.services.worklist import Rules, WorklistIndex, pathway_now
from oncosurg.web.settings import Settings

log = logging.getLogger("oncosurg.web")

DESCRIPTION = """The oncosurg registry: the rescue-cetuximab → hepatectomy pathway, its worklist and live
dashboard.  Every page has a JSON twin (the same path with `.json`); errors are
`{"ok": false, "error", "errors", "status"}`.  Sign in with `POST /login` (form fields `username`,
`password`, `csrf_token` from `GET /login.json`); state-changing requests need the session's CSRF
token (`GET /me.json`) in the `csrf_token` form field or the `X-CSRF-Token` header."""


def create_app(settings: Settings | None = None, *, create: bool = True) -> FastAPI:
    """The app on ``settings.db_url``; ``create=False`` (``oncosurg serve``) requires an existing registry."""
    settings = settings or Settings.from_env()
    trusted = parse_networks(settings.trusted_proxies)
    store = WebStore(settings.db_url, create=create)
    app = FastAPI(lifespan=_lifespan, title="oncosurg registry", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  responses={k: {"model": ErrorBody} for k in (400, 401, 403, 404, 409, 422, 429)})
    app.state.settings = settings
    app.state.store = store
    app.state.secret = secret_key(store.write, configured=settings.secret_key)
    app.state.dashboard = Dashboard(
        settings.protocol, refresh_seconds=settings.dashboard_refresh_seconds, today=settings.today,
        shared=SharedResults.default(app.state.secret, identity=f"{store.engine.url}|{settings.protocol}"),
        pathway=lambda conn, centres: pathway_now(conn, centres=centres, today=settings.today(),
                                                  review_weeks=settings.review_weeks))
    app.state.trusted = trusted
    app.state.access = AccessRecorder(store)
    # the list and the worklist read outside a transaction; the worklist's index (four statements)
    # refreshes in a snapshot of its own, the roster's (one) on the request's connection
    app.state.roster = Roster()
    app.state.worklist_index = WorklistIndex(snapshot=store.read)
    # outermost last: the access log sees every response, headers are added to the guard's refusals too
    app.add_middleware(RequestGuard, state=app.state)
    app.add_middleware(SecurityHeadersMiddleware, hsts=settings.secure_cookies)
    app.add_middleware(AccessLog, trusted=trusted, header=settings.client_ip_header)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static")

    from oncosurg.web.routes import access, account, audit, auth, data, overview, patients, users

    # most requests first: a request is matched against each route in turn (no two routers' paths
    # overlap, except ``/patients/{pk}/audit``, which ``patients`` only answers for other methods)
    for module in (patients, overview, auth, account, data, audit, access, users):
        app.include_router(module.router)
    _error_handlers(app)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Served: size the pool of threads reading and rendering pages (``threads`` setting).  Under load a
    request's thread shares the interpreter lock with every other running one: with anyio's default
    of 40, an edit holding the write lock ran at a fraction of its speed while everyone queued behind
    it (PostgreSQL edits waited 2.9 s at the median of the web benchmark; 0.24 s with 2 threads)."""
    anyio.to_thread.current_default_thread_limiter().total_tokens = max(1, app.state.settings.threads)
    yield
    from oncosurg.web.services.access import flush

    try:
        flush(app.state.store)  # the access rows still in the journal, before the process ends
    except Exception:  # they stay in the journal for the next merge
        logging.getLogger("oncosurg.web.access").exception("access trail: the journal was not merged at shutdown")


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` and ``oncosurg serve --workers N``: settings from the environment;
    the dashboard starts computing in the background."""
    app = create_app(Settings.from_env())
    warm(app)
    return app


def warm(app: FastAPI) -> None:
    """What a served app computes in the background at start: the dashboard and the indexes."""
    app.state.dashboard.warm(app.state.store.engine)
    warm_indexes(app)


def warm_indexes(app: FastAPI) -> threading.Thread:
    """Build the patient list's roster and the worklist's index in the background, so that the first
    list and worklist requests after a start do not project the whole registry while others wait
    (about 1 s each at 10,000 patients; the web benchmark's slowest requests)."""
    settings, store = app.state.settings, app.state.store

    def run() -> None:
        try:
            with store.read() as conn:
                app.state.roster.patients(conn)
                app.state.worklist_index.sections(conn, Rules(
                    settings.today(), settings.review_cycles, settings.review_weeks, settings.review_horizon_weeks,
                    settings.followup_overdue_months))
        except Exception:  # a failed warm-up only means the first request builds them
            log.exception("warming the patient list and worklist indexes failed")

    thread = threading.Thread(target=run, name="indexes-warm", daemon=True)
    thread.start()
    return thread


def _respond(request: Request, message: str, errors: list, status: int,
             headers: dict[str, str] | None = None) -> Response:
    if wants_json(request) or (request.method not in ("GET", "HEAD") and "text/html" not in request.headers.get(
            "accept", "")):
        return JSONResponse(error_body(message, errors, status), status_code=status, headers=headers)
    if status == 401 and request.method == "GET":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return Response(status_code=303, headers={"location": f"/login?next={quote(target)}"})
    response = render(request, "error.html", {"message": message, "errors": errors, "status": status}, status=status)
    response.headers.update(headers or {})
    return response


def _looks_its_session_up(request: Request) -> bool:
    """Whether the request's route looks its session up itself (:data:`oncosurg.web.deps.SessionCookie`),
    which happens after its parameters are validated."""
    dependant = getattr(request.scope.get("route"), "dependant", None)
    return dependant is not None and any(d.call is session_cookie for d in dependant.dependencies)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WebError)
    async def web_error(request: Request, exc: WebError) -> Response:
        if isinstance(exc, NotSignedIn):
            request.state.user = None
        wait = getattr(exc, "retry_after", None)
        return _respond(request, exc.message, exc.errors, exc.status,
                        {"retry-after": str(wait)} if wait is not None else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return _respond(request, message, [], exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # a route that reads its session after its parameters: someone not signed in learns nothing more
        if (_looks_its_session_up(request) and not hasattr(request.state, "user")
                and await read_threaded(optional_user, request, request.app.state.store) is None):
            return await web_error(request, NotSignedIn("sign in first"))
        errors = [{"column": ".".join(str(p) for p in e.get("loc", ())[1:]) or None, "message": e.get("msg", ""),
                   "location": e.get("loc", ("",))[0]} for e in exc.errors()]
        return _respond(request, "the request has invalid parameters", errors, 422)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal error; the incident was logged", [], 500), status_code=500)
