"""CSV upload in two steps: validate and show the report, then import what was shown on confirmation.

Step 1 (:func:`stage`) runs the registry CSV reader (:func:`oncosurg.ingest.csv.parse_registry_csv`,
every rule of an import), refuses centres the user was not granted and patients already registered
(unless the mode is ``update``), and keeps the file in ``pending_upload`` under a one-time token.
Step 2 (:func:`confirm`) validates the kept file again against the store as it is now and writes it
in one transaction: all or nothing, every field audited.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from oncosurg.ingest.csv import ParsedFile, ParsedRecord, parse_registry_csv
from oncosurg.rules import X_ALREADY_REGISTERED, Issue, check_record
from oncosurg.schema import COLUMNS, FIELD_BY_NAME
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.repository import write_stages
from oncosurg.web import security
from oncosurg.web.errors import Forbidden, Invalid, NotFound
from oncosurg.web.services.forms import issue_dict
from oncosurg.web.services.patients import (
    Context,
    _entries,
    create_patient,
    created_at,
    is_locked,
    read_registry_record,
)
from oncosurg.web.services.users import utcnow

MAX_BYTES = 20 * 1024 * 1024
MODES = ("insert", "update")


def _existing(conn: sa.Connection, records: Sequence[ParsedRecord]) -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    ids = sorted({r.values["patient_id"] for r in records})
    for i in range(0, len(ids), 500):
        rows = conn.execute(sa.select(t.patient.c.id, t.patient.c.patient_id, t.patient.c.version,
                                      t.patient.c.import_batch_id, t.centre.c.name)
                            .join(t.centre, t.centre.c.id == t.patient.c.centre_id)
                            .where(t.patient.c.patient_id.in_(ids[i:i + 500]))).mappings()
        for row in rows:
            found[(row["name"], row["patient_id"])] = dict(row)
    return found


def check(conn: sa.Connection, *, ctx: Context, data: bytes, source: str, centre: str, mode: str
          ) -> tuple[ParsedFile, dict[str, Any]]:
    """Validate an upload against the rules, the user's centres and the store; nothing is written."""
    if mode not in MODES:
        raise Invalid(f"mode must be one of {', '.join(MODES)}",
                      errors=[{"column": "mode", "value": mode, "message": "unknown mode"}])
    if not ctx.user.sees(centre):
        raise Forbidden(f"centre '{centre[:120]}' is not granted to you")
    if len(data) > MAX_BYTES:
        raise Invalid(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MB",
                      errors=[{"column": "file", "message": "file too large"}])
    parsed = parse_registry_csv(data, source=source, centre=centre, postop_window_days=ctx.postop_window_days,
                                today=ctx.today)
    plan: dict[str, Any] = {"create": [], "update": [], "unchanged": 0, "locked": 0}
    if parsed.issues:
        return parsed, plan
    existing = _existing(conn, parsed.records)
    for record in parsed.records:
        values = record.values
        if not ctx.user.sees(values["centre"]):
            parsed.issues.append(Issue("V306", f"centre '{values['centre']}' is not granted to you",
                                       "upload only patients of your centres", record.line, "centre",
                                       values["centre"]))
            continue
        found = existing.get((values["centre"], values["patient_id"]))
        if found is None:
            plan["create"].append(record)
            continue
        if mode == "insert":
            parsed.issues.append(Issue(X_ALREADY_REGISTERED.code,
                                       f"patient already registered in centre '{values['centre']}'",
                                       "choose the 'update' mode to change registered patients, or fix the patient_id",
                                       record.line, "patient_id", values["patient_id"]))
            continue
        old = read_registry_record(conn, found["id"])
        merged = {**old, **values}
        problems = check_record(merged, line=record.line, postop_window_days=ctx.postop_window_days)
        if problems:
            parsed.issues += problems
            continue
        diff = [(c, old.get(c), merged.get(c)) for c in COLUMNS if c != "centre" and old.get(c) != merged.get(c)]
        if not diff:
            plan["unchanged"] += 1
            continue
        locked = is_locked(created_at(conn, pk=found["id"], import_batch_id=found["import_batch_id"]),
                           today=ctx.today, lock_days=ctx.lock_days)
        plan["locked"] += locked
        plan["update"].append((record, found, merged, diff))
    return parsed, plan


def report(parsed: ParsedFile, plan: dict[str, Any], *, limit: int = 200) -> dict[str, Any]:
    return {
        "ok": not parsed.issues, "source": parsed.source, "sha256": parsed.sha256, "rows": parsed.rows,
        "error_count": len(parsed.issues), "errors": [i.to_dict() for i in parsed.issues[:limit]],
        "create": len(plan["create"]), "update": len(plan["update"]), "unchanged": plan["unchanged"],
        "locked": plan["locked"],
        "changes": [{"patient_id": r.values["patient_id"], "centre": r.values["centre"], "field": f,
                     "old": audit.text(o), "new": audit.text(n)}
                    for r, _, _, diff in plan["update"][:limit] for f, o, n in diff],
    }


def stage(conn: sa.Connection, *, ctx: Context, data: bytes, source: str, centre: str, mode: str
          ) -> dict[str, Any]:
    """Validate; when valid, keep the file and return the report with a confirmation ``token``."""
    if not ctx.user.can_write:
        raise Forbidden(f"role '{ctx.user.role}' is read-only")
    parsed, plan = check(conn, ctx=ctx, data=data, source=source, centre=centre, mode=mode)
    out = report(parsed, plan)
    conn.execute(sa.delete(t.pending_upload).where(t.pending_upload.c.created_at < utcnow() - dt.timedelta(days=1)))
    if out["ok"] and (out["create"] or out["update"]):
        token = security.new_token()
        conn.execute(sa.insert(t.pending_upload).values(
            token_hash=security.token_hash(token), user_id=ctx.user.id, created_at=utcnow(), source=source[:255],
            centre=centre, mode=mode, data=data))
        out["token"] = token
    return out


def confirm(conn: sa.Connection, *, ctx: Context, token: str, reason: str = "") -> dict[str, Any]:
    """Import a staged upload (validated again now); all or nothing."""
    if not ctx.user.can_write:
        raise Forbidden(f"role '{ctx.user.role}' is read-only")
    p = t.pending_upload
    row = conn.execute(sa.select(p).where(p.c.token_hash == security.token_hash(token or ""),
                                          p.c.user_id == ctx.user.id)).mappings().first()
    if row is None:
        raise NotFound("no upload waits for confirmation under this token (it was used, or expired)")
    conn.execute(sa.delete(p).where(p.c.token_hash == row["token_hash"]))
    parsed, plan = check(conn, ctx=ctx, data=row["data"], source=row["source"], centre=row["centre"],
                         mode=row["mode"])
    if parsed.issues:
        raise Invalid("the file no longer passes validation (the registry changed since it was checked); "
                      "nothing was imported", errors=[issue_dict(i) | {"line": i.line} for i in parsed.issues[:200]])
    reason = (reason or "").strip()[:1000]
    if plan["locked"] and not reason:
        raise Invalid("a reason is required: the upload changes records older than the lock period",
                      errors=[{"code": "W505", "rule": "reason-required", "column": "reason", "value": None,
                               "message": f"{plan['locked']} patient(s) are older than {ctx.lock_days} days",
                               "hint": "say why these records change"}])
    note = f"CSV upload {row['source']}"
    for record in plan["create"]:
        create_patient(conn, ctx=ctx, record=record.values, entity_note=note, source="registry CSV")
    for _record, found, merged, diff in plan["update"]:
        version = found["version"] + 1
        conn.execute(sa.update(t.patient).where(t.patient.c.id == found["id"]).values(
            version=t.patient.c.version + 1))
        plan_done = write_stages(conn, found["id"], merged, source="registry CSV")
        if plan_done.refusals:
            raise Invalid("nothing was imported", errors=[
                {"code": "X430", "rule": "derived-grade", "column": c, "value": audit.text(merged.get(c)),
                 "message": m, "hint": h, "line": _record.line} for c, m, h in plan_done.refusals])
        head = {"id": found["id"], "centre": merged["centre"], "patient_id": merged["patient_id"]}
        entries = []
        for field, old, new in diff:
            entries += _entries(head, version, "update", FIELD_BY_NAME[field].stage.value, found["id"],
                                [(field, old, new)], reason or note)
        audit.append(conn, actor=ctx.actor, entries=entries)
    return {"ok": True, "source": row["source"], "created": len(plan["create"]), "updated": len(plan["update"]),
            "unchanged": plan["unchanged"]}
