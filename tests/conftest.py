"""Shared fixtures: SQLite stores in temp files and a real PostgreSQL server started per session.

The PostgreSQL fixture runs Debian's ``initdb``/``pg_ctl`` in a temporary directory on a free
loopback port (as the ``postgres`` user when the tests run as root, since PostgreSQL refuses to
run as root).  Locally it skips when the binaries are missing; under ``CI=true`` it fails instead,
so CI can never silently skip the PostgreSQL tests.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.store.engine import open_store

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """A throw-away PostgreSQL cluster; ``url(db)`` creates databases on demand."""

    def __init__(self) -> None:
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not initdb or not self.pg_ctl:
            raise FileNotFoundError("initdb/pg_ctl not found (apt-get install postgresql)")
        self.tmp = Path(tempfile.mkdtemp(prefix="oncosurg-pg-"))
        self.data = self.tmp / "data"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.tmp, "postgres")
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.tmp / "log"), "-w", "-t", "60",
                   "-o", f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        self.admin = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(self.prefix + cmd, check=True, capture_output=True, cwd=self.tmp)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with self.admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        return self.url(name)

    def stop(self) -> None:
        self.admin.dispose()
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True, cwd=self.tmp)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        message = f"PostgreSQL unavailable: {exc} {detail.decode(errors='replace')[-500:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (under CI=true the PostgreSQL tests must run)")
        pytest.skip(message)
    yield server
    server.stop()


_counter = iter(range(10**6))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def store(store_url: str) -> Iterator[sa.Engine]:
    engine = open_store(store_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def reference_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from oncosurg.reference import write_reference_csv

    return write_reference_csv(tmp_path_factory.mktemp("reference") / "reference-cohort.csv")

