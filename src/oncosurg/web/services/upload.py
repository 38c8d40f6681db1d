"""CSV upload in two steps: validate and show the report, then import what was shown on confirmation.

Step 1 (:func:`validate`, then :func:`keep`) runs the registry CSV reader
(:func:`oncosurg.ingest.csv.parse_registry_csv`, every rule of an import), refuses centres the user
was not granted, plans the import with the command line's
:func:`oncosurg.store.repository.plan_import` (the same rules: ``insert`` refuses registered
patients; ``update`` changes only them and only the columns the file carries, ``+new`` also
registers new patients, ``+clear`` lets an empty cell clear a value), and keeps the file in
``pending_upload`` under a one-time token.  Both steps validate on a read snapshot, without any
write lock.  Step 2 (:func:`confirm`) validates the kept file again against the store as it is now
and writes it with :func:`oncosurg.store.repository.import_records`: all or nothing, in one
transaction that takes the write lock only to write (planning again under it if a patient was
edited meanwhile), so sign-ins and edits never wait for a large upload being checked; every value
audited.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedFile, parse_registry_csv
from oncosurg.rules import X_ALREADY_REGISTERED, X_CLEARS_VALUE, X_NOT_REGISTERED, Issue
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import StoreBusy
from oncosurg.store.repository import ImportOptions, import_records, plan_import
from oncosurg.web import security
from oncosurg.web.errors import Busy, Forbidden, Invalid, NotFound
from oncosurg.web.services.forms import issue_dict
from oncosurg.web.services.patients import Context, created_many, is_locked
from oncosurg.web.services.users import utcnow

MAX_BYTES = 50 * 1024 * 1024  # the default of the upload_max_mb setting
#: ``insert`` | ``update`` with ``+new`` (register new patients too) and ``+clear`` (empty cells clear values).
MODES = ("insert", "update", "update+new", "update+clear", "update+new+clear")
_WEB_HINTS = {  # the command line's fixes name its flags; the upload's are modes
    X_ALREADY_REGISTERED.code: "choose an 'update' mode to change registered patients, or fix the patient_id",
    X_NOT_REGISTERED.code: "correct the patient_id, or choose the mode 'update+new' to register new patients too",
    X_CLEARS_VALUE.code: "leave the column out of the file to keep the value, or choose a '+clear' mode to clear it",
}


def _options(mode: str, *, ctx: Context, centre: str) -> ImportOptions:
    parts = mode.split("+")
    return ImportOptions(update=parts[0] == "update", allow_new="new" in parts, allow_clear="clear" in parts,
                         default_centre=centre, postop_window_days=ctx.postop_window_days)


def check(conn: sa.Connection, *, ctx: Context, data: bytes, source: str, centre: str, mode: str,
          max_bytes: int = MAX_BYTES) -> tuple[ParsedFile, dict[str, Any]]:
    """Validate an upload against the rules, the user's centres and the store; nothing is written."""
    if mode not in MODES:
        raise Invalid(f"mode must be one of {', '.join(MODES)}",
                      errors=[{"column": "mode", "value": mode, "message": "unknown mode"}])
    if not ctx.user.sees(centre):
        raise Forbidden(f"centre '{centre[:120]}' is not granted to you")
    if len(data) > max_bytes:
        raise Invalid(f"the file is larger than {max_bytes // (1024 * 1024)} MB",
                      errors=[{"column": "file", "message": "file too large"}])
    parsed = parse_registry_csv(data, source=source, centre=centre, postop_window_days=ctx.postop_window_days,
                                today=ctx.today)
    plan: dict[str, Any] = {"create": [], "update": [], "unchanged": 0, "locked": 0, "planned": None}
    if parsed.issues:
        return parsed, plan
    granted = []
    for record in parsed.records:
        if ctx.user.sees(record.values["centre"]):
            granted.append(record)
        else:
            parsed.issues.append(Issue("V306", f"centre '{record.values['centre']}' is not granted to you",
                                       "upload only patients of your centres", record.line, "centre",
                                       record.values["centre"]))
    planned = plan_import(conn, granted, _options(mode, ctx=ctx, centre=centre))
    parsed.issues += [dataclasses.replace(i, hint=_WEB_HINTS.get(i.code, i.hint)) for i in planned.issues]
    plan["create"], plan["unchanged"], plan["update"], plan["planned"] = (
        planned.creates, planned.unchanged, planned.updates, planned)
    created = created_many(conn, {u.pk: u.import_batch_id for u in planned.updates})
    plan["locked"] = sum(is_locked(created[u.pk], today=ctx.today, lock_days=ctx.lock_days) for u in planned.updates)
    return parsed, plan


def report(parsed: ParsedFile, plan: dict[str, Any], *, limit: int = 200) -> dict[str, Any]:
    return {
        "ok": not parsed.issues, "source": parsed.source, "sha256": parsed.sha256, "rows": parsed.rows,
        "error_count": len(parsed.issues), "errors": [i.to_dict() for i in parsed.issues[:limit]],
        "create": len(plan["create"]), "update": len(plan["update"]), "unchanged": plan["unchanged"],
        "locked": plan["locked"],
        "changes": [{"patient_id": r.values["patient_id"], "centre": r.values["centre"], "field": f,
                     "old": audit.text(o), "new": audit.text(n)}
                    for r, diff in ((u.record, u.diff) for u in plan["update"][:limit]) for f, o, n in diff],
    }


def validate(conn: sa.Connection, *, ctx: Context, data: bytes, source: str, centre: str, mode: str,
             max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Step 1 on a read connection: the report of what confirming would do (nothing is written)."""
    if not ctx.user.can_write:
        raise Forbidden(f"role '{ctx.user.role}' is read-only")
    parsed, plan = check(conn, ctx=ctx, data=data, source=source, centre=centre, mode=mode, max_bytes=max_bytes)
    return report(parsed, plan)


def keep(conn: sa.Connection, *, ctx: Context, data: bytes, source: str, centre: str, mode: str) -> str:
    """Keep a validated file for confirmation (a short write); returns the one-time token."""
    conn.execute(sa.delete(t.pending_upload).where(t.pending_upload.c.created_at < utcnow() - dt.timedelta(days=1)))
    token = security.new_token()
    conn.execute(sa.insert(t.pending_upload).values(
        token_hash=security.token_hash(token), user_id=ctx.user.id, created_at=utcnow(), source=source[:255],
        centre=centre, mode=mode, data=data))
    return token


def confirm(store: Any, *, ctx: Context, token: str, reason: str = "") -> dict[str, Any]:
    """Import a kept upload (validated again now, outside any write transaction); all or nothing.

    ``store`` is the app's :class:`oncosurg.web.db.WebStore`.  Patients registered or edited between
    this validation and the write are planned again under the write lock, with every rule."""
    if not ctx.user.can_write:
        raise Forbidden(f"role '{ctx.user.role}' is read-only")
    p = t.pending_upload
    with store.write() as conn:
        row = conn.execute(sa.select(p).where(p.c.token_hash == security.token_hash(token or ""),
                                              p.c.user_id == ctx.user.id)).mappings().first()
        if row is None:
            raise NotFound("no upload waits for confirmation under this token (it was used, or expired)")
        conn.execute(sa.delete(p).where(p.c.token_hash == row["token_hash"]))
    reason = (reason or "").strip()[:1000]
    note = f"CSV upload {row['source']}"
    with store.read() as conn:
        parsed, plan = check(conn, ctx=ctx, data=row["data"], source=row["source"], centre=row["centre"],
                             mode=row["mode"], max_bytes=len(row["data"]))
    if parsed.issues:
        raise Invalid("the file no longer passes validation (the registry changed since it was checked); "
                      "nothing was imported",
                      errors=[issue_dict(i) | {"line": i.line} for i in parsed.issues[:200]])
    if plan["locked"] and not reason:
        raise Invalid("a reason is required: the upload changes records older than the lock period",
                      errors=[{"code": "W505", "rule": "reason-required", "column": "reason", "value": None,
                               "message": f"{plan['locked']} patient(s) are older than {ctx.lock_days} days",
                               "hint": "say why these records change"}])
    records = [*plan["create"], *(u.record for u in plan["update"])]
    try:
        result = import_records(store.engine, records, source=row["source"], sha256=parsed.sha256, rows=parsed.rows,
                                actor=ctx.actor, options=_options(row["mode"], ctx=ctx, centre=row["centre"]),
                                create_note=note, update_note=reason or note)
    except StoreBusy as exc:
        raise Busy(f"the registry stayed busy; nothing was imported, confirm again ({exc})") from exc
    if result.issues:
        raise Invalid("patients edited since the file was checked no longer pass validation; nothing was "
                      "imported", errors=[issue_dict(i) | {"line": i.line} for i in result.issues[:200]])
    return {"ok": True, "source": row["source"], "created": result.created, "updated": result.updated,
            "unchanged": plan["unchanged"] + result.unchanged}
