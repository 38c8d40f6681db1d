"""Patient list, registration, the pathway page and its edits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from markupsafe import Markup

from oncosurg.pathway.model import Table
from oncosurg.schema import Field
from oncosurg.web import field_html
from oncosurg.web.deps import (
    CsrfDep,
    SessionCookie,
    SettingsDep,
    StoreDep,
    Writer,
    form_data,
    make_context,
    read_threaded,
    reading_user,
    record_access,
    records_in_reader,
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
from oncosurg.web.services import episodes, pathway, patients
from oncosurg.web.services.episodes import FORMS as EPISODE_FORMS
from oncosurg.web.services.episodes import PATIENT_FIELDS
from oncosurg.web.services.forms import (
    COMPLICATION_FIELDS,
    REGIMEN_FIELDS,
    REGISTER_FIELDS,
    RESPONSE_FIELDS,
    REVIEW_FIELDS,
    STAGE_FORMS,
    form_rows,
)
from oncosurg.web.services.roster import centres_and_marks
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
def patient_list(request: Request, _: SessionCookie, store: StoreDep, settings: SettingsDep, q: Text = "",
                 stage: Text = "", centre: Text = "", page: PageNo = 1) -> Any:
    with store.read_one() as conn:  # the session; the centres with the roster's marks (one statement)
        user = reading_user(request, store, conn)
        centres, seen = centres_and_marks(conn, user=user)
        data = patients.list_patients(conn, user=user, q=q, stage=stage, centre=centre, page=page,
                                      page_size=settings.page_size, today=settings.today(),
                                      horizon_weeks=settings.review_horizon_weeks, roster=request.app.state.roster,
                                      seen=seen)
        data |= {"centres": centres, "stages": patients.STAGE_FILTERS}
    return respond(request, "patients.html", data)


def error_summary(errors: list[dict[str, Any]], rows: list[dict[str, Any]], fallback: str) -> list[dict[str, str]]:
    """The banner's list: each error linked to its field (``#f-NAME``), else to its form (``fallback``).

    The first field with an error gets ``autofocus``, so the browser opens the page at it (no script).
    """
    at_field = {row["name"]: "#" + row.get("id", f"f-{row['name']}") for row in rows}
    first = next((row for row in rows if row["errors"]), None)
    if first is not None:
        first["autofocus"] = True
    return [{"href": at_field.get(str(e.get("column")), fallback),
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
                  error: WebError | None = None, submitted: dict[str, str] | None = None, status: int = 200,
                  record: bool = False) -> Response:
    """The patient page: the timeline of every episode, each episode's edit and delete forms, an add
    form per episode type; after a refused write, the form of ``target`` again with its errors.
    ``user`` ``None``: the session is looked up here (:func:`oncosurg.web.deps.reading_user`).
    ``record``: the read enters the access trail once the page is rendered, by the reading thread
    (:func:`oncosurg.web.deps.records_in_reader`)."""
    with store.read_one() as conn:  # the patient is one statement: no transaction to begin and end
        user = user or reading_user(request, store, conn)
        data = patients.read_patient(conn, user=user, pk=pk, today=settings.today(),
                                     horizon_weeks=settings.review_horizon_weeks)
        response = _patient_page(request, settings, data, target=target, error=error, submitted=submitted,
                                 status=status)
        if record:
            _read(request, user, data, "html", conn=conn)
    return response


def _patient_page(request: Request, settings: Any, data: dict[str, Any], *, target: str | None,
                  error: WebError | None, submitted: dict[str, str] | None, status: int) -> Response:
    errors = error.errors if isinstance(error, Invalid) else []
    # after a conflict the form shows the current values (the banner shows what the user typed)
    view = episode_view(data, target=target, errors=errors,
                        submitted=(submitted or {}) if isinstance(error, Invalid) else {})
    conflict = None
    if isinstance(error, Conflict):
        typed = getattr(error, "submitted", None) or submitted or {}
        conflict = {"message": error.message, "changes": error.errors,
                    "submitted": {k: v for k, v in typed.items()
                                  if k not in ("csrf_token", "version", "patient_version", "reason") and v}}
    summary: list[dict[str, str]] = []
    if errors:  # the banner links each error to its field, where it is shown; the page opens at the first
        summary = error_summary(errors, view["target_rows"], view["target_anchor"])
    return render(request, "patient.html", data | view | {
        "conflict": conflict, "locked": _locked(data, settings), "target": target,
        "message": error.message if error is not None and not isinstance(error, Conflict) else None,
        "summary": summary, "delete_errors": errors if target == "delete" else []}, status=status)


def _rows(fields: Sequence[Field], values: dict[str, Any], errors: list[dict[str, Any]], *, prefix: str,
          lines: Sequence[int]) -> list[dict[str, Any]]:
    """Form rows with ids unique on the page (``prefix``); a line number is chosen among the patient's lines."""
    rows = form_rows(fields, values, errors)
    for row in rows:
        row["id"] = f"{prefix}-{row['name']}"
        if row["name"] == "line_number" and prefix.split("-")[1] in ("mdt_review", "response_assessment"):
            row["widget"], row["choices"] = "select", tuple(str(n) for n in lines)
    return rows


#: The add forms' rows and HTML, which depend only on the form, the patient's line numbers and the
#: defaults (the current line): ~40 of the ~75 fields of a patient page, drawn once instead of per page.
_BLANK: dict[tuple[Any, ...], tuple[list[dict[str, Any]], Markup]] = {}


def _blank_form(fields: Sequence[Field], defaults: dict[str, Any], name: str, prefix: str, lines: tuple[int, ...]
                ) -> tuple[list[dict[str, Any]], Markup]:
    """An add form without values or errors: its rows and HTML (shared; neither is changed later)."""
    key = (name, prefix, lines, tuple(sorted(defaults.items())))
    found = _BLANK.get(key)
    if found is None:
        rows = _rows(fields, defaults, [], prefix=prefix, lines=lines)
        if len(_BLANK) > 1024:  # prefixes carry procedure numbers: stay bounded
            _BLANK.clear()
        found = _BLANK[key] = (rows, field_html.fields(rows))
    return found


def episode_view(data: dict[str, Any], *, target: str | None, errors: list[dict[str, Any]],
                 submitted: dict[str, str]) -> dict[str, Any]:
    """Template context of the episode forms (see :func:`_patient_view`)."""
    lines = sorted(data["lines"])
    current = data["episodes"]["therapy_line"][-1]["key"][0] if data["episodes"]["therapy_line"] else None
    out: dict[str, Any] = {"sections": [], "target_rows": [], "target_anchor": f"#{target}" if target else ""}

    def form(fields: Sequence[Field], values: dict[str, Any], name: str, prefix: str) -> dict[str, Any]:
        mine = target == name
        if not mine and name.startswith("add:"):  # the same on every patient's page: drawn once
            rows, html = _blank_form(fields, values, name, prefix, tuple(lines))
            return {"rows": rows, "html": html, "general": [], "reason_errors": [], "open": False}
        mine_errors = errors if mine else []
        rows = _rows(fields, {**values, **submitted} if mine else values, mine_errors, prefix=prefix, lines=lines)
        names = {f.name for f in fields}
        result = {"rows": rows, "general": [e for e in mine_errors if e.get("column") not in names | {"reason"}],
                  "reason_errors": [e for e in mine_errors if e.get("column") == "reason"], "open": mine}
        if mine:
            out["target_rows"], out["target_anchor"] = rows, f"#{prefix}"
        return result

    out["patient_form"] = form(PATIENT_FIELDS, data["patient_fields"], "details", "ep-patient-0")
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, spec in EPISODE_FORMS.items():
        name = table.value
        items = []
        for episode in data["episodes"][name]:
            prefix = f"ep-{name}-{episode['id']}"
            items.append(episode | {"form": form(spec.edit, episode["values"], f"edit:{name}:{episode['id']}", prefix),
                                    "anchor": prefix})
        by_table[name] = items
        defaults: dict[str, Any] = {"line_number": current} if name in ("mdt_review", "response_assessment") else {}
        add = None
        if name not in ("complication", "pathology"):
            add = form(spec.add, defaults, f"add:{name}", f"add-{name}-0")
        out["sections"].append({"table": name, "title": spec.title, "noun": spec.noun, "items": items, "add": add})
    for procedure in by_table["liver_procedure"]:
        number = procedure["key"][0]
        procedure["complications"] = [c for c in by_table["complication"] if c["key"][0] == number]
        procedure["pathology"] = next((p for p in by_table["pathology"] if p["key"][0] == number), None)
        child_fields = {t: tuple(f for f in EPISODE_FORMS[t].add if f.name != "procedure_no")
                        for t in (Table.COMPLICATION, Table.PATHOLOGY)}
        procedure["add_complication"] = form(child_fields[Table.COMPLICATION], {},
                                             f"add:complication:{number}", f"add-complication-{number}")
        procedure["add_pathology"] = form(child_fields[Table.PATHOLOGY], {}, f"add:pathology:{number}",
                                          f"add-pathology-{number}")
    out["sections"] = [s for s in out["sections"] if s["table"] not in ("complication", "pathology")]
    return out


def _locked(data: dict[str, Any], settings: Any) -> bool:
    created = data["created_at"]
    parsed = dt.datetime.fromisoformat(created.rstrip("Z")) if created else None
    return patients.is_locked(parsed, today=settings.today(), lock_days=settings.lock_days)


def _read(request: Request, user: Any, head: dict[str, Any], fmt: str, *, conn: Any = None) -> None:
    """Record the read in the access trail (who, when, which patient, which format) before it is sent."""
    record_access(request, user, [{"action": "read", "resource": "patient", "fmt": fmt, "centre": head["centre"],
                                   "patient_pk": head["pk"], "patient_id": head["patient_id"], "patients": 1}],
                  conn=conn)


@router.get("/patients/{pk}.json", response_model=Patient, summary="A patient's whole pathway")
async def patient_json(request: Request, pk: PK, _: SessionCookie, store: StoreDep, settings: SettingsDep) -> Any:
    inline = records_in_reader(request)

    def read() -> dict[str, Any]:
        with store.read_one() as conn:
            user = reading_user(request, store, conn)
            data = patients.read_patient(conn, user=user, pk=pk, today=settings.today(),
                                         horizon_weeks=settings.review_horizon_weeks)
            if inline:
                _read(request, user, data, "json", conn=conn)
            return data

    data = await read_threaded(read)
    if not inline:
        await threaded(_read, request, request.state.user, data, "json")  # recorded before it is sent
    return data | {"locked": _locked(data, settings)}


@router.get("/patients/{pk}", include_in_schema=False)
async def patient_page(request: Request, pk: PK, _: SessionCookie, store: StoreDep, settings: SettingsDep
                       ) -> Response:
    inline = records_in_reader(request)  # NotFound if not theirs
    response = await read_threaded(_patient_view, request, None, store, settings, pk, record=inline)
    if not inline:  # recorded before it is sent
        await threaded(_read, request, request.state.user, response.context["data"], "html")
    return response


async def _edit(request: Request, pk: int, user: Any, store: Any, settings: Any, target: str, anchor: str,
                call: Callable[..., Any], *, anchor_of: bool = False) -> Any:
    """Run one write; a browser gets the page again (with errors beside the fields) or a redirect."""
    form = await form_data(request)
    ctx = make_context(user, settings)
    html = "text/html" in request.headers.get("accept", "") and not wants_json(request)

    def work() -> tuple[Any, int | None]:
        with store.write() as conn:
            result = call(conn, ctx, form)
            if html or result == "deleted" or (isinstance(result, dict) and "version" in result):
                return result, None
            # the version this write made, read before it commits: no read transaction of its own
            # (3 round trips on PostgreSQL), and never a later writer's version
            return result, patients.patient_head(conn, user=user, pk=pk)["version"]

    try:
        result, version = await threaded(work)
    except (Invalid, Conflict) as exc:
        if not html:
            raise
        return _patient_view(request, user, store, settings, pk, target=target, error=exc, submitted=form,
                             status=exc.status)
    if html:
        if anchor_of and isinstance(result, dict) and "id" in result:
            anchor = f"{anchor}-{result['id']}"
        return see_other(f"/patients/{pk}#{anchor}" if result != "deleted" else "/patients")
    if result == "deleted":
        return {"ok": True, "pk": pk}
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


EpisodeType = Literal["therapy_line", "mdt_review", "response_assessment", "liver_procedure", "complication",
                      "pathology", "disease_event", "contact"]
_ALL_EPISODE_FIELDS = tuple({f.name: f for spec in EPISODE_FORMS.values() for f in spec.add}.values())


def _optional_version(form: dict[str, str], name: str) -> int | None:
    raw = form.get(name, "")
    return int(raw) if raw.isdigit() and len(raw) <= 9 else None


@router.post("/patients/{pk}/details", response_model=Saved, summary="Save the patient's own fields",
             dependencies=[CsrfDep], openapi_extra=_form_schema(PATIENT_FIELDS, "version", "reason",
                                                                required=("version",)))
async def save_details(request: Request, pk: PK, user: Writer, store: StoreDep, settings: SettingsDep) -> Any:
    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        return episodes.edit_patient(conn, ctx=ctx, pk=pk, form=form, version=_version(form),
                                     reason=form.get("reason", ""))
    return await _edit(request, pk, user, store, settings, "details", "ep-patient-0", call)


@router.post("/patients/{pk}/episodes/{table}", response_model=Saved, status_code=200,
             summary="Add an episode (therapy line, MDT review, response assessment, liver procedure, "
             "complication, pathology, disease event, contact)", dependencies=[CsrfDep],
             openapi_extra=_form_schema(_ALL_EPISODE_FIELDS, "reason"))
async def add_episode(request: Request, pk: PK, table: EpisodeType, user: Writer, store: StoreDep,
                      settings: SettingsDep) -> Any:
    kind = episodes.table_named(table)
    form = await form_data(request)
    target = f"add:{table}" + (f":{form.get('procedure_no', '')}" if table in ("complication", "pathology") else "")

    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        return episodes.add_episode(conn, ctx=ctx, pk=pk, table=kind, form=form, reason=form.get("reason", ""))
    return await _edit(request, pk, user, store, settings, target, f"ep-{table}", call, anchor_of=True)


@router.post("/patients/{pk}/episodes/{table}/{episode_id}", response_model=Saved, summary="Edit an episode",
             dependencies=[CsrfDep], openapi_extra=_form_schema(_ALL_EPISODE_FIELDS, "version", "patient_version",
                                                                "reason", required=("version",)))
async def edit_episode(request: Request, pk: PK, table: EpisodeType, episode_id: PK, user: Writer, store: StoreDep,
                       settings: SettingsDep) -> Any:
    kind = episodes.table_named(table)

    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        return episodes.edit_episode(conn, ctx=ctx, pk=pk, table=kind, episode_id=episode_id, form=form,
                                     version=_version(form), patient_version=_optional_version(form, "patient_version"),
                                     reason=form.get("reason", ""))
    return await _edit(request, pk, user, store, settings, f"edit:{table}:{episode_id}", f"ep-{table}-{episode_id}",
                       call)


@router.post("/patients/{pk}/episodes/{table}/{episode_id}/delete", response_model=Saved,
             summary="Delete an episode (a procedure with its complications and pathology)", dependencies=[CsrfDep],
             openapi_extra=_form_schema((), "version", "patient_version", "reason", required=("version",)))
async def delete_episode(request: Request, pk: PK, table: EpisodeType, episode_id: PK, user: Writer,
                         store: StoreDep, settings: SettingsDep) -> Any:
    kind = episodes.table_named(table)

    def call(conn: Any, ctx: Any, form: dict[str, str]) -> Any:
        return episodes.delete_episode(conn, ctx=ctx, pk=pk, table=kind, episode_id=episode_id, version=_version(form),
                                       patient_version=_optional_version(form, "patient_version"),
                                       reason=form.get("reason", ""))
    return await _edit(request, pk, user, store, settings, f"edit:{table}:{episode_id}", f"{table}", call)


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
