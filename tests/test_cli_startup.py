"""A CLI that answers at once (issue 9, item 7): no heavy import before a command needs it.

Each check runs the command in a fresh interpreter and lists the heavy modules it loaded; the
timings themselves are measured by ``benchmarks/bench_startup.py`` (a benchmark, not a test).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

#: Modules that cost tenths of a second to seconds to import, and the commands that may load them.
HEAVY = ("scipy", "numba", "sqlalchemy", "alembic", "matplotlib", "fastapi", "uvicorn", "pandas", "fhir",
         "openpyxl", "reportlab", "numpy", "psycopg", "docx")

_PROBE = """
import json, sys
sys.argv = ["oncosurg", *json.loads(sys.argv[1])]
from oncosurg.cli import main
try:
    main()
except SystemExit:
    pass
heavy = {heavy}
print("\\n" + json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
"""


def loaded_heavy_modules(*args: str) -> list[str]:
    code = _PROBE.format(heavy=list(HEAVY))
    done = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.stdout.strip(), done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["-h"], ["analyze", "--help"], ["report", "--help"],
                                  ["serve", "--help"], ["export", "--help"], ["survival", "--help"],
                                  ["user", "add", "--help"], ["audit", "verify", "--help"]])
def test_help_and_version_import_nothing_heavy(args: list[str]) -> None:
    assert loaded_heavy_modules(*args) == []


def test_validate_imports_nothing_heavy(reference_csv: Path) -> None:
    assert loaded_heavy_modules("validate", str(reference_csv)) == []


def test_redcap_dictionary_imports_nothing_heavy() -> None:
    assert loaded_heavy_modules("redcap", "dictionary") == []


def test_analyze_of_a_csv_skips_the_report_and_web_stacks(reference_csv: Path) -> None:
    loaded = set(loaded_heavy_modules("analyze", "--csv", str(reference_csv)))
    assert not loaded & {"matplotlib", "fastapi", "uvicorn", "pandas", "fhir", "openpyxl", "reportlab", "docx"}


def test_an_up_to_date_registry_opens_without_alembic(tmp_path: Path) -> None:
    from oncosurg.store.engine import open_store

    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_store(url).dispose()
    code = ("import sys; from oncosurg.store.engine import open_store; "
            f"open_store({url!r}, create=False).dispose(); print('alembic' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_head_read_from_the_migration_files_is_alembics() -> None:
    from alembic.script import ScriptDirectory

    from oncosurg.store.engine import _head_from_files, alembic_config

    assert _head_from_files() == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def test_the_numba_cache_falls_back_to_a_writable_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from oncosurg.stats import compiled

    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    seen: list[Path] = []
    monkeypatch.setattr(compiled, "_writable", lambda folder: seen.append(folder) or False)  # read-only everywhere
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    folder = compiled.ensure_writable_cache()
    assert folder is not None and Path(folder).parent == Path(__import__("tempfile").gettempdir())
    assert seen == [compiled.PACKAGE_DIR / "__pycache__", tmp_path / "cache" / "numba"]
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert compiled.ensure_writable_cache() is None  # an explicit setting is kept
    assert not compiled.kernels_cached()
