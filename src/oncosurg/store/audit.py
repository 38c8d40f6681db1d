"""The audit trail: who changed what, when, from which value to which, and why; hash-chained.

Each row stores ``hash = sha256(prev_hash + canonical(row))`` where ``canonical`` is the row's
fields as sorted, compact JSON, and ``prev_hash`` is the previous row's hash (64 zeros for the
first).  Rows are numbered 1, 2, 3 … without gaps and the ``audit_head`` row names the last one,
so :func:`verify` detects an edited, inserted, deleted or truncated row.  It also recomputes each
patient's state from the trail and compares it with the tables (:mod:`oncosurg.store.audit_state`),
so a direct edit of the patient tables is caught; and a signed checkpoint of the head (:func:`checkpoint`,
HMAC-SHA256 with a key kept outside the database) catches a truncated or re-hashed chain, which the
chain alone cannot.  Appending happens inside
the writer's transaction (the web app's :meth:`oncosurg.web.db.WebStore.write`, or an import's
:func:`oncosurg.store.repository.import_records`); the head row is locked (``FOR UPDATE`` on
PostgreSQL, SQLite has one writer), so the chain stays linear under concurrent writers.  The head
hash printed by ``oncosurg audit verify`` can be written down elsewhere to anchor the chain.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from oncosurg.store import tables as t
from oncosurg.store.bulk import insert_rows
from oncosurg.store.engine import held_audit_head

GENESIS = "0" * 64
HASHED_FIELDS: tuple[str, ...] = (
    "id", "at", "user_id", "username", "action", "entity", "entity_id", "patient_pk", "centre", "patient_id",
    "field", "old_value", "new_value", "reason", "version",
)
EXPORT_FIELDS: tuple[str, ...] = (*HASHED_FIELDS, "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change (a signed-in user, or a CLI operator)."""

    user_id: int | None
    username: str


def text(value: Any) -> str | None:
    """A value as the registry CSV writes it (``yes``/``no``, ISO dates), for old → new columns."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(row: dict[str, Any]) -> str:
    return json.dumps({k: row.get(k) for k in HASHED_FIELDS}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False)


def row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    return hashlib.sha256((prev_hash + canonical(row)).encode("utf-8")).hexdigest()


def append(conn: sa.Connection, *, actor: Actor, entries: Sequence[dict[str, Any]], states: bool = True) -> int:
    """Append ``entries`` (dicts with action, entity, and optionally entity_id, patient_pk, centre,
    patient_id, field, old_value, new_value, reason, version) to the chain; returns the count.

    With ``states``, each patient the entries change gets a ``state`` row after them, carrying its
    record as the tables now hold it (:func:`oncosurg.store.audit_state.state_entries`): call this
    after writing the change.  Must run inside a write transaction; the head row is locked here
    until it commits.
    """
    if not entries:
        return 0
    if states:
        from oncosurg.store.audit_state import state_entries

        entries = [*entries, *state_entries(conn, entries)]
    held = held_audit_head(conn)  # read under the writers' lock this transaction holds
    if held is not None:
        last_id, prev = held[0] or 0, held[1]
    else:
        head = conn.execute(sa.select(t.audit_head.c.last_id, t.audit_head.c.last_hash)
                            .where(t.audit_head.c.id == 1).with_for_update()).one()
        last_id, prev = head.last_id or 0, head.last_hash
    at = now_iso()
    rows = []
    for entry in entries:
        last_id += 1
        row = {k: None for k in HASHED_FIELDS} | {k: entry.get(k) for k in HASHED_FIELDS if k in entry}
        row |= {"id": last_id, "at": at, "user_id": actor.user_id, "username": actor.username}
        for key in ("old_value", "new_value"):
            row[key] = text(row[key])
        row["prev_hash"] = prev
        row["hash"] = prev = row_hash(prev, row)
        rows.append(row)
    insert_rows(conn, t.audit_log, EXPORT_FIELDS, [[row[k] for k in EXPORT_FIELDS] for row in rows])
    conn.execute(sa.update(t.audit_head).where(t.audit_head.c.id == 1).values(last_id=last_id, last_hash=prev))
    return len(rows)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    rows: int
    head_hash: str
    problem: str | None = None
    bad_id: int | None = None
    #: patients whose state recomputed from the trail was compared with the tables / could not be
    patients_checked: int = 0
    patients_unchecked: int = 0
    mismatches: tuple[dict[str, Any], ...] = ()
    checkpoints: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "head_hash": self.head_hash, "problem": self.problem,
                "bad_id": self.bad_id, "patients_checked": self.patients_checked,
                "patients_unchecked": self.patients_unchecked, "mismatches": list(self.mismatches),
                "checkpoints": list(self.checkpoints)}


def verify(conn: sa.Connection, *, batch: int = 5000, state: bool = True,
           checkpoints: Sequence[dict[str, Any]] = (), key: bytes | None = None) -> Verification:
    """Recompute the whole chain (the first broken row is reported); then, with ``state``, each
    patient's state from the trail against the tables; then each signed ``checkpoint`` against the chain."""
    from oncosurg.store.audit_state import Replay, compare, table_states

    replay = Replay()
    head = conn.execute(sa.select(t.audit_head.c.last_id, t.audit_head.c.last_hash)
                        .where(t.audit_head.c.id == 1)).one()
    prev, expected_id, after = GENESIS, 1, 0
    while True:
        chunk = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.id > after)
                             .order_by(t.audit_log.c.id).limit(batch)).mappings().all()
        for row in chunk:
            rid = row["id"]
            if rid != expected_id:
                return Verification(False, expected_id - 1, prev,
                                    f"row {expected_id} is missing (next row is {rid})", expected_id)
            if row["prev_hash"] != prev:
                return Verification(False, rid - 1, prev, f"row {rid} does not follow row {rid - 1}", rid)
            if row_hash(prev, dict(row)) != row["hash"]:
                return Verification(False, rid - 1, prev, f"row {rid} was altered after it was written", rid)
            prev, expected_id = row["hash"], rid + 1
            if state:
                replay.apply(row)
        if len(chunk) < batch:
            break
        after = chunk[-1]["id"]
    count = expected_id - 1
    if (head.last_id or 0) != count or head.last_hash != prev:
        return Verification(False, count, prev,
                            f"the chain head names row {head.last_id or 0} but the trail ends at row {count} "
                            "(rows were removed from the end)", count + 1)
    checked = [check_checkpoint(conn, c, key=key) for c in checkpoints]
    broken = next((c for c in checked if not c["ok"]), None)
    mismatches: list[dict[str, Any]] = []
    n_checked = n_unchecked = 0
    if state:
        mismatches, n_checked, n_unchecked = compare(replay, table_states(conn))
    problem = None
    if broken is not None:
        problem = f"checkpoint of row {broken['rows']}: {broken['problem']}"
    elif mismatches:
        first = mismatches[0]
        problem = (f"{len(mismatches)} difference(s) between the tables and the state recomputed from the trail "
                   f"(a direct database edit?), first: patient {first['patient_id']} ({first['centre']}) "
                   f"{first['what']}{' ' + first['field'] if first['field'] else ''}: trail {first['trail']!r}, "
                   f"tables {first['table']!r}")
    return Verification(problem is None, count, prev, problem, None, n_checked, n_unchecked, tuple(mismatches),
                        tuple(checked))


# ------------------------------------------------------------------------------------- checkpoints

CHECKPOINT_FORMAT = "oncosurg-audit-checkpoint/1"


def load_key(path: str) -> bytes:
    """The checkpoint key: the file's bytes (at least 32; ``oncosurg audit keygen`` writes 64 hex digits)."""
    with open(path, "rb") as handle:
        key = handle.read().strip()
    if len(key) < 32:
        raise ValueError(f"{path}: a checkpoint key needs at least 32 bytes (make one with `oncosurg audit keygen`)")
    return key


def _signed(fields: dict[str, Any], key: bytes) -> str:
    message = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def checkpoint(conn: sa.Connection, *, key: bytes) -> dict[str, Any]:
    """The chain's head (row count and hash, as the head row says) signed with HMAC-SHA256 under ``key``:
    record it outside the database (a file, a ticket); ``verify(checkpoints=[...])`` checks it later."""
    head = conn.execute(sa.select(t.audit_head.c.last_id, t.audit_head.c.last_hash)
                        .where(t.audit_head.c.id == 1)).one()
    fields = {"format": CHECKPOINT_FORMAT, "rows": head.last_id or 0, "head_hash": head.last_hash, "at": now_iso(),
              "key_id": hashlib.sha256(key).hexdigest()[:16], "algorithm": "hmac-sha256"}
    return fields | {"signature": _signed(fields, key)}


def check_checkpoint(conn: sa.Connection, point: dict[str, Any], *, key: bytes | None) -> dict[str, Any]:
    """Whether the chain still holds ``point``: signed with ``key``, and row ``rows`` still has that hash
    (a truncated or re-hashed chain does not)."""
    rows, wanted = point.get("rows"), point.get("head_hash")
    out = {"rows": rows, "head_hash": wanted, "at": point.get("at"), "ok": False, "problem": None}
    fields = {k: v for k, v in point.items() if k != "signature"}
    if point.get("format") != CHECKPOINT_FORMAT or not isinstance(rows, int) or not isinstance(wanted, str):
        return out | {"problem": "not an oncosurg audit checkpoint"}
    if key is None:
        return out | {"problem": "no key given to check the checkpoint's signature"}
    if not hmac.compare_digest(_signed(fields, key), str(point.get("signature", ""))):
        return out | {"problem": "the signature does not match: the checkpoint was edited, or the key is not the "
                                 "one it was signed with"}
    if rows == 0:
        return out | {"ok": wanted == GENESIS, "problem": None if wanted == GENESIS else "bad empty checkpoint"}
    found = conn.execute(sa.select(t.audit_log.c.hash).where(t.audit_log.c.id == rows)).scalar()
    if found is None:
        last = conn.execute(sa.select(sa.func.max(t.audit_log.c.id))).scalar() or 0
        return out | {"problem": f"the trail ends at row {last}, before the checkpoint's row {rows}: rows were "
                                 "removed (truncated)"}
    if found != wanted:
        return out | {"problem": f"row {rows} now hashes to {found[:16]}…, the checkpoint recorded {wanted[:16]}…: "
                                 "the chain was rewritten (re-hashed) since"}
    return out | {"ok": True}


def _where(*, patient_pk: int | None, centres: Iterable[str] | None, after: int = 0
           ) -> list[sa.ColumnElement[bool]]:
    where: list[sa.ColumnElement[bool]] = []
    if patient_pk is not None:
        where.append(t.audit_log.c.patient_pk == patient_pk)
    if centres is not None:
        where.append(t.audit_log.c.centre.in_(sorted(centres)))
    if after:
        where.append(t.audit_log.c.id > after)
    return where


def history_start(conn: sa.Connection, *, patient_pk: int) -> int:
    """The id of the last row deleting a patient under ``patient_pk`` (0 if none): a patient's history
    starts after it.  Ids are never reused since migration 0003; registries written before may hold
    a deleted patient's rows under a pk that was given to a new patient."""
    a = t.audit_log
    return conn.execute(sa.select(sa.func.max(a.c.id)).where(
        a.c.patient_pk == patient_pk, a.c.action == "delete", a.c.entity == "patient")).scalar() or 0


def entries(conn: sa.Connection, *, patient_pk: int | None = None, centres: Iterable[str] | None = None,
            limit: int = 200, offset: int = 0, after: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The newest ``limit`` rows (filtered: patient, centres, ids above ``after``), and the number of matching rows."""
    where = _where(patient_pk=patient_pk, centres=centres, after=after)
    total = conn.execute(sa.select(sa.func.count()).select_from(t.audit_log).where(*where)).scalar_one()
    rows = conn.execute(sa.select(t.audit_log).where(*where).order_by(t.audit_log.c.id.desc())
                        .limit(limit).offset(offset)).mappings().all()
    return [dict(r) for r in rows], int(total)


def changes_since(conn: sa.Connection, *, patient_pk: int, version: int, centres: Iterable[str] | None = None,
                  after: int = 0) -> list[dict[str, Any]]:
    """What was recorded for a patient after ``version`` (for the stale-edit message), filtered as :func:`entries`."""
    rows = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.version > version,
                                                     t.audit_log.c.action.not_in(("state", "baseline")),
                                                     *_where(patient_pk=patient_pk, centres=centres, after=after))
                        .order_by(t.audit_log.c.id)).mappings().all()
    return [{"version": r["version"], "at": r["at"], "username": r["username"], "action": r["action"],
             "entity": r["entity"], "field": r["field"], "old": r["old_value"], "new": r["new_value"]}
            for r in rows]


def export_csv(conn: sa.Connection, *, patient_pk: int | None = None, centres: Iterable[str] | None = None,
               after: int = 0) -> Iterator[str]:
    """The trail (oldest first) as CSV text chunks, with the hashes so a copy can be re-verified."""
    where = _where(patient_pk=patient_pk, centres=centres)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_FIELDS)
    while True:
        chunk = conn.execute(sa.select(t.audit_log).where(t.audit_log.c.id > after, *where)
                             .order_by(t.audit_log.c.id).limit(2000)).mappings().all()
        for row in chunk:
            writer.writerow(["" if row[k] is None else _safe(row[k]) for k in EXPORT_FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        if len(chunk) < 2000:
            return
        after = chunk[-1]["id"]


def _safe(value: Any) -> str:
    """Neutralise spreadsheet formulas in exported free text (a leading ' as OWASP advises)."""
    s = str(value)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(s) else s


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
