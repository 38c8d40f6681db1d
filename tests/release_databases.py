"""Databases written by earlier releases (``tests/fixtures/releases/<release>/``) and the "old-release
view" that every migration test compares with what the old code read back (``expected/``).

A migration that moves data (episodes, new tables) keeps these fixtures passing by teaching
:func:`tables_view` to read the new schema back into the release's shape; the expected files never
change (they were written by the old code).  Comparisons report every lost or changed value by
patient and column, so a failure says what was lost.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.engine import alembic_config

RELEASES = Path(__file__).resolve().parent / "fixtures" / "releases"


@dataclass(frozen=True, slots=True)
class ReleaseDatabase:
    """One committed database: ``registry`` (reference | random) of ``release`` on ``backend``."""

    release: str
    registry: str
    backend: str  # sqlite | postgresql
    revision: str  # the alembic revision the release wrote

    @property
    def folder(self) -> Path:
        return RELEASES / self.release

    @property
    def source(self) -> Path:
        return self.folder / (f"{self.registry}.db" if self.backend == "sqlite" else f"{self.registry}.pg.sql")

    @property
    def expected(self) -> Path:
        return self.folder / "expected" / f"{self.registry}-{self.backend}"

    def __str__(self) -> str:
        return f"{self.release}/{self.registry}-{self.backend}"


RELEASE_DATABASES: tuple[ReleaseDatabase, ...] = tuple(
    ReleaseDatabase("0.1.0", registry, backend, "0002")
    for registry in ("reference", "random") for backend in ("sqlite", "postgresql"))


# ------------------------------------------------------------------------------------------ opening

def copy_sqlite(db: ReleaseDatabase, tmp: Path) -> str:
    """A copy of the committed SQLite file (never open the committed file itself); its URL."""
    target = tmp / db.source.name
    shutil.copyfile(db.source, target)
    return f"sqlite:///{target}"


def restore_postgres(db: ReleaseDatabase, server: Any) -> str:
    """Restore the plain ``pg_dump`` into a fresh database of the test server (``psql``); its URL."""
    from conftest import _pg_bin

    psql = _pg_bin("psql")
    assert psql, "psql not found (apt-get install postgresql-client)"
    name = f"rel_{db.release.replace('.', '_')}_{db.registry}_{os.getpid()}"
    url = server.create_database(name)
    subprocess.run([psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port),
                    "-U", "postgres", "-d", name, "-f", str(db.source)], check=True, capture_output=True)
    return url


def stored_revision(url: str) -> str | None:
    """The alembic revision recorded in the database (read without migrating)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


# ------------------------------------------------------------------------------ the old-release view

@dataclass(frozen=True, slots=True)
class ReleaseView:
    """What release 0.1.0 read back from a registry: the CLI's two exports and the other tables."""

    registry_csv: str
    audit_csv: str
    tables: dict[str, Any]


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _rows(conn: sa.Connection, query: sa.Select) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in conn.execute(query).mappings()]


def _sha(value: str | bytes) -> str:
    return hashlib.sha256(value.encode() if isinstance(value, str) else value).hexdigest()


#: The tables of release 0.1.0 (alembic 0002); their row counts are part of the view.
RELEASE_TABLES = ("centre", "import_batch", "patient", "baseline_tumour", "prior_chemotherapy", "cetuximab_course",
                  "surgery", "complication", "pathology_nontumoral", "pathology_tumoral", "follow_up", "change_log",
                  "app_user", "user_centre", "web_session", "login_attempt", "web_setting", "audit_log",
                  "audit_head", "mdt_review", "response_assessment", "cetuximab_regimen", "pending_upload")


#: Columns added after 0.1.0 (left out of the view; their values are checked by their own tests):
#: migrations 0004_accounts_security and 0003_ids_never_reused.
LATER_COLUMNS = {"app_user": {"totp_secret", "totp_last_step", "password_changed_at"}, "login_attempt": {"device"},
                 "complication": {"from_worst_grade"}}
#: Settings and audit rows written by later migrations themselves (0004: the audit-state baseline).
LATER_SETTINGS = {"audit_baseline"}


def release_chain(conn: sa.Connection) -> tuple[int, str]:
    """The audit chain as the release left it: the rows before the first row a later migration appended
    (``baseline`` rows of 0004), and the hash of the last of them."""
    first_later = conn.execute(sa.select(sa.func.min(t.audit_log.c.id))
                               .where(t.audit_log.c.action == "baseline")).scalar()
    if first_later is None:
        chain = audit.verify(conn, state=False)
        return chain.rows, chain.head_hash
    rows = first_later - 1
    head = conn.execute(sa.select(t.audit_log.c.hash).where(t.audit_log.c.id == rows)).scalar() or audit.GENESIS
    return rows, head


def _release_columns(table: sa.Table, *drop: str) -> list[Any]:
    return [col for col in table.c if col.name not in {*drop, *LATER_COLUMNS.get(table.name, ())}]


def tables_view(conn: sa.Connection) -> dict[str, Any]:
    """Everything the registry CSV does not carry, in release 0.1.0's shape (``expected/*/tables.json``);
    password and token hashes left out, secrets as their sha256."""
    rows, head_hash = release_chain(conn)
    p, c, u = t.patient, t.centre, t.app_user
    who = sa.select(p.c.id.label("patient_pk"), c.c.name.label("centre"), p.c.patient_id).join(
        c, c.c.id == p.c.centre_id).subquery("who")

    def with_patient(table: sa.Table, *order: Any) -> sa.Select:
        cols = _release_columns(table, "patient_pk")
        return (sa.select(table.c.patient_pk, who.c.centre, who.c.patient_id, *cols)
                .join(who, who.c.patient_pk == table.c.patient_pk).order_by(*order))

    return {
        "release": "0.1.0",
        "audit": {"rows": rows, "head_hash": head_hash},
        "counts": {name: conn.execute(sa.select(sa.func.count()).select_from(t.metadata.tables[name])
                                      .where(*_release_rows(name))).scalar_one()
                   for name in RELEASE_TABLES},
        "centre": _rows(conn, sa.select(c).order_by(c.c.id)),
        "patient": _rows(conn, sa.select(p.c.id.label("patient_pk"), c.c.name.label("centre"), p.c.patient_id,
                                         p.c.version, p.c.import_batch_id, t.surgery.c.complications_assessed)
                         .join(c, c.c.id == p.c.centre_id).outerjoin(t.surgery, t.surgery.c.patient_pk == p.c.id)
                         .order_by(p.c.id)),
        "import_batch": _rows(conn, sa.select(t.import_batch).order_by(t.import_batch.c.id)),
        "change_log": _rows(conn, with_patient(t.change_log, t.change_log.c.id)),
        "complication": _rows(conn, with_patient(t.complication, t.complication.c.id)),
        "mdt_review": _rows(conn, with_patient(t.mdt_review, t.mdt_review.c.id)),
        "response_assessment": _rows(conn, with_patient(t.response_assessment, t.response_assessment.c.id)),
        "cetuximab_regimen": _rows(conn, with_patient(t.cetuximab_regimen, t.cetuximab_regimen.c.patient_pk)),
        "app_user": [row | {"centres": [r[0] for r in conn.execute(
                         sa.select(c.c.name).join(t.user_centre, t.user_centre.c.centre_id == c.c.id)
                         .where(t.user_centre.c.user_id == row["id"]).order_by(c.c.name))]}
                     for row in _rows(conn, sa.select(*_release_columns(u, "password_hash")).order_by(u.c.id))],
        "user_centre_rows": conn.execute(sa.select(sa.func.count()).select_from(t.user_centre)).scalar_one(),
        "web_session": _rows(conn, sa.select(u.c.username, t.web_session.c.created_at, t.web_session.c.expires_at)
                             .join(u, u.c.id == t.web_session.c.user_id)
                             .order_by(t.web_session.c.created_at, u.c.username)),
        "login_attempt": _rows(conn, sa.select(*_release_columns(t.login_attempt)).order_by(t.login_attempt.c.id)),
        "web_setting": [{"key": r.key, "value_sha256": _sha(r.value)}
                        for r in conn.execute(sa.select(t.web_setting).where(*_release_rows("web_setting"))
                                              .order_by(t.web_setting.c.key))],
        "pending_upload": [{"username": r.username, "created_at": _plain(r.created_at), "source": r.source,
                            "centre": r.centre, "mode": r.mode, "data_sha256": _sha(r.data)}
                           for r in conn.execute(sa.select(t.pending_upload, u.c.username)
                                                 .join(u, u.c.id == t.pending_upload.c.user_id)
                                                 .order_by(t.pending_upload.c.created_at))],
    }


def _release_rows(name: str) -> list[sa.ColumnElement[bool]]:
    if name == "audit_log":
        return [t.audit_log.c.action != "baseline"]
    if name == "web_setting":
        return [t.web_setting.c.key.not_in(sorted(LATER_SETTINGS))]
    return []


def _without_later_audit_rows(text: str) -> str:
    """``oncosurg audit export`` less the rows later migrations appended (as 0.1.0 would have exported it)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return text
    action = rows[0].index("action")
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([rows[0], *[r for r in rows[1:] if r[action] != "baseline"]])
    return buffer.getvalue()


def _cli_file(*args: str) -> str:
    with tempfile.TemporaryDirectory(prefix="oncosurg-view-") as tmp:
        out = Path(tmp) / "out.csv"
        result = CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, f"oncosurg {' '.join(args)}: {result.output}"
        return out.read_text(encoding="utf-8")


def old_release_view(engine: sa.Engine) -> ReleaseView:
    """The release-0.1.0 view of an opened (migrated) store: ``oncosurg export``, ``oncosurg audit export``
    (through the CLI of today's code) and :func:`tables_view`."""
    url = engine.url.render_as_string(hide_password=False)
    with engine.connect() as conn:
        tables = tables_view(conn)
    return ReleaseView(_cli_file("export", "--db", url),
                       _without_later_audit_rows(_cli_file("audit", "export", "--db", url)), tables)


def expected_view(db: ReleaseDatabase) -> ReleaseView:
    """What release 0.1.0 itself read back from ``db`` (written by ``build.py``)."""
    folder = db.expected
    return ReleaseView((folder / "registry.csv").read_text(encoding="utf-8"),
                       (folder / "audit.csv").read_text(encoding="utf-8"),
                       json.loads((folder / "tables.json").read_text(encoding="utf-8")))


# ---------------------------------------------------------------------------------------- comparing

def _csv_rows(text: str, key: tuple[str, ...]) -> tuple[list[str], dict[tuple[str, ...], dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for row in reader:
        rows[tuple(row[k] for k in key)] = row
    return list(reader.fieldnames or []), rows


def _same_cell(expected: str, actual: str) -> bool:
    """The same text, or the same number written differently (0.1.0 wrote a whole float as ``67.0``,
    today's export writes ``67``)."""
    if expected == actual:
        return True
    try:
        return float(expected) == float(actual) and "." in expected + actual
    except ValueError:
        return False


def compare_csv(name: str, expected: str, actual: str, key: tuple[str, ...]) -> list[str]:
    """Every expected row and column must be there with the same value (new columns are allowed)."""
    columns, want = _csv_rows(expected, key)
    have_columns, have = _csv_rows(actual, key)
    problems = [f"{name}: column {c!r} is gone" for c in columns if c not in have_columns]
    for k, row in want.items():
        got = have.get(k)
        if got is None:
            problems.append(f"{name}: row {'/'.join(k)} is gone")
            continue
        problems += [f"{name}: {'/'.join(k)} {c}: expected {row[c]!r}, got {got[c]!r}"
                     for c in columns if c in got and not _same_cell(row[c], got[c])]
    problems += [f"{name}: unexpected new row {'/'.join(k)}" for k in have if k not in want]
    return problems


def compare_json(path: str, expected: Any, actual: Any) -> Iterator[str]:
    """Every difference between two JSON values, by path."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for k in expected:
            if k not in actual:
                yield f"{path}.{k}: gone (expected {expected[k]!r})"[:300]
            else:
                yield from compare_json(f"{path}.{k}", expected[k], actual[k])
        for k in actual:
            if k not in expected:
                yield f"{path}.{k}: unexpected ({actual[k]!r})"[:300]
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            yield f"{path}: {len(expected)} rows expected, {len(actual)} found"
        for i, (e, a) in enumerate(zip(expected, actual, strict=False)):
            yield from compare_json(f"{path}[{i}]", e, a)
    elif expected != actual or type(expected) is not type(actual):
        yield f"{path}: expected {expected!r}, got {actual!r}"[:300]


def compare_views(expected: ReleaseView, actual: ReleaseView) -> list[str]:
    """Every value of ``expected`` that ``actual`` lost or changed (empty = everything kept)."""
    return [*compare_csv("registry.csv", expected.registry_csv, actual.registry_csv, ("centre", "patient_id")),
            *compare_csv("audit.csv", expected.audit_csv, actual.audit_csv, ("id",)),
            *compare_json("tables", expected.tables, actual.tables)]


def report(db: ReleaseDatabase, problems: list[str], limit: int = 60) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{db}: {len(problems)} value(s) lost or changed after opening with today's code:\n  {shown}{more}"
