"""Sign-in (password, then a TOTP code when the account has one), sign-out, who am I, and the
one-time password-reset links."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from oncosurg.store import audit
from oncosurg.web import security
from oncosurg.web.deps import (
    CsrfDep,
    CurrentUser,
    SettingsDep,
    StoreDep,
    csrf_for,
    form_data,
    optional_user,
    render,
    safe_next,
    see_other,
    session_token,
    sign_in_client,
    threaded,
    wants_json,
)
from oncosurg.web.errors import Forbidden, Invalid, NotSignedIn, Throttled
from oncosurg.web.models import LoginForm, Me
from oncosurg.web.services import accounts, users
from oncosurg.web.services.access import side_write

router = APIRouter(tags=["auth"])
_LOGIN_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["username", "password", "csrf_token"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                   "csrf_token": {"type": "string"}, "next": {"type": "string"}}}}}}}
_CODE_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["code", "csrf_token"],
    "properties": {"code": {"type": "string"}, "secret": {"type": "string"}, "csrf_token": {"type": "string"},
                   "next": {"type": "string"}}}}}}}
_RESET_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["new_password", "csrf_token"],
    "properties": {"new_password": {"type": "string"}, "confirm_password": {"type": "string"},
                   "csrf_token": {"type": "string"}}}}}}}
_SIGNED_IN = {200: {"model": Me, "description": "signed in; or `{\"second_factor\": \"totp\"|\"enrol\", "
                                                "\"next\", \"csrf_token\"}` when a code is still needed"}}
ResetToken = Annotated[str, Path(min_length=20, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DEVICE_DAYS = 180


@router.get("/", include_in_schema=False)
def home(user: Annotated[users.User | None, Depends(optional_user)]) -> RedirectResponse:
    return see_other("/patients" if user else "/login")


def _html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not wants_json(request)


def _prelogin(request: Request) -> tuple[str, bool]:
    """The pre-sign-in nonce (from its cookie, or a fresh one) and whether it is fresh."""
    nonce = request.cookies.get(security.PRELOGIN_COOKIE)
    if not nonce or len(nonce) > 128:
        return security.new_token(), True
    return nonce, False


def _set_prelogin(response: Response, nonce: str, settings: Any) -> None:
    response.set_cookie(security.PRELOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, max_age=3600, path="/")


def _check_prelogin(request: Request, form: dict[str, str]) -> None:
    nonce = request.cookies.get(security.PRELOGIN_COOKIE)
    if not security.csrf_ok(request.app.state.secret, nonce, form.get("csrf_token")):
        raise Forbidden("the form expired: reload the page and submit it again")


@router.get("/login.json", response_model=LoginForm, summary="CSRF token of the sign-in form")
@router.get("/login", include_in_schema=False)
def login_page(request: Request, settings: SettingsDep, next: str = "", reset: str = "") -> Any:
    nonce, fresh = _prelogin(request)
    token = security.csrf_token(request.app.state.secret, nonce)
    if request.url.path.endswith(".json"):
        response: Response = JSONResponse({"csrf_token": token})
    else:
        message = "Your password is set: sign in with it." if reset else None
        response = render(request, "login.html", {"login_csrf": token, "next": safe_next(next) if next else "",
                                                  "message": message, "ok": bool(reset)})
    if fresh:
        _set_prelogin(response, nonce, settings)
    return response


def _throttled(request: Request, settings: Any, exc: Throttled, template: str = "login.html",
               data: dict[str, Any] | None = None) -> Response:
    if not _html(request):
        raise exc
    response = _login_again(request, settings, exc.message, 429) if data is None else render(
        request, template, data | {"message": exc.message}, status=429)
    response.headers["retry-after"] = str(getattr(exc, "retry_after", 1))
    return response


@router.post("/login", summary="Sign in (form)", response_model=None, responses=_SIGNED_IN, openapi_extra=_LOGIN_FORM)
async def login(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    _check_prelogin(request, form)
    username, password = form.get("username", "")[:64], form.get("password", "")[:1024]
    client = sign_in_client(request, username)
    agent = request.headers.get("user-agent", "")
    now = settings.now()

    def work() -> tuple[int | None, str | None, str | None]:
        with store.read() as conn:  # the password is checked without the write lock, nor any connection
            found, password_hash = users.password_of(conn, username=username, client=client, settings=settings,
                                                     now=now)
        ok = users.check_password(found, password_hash, password)
        with side_write(store) as conn:  # no audit row: on PostgreSQL, never behind an import
            user_id = users.record_sign_in(conn, username=username, user_id=found, ok=ok, client=client,
                                           settings=settings, now=now)
            if user_id is None:
                return None, None, None
            step = users.second_factor(conn, user_id=user_id, settings=settings)
            token = users.create_session(conn, user_id=user_id, hours=settings.session_hours, now=now,
                                         client=client.address, user_agent=agent, pending=step)
            return user_id, token, step

    try:
        user_id, token, step = await threaded(work)
    except Throttled as exc:
        return _throttled(request, settings, exc)
    if user_id is None or token is None:
        if not _html(request):
            raise Invalid("wrong user name or password", status=401)
        return _login_again(request, settings, "Wrong user name or password.", 401)
    next_url = safe_next(form.get("next"))
    if step is not None:  # the password was right; a code is still needed
        where = f"/login/{step}?next={quote(next_url)}"
        response: Response = see_other(where) if _html(request) else JSONResponse(
            {"ok": True, "second_factor": step, "next": f"/login/{step}",
             "csrf_token": security.csrf_token(request.app.state.secret, token)})
        _set_session(response, token, settings, pending=True)
        response.delete_cookie(security.PRELOGIN_COOKIE, path="/")
        return response
    return _signed_in(request, store, settings, user_id, token, next_url, client.device)


def _set_session(response: Response, token: str, settings: Any, *, pending: bool = False) -> None:
    age = users.PENDING_MINUTES * 60 if pending else settings.session_hours * 3600
    response.set_cookie(security.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies, max_age=age, path="/")


def _signed_in(request: Request, store: Any, settings: Any, user_id: int, token: str, next_url: str,
               device: str | None) -> Response:
    with store.read() as conn:
        user = users.load_user(conn, user_id=user_id)
    if user is None:
        raise NotSignedIn("the account is deactivated")
    if _html(request) or "text/html" in request.headers.get("accept", ""):
        response: Response = see_other(next_url)
    else:
        response = JSONResponse(user.to_dict() | {"csrf_token": security.csrf_token(request.app.state.secret, token)})
    _set_session(response, token, settings)
    response.set_cookie(security.DEVICE_COOKIE, security.device_cookie(request.app.state.secret, user.username, device),
                        httponly=True, samesite="strict", secure=settings.secure_cookies,
                        max_age=DEVICE_DAYS * 86400, path="/")
    response.delete_cookie(security.PRELOGIN_COOKIE, path="/")
    return response


def _login_again(request: Request, settings: Any, message: str, status: int) -> Response:
    nonce = security.new_token()
    response = render(request, "login.html", {"login_csrf": security.csrf_token(request.app.state.secret, nonce),
                                              "next": "", "message": message}, status=status)
    _set_prelogin(response, nonce, settings)
    return response


# ------------------------------------------------------------------------------- second factor

def _pending(request: Request, store: Any, settings: Any, kind: str) -> tuple[str, dict[str, Any], str]:
    """The pending sign-in of this browser (token, session row, user name), or :class:`NotSignedIn`."""
    token = session_token(request)
    row, name = None, None
    if token:
        with store.read() as conn:
            row = users.session_row(conn, token=token, now=settings.now(), idle_minutes=users.PENDING_MINUTES)
            if row is not None and row["pending"] == kind:
                name = users.username_of(conn, user_id=int(row["user_id"]))
    if token is None or row is None or name is None:
        raise NotSignedIn("sign in with your password first (the sign-in expired after "
                          f"{users.PENDING_MINUTES} minutes)")
    return token, row, name


@router.get("/login/totp.json", response_model=LoginForm, summary="CSRF token of the second-factor form")
@router.get("/login/totp", include_in_schema=False)
def totp_page(request: Request, store: StoreDep, settings: SettingsDep, next: str = "") -> Any:
    token, _, _ = _pending(request, store, settings, "totp")
    csrf = security.csrf_token(request.app.state.secret, token)
    if request.url.path.endswith(".json"):
        return {"csrf_token": csrf}
    return render(request, "login_totp.html", {"csrf_form": csrf, "next": safe_next(next), "message": None})


@router.post("/login/totp", summary="Second step of a sign-in: the authenticator's 6-digit code",
             response_model=None, responses=_SIGNED_IN, openapi_extra=_CODE_FORM)
async def totp_code(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    token, row, username = _pending(request, store, settings, "totp")
    form = await form_data(request)
    if not security.csrf_ok(request.app.state.secret, token, form.get("csrf_token")):
        raise Forbidden("the form expired: sign in again")
    client = sign_in_client(request, username)
    now = settings.now()
    user_id = int(row["user_id"])

    def work() -> str | None:
        with store.write() as conn:
            if not accounts.verify_code(conn, user_id=user_id, username=username, code=form.get("code", "")[:16],
                                        client=client, settings=settings, now=now):
                return None
            users.end_session(conn, token=token)  # a new token once fully signed in
            return users.create_session(conn, user_id=user_id, hours=settings.session_hours, now=now,
                                        client=client.address, user_agent=request.headers.get("user-agent"))

    next_url = safe_next(form.get("next"))
    csrf = security.csrf_token(request.app.state.secret, token)
    try:
        full = await threaded(work)
    except Throttled as exc:
        return _throttled(request, settings, exc, "login_totp.html", {"csrf_form": csrf, "next": next_url})
    if full is None:
        if not _html(request):
            raise Invalid("wrong code", status=401, errors=[{"column": "code", "message": "the code does not match"}])
        return render(request, "login_totp.html", {"csrf_form": csrf, "next": next_url,
                                                   "message": "Wrong code: type the 6 digits your authenticator "
                                                              "shows now."}, status=401)
    return _signed_in(request, store, settings, user_id, full, next_url, client.device)


@router.get("/login/enrol.json", summary="A new TOTP secret for an admin who must set one up to sign in")
@router.get("/login/enrol", include_in_schema=False)
def enrol_page(request: Request, store: StoreDep, settings: SettingsDep, next: str = "") -> Any:
    token, _, username = _pending(request, store, settings, "enrol")
    setup = accounts.totp_setup(username)
    data = setup | {"csrf_form": security.csrf_token(request.app.state.secret, token), "next": safe_next(next),
                    "action": "/login/enrol", "errors": [], "required": True}
    if request.url.path.endswith(".json"):
        return {"secret": setup["secret"], "uri": setup["uri"], "csrf_token": data["csrf_form"]}
    return render(request, "totp_enrol.html", data)


@router.post("/login/enrol", summary="Set up TOTP (the secret from /login/enrol.json and a code), then sign in",
             response_model=None, responses=_SIGNED_IN, openapi_extra=_CODE_FORM)
async def enrol(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    token, row, username = _pending(request, store, settings, "enrol")
    form = await form_data(request)
    if not security.csrf_ok(request.app.state.secret, token, form.get("csrf_token")):
        raise Forbidden("the form expired: sign in again")
    user_id, now = int(row["user_id"]), settings.now()
    client = sign_in_client(request, username)

    def work() -> str:
        with store.write() as conn:
            accounts.enable_totp(conn, user_id=user_id, username=username, secret=form.get("secret", "")[:64],
                                 code=form.get("code", "")[:16], now=now, actor=audit.Actor(user_id, username))
            users.end_session(conn, token=token)
            return users.create_session(conn, user_id=user_id, hours=settings.session_hours, now=now,
                                        client=client.address, user_agent=request.headers.get("user-agent"))

    try:
        full = await threaded(work)
    except Invalid as exc:
        if not _html(request):
            raise
        setup = accounts.totp_setup(username, form.get("secret", "").strip().upper() or None) \
            if accounts._valid_secret(form.get("secret", "").strip().upper()) else accounts.totp_setup(username)
        return render(request, "totp_enrol.html", setup | {
            "csrf_form": security.csrf_token(request.app.state.secret, token), "next": safe_next(form.get("next")),
            "action": "/login/enrol", "errors": exc.errors, "required": True}, status=422)
    return _signed_in(request, store, settings, user_id, full, safe_next(form.get("next")), client.device)


# -------------------------------------------------------------------------------------- sign-out

@router.post("/logout", summary="Sign out", dependencies=[CsrfDep], status_code=204)
async def logout(request: Request, store: StoreDep) -> Response:
    token = session_token(request)
    if token:
        def work() -> None:
            with side_write(store) as conn:
                users.end_session(conn, token=token)
        await threaded(work)
    response: Response = see_other("/login") if "text/html" in request.headers.get("accept", "") else Response(
        status_code=204)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


@router.get("/me.json", response_model=Me, summary="The signed-in user and the session's CSRF token")
def me(request: Request, user: CurrentUser) -> dict[str, Any]:
    return user.to_dict() | {"csrf_token": csrf_for(request)}


# ----------------------------------------------------------------------------------- reset links

@router.get("/reset/{token}", include_in_schema=False)
@router.get("/reset/{token}.json", summary="A password-reset link: whose it is, and the form's CSRF token")
def reset_page(request: Request, token: ResetToken, store: StoreDep, settings: SettingsDep) -> Any:
    with store.read() as conn:
        target = accounts.reset_target(conn, token=token, now=settings.now())
    nonce, fresh = _prelogin(request)
    csrf = security.csrf_token(request.app.state.secret, nonce)
    if request.url.path.endswith(".json"):
        response: Response = JSONResponse({"username": target["username"], "expires_at": target["expires_at"],
                                           "csrf_token": csrf})
    else:
        response = render(request, "reset.html", target | {"csrf_form": csrf, "token": token, "errors": []})
    if fresh:
        _set_prelogin(response, nonce, settings)
    return response


@router.post("/reset/{token}", summary="Set a new password through a one-time reset link", response_model=None,
             openapi_extra=_RESET_FORM)
async def reset(request: Request, token: ResetToken, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    _check_prelogin(request, form)
    now = settings.now()

    def work() -> str:
        with store.write() as conn:
            return accounts.use_reset(conn, token=token, new=form.get("new_password", "")[:1025],
                                      confirm=form.get("confirm_password"), settings=settings, now=now)

    try:
        username = await threaded(work)
    except Invalid as exc:
        if not _html(request):
            raise
        with store.read() as conn:
            target = accounts.reset_target(conn, token=token, now=now)
        return render(request, "reset.html", target | {"csrf_form": form.get("csrf_token", ""), "token": token,
                                                       "errors": exc.errors}, status=422)
    if _html(request):
        return see_other("/login?reset=1")
    return {"ok": True, "username": username}

