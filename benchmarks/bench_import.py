#!/usr/bin/env python
"""Importing a large long registry (``oncosurg import --format long``) and analysing it, SQLite and PostgreSQL.

    .venv/bin/python benchmarks/bench_import.py                        # 100,000 patients (~1.06M episode rows), 3 runs
    .venv/bin/python benchmarks/bench_import.py --patients 10000 --runs 1   # quick
    .venv/bin/python benchmarks/bench_import.py --backends sqlite      # one backend

The registry is :func:`oncosurg.reference.iter_random_registry` (seed 1, about ten episode rows per
patient: therapy lines, MDT reviews, response assessments, procedures with complications and
pathology, disease events, contacts), in 4 centres of equal size, written by
:func:`oncosurg.export.long.write_long` as a folder of CSV files.  Each step runs in its own process,
timed by this script (wall clock, the process's CPU seconds and peak RSS from ``wait4``; for
PostgreSQL also the CPU seconds of the server, i.e. of the postmaster's children):

* ``csv anchor``: ``csv.reader`` over every file, nothing else — the floor of any CSV reader in Python;
* ``bulk anchor``: the same rows loaded by the driver alone into plain text tables, in one
  transaction — SQLite ``executemany``, PostgreSQL ``COPY FROM STDIN`` — the floor of any loader;
* ``import``: ``oncosurg import --format long`` into a new registry: validation (every single-value
  check and every rule across episodes), then the writes (patients, episodes, one audit ``create``
  row per patient carrying its state), all in one transaction;
* ``analyze``: ``oncosurg analyze`` of the seed protocol on the imported registry.  The random
  registry's dates (2008-2022) lie outside the seed study's accrual window (2004-2006), so the seed
  protocol's cohort is empty (every patient read and excluded; ``--allow-empty``); ``analyze
  (window)`` runs the same protocol with the accrual window widened to the registry's dates, so every
  patient with a conversion line enters the cohort and every endpoint is estimated.

Printed: medians of ``--runs`` runs (a fresh database each), ratios to the anchors, episode rows
per second, peak RSS, and the targets of issue 11 (import ≤ 60 s per backend, analyze ≤ 10 s).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ONCOSURG = [str(Path(sys.executable).with_name("oncosurg"))]
CENTRES = 4
SEED = 1
IMPORT_TARGET_S = 60.0
ANALYZE_TARGET_S = 10.0


def generate(folder: Path, patients: int, episodes: int) -> tuple[int, int]:
    """Write the random registry as a long folder; returns (patients, episode rows).

    Centres are dealt in blocks (patients 1..n/4 in the first centre, …) rather than round-robin,
    so the records arrive ordered by centre, patient_id as :func:`write_long` wants them, one at a time.
    """
    from oncosurg.export.long import write_long
    from oncosurg.reference import iter_random_registry
    from oncosurg.reference.random_registry import centre_names

    names = centre_names(CENTRES)

    def records():  # type: ignore[no-untyped-def]
        for i, record in enumerate(iter_random_registry(patients, SEED, centres=1, episodes=episodes)):
            yield dataclasses.replace(record, centre=names[i * CENTRES // patients])

    written = write_long(records(), folder, overwrite=True)
    return written.patients, sum(written.rows.values()) - written.patients


def widened_protocol(path: Path) -> Path:
    """The seed protocol with its accrual window over the random registry's start dates (2008-2022)."""
    from oncosurg.reference.random_registry import FIRST_START, LAST_START

    text = (ROOT / "src/oncosurg/studies/rescue-cetuximab-2007.toml").read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^accrual_start = .*$", f"accrual_start = {FIRST_START.isoformat()}", text)
    text, m = re.subn(r"(?m)^accrual_end = .*$", f"accrual_end = {LAST_START.isoformat()}", text)
    if (n, m) != (1, 1):
        raise SystemExit("the seed protocol no longer has one accrual_start and one accrual_end line")
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ anchors

def _anchor_csv(folder: str) -> int:
    rows = 0
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), encoding="utf-8", newline="") as handle:
            rows += sum(1 for _ in csv.reader(handle))
    return rows


def _anchor_bulk(url: str, folder: str) -> int:
    """Every file into a table of text columns, by the driver alone, in one transaction."""
    files = sorted(n for n in os.listdir(folder) if n.endswith(".csv"))
    rows = 0
    if url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        with db:
            for n, name in enumerate(files):
                with open(os.path.join(folder, name), encoding="utf-8", newline="") as handle:
                    reader = csv.reader(handle)
                    header = next(reader)
                    cols = ", ".join(f'"{c}" TEXT' for c in header)
                    db.execute(f"CREATE TABLE bulk{n} (id INTEGER PRIMARY KEY, {cols})")
                    marks = ", ".join("?" * len(header))
                    names = ", ".join(f'"{c}"' for c in header)
                    cursor = db.executemany(f"INSERT INTO bulk{n} ({names}) VALUES ({marks})", reader)
                    rows += cursor.rowcount
        db.close()
        return rows
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn, conn.cursor() as cur:
        for n, name in enumerate(files):
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8", newline="") as handle:
                header = next(csv.reader(handle))
            cols = ", ".join(f'"{c}" TEXT' for c in header)
            cur.execute(f"CREATE TABLE bulk{n} (id BIGSERIAL PRIMARY KEY, {cols})")
            names = ", ".join(f'"{c}"' for c in header)
            with open(path, "rb") as handle, cur.copy(
                    f"COPY bulk{n} ({names}) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
                while chunk := handle.read(1 << 20):
                    copy.write(chunk)
            rows += cur.rowcount
    return rows


# ------------------------------------------------------------------------------------------ timing

def _server_cpu(pg_data: Path | None) -> float:
    """CPU seconds of the PostgreSQL postmaster and its reaped children (the connection backends)."""
    if pg_data is None:
        return 0.0
    pid = int((pg_data / "postmaster.pid").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = sum(int(x) for x in fields[11:15]) / tick  # utime, stime, cutime, cstime
    live = 0.0  # children still running (e.g. the checkpointer, the background writer)
    for child in Path("/proc").iterdir():
        if child.name.isdigit():
            try:
                stat = (child / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                live += (int(stat[11]) + int(stat[12])) / tick
    return own + live


def run_step(cmd: list[str], pg_data: Path | None, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """One step in a fresh grandchild so that its peak RSS is its own (``RUSAGE_CHILDREN`` keeps the maximum)."""
    wrapper = [sys.executable, __file__, "--measure", json.dumps(cmd), json.dumps(list(ok))]
    server = _server_cpu(pg_data)
    began = time.perf_counter()
    out = subprocess.run(wrapper, check=True, capture_output=True, text=True).stdout
    wall = time.perf_counter() - began
    time.sleep(0.2 if pg_data else 0)  # the postmaster reaps the connection's backend (its CPU joins cutime)
    result = json.loads(out.splitlines()[-1])
    result["server_cpu"] = _server_cpu(pg_data) - server
    result["outer_wall"] = wall
    return result


def _measure(cmd: list[str], ok: list[int]) -> dict[str, Any]:
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - began
    if proc.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited with {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss_mib": usage.ru_maxrss / 1024,
            "stdout": proc.stdout}


# ------------------------------------------------------------------------------------------ the run

def count_rows(url: str) -> tuple[int, int, int]:
    """(patients, episode rows, audit rows) in the registry at ``url``."""
    import sqlalchemy as sa

    from oncosurg.pathway.model import EPISODE_TABLES
    from oncosurg.store import tables as t

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            def count(table: sa.Table) -> int:
                return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

            episodes = sum(count(t.EPISODES[spec.table]) for spec in EPISODE_TABLES)
            return count(t.patient), episodes, count(t.audit_log)
    finally:
        engine.dispose()


def bench_backend(backend: str, new_url: Any, folder: Path, protocol: Path, args: argparse.Namespace,
                  pg_data: Path | None, expected: tuple[int, int]) -> dict[str, list[dict[str, Any]]]:
    steps: dict[str, list[dict[str, Any]]] = {}
    for run in range(args.runs):
        url = new_url(f"anchor{run}")
        steps.setdefault("csv anchor", []).append(
            run_step([sys.executable, __file__, "--anchor", "csv", "-", str(folder)], None))
        steps.setdefault("bulk anchor", []).append(
            run_step([sys.executable, __file__, "--anchor", "bulk", url, str(folder)], pg_data))
        url = new_url(f"import{run}")
        step = run_step([*ONCOSURG, "import", "--format", "long", "--db", url, str(folder)], pg_data)
        step.pop("stdout")
        steps.setdefault("import", []).append(step)
        patients, episodes, audit_rows = count_rows(url)
        if (patients, episodes) != expected or audit_rows < patients:
            raise SystemExit(f"[{backend}] imported {patients} patients / {episodes} episode rows / {audit_rows} "
                             f"audit rows; expected {expected}")
        for name, extra in (("analyze", []), ("analyze (window)", ["--protocol", str(protocol)])):
            step = run_step([*ONCOSURG, "analyze", "--db", url, "--json", "--allow-empty", *extra], pg_data)
            step["cohort"] = json.loads(step.pop("stdout"))["cohort"]["n"]
            steps.setdefault(name, []).append(step)
        line = ", ".join(f"{k} {v[-1]['wall']:.1f} s" for k, v in steps.items())
        print(f"[{backend}] run {run + 1}: {line}; load average {os.getloadavg()[0]:.1f}", flush=True)
    return steps


def report(results: dict[str, dict[str, list[dict[str, Any]]]], patients: int, episodes: int,
           args: argparse.Namespace) -> None:
    print(f"\n{patients:,} patients, {episodes:,} episode rows ({args.runs} run(s), medians; "
          f"{os.cpu_count()} CPUs shared, load average {os.getloadavg()[0]:.1f})")
    head = (f"{'backend':<11} {'step':<17} {'wall s':>7} {'cpu s':>6} {'server cpu s':>12} {'x csv':>6} "
            f"{'x bulk':>7} {'episode rows/s':>15} {'peak RSS MiB':>13}  target")
    print(head)
    for backend, steps in results.items():
        med = {k: statistics.median(r["wall"] for r in v) for k, v in steps.items()}
        for name, runs in steps.items():
            wall = med[name]
            cpu = statistics.median(r["cpu"] for r in runs)
            server = statistics.median(r["server_cpu"] for r in runs)
            rss = max(r["rss_mib"] for r in runs)
            target = ""
            if name == "import":
                target = f"≤ {IMPORT_TARGET_S:.0f} s: {'met' if wall <= IMPORT_TARGET_S else 'NOT MET'}"
            elif name.startswith("analyze"):
                target = (f"≤ {ANALYZE_TARGET_S:.0f} s: {'met' if wall <= ANALYZE_TARGET_S else 'NOT MET'} "
                          f"(cohort n = {runs[0].get('cohort')})")
            rate = f"{episodes / wall:>15,.0f}" if not name.startswith("analyze") else f"{'':>15}"
            print(f"{backend:<11} {name:<17} {wall:>7.1f} {cpu:>6.1f} {server:>12.1f} {wall / med['csv anchor']:>6.1f} "
                  f"{wall / med['bulk anchor']:>7.1f} {rate} {rss:>13.0f}  {target}")
    print("(cpu s: the step's own process; server cpu s: PostgreSQL's processes; x csv / x bulk: wall time over the "
          "anchor's; wall above cpu + server cpu is waiting for a CPU on the shared machine)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=10, help="mean episode rows per patient")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--anchor", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.anchor:
        kind, url, folder = args.anchor
        rows = _anchor_csv(folder) if kind == "csv" else _anchor_bulk(url, folder)
        print(rows)
        return 0
    if args.measure:
        print(json.dumps(_measure(json.loads(args.measure[0]), json.loads(args.measure[1]))))
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="oncosurg-bench-import-"))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        folder = workdir / "registry"
        began, cpu = time.perf_counter(), time.process_time()
        patients, episodes = generate(folder, args.patients, args.episodes)
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"generated {patients:,} patients, {episodes:,} episode rows, {size / 2**20:.0f} MiB in "
              f"{time.perf_counter() - began:.1f} s ({time.process_time() - cpu:.1f} s CPU)", flush=True)
        protocol = widened_protocol(workdir / "seed-widened.toml")
        for backend in args.backends.split(","):
            if backend == "sqlite":
                results[backend] = bench_backend(backend, lambda name: f"sqlite:///{workdir / name}.db", folder,
                                                 protocol, args, None, (patients, episodes))
                for db in workdir.glob("*.db"):
                    db.unlink()
            elif backend == "postgresql":
                sys.path.insert(0, str(ROOT / "tests"))
                from conftest import PostgresServer

                server = PostgresServer()
                try:
                    results[backend] = bench_backend(backend, server.create_database, folder, protocol, args,
                                                     server.data, (patients, episodes))
                finally:
                    server.stop()
            else:
                raise SystemExit(f"unknown backend {backend!r} (sqlite, postgresql)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, patients, episodes, args)
    if args.json:
        args.json.write_text(json.dumps({"patients": patients, "episodes": episodes, "runs": args.runs,
                                         "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
