"""Accounts (admins only): list, create, deactivate."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncosurg.store import audit
from oncosurg.web.deps import Admin, CsrfDep, StoreDep, form_data, page, render, see_other, threaded, wants_json
from oncosurg.web.errors import Forbidden, Invalid
from oncosurg.web.models import Users
from oncosurg.web.routes import PK
from oncosurg.web.services import users

router = APIRouter(tags=["users"])
_USER_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["username", "password", "role"],
    "properties": {"username": {"type": "string"}, "password": {"type": "string"},
                   "role": {"type": "string", "enum": list(users.ROLES)}, "centres": {"type": "string"},
                   "all_centres": {"type": "string"}, "csrf_token": {"type": "string"}}}}}}}


def _data(store: Any) -> dict[str, Any]:
    with store.read() as conn:
        return {"users": users.list_users(conn), "roles": users.ROLE_HELP}


@router.get("/users.json", response_model=Users, summary="Accounts (admins only)")
@router.get("/users", include_in_schema=False)
def user_list(request: Request, user: Admin, store: StoreDep) -> Any:
    return page(request, "users.html", _data(store) | {"errors": [], "form": {}})


@router.post("/users", summary="Create an account (admins only)", dependencies=[CsrfDep], status_code=201,
             openapi_extra=_USER_FORM)
async def create_user(request: Request, user: Admin, store: StoreDep) -> Any:
    form = await form_data(request)
    centres = [c for c in form.get("centres", "").replace("\n", ",").split(",") if c.strip()]

    def work() -> int:
        with store.write() as conn:
            return users.create_user(conn, username=form.get("username", ""), password=form.get("password", ""),
                                     role=form.get("role", ""), centres=centres,
                                     all_centres=form.get("all_centres") in ("yes", "on", "true"),
                                     actor=audit.Actor(user.id, user.username))

    html = "text/html" in request.headers.get("accept", "") and not wants_json(request)
    try:
        new_id = await threaded(work)
    except Invalid as exc:
        if not html:
            raise
        shown = {k: v for k, v in form.items() if k != "password"}
        return render(request, "users.html", _data(store) | {"errors": exc.errors, "form": shown}, status=422)
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
                             actor=audit.Actor(user.id, user.username))

    html = "text/html" in request.headers.get("accept", "") and not wants_json(request)
    try:
        await threaded(work)
    except Invalid as exc:
        if not html:
            raise
        return render(request, "users.html", _data(store) | {"errors": exc.errors, "form": {}}, status=422)
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
            users.set_active(conn, user_id=user_id, active=False, actor=audit.Actor(user.id, user.username))

    await threaded(work)
    if "text/html" in request.headers.get("accept", "") and not wants_json(request):
        return see_other("/users")
    return Response(status_code=204)
