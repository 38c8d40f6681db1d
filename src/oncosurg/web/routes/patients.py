"""Patient list, registration, the pathway page and its edits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from oncosurg.schema import Field
from oncosurg.store.audit import text
from oncosurg.web.deps import (
    CsrfDep,
    CurrentUser,
    SettingsDep,
    StoreDep,
    Writer,
    form_data,
    make_context,
    record_access,
    render,
    see_other,
    threaded,
    wants_json,
)
from oncosurg.web.deps import (
    page as respond,
)
from oncosurg.web.errors import Conflict, Invalid, WebError
from oncosurg.web.models import Patient, PatientList, Saved
from oncosurg.web.routes import PK, PageNo, Text
from oncosurg.web.services import pathway, patients
from oncosurg.web.services.forms import (
    COMPLICATION_FIELDS,
    REGIMEN_FIELDS,
    REGISTER_FIELDS,
    RESPONSE_FIELDS,
    REVIEW_FIELDS,
    STAGE_FORMS,
    form_rows,
)
from oncosurg.web.services.users import visible_centres

router = APIRouter(tags=["patients"])
StageKey = Literal["patient", "baseline", "prior_chemo", "cetuximab", "surgery", "pathology", "follow_up"]
ItemKind = Literal["complications", "reviews", "responses"]
_ENTITY = {"complications": "complication", "reviews": "mdt_review", "responses": "response_assessment"}


def _form_schema(fields: Sequence[Field], *extra: str, required: Sequence[str] = ()) -> dict[str, Any]:
    props = {f.name: {"type": "string", "description": f.describe_type()} for f in fields}
    props |= {name: {"type": "string"} for name in ("csrf_token", *extra)}
    return {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "properties": props, "required": list(required)}}}}}


_ALL_STAGE_FIELDS = tuple({f.name: f for card in STAGE_FORMS.values() for f in card.fields}.values())


@router.get("/patients.json", response_model=PatientList, summary="Patients of your centres")
@router.get("/patients", include_in_schema=False)
def patient_list(request: Request, user: CurrentUser, store: StoreDep, settings: SettingsDep, q: Text = "",
                 stage: Text = "", centre: Text = "", page: PageNo = 1) -> Any:
    with store.read() as conn:
        data = patients.list_patients(conn, user=user, q=q, stage=stage, centre=centre, page=page,
                                      page_size=settings.page_size, today=settings.today(),
                                      horizon_weeks=settings.review_horizon_weeks)
        data |= {"centres": visible_centres(conn, user=user), "stages": patients.STAGE_FILTERS}
    return respond(request, "patients.html", data)


def error_summary(errors: list[dict[str, Any]], rows: list[dict[str, Any]], fallback: str) -> list[dict[str, str]]:
    """The banner's list: each error linked to its field (``#f-NAME``), else to its form (``fallback``).

    The first field with an error gets ``autofocus``, so the browser opens the page at it (no script).
    """
    at_field = {row["name"] for row in rows}
    first = next((row for row in rows if row["errors"]), None)
    if first is not None:
        first["autofocus"] = True
    return [{"href": f"#f-{e['column']}" if e.get("column") in at_field else fallback,
             "column": str(e.get("column") or ""), "message": str(e.get("message") or "")} for e in errors]


def _register_view(request: Request, user: Any, store: Any, values: dict[str, str], errors: list[dict[str, Any]],
                   status: int = 200, message: str | None = None) -> Response:
    with store.read() as conn:
        centres = visible_centres(conn, user=user)
    general = [e for e in errors if e.get("column") not in {f.name for f in (*REGISTER_FIELDS, *REGIMEN_FIELDS)}
               and e.get("column") != "centre"]
    rows, regimen_rows = form_rows(REGISTER_FIELDS, values, errors), form_rows(REGIMEN_FIELDS, values, errors)
    centre_row = {"name": "centre", "errors": [e for e in errors if e.get("column") == "centre"]}
    summary = error_summary(errors, [centre_row, *rows, *regimen_rows], "#register")
    return render(request, "patient_new.html", {
        "rows": rows, "regimen_rows": regimen_rows,
        "centres": centres, "centre": values.get("centre", centres[0] if len(centres) == 1 else ""),
        "centre_errors": centre_row["errors"], "centre_autofocus": centre_row.get("autofocus", False),
        "general": general, "message": message, "summary": summary}, status=status)


@router.get("/patients/new", include_in_schema=False)
def new_patient(request: Request, user: Writer, store: StoreDep) -> Response:
    return _register_view(request, user, store, {}, [])


@router.post("/patients", response_model=Saved, status_code=201, summary="Register a patient",
             dependencies=[CsrfDep], openapi_extra=_form_schema((*REGISTER_FIELDS, *REGIMEN_FIELDS), "centre"))
async def register(request: Request, user: Writer, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    ctx = make_context(user, settings)

    def work() -> int:
        with store.write() as conn:
            return patients.register(conn, ctx=ctx, form=form)

    try:
        pk = await threaded(work)
    except Invalid as exc:
        if wants_json(request) or "text/html" not in request.headers.get("accept", ""):
            raise
        return _register_view(request, user, store, form, exc.errors, status=422, message=exc.message)
    if "text/html" in request.headers.get("accept", ""):
        return see_other(f"/patients/{pk}")
    return JSONResponse({"ok": True, "pk": pk, "version": 1}, status_code=201)


def _patient_view(request: Request, user: Any, store: Any, settings: Any, pk: int, *, target: str | None = None,
                  error: WebError | None = None, submitted: dict[str, str] | None = None, status: int = 200
                  ) -> Response:
    with store.read() as conn:
        data = patients.read_patient(conn, user=user, pk=pk, today=settings.today(),
                                     horizon_weeks=settings.review_horizon_weeks)
    values = {**data["record"], **data["regimen"]}
    errors = error.errors if isinstance(error, Invalid) else []
    cards = []
    for card in STAGE_FORMS.values():
        mine = target == f"stage:{card.key}"
        card_values = {**values, **(submitted or {})} if mine and isinstance(error, Invalid) else values
        card_errors = errors if mine else []
        names = {f.name for f in card.fields} | {"reason"}
        cards.append({"key": card.key, "title": card.title,
                      "rows": form_rows(card.fields, card_values, card_errors),
                      "general": [e for e in card_errors if e.get("column") not in names],
                      "reason_errors": [e for e in card_errors if e.get("column") == "reason"]})
    items = {}
    for kind, fields in (("reviews", REVIEW_FIELDS), ("responses", RESPONSE_FIELDS),
                         ("complications", COMPLICATION_FIELDS)):
        mine = target == f"add:{kind}"
        item_errors = errors if mine else []
        items[kind] = {"rows": form_rows(fields, submitted if mine and submitted else {}, item_errors),
                       "general": [e for e in item_errors if e.get("column") not in {f.name for f in fields}]}
    conflict = None
    if isinstance(error, Conflict):
        typed = getattr(error, "submitted", None) or submitted or {}
        conflict = {"message": error.message, "changes": error.errors,  # only what the user meant to change
                    "submitted": {k: v for k, v in typed.items() if k not in ("csrf_token", "version", "reason")
                                  and k in values and (text(values[k]) or "") != v}}
    locked = _locked(data, settings)
    delete_errors = errors if target == "delete" else []
    summary: list[dict[str, str]] = []
    if errors:  # the banner links each error to its field, where it is shown; the page opens at the first
        if target and target.startswith("stage:"):
            card = next(c for c in cards if c["key"] == target.split(":", 1)[1])
            rows, fallback = card["rows"], f"#stage-{card['key']}"
        elif target and target.startswith("add:"):
            rows, fallback = items[target.split(":", 1)[1]]["rows"], f"#{target.split(':', 1)[1]}"
        else:
            rows, fallback = [], f"#{target}" if target else ""
        summary = error_summary(errors, rows, fallback)
    return render(request, "patient.html", data | {
        "cards": cards, "items": items, "conflict": conflict, "locked": locked, "target": target,
        "message": error.message if error is not None and not isinstance(error, Conflict) else None,
        "summary": summary, "delete_errors": delete_errors}, status=status)


def _locked(data: dict[str, Any], settings: Any) -> bool:
    created = data["created_at"]
    parsed = dt.datetime.fromisoformat(created.rstrip("Z")) if created else None
    return patients.is_locked(parsed, today=settings.today(), lock_days=settings.lock_days)


def _read(request: Request, user: Any, head: dict[str, Any], fmt: str) -> None:
    """Record the read in the access trail (who, when, which patient, which format) before it is sent."""
    record_access(request, user, [{"action": "read", "resource": "patient", "fmt": fmt, "centre": head["centre"],
                                   "patient_pk": head["pk"], "patient_id": head["patient_id"], "patients": 1}])


@router.get("/patients/{pk}.json", response_model=Patient, summary="A patient's whole pathway")
def patient_json(request: Request, pk: PK, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Any:
    with store.read() as conn:
        data = patients.read_patient(conn, user=user, pk=pk, today=settings.today(),
                                     horizon_weeks=settings.review_horizon_weeks)
    _read(request, user, data, "json")
    return data | {"locked": _locked(data, settings)}


@router.get("/patients/{pk}", include_in_schema=False)
def patient_page(request: Request, pk: PK, user: CurrentUser, store: StoreDep, settings: SettingsDep) -> Response:
    with store.read() as conn:
        head = patients.patient_head(conn, user=user, pk=pk)
    _read(request, user, head | {"pk": pk}, "json" if request.url.path.endswith(".json") else "html")
    return _patient_view(request, user, store, settings, pk)


async def _edit(request: Request, pk: int, user: Any, store: Any, settings: Any, target: str, anchor: str,
                call: Callable[..., Any]) -> Any:
    """Run one write; a browser gets the page again (with errors beside the fields) or a redirect."""
    form = await form_data(request)
    ctx = make_context(user, settings)

    def work() -> Any:
        with store.write() as conn:
            return call(conn, ctx, form)

    html = "text/html" in request.headers.get("accept", "") and not wants_json(request)
    try:
        result = await threaded(work)
    except (Invalid, Conflict) as exc:
        if not html:
            raise
        return _patient_view(request, user, store, settings, pk, target=target, error=exc, submitted=form,
                             status=exc.status)
    if html:
        return see_other(f"/patients/{pk}#{anchor}" if result != "deleted" else "/patients")
    if result == "deleted":
        return {"ok": True, "pk": pk}
    with store.read() as conn:
        version = patients.patient_head(conn, user=user, pk=pk)["version"]
    return {"ok": True, "pk": pk, "version": version, **(result if isinstance(result, dict) else {"id": result})}


def _version(form: dict[str, str]) -> int:
    raw = form.get("version", "")
    if not raw.isdigit() or len(raw) > 9:
        raise Invalid("the form has no valid version (reload the page)",
                      errors=[{"column": "version", "value": raw[:20], "message": "a whole number is required"}])
    return int(raw)


@router.post("/patients/{pk}/stages/{stage}", response_model=Saved, summary="Save one stage of the pathway",
             dependencies=[CsrfDep], openapi_extra=_form_schema(_ALL_STAGE_FIELDS, "version", "reason",
                                                                required=("version",)))
async def save_stage(request: Request, pk: PK, stage: StageKey, user: Writer, store: StoreDep,
                     settings: SettingsDep) -> Any:
    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        return patients.save_stage(conn, ctx=ctx, pk=pk, stage=stage, form=form, version=_version(form),
                                   reason=form.get("reason", ""))
    return await _edit(request, pk, user, store, settings, f"stage:{stage}", f"stage-{stage}", call)


@router.post("/patients/{pk}/delete", response_model=Saved, summary="Delete a patient (a reason is required)",
             dependencies=[CsrfDep], openapi_extra=_form_schema((), "version", "reason",
                                                                required=("version", "reason")))
async def delete_patient(request: Request, pk: PK, user: Writer, store: StoreDep, settings: SettingsDep) -> Any:
    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        patients.delete_patient(conn, ctx=ctx, pk=pk, version=_version(form), reason=form.get("reason", ""))
        return "deleted"
    return await _edit(request, pk, user, store, settings, "delete", "delete", call)


_ADDERS: dict[str, tuple[Callable[..., int], Sequence[Field]]] = {
    "reviews": (pathway.add_review, REVIEW_FIELDS),
    "responses": (pathway.add_response, RESPONSE_FIELDS),
    "complications": (pathway.add_complication, COMPLICATION_FIELDS),
}


@router.post("/patients/{pk}/{kind}", response_model=Saved, summary="Add an MDT review, a response assessment "
             "or a complication", dependencies=[CsrfDep],
             openapi_extra=_form_schema((*REVIEW_FIELDS, *RESPONSE_FIELDS, *COMPLICATION_FIELDS), "reason"))
async def add_item(request: Request, pk: PK, kind: ItemKind, user: Writer, store: StoreDep,
                   settings: SettingsDep) -> Any:
    adder = _ADDERS[kind][0]

    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        if kind == "complications":
            return adder(conn, ctx=ctx, pk=pk, form=form, reason=form.get("reason", ""))
        return adder(conn, ctx=ctx, pk=pk, form=form)
    return await _edit(request, pk, user, store, settings, f"add:{kind}", kind, call)


@router.post("/patients/{pk}/{kind}/{item_id}/delete", response_model=Saved, summary="Remove an MDT review, "
             "a response assessment or a complication", dependencies=[CsrfDep],
             openapi_extra=_form_schema((), "version", "reason", required=("version",)))
async def delete_item(request: Request, pk: PK, kind: ItemKind, item_id: PK, user: Writer, store: StoreDep,
                      settings: SettingsDep) -> Any:
    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        pathway.delete_item(conn, ctx=ctx, pk=pk, entity=_ENTITY[kind], item_id=item_id, version=_version(form),
                            reason=form.get("reason", ""))
        return {}
    return await _edit(request, pk, user, store, settings, f"add:{kind}", kind, call)
