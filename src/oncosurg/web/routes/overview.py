"""The worklist and the dashboard."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from oncosurg.web.deps import SessionCookie, SettingsDep, StoreDep, page, reading_user
from oncosurg.web.models import Dashboard, Worklist
from oncosurg.web.routes import Text
from oncosurg.web.services.worklist import worklist as build_worklist

router = APIRouter(tags=["overview"])
#: Rows shown per worklist section (the totals count them all); 500 rows made it the costliest page.
WORKLIST_ROWS = 100


@router.get("/worklist.json", response_model=Worklist, summary="MDT reviews due and overdue follow-up")
@router.get("/worklist", include_in_schema=False)
def worklist(request: Request, _: SessionCookie, store: StoreDep, settings: SettingsDep) -> Any:
    with store.read_one() as conn:  # the session, the index's marks (it refreshes in a snapshot of its own)
        user = reading_user(request, store, conn)
        data = build_worklist(conn, user=user, today=settings.today(), review_cycles=settings.review_cycles,
                              review_weeks=settings.review_weeks, review_horizon_weeks=settings.review_horizon_weeks,
                              followup_overdue_months=settings.followup_overdue_months, limit=WORKLIST_ROWS,
                              index=request.app.state.worklist_index)
    return page(request, "worklist.html", data)


@router.get("/dashboard.json", response_model=Dashboard, summary="The protocol's endpoints and Kaplan-Meier curves")
@router.get("/dashboard", include_in_schema=False)
def dashboard(request: Request, _: SessionCookie, store: StoreDep, centre: Text = "") -> Any:
    with store.read_one() as conn:  # the session, the centres and the registry's fingerprint
        user = reading_user(request, store, conn)
        # refuses foreign centres; a computation, when needed, has a connection of its own
        data = request.app.state.dashboard.compute(store.engine, conn, user=user, centre=centre)
    return page(request, "dashboard.html", data)
