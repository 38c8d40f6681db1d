"""The audit trail: whole (admins, auditors) and per patient; verification and CSV export."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from oncosurg.store import audit
from oncosurg.web.deps import Auditor, CurrentUser, StoreDep, record_access, threaded
from oncosurg.web.deps import page as respond
from oncosurg.web.errors import Forbidden
from oncosurg.web.models import AuditPage, Verification
from oncosurg.web.routes import PK, PageNo
from oncosurg.web.services import patients
from oncosurg.web.services.users import User

router = APIRouter(tags=["audit"])
PAGE = 100


def _scope(user: User) -> list[str] | None:
    return None if user.all_centres else sorted(user.centres)


@router.get("/audit.json", response_model=AuditPage, summary="The audit trail of your centres, newest first")
@router.get("/audit", include_in_schema=False)
def audit_page(request: Request, user: Auditor, store: StoreDep, page: PageNo = 1) -> Any:
    with store.read() as conn:
        rows, total = audit.entries(conn, centres=_scope(user), limit=PAGE, offset=(page - 1) * PAGE)
    return respond(request, "audit.html", {"entries": rows, "total": total, "page": page, "patient": None,
                                        "pages": max(1, -(-total // PAGE))})


@router.get("/audit/verify.json", response_model=Verification, summary="Recompute the hash chain")
@router.get("/audit/verify", include_in_schema=False)
async def verify(request: Request, user: Auditor, store: StoreDep) -> Any:
    def work() -> audit.Verification:
        with store.read() as conn:
            return audit.verify(conn)

    # seconds on a long trail: in the writers' pool, not on the thread that reads this process's pages
    result = await threaded(work)
    return respond(request, "verify.html", result.to_dict())


@router.get("/audit.csv", summary="The audit trail of your centres as CSV (with hashes)",
            response_class=StreamingResponse)
def audit_csv(request: Request, user: Auditor, store: StoreDep) -> StreamingResponse:
    scope = _scope(user)
    record_access(request, user, [{"action": "export", "resource": "audit", "fmt": "csv", "centre": c}
                                  for c in (scope if scope is not None else [None])])

    def chunks() -> Any:
        with store.read() as conn:
            yield from audit.export_csv(conn, centres=_scope(user))
    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="audit-trail.csv"'})


def _read(request: Request, user: User, head: dict[str, Any], fmt: str, action: str) -> None:
    record_access(request, user, [{"action": action, "resource": "patient_audit", "fmt": fmt, "centre": head["centre"],
                                   "patient_pk": head["id"], "patient_id": head["patient_id"], "patients": 1}])


def _patient_reader(user: User) -> None:
    if user.role == "investigator":
        raise Forbidden("investigators do not read the audit trail")


@router.get("/patients/{pk}/audit.json", response_model=AuditPage, summary="One patient's audit trail")
@router.get("/patients/{pk}/audit", include_in_schema=False)
def patient_audit(request: Request, pk: PK, user: CurrentUser, store: StoreDep, page: PageNo = 1) -> Any:
    _patient_reader(user)
    with store.read() as conn:
        head = patients.patient_head(conn, user=user, pk=pk)
        rows, total = audit.entries(conn, **patients.history_filter(conn, head=head), limit=PAGE,
                                    offset=(page - 1) * PAGE)
    _read(request, user, head, "json" if request.url.path.endswith(".json") else "html", "read")
    return respond(request, "audit.html", {"entries": rows, "total": total, "page": page, "patient": head,
                                        "pages": max(1, -(-total // PAGE))})


@router.get("/patients/{pk}/audit.csv", summary="One patient's audit trail as CSV", response_class=StreamingResponse)
def patient_audit_csv(request: Request, pk: PK, user: CurrentUser, store: StoreDep) -> StreamingResponse:
    _patient_reader(user)
    with store.read() as conn:
        head = patients.patient_head(conn, user=user, pk=pk)
        history = patients.history_filter(conn, head=head)
    _read(request, user, head, "csv", "export")

    def chunks() -> Any:
        with store.read() as conn:
            yield from audit.export_csv(conn, **history)
    name = f"audit-{head['patient_id']}.csv"
    return StreamingResponse(chunks(), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": f'attachment; filename="{name}"'})
