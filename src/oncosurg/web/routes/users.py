"""Accounts (admins only): list, create, change grants, deactivate, reset links, second factor, sessions.

An admin acts only on accounts within their own grants and grants only what they hold
(:func:`oncosurg.web.services.users.may_grant`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncosurg.store import audit
from oncosurg.web.deps import (
    Admin,
    CsrfDep,
    SettingsDep,
    StoreDep,
    form_data,
    page,
    render,
    see_other,
    threaded,
    wants_json,
)
from oncosurg.web.errors import Forbidden, Invalid
from oncosurg.web.models import Users
from oncosurg.web.routes import PK
from oncosurg.web.services import accounts, users

router = APIRouter(tags=["users"])
_USER_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["username", "password", "role"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                   "role": {"type": "string", "enum": list(users.ROLES)}, "centres": {"type": "string"},
                   "all_centres": {"type": "string"}, "csrf_token": {"type": "string"}}}}}}}


def _data(store: Any, by: users.User) -> dict[str, Any]:
    with store.read() as conn:
        return {"users": users.list_users(conn, by=by), "roles": users.ROLE_HELP, "reset": None}


def _html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not wants_json(request)


@router.get("/users.json", response_model=Users, summary="Accounts (admins only)")
@router.get("/users", include_in_schema=False)
def user_list(request: Request, user: Admin, store: StoreDep) -> Any:
    return page(request, "users.html", _data(store, user) | {"errors": [], "form": {}})


@router.post("/users", summary="Create an account (admins only)", dependencies=[CsrfDep], status_code=201,
             openapi_extra=_USER_FORM)
async def create_user(request: Request, user: Admin, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    centres = [c for c in form.get("centres", "").replace("\n", ",").split(",") if c.strip()]

    def work() -> int:
        with store.write() as conn:
            return users.create_user(conn, username=form.get("username", ""), password=form.get("password", ""),
                                     role=form.get("role", ""), centres=centres,
                                     all_centres=form.get("all_centres") in ("yes", "on", "true"),
                                     actor=audit.Actor(user.id, user.username), by=user,
                                     min_score=settings.password_min_score)

    html = _html(request)
    try:
        new_id = await threaded(work)
    except (Invalid, Forbidden) as exc:
        if not html:
            raise
        shown = {k: v for k, v in form.items() if k != "password"}
        errors = exc.errors or [{"column": "grants", "message": exc.message}]
        return render(request, "users.html", _data(store, user) | {"errors": errors, "form": shown},
                      status=exc.status)
    if html:
        return see_other("/users")
    return {"ok": True, "id": new_id}


_GRANTS_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["role"],
    "properties": {"role": {"type": "string", "enum": list(users.ROLES)}, "centres": {"type": "string"},
                   "all_centres": {"type": "string"}, "csrf_token": {"type": "string"}}}}}}}


@router.post("/users/{user_id}/grants", summary="Change an account's role and centres (admins only); "
             "its sessions end", dependencies=[CsrfDep], openapi_extra=_GRANTS_FORM)
async def grants(request: Request, user_id: PK, user: Admin, store: StoreDep) -> Any:
    form = await form_data(request)
    if user_id == user.id:
        raise Forbidden("you cannot change your own role or grants")
    centres = form.get("centres", "").replace("\n", ",").split(",")

    def work() -> None:
        with store.write() as conn:
            users.set_grants(conn, user_id=user_id, role=form.get("role", ""), centres=centres,
                             all_centres=form.get("all_centres") in ("yes", "on", "true"),
                             actor=audit.Actor(user.id, user.username), by=user)

    html = _html(request)
    try:
        await threaded(work)
    except (Invalid, Forbidden) as exc:
        if not html:
            raise
        errors = exc.errors or [{"column": "grants", "message": exc.message}]
        return render(request, "users.html", _data(store, user) | {"errors": errors, "form": {}}, status=exc.status)
    if html:
        return see_other("/users")
    return Response(status_code=204)


@router.post("/users/{user_id}/deactivate", summary="Deactivate an account and end its sessions (admins only)",
             dependencies=[CsrfDep])
async def deactivate(request: Request, user_id: PK, user: Admin, store: StoreDep) -> Any:
    if user_id == user.id:
        raise Forbidden("you cannot deactivate your own account")

    def work() -> None:
        with store.write() as conn:
            users.set_active(conn, user_id=user_id, active=False, actor=audit.Actor(user.id, user.username), by=user)

    await threaded(work)
    if _html(request):
        return see_other("/users")
    return Response(status_code=204)


def _not_self(user: users.User, user_id: int, what: str) -> None:
    if user_id == user.id:
        raise Forbidden(f"use your own account page (/account) to {what}")


@router.post("/users/{user_id}/reset", summary="Issue a one-time password-reset link (admins only; shown once)",
             dependencies=[CsrfDep])
async def reset_link(request: Request, user_id: PK, user: Admin, store: StoreDep, settings: SettingsDep) -> Any:
    _not_self(user, user_id, "change your password")

    def work() -> dict[str, Any]:
        with store.write() as conn:
            return accounts.issue_reset(conn, by=user, actor=audit.Actor(user.id, user.username), user_id=user_id,
                                        settings=settings, now=settings.now())

    issued = await threaded(work)
    issued["url"] = str(request.base_url).rstrip("/") + issued["path"]
    if _html(request):
        return render(request, "users.html", _data(store, user) | {"errors": [], "form": {}, "reset": issued})
    return issued


@router.post("/users/{user_id}/totp/reset", summary="Remove an account's second factor (a lost phone); its sessions "
             "end (admins only)", dependencies=[CsrfDep], status_code=204, response_class=Response)
async def totp_reset(request: Request, user_id: PK, user: Admin, store: StoreDep) -> Response:
    _not_self(user, user_id, "turn two-factor sign-in off")

    def work() -> None:
        with store.write() as conn:
            accounts.reset_totp(conn, by=user, actor=audit.Actor(user.id, user.username), user_id=user_id)

    await threaded(work)
    return see_other("/users") if _html(request) else Response(status_code=204)


@router.get("/users/{user_id}/sessions.json", summary="An account's live sessions (admins only)")
@router.get("/users/{user_id}/sessions", include_in_schema=False)
def user_sessions(request: Request, user_id: PK, user: Admin, store: StoreDep, settings: SettingsDep) -> Any:
    with store.read() as conn:
        target = users.managed_user(conn, by=user, user_id=user_id)
        sessions = users.list_sessions(conn, user_id=user_id, now=settings.now(),
                                       idle_minutes=settings.session_idle_minutes)
    return page(request, "user_sessions.html", {"target": {"id": user_id, "username": target["username"]},
                                                "sessions": sessions})


@router.post("/users/{user_id}/sessions/end", summary="End an account's sessions (`session` = an id, or all) "
             "(admins only)", dependencies=[CsrfDep],
             openapi_extra={"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                 "type": "object", "properties": {"session": {"type": "string"}, "csrf_token": {"type": "string"}}}}}}})
async def end_user_sessions(request: Request, user_id: PK, user: Admin, store: StoreDep) -> Any:
    _not_self(user, user_id, "end your sessions")
    form = await form_data(request)

    def work() -> int:
        with store.write() as conn:
            users.managed_user(conn, by=user, user_id=user_id)
            return users.end_sessions(conn, user_id=user_id, which=form.get("session", "all")[:32] or "all")

    ended = await threaded(work)
    if _html(request):
        return see_other(f"/users/{user_id}/sessions")
    return {"ok": True, "ended": ended}
