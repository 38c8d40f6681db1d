#!/usr/bin/env python
"""Start-up benchmark of the ``oncosurg`` command (issue 9, item 7), and optionally the install.

    .venv/bin/python benchmarks/bench_startup.py               # CLI start-up, median of 5 warm runs
    .venv/bin/python benchmarks/bench_startup.py --first-demo  # + the first `oncosurg demo` (cold caches)
    .venv/bin/python benchmarks/bench_startup.py --install     # + `pip install .` vs `.[test]` in fresh venvs

Each command is run as a child process of the ``oncosurg`` script next to this interpreter, after
one warm-up run (byte code and the numba kernels cached), ``--runs`` times; the median wall time
is compared with its target and with two anchors measured in the same run: the bare interpreter
(``python -c pass``) and the eager imports every command paid before (scipy.stats, numba,
SQLAlchemy, Alembic, matplotlib.pyplot).  CPU time (user + system of the child) is printed too:
on a shared machine it moves less than the wall time.  Only the standard library is used, so the
script runs in a runtime-only install.

``--first-demo`` times ``oncosurg demo`` with an empty numba cache (``NUMBA_CACHE_DIR``) and an
empty matplotlib cache (``MPLCONFIGDIR``), as on a fresh clone right after ``make demo``'s install,
then again warm.  ``--install`` creates two virtual environments in a temporary folder and times
``pip install REPO`` (runtime dependencies, what ``make demo`` installs) and ``pip install
REPO[test]`` (what ``make test`` adds), with their sizes.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
#: Targets of issue 9 (seconds, median of warm runs; the first demo once, cold).
TARGETS = {"--version": 0.3, "--help": 0.3, "validate": 1.0, "analyze --csv": 2.0, "first demo": 60.0}
EAGER = "import scipy.stats, numba, sqlalchemy, alembic.command, matplotlib.pyplot"


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run; the command must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=cwd, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def timed(cmd: list[str], runs: int, **kw: object) -> tuple[float, float]:
    """Median wall and CPU seconds of ``runs`` runs after one warm-up run."""
    run(cmd, **kw)  # type: ignore[arg-type]
    samples = [run(cmd, **kw) for _ in range(runs)]  # type: ignore[arg-type]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def startup(runs: int, tmp: Path) -> list[tuple[str, float, float]]:
    oncosurg = str(BIN / "oncosurg")
    csv = tmp / "reference-cohort.csv"
    subprocess.run([sys.executable, "-c", "import sys; from oncosurg.reference import write_reference_csv; "
                    "write_reference_csv(sys.argv[1])", str(csv)], check=True)
    rows = [("anchor: python -c pass", *timed([sys.executable, "-c", "pass"], runs))]
    eager = subprocess.run([sys.executable, "-c", EAGER], capture_output=True, check=False).returncode == 0
    if eager:
        rows.append(("anchor: eager imports of before", *timed([sys.executable, "-c", EAGER], runs)))
    for name, args in (("--version", ["--version"]), ("--help", ["--help"]), ("validate", ["validate", str(csv)]),
                       ("analyze --csv", ["analyze", "--csv", str(csv)])):
        rows.append((name, *timed([oncosurg, *args], runs)))
    return rows


def first_demo(tmp: Path) -> list[tuple[str, float, float]]:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba-cache"), MPLCONFIGDIR=str(tmp / "mpl-config"))
    cmd = [str(BIN / "oncosurg"), "demo", "--out", str(tmp / "demo")]
    cold = run(cmd, env=env)
    warm = run(cmd, env=env)
    return [("first demo", *cold), ("demo again (warm caches)", *warm)]


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def install(tmp: Path) -> list[tuple[str, float, float, int]]:
    """``pip install REPO`` and ``pip install REPO[test]``, each into a fresh venv: (label, wall, CPU, bytes)."""
    rows = []
    source = tmp / "source"  # a copy without .venv, build/ or caches, as a fresh clone has
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "build", "*.egg-info",
                                                                 "__pycache__", "oncosurg-demo", ".pytest_cache"))
    for label, target in (("pip install . (runtime, make demo)", str(source)),
                          ("pip install .[test] (make test)", f"{source}[test]")):
        venv = tmp / f"venv-{len(rows)}"
        started = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        for args in (["--upgrade", "pip"], [target]):  # pip's output only when it fails
            done = subprocess.run([*pip, *args], capture_output=True, text=True, check=False)
            if done.returncode:
                raise SystemExit(f"pip install {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = time.perf_counter() - started
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        subprocess.run([str(venv / "bin" / "oncosurg"), "--version"], check=True, stdout=subprocess.DEVNULL)
        rows.append((label, wall, cpu, _size(venv)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median; default 5)")
    parser.add_argument("--first-demo", action="store_true", help="also time the first demo with cold caches")
    parser.add_argument("--install", action="store_true", help="also time runtime-only and test installs")
    args = parser.parse_args()
    if not (BIN / "oncosurg").exists():
        raise SystemExit(f"no oncosurg script next to {sys.executable}; install the package first")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="oncosurg-bench-") as name:
        tmp = Path(name)
        rows = startup(args.runs, tmp)
        if args.first_demo:
            rows += first_demo(tmp)
        anchor = rows[0][1]
        print(f"{'command':36} {'wall (median)':>14} {'CPU':>8} {'target':>8}  {'':6} {'/ python -c pass':>16}")
        print("-" * 98)
        missed = 0
        for label, wall, cpu in rows:
            target = TARGETS.get(label)
            verdict = "" if target is None else ("ok" if wall <= target else "MISSED")
            missed += verdict == "MISSED"
            print(f"{label:36} {wall:12.3f} s {cpu:6.2f} s {'' if target is None else f'{target:6.1f} s':>8}  "
                  f"{verdict:6} {wall / anchor:15.1f}x")
        if args.install:
            print(f"\n{'install (fresh venv, pip from the configured index)':52} {'wall':>9} {'CPU':>9} {'size':>10}")
            print("-" * 84)
            for label, wall, cpu, size in install(tmp):
                print(f"{label:52} {wall:7.1f} s {cpu:7.1f} s {size / 2**20:7.0f} MiB")
    runs = f"median of {args.runs} warm run(s)" + ("; first demo: one cold run" if args.first_demo else "")
    print(f"\n({runs}; {os.cpu_count()} CPUs; load average {load:.1f} at the start; Python "
          f"{sys.version.split()[0]}; {sys.executable})")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
