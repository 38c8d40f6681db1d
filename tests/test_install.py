"""A lean install (issue 9, item 8): the wheel, with runtime dependencies only, runs ``oncosurg demo``.

The wheel is built from a copy of the repository (as a fresh clone has it), installed with plain
``pip`` into a new virtual environment — which fetches the runtime dependencies and nothing of the
``test`` extra — and the demo runs from that environment, outside the source tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_ONLY = ("pytest", "pandas", "polars", "lifelines", "statsmodels", "playwright", "schemathesis", "hypothesis")


def _source_copy(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "oncosurg-demo", ".pytest_cache"))
    return source


@pytest.mark.slow
def test_the_wheel_with_runtime_dependencies_only_runs_the_demo(tmp_path: Path) -> None:
    source = _source_copy(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path / "dist"),
                    str(source)], check=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("oncosurg-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=1200)
    for name in TEST_ONLY:  # the test extra stays out of a runtime install
        found = subprocess.run([str(python), "-c", f"import importlib.util as u; print(u.find_spec({name!r}))"],
                               capture_output=True, text=True, check=True)
        assert found.stdout.strip() == "None", f"{name} is installed by `pip install oncosurg`"
    work = tmp_path / "elsewhere"  # not the source tree: everything the demo needs is in the wheel
    work.mkdir()
    demo = subprocess.run([str(venv / "bin" / "oncosurg"), "demo", "--out", "out"], cwd=work, capture_output=True,
                          text=True, timeout=900, check=False)
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Resectability, in-house" in demo.stdout
    results = json.loads((work / "out" / "results.json").read_text(encoding="utf-8"))
    assert results["endpoints"]["evaluated"]["n"] == 151
    assert results["endpoints"]["resectability_in_house"]["numerator"] == 9
    for name in ("index.html", "report.pdf", "oncosurg.db", "reference-cohort.csv"):
        assert (work / "out" / name).is_file(), name
    assert "[  " in demo.stderr and "demo: running the protocol" in demo.stderr  # progress lines, not silence


def _make_dry_run(target: str, tmp: Path) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    done = subprocess.run(["make", "-n", target, f"VENV={tmp / 'venv'}"], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return done.stdout


def test_make_demo_installs_the_runtime_dependencies_only(tmp_path: Path) -> None:
    commands = _make_dry_run("demo", tmp_path)
    installs = [line for line in commands.splitlines() if "pip install" in line and "--upgrade pip" not in line]
    assert installs and all("[test]" not in line for line in installs), commands
    assert "oncosurg demo" in commands


def test_make_test_adds_the_test_extra(tmp_path: Path) -> None:
    commands = _make_dry_run("test", tmp_path)
    assert "'.[test]'" in commands and "pytest" in commands
