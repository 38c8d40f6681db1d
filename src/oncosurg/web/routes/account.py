"""The signed-in user's own account: password, two-factor sign-in, sessions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncosurg.store import audit
from oncosurg.web.deps import (
    CsrfDep,
    CurrentUser,
    SettingsDep,
    StoreDep,
    form_data,
    page,
    render,
    see_other,
    session_token,
    sign_in_client,
    threaded,
    wants_json,
)
from oncosurg.web.errors import Invalid, WebError
from oncosurg.web.models import Account
from oncosurg.web.services import accounts, users

router = APIRouter(tags=["account"])


def _form(*fields: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": list(required),
        "properties": {name: {"type": "string"} for name in (*fields, "csrf_token")}}}}}}


def _html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not wants_json(request)


def _data(request: Request, store: Any, settings: Any, user: users.User) -> dict[str, Any]:
    with store.read() as conn:
        sessions = users.list_sessions(conn, user_id=user.id, now=settings.now(),
                                       idle_minutes=settings.session_idle_minutes, current=session_token(request))
    return {"account": user.to_dict(), "sessions": sessions, "idle_minutes": settings.session_idle_minutes,
            "session_hours": settings.session_hours, "totp_required": user.is_admin and settings.admin_totp_required,
            "errors": [], "message": None}


@router.get("/account.json", response_model=Account, summary="Your account: two-factor sign-in and sessions")
@router.get("/account", include_in_schema=False)
def account_page(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    return page(request, "account.html", _data(request, store, settings, user))


def _again(request: Request, store: Any, settings: Any, user: users.User, exc: WebError) -> Response:
    if not _html(request):
        raise exc
    data = _data(request, store, settings, user) | {"errors": exc.errors, "message": exc.message}
    return render(request, "account.html", data, status=exc.status)


@router.post("/account/password", summary="Change your password (your other sessions end)", dependencies=[CsrfDep],
             openapi_extra=_form("current_password", "new_password", "confirm_password",
                                 required=("current_password", "new_password")))
async def change_password(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    client, now, token = sign_in_client(request, user.username), settings.now(), session_token(request)
    current = form.get("current_password", "")[:1024]

    def check() -> bool:
        return accounts.password_ok(store, user=user, password=current, client=client, settings=settings, now=now)

    def work() -> int:
        with store.write() as conn:
            return accounts.change_password(conn, user=user, current=current, new=form.get("new_password", "")[:1025],
                                            confirm=form.get("confirm_password"), settings=settings, now=now,
                                            keep=token)

    try:
        if not await threaded(check):  # committed: a wrong password counts as a failed sign-in
            raise Invalid("the password was not changed",
                          errors=[{"column": "current_password", "message": "the current password is wrong"}])
        ended = await threaded(work)
    except WebError as exc:
        return _again(request, store, settings, user, exc)
    if _html(request):
        return see_other("/account?changed=password")
    return {"ok": True, "sessions_ended": ended}


@router.get("/account/totp.json", summary="A new TOTP secret to set up two-factor sign-in")
@router.get("/account/totp", include_in_schema=False)
def totp_setup(request: Request, user: CurrentUser) -> Any:
    setup = accounts.totp_setup(user.username)
    if request.url.path.endswith(".json"):
        return {"secret": setup["secret"], "uri": setup["uri"]}
    return render(request, "totp_enrol.html", setup | {"action": "/account/totp", "errors": [], "next": "",
                                                       "required": False})


@router.post("/account/totp", summary="Turn on two-factor sign-in (the secret and a code it generates)",
             dependencies=[CsrfDep], openapi_extra=_form("secret", "code", required=("secret", "code")))
async def totp_enable(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    secret = form.get("secret", "").strip().upper()[:64]

    def work() -> None:
        with store.write() as conn:
            accounts.enable_totp(conn, user_id=user.id, username=user.username, secret=secret,
                                 code=form.get("code", "")[:16], now=settings.now(),
                                 actor=audit.Actor(user.id, user.username))

    try:
        await threaded(work)
    except Invalid as exc:
        if not _html(request):
            raise
        setup = accounts.totp_setup(user.username, secret if accounts._valid_secret(secret) else None)
        return render(request, "totp_enrol.html", setup | {"action": "/account/totp", "errors": exc.errors,
                                                           "next": "", "required": False}, status=422)
    if _html(request):
        return see_other("/account?changed=totp")
    return {"ok": True, "totp": True}


@router.post("/account/totp/disable", summary="Turn off two-factor sign-in (your password is asked)",
             dependencies=[CsrfDep], openapi_extra=_form("password", required=("password",)))
async def totp_disable(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    client, now = sign_in_client(request, user.username), settings.now()

    def check() -> bool:
        return accounts.password_ok(store, user=user, password=form.get("password", "")[:1024], client=client,
                                    settings=settings, now=now)

    def work() -> None:
        with store.write() as conn:
            accounts.disable_totp(conn, user=user, settings=settings)

    try:
        if not await threaded(check):
            raise Invalid("two-factor sign-in is still on",
                          errors=[{"column": "password", "message": "the password is wrong"}])
        await threaded(work)
    except WebError as exc:
        return _again(request, store, settings, user, exc)
    if _html(request):
        return see_other("/account?changed=totp")
    return {"ok": True, "totp": False}


@router.post("/account/sessions/end", summary="End one of your sessions (`session` = its id) or all the others "
             "(`session` = others)", dependencies=[CsrfDep], openapi_extra=_form("session", required=("session",)))
async def end_my_sessions(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    which = form.get("session", "")[:32]

    def work() -> int:
        with store.write() as conn:
            if which == "others":
                return users.end_sessions(conn, user_id=user.id, keep=session_token(request))
            return users.end_sessions(conn, user_id=user.id, which=which)

    try:
        ended = await threaded(work)
    except WebError as exc:
        return _again(request, store, settings, user, exc)
    if _html(request):
        return see_other("/account")
    return {"ok": True, "ended": ended}
