"""CSV upload (validate, report, confirm) and the registry export."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from oncosurg.schema import COLUMNS
from oncosurg.store.audit import text
from oncosurg.store.repository import iter_records
from oncosurg.web.deps import (
    CsrfDep,
    CurrentUser,
    SettingsDep,
    StoreDep,
    Writer,
    form_data,
    make_context,
    no_nul,
    record_access,
    render,
    see_other,
    threaded,
    wants_json,
)
from oncosurg.web.errors import Forbidden, Invalid, WebError
from oncosurg.web.models import UploadReport
from oncosurg.web.routes import Text
from oncosurg.web.services import access
from oncosurg.web.services import upload as uploads
from oncosurg.web.services.users import visible_centres

router = APIRouter(tags=["data"])
_UPLOAD_FORM = {"requestBody": {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file", "centre"],
    "properties": {"file": {"type": "string", "format": "binary"}, "centre": {"type": "string"},
                   "mode": {"type": "string", "enum": list(uploads.MODES)}, "csrf_token": {"type": "string"}}}}}}}
_CONFIRM_FORM = {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
    "type": "object", "required": ["token"],
    "properties": {"token": {"type": "string"}, "reason": {"type": "string"}, "csrf_token": {"type": "string"}}}}}}}


def _html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "") and not wants_json(request)


@router.get("/upload", include_in_schema=False)
def upload_page(request: Request, user: Writer, store: StoreDep) -> Response:
    with store.read() as conn:
        centres = visible_centres(conn, user=user)
    return render(request, "upload.html", {"centres": centres, "report": None, "message": None})


@router.post("/upload", response_model=UploadReport, summary="Validate a registry CSV (nothing is imported yet)",
             dependencies=[CsrfDep], openapi_extra=_UPLOAD_FORM)
async def upload(request: Request, user: Writer, store: StoreDep, settings: SettingsDep) -> Any:
    form = await request.form()
    file = form.get("file")
    centre = form.get("centre")
    mode = form.get("mode") or "insert"
    if file is None or isinstance(file, str) or not isinstance(centre, str) or not isinstance(mode, str):
        raise Invalid("send the CSV as the 'file' field, with a 'centre'",
                      errors=[{"column": "file", "message": "a file is required"}])
    no_nul({"centre": centre, "mode": mode})
    data = await file.read(settings.upload_max_bytes + 1)
    ctx = make_context(user, settings)
    source = (file.filename or "upload.csv")[:255]

    def work() -> dict[str, Any]:
        with store.read() as conn:  # validation takes no write lock
            report = uploads.validate(conn, ctx=ctx, data=data, source=source, centre=centre, mode=mode,
                                      max_bytes=settings.upload_max_bytes)
        if report["ok"] and (report["create"] or report["update"]):
            with store.write() as conn:
                report["token"] = uploads.keep(conn, ctx=ctx, data=data, source=source, centre=centre, mode=mode)
        return report

    report = await threaded(work)
    if not _html(request):
        return report
    with store.read() as conn:
        centres = visible_centres(conn, user=user)
    return render(request, "upload.html", {"centres": centres, "report": report, "message": None,
                                           "centre": centre, "mode": mode}, status=200 if report["ok"] else 422)


@router.post("/upload/confirm", summary="Import a validated upload", dependencies=[CsrfDep],
             openapi_extra=_CONFIRM_FORM)
async def confirm(request: Request, user: Writer, store: StoreDep, settings: SettingsDep) -> Any:
    form = await form_data(request)
    token, reason = form.get("token"), form.get("reason") or ""
    ctx = make_context(user, settings)

    def work() -> dict[str, Any]:
        return uploads.confirm(store, ctx=ctx, token=token if isinstance(token, str) else "",
                               reason=reason if isinstance(reason, str) else "")

    try:
        result = await threaded(work)
    except WebError as exc:
        if not _html(request):
            raise
        with store.read() as conn:
            centres = visible_centres(conn, user=user)
        return render(request, "upload.html", {"centres": centres, "report": None, "message": exc.message,
                                               "errors": exc.errors}, status=exc.status)
    if _html(request):
        return see_other(f"/patients?created={result['created']}")
    return result


@router.get("/export.csv", summary="The registry CSV of your centres (the import format)",
            response_class=StreamingResponse)
def export(request: Request, user: CurrentUser, store: StoreDep, centre: Text = "") -> StreamingResponse:
    if centre and not user.sees(centre):
        raise Forbidden(f"centre '{centre}' is not granted to you")
    with store.read() as conn:
        wanted = [centre] if centre else visible_centres(conn, user=user)
        counts = access.patient_counts(conn, wanted)
    record_access(request, user, [{"action": "export", "resource": "registry", "fmt": "csv", "centre": name,
                                   "patients": counts.get(name, 0)} for name in wanted])

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        with store.read() as conn:
            for name in wanted:
                for record in iter_records(conn, centre=name):
                    writer.writerow(["" if record[c] is None else text(record[c]) for c in COLUMNS])
                    if buffer.tell() > 64_000:
                        yield buffer.getvalue()
                        buffer.seek(0)
                        buffer.truncate()
        yield buffer.getvalue()

    return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="registry-export.csv"'})
