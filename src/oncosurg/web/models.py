"""Response models of the JSON twins (the OpenAPI spec is generated from them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """The one error shape (datasette's): ``ok`` is always false."""

    ok: bool = False
    error: str
    errors: list[dict[str, Any]]
    status: int


class Me(BaseModel):
    id: int
    username: str
    role: str
    all_centres: bool
    centres: list[str]
    totp: bool = False
    csrf_token: str | None = None


class LoginForm(BaseModel):
    csrf_token: str


class PatientRow(BaseModel):
    pk: int
    patient_id: str
    centre: str
    referral: str | None
    cetuximab_start: str | None
    surgery_date: str | None
    last_contact_date: str | None
    stage: str


class PatientList(BaseModel):
    patients: list[PatientRow]
    total: int
    page: int
    page_size: int
    pages: int
    filters: dict[str, str]
    centres: list[str]
    stages: dict[str, str]


class Patient(_Open):
    pk: int
    patient_id: str
    centre: str
    version: int
    created_at: str | None
    locked: bool
    record: dict[str, Any]
    regimen: dict[str, Any]
    complications: list[dict[str, Any]]
    cci: float
    reviews: list[dict[str, Any]]
    responses: list[dict[str, Any]]
    stage: str
    timeline: list[dict[str, Any]]


class Saved(_Open):
    ok: bool = True
    pk: int
    version: int | None = None


class Worklist(_Open):
    today: str
    review_due: list[dict[str, Any]]
    review_due_total: int
    awaiting_surgery: list[dict[str, Any]]
    status_unknown: list[dict[str, Any]]
    status_unknown_total: int
    followup_overdue: list[dict[str, Any]]
    followup_overdue_total: int


class Dashboard(_Open):
    centres: list[str]
    all_centres: bool
    protocol: dict[str, Any] | None
    results: dict[str, Any] | None
    curves: list[dict[str, Any]]


class AuditPage(_Open):
    entries: list[dict[str, Any]]
    total: int
    page: int


class Verification(BaseModel):
    ok: bool
    rows: int
    head_hash: str
    problem: str | None
    bad_id: int | None
    patients_checked: int = 0
    patients_unchecked: int = 0
    mismatches: list[dict[str, Any]] = []
    checkpoints: list[dict[str, Any]] = []


class UploadReport(_Open):
    ok: bool
    rows: int
    error_count: int
    errors: list[dict[str, Any]]


class Users(_Open):
    users: list[dict[str, Any]]


class Account(_Open):
    account: dict[str, Any]
    sessions: list[dict[str, Any]]
    idle_minutes: int
    session_hours: int


class AccessPage(_Open):
    entries: list[dict[str, Any]]
    total: int
    page: int
    pages: int
