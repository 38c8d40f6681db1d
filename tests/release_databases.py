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


def _any(*columns: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return sa.or_(*[c.is_not(None) for c in columns])


#: Columns added after 0.1.0 (left out of the view; their values are checked by their own tests):
#: migration 0004_accounts_security.
LATER_COLUMNS = {"app_user": {"totp_secret", "totp_last_step", "password_changed_at"}, "login_attempt": {"device"}}
#: Settings and audit rows written by later migrations themselves (the audit-state baseline).
LATER_SETTINGS = ("audit_baseline",)
LATER_ACTIONS = ("migrate", "baseline")


def release_audit_anchor(conn: sa.Connection) -> dict[str, Any]:
    """The chain as the release left it: the rows before the first row a later migration appended
    (``migrate`` of 0005, ``baseline`` of 0004/0005), and the hash of the last of them."""
    first_migrate = conn.execute(sa.select(sa.func.min(t.audit_log.c.id))
                                 .where(t.audit_log.c.action.in_(LATER_ACTIONS))).scalar()
    last = conn.execute(sa.select(t.audit_log.c.id, t.audit_log.c.hash)
                        .where(t.audit_log.c.id < first_migrate if first_migrate else sa.true())
                        .order_by(t.audit_log.c.id.desc()).limit(1)).first()
    return {"rows": last.id if last else 0, "head_hash": last.hash if last else audit.GENESIS}


def tables_view(conn: sa.Connection) -> dict[str, Any]:
    """Everything the registry CSV does not carry, in release 0.1.0's shape (``expected/*/tables.json``),
    read from today's schema (the episode tables: the release's one-row-per-patient stages are their
    rescue line, operation, pathology, disease event and contact); password and token hashes left out,
    secrets as their sha256."""
    p, c, u = t.patient, t.centre, t.app_user
    line, proc, path = t.therapy_line, t.liver_procedure, t.pathology
    who = sa.select(p.c.id.label("patient_pk"), c.c.name.label("centre"), p.c.patient_id).join(
        c, c.c.id == p.c.centre_id).subquery("who")

    def with_patient(table: sa.Table, columns: tuple[str, ...], *order: Any) -> sa.Select:
        return (sa.select(table.c.patient_pk, who.c.centre, who.c.patient_id, *[table.c[k] for k in columns])
                .join(who, who.c.patient_pk == table.c.patient_pk).order_by(*order))

    def count(table: sa.Table, *where: sa.ColumnElement[bool]) -> int:
        return conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar_one()

    regimen = (line.c.schedule, line.c.dose_mg_m2, line.c.bsa_m2, line.c.stop_date)
    migrated = count(t.audit_log, t.audit_log.c.action.in_(LATER_ACTIONS))
    counts = {name: count(t.metadata.tables[name]) for name in (
        "centre", "import_batch", "patient", "complication", "change_log", "app_user", "user_centre", "web_session",
        "login_attempt", "web_setting", "audit_head", "mdt_review", "response_assessment", "pending_upload")}
    counts["web_setting"] = count(t.web_setting, t.web_setting.c.key.not_in(LATER_SETTINGS))
    counts |= {
        "baseline_tumour": count(line, _any(line.c.liver_mets_count, line.c.largest_met_mm, line.c.bilobar,
                                            line.c.extrahepatic_disease)),
        "prior_chemotherapy": counts["patient"], "cetuximab_course": counts["patient"],
        "follow_up": counts["patient"], "surgery": count(proc),
        "pathology_nontumoral": count(path, _any(path.c.steatosis_pct, path.c.steatohepatitis,
                                                 path.c.sinusoidal_dilatation_grade, path.c.fibrosis_stage,
                                                 path.c.nodular_regenerative_hyperplasia)),
        "pathology_tumoral": count(path, path.c.tumour_regression_grade.is_not(None)),
        "audit_log": count(t.audit_log) - migrated,
        "cetuximab_regimen": count(line, _any(*regimen)),
    }
    return {
        "release": "0.1.0",
        "audit": release_audit_anchor(conn),
        "counts": {name: counts[name] for name in RELEASE_TABLES},
        "centre": _rows(conn, sa.select(c).order_by(c.c.id)),
        "patient": _rows(conn, sa.select(p.c.id.label("patient_pk"), c.c.name.label("centre"), p.c.patient_id,
                                         p.c.version, p.c.import_batch_id, proc.c.complications_assessed)
                         .join(c, c.c.id == p.c.centre_id).outerjoin(proc, proc.c.patient_pk == p.c.id)
                         .order_by(p.c.id)),
        "import_batch": _rows(conn, sa.select(t.import_batch).order_by(t.import_batch.c.id)),
        "change_log": _rows(conn, with_patient(t.change_log, ("id", "import_batch_id", "field", "old_value",
                                                              "new_value"), t.change_log.c.id)),
        "complication": _rows(conn, with_patient(t.complication, ("id", "grade", "grade_rank", "description"),
                                                 t.complication.c.id)),
        "mdt_review": _rows(conn, with_patient(t.mdt_review, ("id", "review_date", "decision", "cycles_at_review",
                                                              "notes"), t.mdt_review.c.id)),
        "response_assessment": _rows(conn, with_patient(
            t.response_assessment, ("id", "assessment_date", "category", "baseline_sum_mm", "current_sum_mm",
                                    "nadir_sum_mm", "new_lesions"), t.response_assessment.c.id)),
        "cetuximab_regimen": _rows(conn, with_patient(line, ("schedule", "dose_mg_m2", "bsa_m2", "stop_date"),
                                                      line.c.patient_pk).where(_any(*regimen))),
        "app_user": [row | {"centres": [r[0] for r in conn.execute(
                         sa.select(c.c.name).join(t.user_centre, t.user_centre.c.centre_id == c.c.id)
                         .where(t.user_centre.c.user_id == row["id"]).order_by(c.c.name))]}
                     for row in _rows(conn, sa.select(*[col for col in u.c if col.name != "password_hash"
                                                        and col.name not in LATER_COLUMNS["app_user"]])
                                      .order_by(u.c.id))],
        "user_centre_rows": counts["user_centre"],
        "web_session": _rows(conn, sa.select(u.c.username, t.web_session.c.created_at, t.web_session.c.expires_at)
                             .join(u, u.c.id == t.web_session.c.user_id)
                             .order_by(t.web_session.c.created_at, u.c.username)),
        "login_attempt": _rows(conn, sa.select(*[col for col in t.login_attempt.c
                                                 if col.name not in LATER_COLUMNS["login_attempt"]])
                               .order_by(t.login_attempt.c.id)),
        "web_setting": [{"key": r.key, "value_sha256": _sha(r.value)}
                        for r in conn.execute(sa.select(t.web_setting).where(t.web_setting.c.key.not_in(LATER_SETTINGS))
                                              .order_by(t.web_setting.c.key))],
        "pending_upload": [{"username": r.username, "created_at": _plain(r.created_at), "source": r.source,
                            "centre": r.centre, "mode": r.mode, "data_sha256": _sha(r.data)}
                           for r in conn.execute(sa.select(t.pending_upload, u.c.username)
                                                 .join(u, u.c.id == t.pending_upload.c.user_id)
                                                 .order_by(t.pending_upload.c.created_at))],
    }


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
    return ReleaseView(_cli_file("export", "--db", url), _cli_file("audit", "export", "--db", url), tables)


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


def _release_rows(audit_csv: str, last_id: int) -> str:
    """The audit export without the rows later releases appended after the release's last row."""
    rows = list(csv.DictReader(io.StringIO(audit_csv)))
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if int(r["id"]) <= last_id)
    return out.getvalue()


def compare_views(expected: ReleaseView, actual: ReleaseView) -> list[str]:
    """Every value of ``expected`` that ``actual`` lost or changed (empty = everything kept); audit rows that
    later releases appended (their migrations are audited) are not the release's and are left out."""
    release_audit = _release_rows(actual.audit_csv, expected.tables["audit"]["rows"])
    return [*compare_csv("registry.csv", expected.registry_csv, actual.registry_csv, ("centre", "patient_id")),
            *compare_csv("audit.csv", expected.audit_csv, release_audit, ("id",)),
            *compare_json("tables", expected.tables, actual.tables)]


def report(db: ReleaseDatabase, problems: list[str], limit: int = 60) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{db}: {len(problems)} value(s) lost or changed after opening with today's code:\n  {shown}{more}"
