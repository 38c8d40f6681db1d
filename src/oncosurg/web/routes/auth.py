"""Sign-in, sign-out and who am I."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

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
    threaded,
    wants_json,
)
from oncosurg.web.errors import Forbidden, Invalid, Throttled
from oncosurg.web.models import LoginForm, Me
from oncosurg.web.services import users

router = APIRouter(tags=["auth"])
_LOGIN_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["username", "password", "csrf_token"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                   "csrf_token": {"type": "string"}, "next": {"type": "string"}}}}}}}


@router.get("/", include_in_schema=False)
def home(user: Annotated[users.User | None, Depends(optional_user)]) -> RedirectResponse:
    return see_other("/patients" if user else "/login")


def _prelogin(request: Request) -> tuple[str, bool]:
    """The pre-sign-in nonce (from its cookie, or a fresh one) and whether it is fresh."""
    nonce = request.cookies.get(security.PRELOGIN_COOKIE)
    if not nonce or len(nonce) > 128:
        return security.new_token(), True
    return nonce, False


def _set_prelogin(response: Response, nonce: str, settings: Any) -> None:
    response.set_cookie(security.PRELOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                        secure=settings.secure_cookies, max_age=3600, path="/")


@router.get("/login.json", response_model=LoginForm, summary="CSRF token of the sign-in form")
@router.get("/login", include_in_schema=False)
def login_page(request: Request, settings: SettingsDep, next: str = "") -> Any:
    nonce, fresh = _prelogin(request)
    token = security.csrf_token(request.app.state.secret, nonce)
    if request.url.path.endswith(".json"):
        response: Response = JSONResponse({"csrf_token": token})
    else:
        response = render(request, "login.html", {"login_csrf": token, "next": safe_next(next) if next else "",
                                                  "message": None})
    if fresh:
        _set_prelogin(response, nonce, settings)
    return response


@router.post("/login", summary="Sign in (form)", response_model=Me, openapi_extra=_LOGIN_FORM)
async def login(request: Request, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    nonce = request.cookies.get(security.PRELOGIN_COOKIE)
    if not security.csrf_ok(request.app.state.secret, nonce, form.get("csrf_token")):
        raise Forbidden("the sign-in form expired: reload the page and sign in again")
    username, password = form.get("username", "")[:64], form.get("password", "")[:1024]
    client = request.client.host if request.client else "unknown"

    def work() -> tuple[int | None, str | None]:
        with store.write() as conn:
            user_id = users.sign_in(conn, username=username, password=password, client=client,
                                    max_failures=settings.login_max_failures,
                                    window_minutes=settings.login_window_minutes)
            if user_id is None:
                return None, None
            return user_id, users.create_session(conn, user_id=user_id, hours=settings.session_hours)

    try:
        user_id, token = await threaded(work)
    except Throttled as exc:
        if wants_json(request) or "text/html" not in request.headers.get("accept", ""):
            raise
        return _login_again(request, settings, exc.message, 429)
    if user_id is None or token is None:
        if wants_json(request) or "text/html" not in request.headers.get("accept", ""):
            raise Invalid("wrong user name or password", status=401)
        return _login_again(request, settings, "Wrong user name or password.", 401)
    with store.read() as conn:
        user = users.load_user(conn, user_id=user_id)
    assert user is not None
    if "text/html" in request.headers.get("accept", ""):
        response: Response = see_other(safe_next(form.get("next")))
    else:
        response = JSONResponse(user.to_dict() | {"csrf_token": security.csrf_token(request.app.state.secret, token)})
    response.set_cookie(security.SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=settings.secure_cookies, max_age=settings.session_hours * 3600, path="/")
    response.delete_cookie(security.PRELOGIN_COOKIE, path="/")
    return response


def _login_again(request: Request, settings: Any, message: str, status: int) -> Response:
    nonce = secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": security.csrf_token(request.app.state.secret, nonce),
                                              "next": "", "message": message}, status=status)
    _set_prelogin(response, nonce, settings)
    return response


@router.post("/logout", summary="Sign out", dependencies=[CsrfDep], status_code=204)
async def logout(request: Request, store: StoreDep) -> Response:
    token = session_token(request)
    if token:
        def work() -> None:
            with store.write() as conn:
                users.end_session(conn, token=token)
        await threaded(work)
    response: Response = see_other("/login") if "text/html" in request.headers.get("accept", "") else Response(
        status_code=204)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


@router.get("/me.json", response_model=Me, summary="The signed-in user and the session's CSRF token")
def me(request: Request, user: CurrentUser) -> dict[str, Any]:
    return user.to_dict() | {"csrf_token": csrf_for(request)}
