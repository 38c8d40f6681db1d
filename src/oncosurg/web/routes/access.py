"""The access trail (admins and auditors, of their centres): who read which patient, who exported what."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from oncosurg.web.deps import Auditor, SettingsDep, StoreDep, record_access
from oncosurg.web.deps import page as respond
from oncosurg.web.errors import Forbidden
from oncosurg.web.models import AccessPage
from oncosurg.web.routes import PageNo, Text
from oncosurg.web.services import access
from oncosurg.web.services.users import User

router = APIRouter(tags=["audit"])
PAGE = 100
Day = Annotated[dt.date | None, Query(description="YYYY-MM-DD (UTC)")]
Action = Literal["", "read", "export"]


def _filters(user: User, *, username: str, centre: str, patient_id: str, action: str, since: dt.date | None,
             until: dt.date | None) -> dict[str, Any]:
    if centre and not user.sees(centre):
        raise Forbidden(f"centre '{centre}' is not granted to you")
    return {"centres": None if user.all_centres else sorted(user.centres), "username": username, "centre": centre,
            "patient_id": patient_id, "action": action,
            "since": dt.datetime.combine(since, dt.time()) if since else None,
            "until": dt.datetime.combine(until, dt.time()) + dt.timedelta(days=1) if until else None}


@router.get("/access.json", response_model=AccessPage, summary="The access trail of your centres, newest first")
@router.get("/access", include_in_schema=False)
def access_page(request: Request, user: Auditor, store: StoreDep, username: Text = "", centre: Text = "",
                patient_id: Text = "", action: Action = "", since: Day = None, until: Day = None,
                page: PageNo = 1) -> Any:
    filters = _filters(user, username=username, centre=centre, patient_id=patient_id, action=action, since=since,
                       until=until)
    access.flush(store)  # rows still in the journal first
    with store.read() as conn:
        rows, total = access.entries(conn, limit=PAGE, offset=(page - 1) * PAGE, **filters)
    shown = {"username": username, "centre": centre, "patient_id": patient_id, "action": action,
             "since": since.isoformat() if since else "", "until": until.isoformat() if until else ""}
    return respond(request, "access.html", {"entries": rows, "total": total, "page": page,
                                         "pages": max(1, -(-total // PAGE)), "filters": shown})


@router.get("/access.csv", summary="The access trail of your centres as CSV (filters as /access.json)",
            response_class=StreamingResponse)
def access_csv(request: Request, user: Auditor, store: StoreDep, settings: SettingsDep, username: Text = "",
               centre: Text = "", patient_id: Text = "", action: Action = "", since: Day = None,
               until: Day = None) -> StreamingResponse:
    filters = _filters(user, username=username, centre=centre, patient_id=patient_id, action=action, since=since,
                       until=until)
    record_access(request, user, [{"action": "export", "resource": "access", "fmt": "csv", "centre": centre or None,
                                   "detail": "; ".join(f"{k}={v}" for k, v in filters.items()
                                                       if v and k != "centres")}])
    access.flush(store)  # this export's row too

    def chunks() -> Any:
        with store.read() as conn:
            yield from access.export_csv(conn, **filters)
    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="access-trail.csv"'})
