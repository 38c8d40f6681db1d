"""Commands that only read never create a registry (issue 9, item 3).

A typo in ``--db`` or a run from the wrong folder must be refused with "no registry at PATH" and
leave no file or folder behind; only ``import`` and ``user add`` create a registry.  A registry
written by an older release is still migrated when a read-only command opens it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.store.engine import alembic_config, open_store

KEY = "oncosurg-key-v1:9c4be0f1d27a6e83f4b51c08a9d37e62b5f01c9e48a73d26e1f0b8c5a4d79e03\n"  # oncosurg key new

#: Every command that only reads the registry, with the options it needs to get that far.
READ_ONLY: dict[str, list[str]] = {
    "analyze": ["analyze"],
    "analyze-json": ["analyze", "--json", "--allow-empty"],
    "report": ["report", "--out", "{tmp}/report"],
    "export": ["export"],
    "export-file": ["export", "--out", "{tmp}/registry-export.csv"],
    "export-redcap": ["export", "--format", "redcap", "--out", "{tmp}/redcap.csv"],
    "export-fhir": ["export", "--format", "fhir", "--out", "{tmp}/bundles"],
    "export-xlsx": ["export", "--format", "xlsx", "--out", "{tmp}/registry.xlsx"],
    "export-deidentified": ["export", "--deidentify", "--key-file", "{tmp}/secret.key", "--out", "{tmp}/d.csv"],
    "audit-verify": ["audit", "verify"],
    "audit-export": ["audit", "export", "--out", "{tmp}/audit.csv"],
    "serve": ["serve"],
}


@pytest.fixture(autouse=True)
def _no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` must be refused before it listens; were it not, return at once instead of serving."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.delenv("ONCOSURG_DB", raising=False)


def _args(args: list[str], tmp: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)) for a in args]


def _contents(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("name", list(READ_ONLY))
def test_read_only_command_refuses_a_missing_sqlite_file(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.key").write_text(KEY)
    missing = tmp_path / "typo" / "deeper" / "registry.db"
    before = _contents(tmp_path)
    result = CliRunner().invoke(cli, [*_args(READ_ONLY[name], tmp_path), "--db", f"sqlite:///{missing}"])
    assert result.exit_code != 0, result.output
    assert f"no registry at {missing}; run `oncosurg import` first, or check --db" in result.output
    assert not (tmp_path / "typo").exists()
    assert _contents(tmp_path) == before  # no database, no folder, no output file


@pytest.mark.parametrize("name", ["analyze", "report", "export", "audit-verify", "serve"])
def test_read_only_command_in_the_wrong_folder_creates_no_default_database(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, _args(READ_ONLY[name], tmp_path))
    assert result.exit_code != 0, result.output
    assert "no registry at oncosurg.db" in result.output
    assert list(tmp_path.iterdir()) == []


def test_the_environment_url_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONCOSURG_DB", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    result = CliRunner().invoke(cli, ["analyze"])
    assert result.exit_code == 2 and "no registry at" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_an_empty_file_is_not_a_registry_and_stays_untouched(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    result = CliRunner().invoke(cli, ["export", "--db", f"sqlite:///{empty}"])
    assert result.exit_code == 2
    assert "no registry at" in result.output and "holds no oncosurg tables" in result.output
    assert empty.stat().st_size == 0


def test_import_and_user_add_create_the_registry_and_its_folders(tmp_path: Path, reference_csv: Path) -> None:
    db = tmp_path / "new" / "folder" / "registry.db"
    assert CliRunner().invoke(cli, ["import", str(reference_csv), "--db", f"sqlite:///{db}"]).exit_code == 0
    assert db.is_file()
    accounts = tmp_path / "accounts" / "web.db"
    result = CliRunner().invoke(cli, ["user", "add", "alice", "--role", "admin", "--all-centres", "--password-stdin",
                                      "--db", f"sqlite:///{accounts}"], input="a long enough password\n")
    assert result.exit_code == 0, result.output
    assert accounts.is_file()
    # …and then the read-only commands open them
    assert CliRunner().invoke(cli, ["audit", "verify", "--db", f"sqlite:///{accounts}"]).exit_code == 0
    exported = CliRunner().invoke(cli, ["export", "--db", f"sqlite:///{db}"])
    assert exported.exit_code == 0 and exported.output.count("\n") == 152


def test_a_registry_from_an_older_release_is_migrated_by_a_read_only_command(
        tmp_path: Path, reference_csv: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as conn:  # the schema of the first release (revision 0001), no web-app tables
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert "audit_log" not in sa.inspect(engine).get_table_names()
    engine.dispose()
    result = CliRunner().invoke(cli, ["analyze", "--db", url, "--allow-empty", "--json"])
    assert result.exit_code == 0, result.output
    engine = sa.create_engine(url)
    assert "audit_log" in sa.inspect(engine).get_table_names()
    engine.dispose()


def test_open_store_create_false_refuses_without_side_effects(tmp_path: Path) -> None:
    from oncosurg.store.engine import RegistryMissing

    with pytest.raises(RegistryMissing, match="no registry at"):
        open_store(f"sqlite:///{tmp_path / 'a' / 'b.db'}", create=False)
    with pytest.raises(RegistryMissing):
        open_store("sqlite://", create=False)  # an in-memory database holds no registry
    assert list(tmp_path.iterdir()) == []


@pytest.mark.postgres
def test_a_postgresql_database_without_the_schema_is_refused_not_migrated(postgres_server, reference_csv) -> None:  # type: ignore[no-untyped-def]
    url = postgres_server.create_database("readonly_empty")
    for args in (["analyze"], ["export"], ["report", "--out", "unused"], ["audit", "verify"]):
        result = CliRunner().invoke(cli, [*args, "--db", url])
        assert result.exit_code == 2, result.output
        assert "no registry at" in result.output and "holds no oncosurg tables" in result.output
    engine = sa.create_engine(url)
    assert sa.inspect(engine).get_table_names() == []  # nothing was created
    engine.dispose()
    assert CliRunner().invoke(cli, ["import", str(reference_csv), "--db", url]).exit_code == 0
    result = CliRunner().invoke(cli, ["analyze", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
