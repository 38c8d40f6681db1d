#!/usr/bin/env python
"""Write locks: what a large import does to everyone else using the web app at the same time.

    .venv/bin/python benchmarks/bench_locks.py                     # SQLite and PostgreSQL, 10,000 rows
    .venv/bin/python benchmarks/bench_locks.py --backend sqlite --rows 2000
    .venv/bin/python benchmarks/bench_locks.py --json out.json

The server is the real ``oncosurg serve`` (one uvicorn process, as in ``bench_web.py``) on a registry
of ``--base`` patients.  Three scenarios, each measured from the clients:

* **upload**: one data manager uploads a ``--rows``-row registry CSV (new patients, 4 centres):
  ``POST /upload`` (validation) then ``POST /upload/confirm`` (the import).  Meanwhile a second
  user signs in again and again (a fresh session each time) and a third edits a patient again and
  again; every sign-in and edit is timed;
* **command-line import**: ``oncosurg import`` of another ``--rows``-row file runs beside the
  server while the editor keeps editing; every edit's status is counted (an HTTP 500 "database is
  locked" is a failure);
* **sign-in burst**: 20 sign-ins at once while one edit is made; the edit is timed.

Printed: the duration of each import step and, for the requests made meanwhile, their number, the
median and the maximum latency and every status other than 200.  Targets: no status 500, no
sign-in or edit waits more than 2 s behind an import.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_web import CENTRES, PASSWORD, ROOT, Server, build_registry

LIMIT_MS = 2000.0


def registry_csv(n: int, prefix: str) -> bytes:
    """``n`` new synthetic patients (reference cohort rows, several seeds) over the 4 centres."""
    from oncosurg.reference import build_reference_rows

    buffer = io.StringIO()
    writer: csv.DictWriter | None = None
    count, seed = 0, 100
    while count < n:
        seed += 1
        for row in build_reference_rows(seed):
            if count >= n:
                break
            row = dict(row, patient_id=f"{prefix}{seed:03d}-{row['patient_id']}", centre=CENTRES[count % 4])
            if writer is None:
                writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
                writer.writeheader()
            writer.writerow(row)
            count += 1
    return buffer.getvalue().encode()


def update_csv(exported: str, n: int) -> bytes:
    """The first ``n`` exported patients with one more cetuximab cycle each (an ``update`` upload)."""
    rows = list(csv.DictReader(io.StringIO(exported)))[:n]
    for row in rows:
        row["cetuximab_cycles"] = str(int(row["cetuximab_cycles"] or 0) + 1)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def add_accounts(url: str) -> None:
    from oncosurg.web.db import WebStore
    from oncosurg.web.services.users import create_user

    store = WebStore(url)
    with store.write() as conn:
        for name in ("uploader", "signer", "editor"):
            create_user(conn, username=name, password=PASSWORD, role="data_manager", centres=CENTRES)
    store.dispose()


def sign_in(base: str, username: str) -> tuple[httpx.Client, str, float]:
    """A fresh session; returns the client, its CSRF token and the sign-in time (ms, the POST only)."""
    client = httpx.Client(base_url=base, timeout=600, headers={"accept": "application/json"})
    token = client.get("/login.json").json()["csrf_token"]
    start = time.perf_counter()
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    elapsed = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return client, response.json()["csrf_token"], elapsed


class Probe(threading.Thread):
    """Repeats one kind of request until stopped; records (latency ms, status) of each."""

    def __init__(self, base: str, kind: str, pks: list[int]) -> None:
        super().__init__(daemon=True)
        self.base, self.kind, self.pks = base, kind, pks
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        editor = csrf = None
        if self.kind == "edit":
            editor, csrf, _ = sign_in(self.base, "editor")
        while not self.stop.is_set():
            if self.kind == "sign-in":
                try:
                    client, _, ms = sign_in(self.base, "signer")
                    client.close()
                    self.samples.append((ms, 200))
                except httpx.HTTPStatusError as exc:
                    self.samples.append((0.0, exc.response.status_code))
            else:
                assert editor is not None
                pk = random.choice(self.pks)
                version = editor.get(f"/patients/{pk}.json").json()["version"]
                start = time.perf_counter()
                response = editor.post(f"/patients/{pk}/stages/cetuximab", data={
                    "csrf_token": csrf, "version": str(version), "cetuximab_cycles": str(random.randint(1, 30))})
                self.samples.append(((time.perf_counter() - start) * 1000, response.status_code))
            time.sleep(0.05)
        if editor is not None:
            editor.close()

    def summary(self) -> dict[str, Any]:
        ok = [ms for ms, status in self.samples if status == 200]
        others: dict[str, int] = {}
        for _, status in self.samples:
            if status != 200:
                others[str(status)] = others.get(str(status), 0) + 1
        return {"requests": len(self.samples), "p50_ms": round(statistics.median(ok), 1) if ok else None,
                "max_ms": round(max(ok), 1) if ok else None, "other_statuses": others}


def during(base: str, pks: list[int], kinds: tuple[str, ...], work: Any) -> tuple[Any, float, dict[str, Any]]:
    probes = [Probe(base, kind, pks) for kind in kinds]
    for probe in probes:
        probe.start()
    time.sleep(0.5)
    start = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - start
    for probe in probes:
        probe.stop.set()
    for probe in probes:
        probe.join(timeout=120)
    return result, seconds, {p.kind: p.summary() for p in probes}


def bench_backend(backend: str, url: str, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    build_registry(url, args.base)
    add_accounts(url)
    upload_csv = registry_csv(args.rows, "U")
    cli_csv = workdir / f"cli-{backend}.csv"
    cli_csv.write_bytes(registry_csv(args.rows, "C"))
    pks = list(range(1, args.base + 1))
    rows: list[dict[str, Any]] = []

    def record(step: str, seconds: float, probes: dict[str, Any], **extra: Any) -> None:
        rows.append({"backend": backend, "step": step, "seconds": round(seconds, 2), "probes": probes, **extra})
        print(f"[{backend}] {rows[-1]}", flush=True)

    with Server(url) as server:
        uploader, csrf, _ = sign_in(server.base, "uploader")

        def validate() -> dict[str, Any]:
            response = uploader.post("/upload", data={"csrf_token": csrf, "centre": CENTRES[0], "mode": "insert"},
                                     files={"file": ("big.csv", upload_csv, "text/csv")})
            return response.json()

        report, seconds, probes = during(server.base, pks, ("sign-in", "edit"), validate)
        assert report.get("ok") and report.get("token"), str(report)[:500]
        record(f"upload: validate {args.rows} rows", seconds, probes)

        def confirm() -> dict[str, Any]:
            assert report is not None
            response = uploader.post("/upload/confirm", data={"csrf_token": csrf, "token": report["token"]})
            assert response.status_code == 200, response.text[:500]
            return response.json()

        result, seconds, probes = during(server.base, pks, ("sign-in", "edit"), confirm)
        assert result["created"] == args.rows, result
        record(f"upload: confirm {args.rows} rows", seconds, probes)

        changed = update_csv(uploader.get("/export.csv").text, args.rows)

        def validate_update() -> dict[str, Any]:
            response = uploader.post("/upload", data={"csrf_token": csrf, "centre": CENTRES[0], "mode": "update"},
                                     files={"file": ("update.csv", changed, "text/csv")})
            return response.json()

        report, seconds, probes = during(server.base, pks, ("sign-in", "edit"), validate_update)
        assert report.get("ok") and report.get("token"), str(report)[:500]
        record(f"upload: validate {report['update']} updates", seconds, probes)
        result, seconds, probes = during(server.base, pks, ("sign-in", "edit"), confirm)
        record(f"upload: confirm {result['updated']} updates", seconds, probes)

        def cli_import() -> int:
            done = subprocess.run([sys.executable, "-c", "from oncosurg.cli import main; main()", "import",
                                   str(cli_csv), "--db", url], capture_output=True, cwd=tempfile.gettempdir())
            assert done.returncode == 0, done.stderr.decode()[-2000:]
            return done.returncode

        _, seconds, probes = during(server.base, pks, ("edit",), cli_import)
        record(f"oncosurg import {args.rows} rows beside the server", seconds, probes)

        def burst() -> float:
            times: list[float] = []
            editor, editor_csrf, _ = sign_in(server.base, "editor")
            barrier = threading.Barrier(21)

            def one() -> None:
                client = httpx.Client(base_url=server.base, timeout=600, headers={"accept": "application/json"})
                token = client.get("/login.json").json()["csrf_token"]
                barrier.wait()
                client.post("/login", data={"username": "signer", "password": PASSWORD, "csrf_token": token})
                client.close()

            threads = [threading.Thread(target=one) for _ in range(20)]
            for thread in threads:
                thread.start()
            pk = pks[0]
            version = editor.get(f"/patients/{pk}.json").json()["version"]
            barrier.wait()
            time.sleep(0.05)
            start = time.perf_counter()
            response = editor.post(f"/patients/{pk}/stages/cetuximab", data={
                "csrf_token": editor_csrf, "version": str(version), "cetuximab_cycles": "9"})
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, response.text[:300]
            for thread in threads:
                thread.join()
            editor.close()
            return times[0]

        edit_ms, seconds, _ = during(server.base, pks, (), burst)
        record("20 sign-ins at once, one edit", seconds, {}, edit_ms=round(edit_ms, 1))
        uploader.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--rows", type=int, default=10_000, help="rows of the uploaded and the imported file")
    parser.add_argument("--base", type=int, default=10_000, help="patients registered before")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    random.seed(20240602)
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="oncosurg-bench-locks-"))
    try:
        if args.backend in ("sqlite", "both"):
            rows += bench_backend("sqlite", f"sqlite:///{workdir / 'locks.db'}", args, workdir)
        if args.backend in ("postgresql", "both"):
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import PostgresServer

            pg = PostgresServer()
            try:
                rows += bench_backend("postgresql", pg.create_database("bench_locks"), args, workdir)
            finally:
                pg.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{args.rows}-row files, {args.base} patients before; oncosurg serve (1 worker); {os.cpu_count()} CPU(s)")
    print(f"{'backend':<11} {'step':<44} {'s':>7}  {'probe':<8} {'n':>4} {'p50 ms':>8} {'max ms':>8}  other")
    failed = False
    for r in rows:
        probes = r["probes"] or {"edit": {"requests": 1, "p50_ms": r["edit_ms"], "max_ms": r["edit_ms"],
                                          "other_statuses": {}}}
        for i, (kind, p) in enumerate(probes.items()):
            print(f"{r['backend'] if i == 0 else '':<11} {r['step'] if i == 0 else '':<44} "
                  f"{r['seconds'] if i == 0 else '':>7}  {kind:<8} {p['requests']:>4} {p['p50_ms'] or '-':>8} "
                  f"{p['max_ms'] or '-':>8}  {p['other_statuses'] or ''}")
            failed |= bool(p["other_statuses"].get("500")) or (p["max_ms"] or 0) > LIMIT_MS
    print(f"\ntarget: no status 500 and no sign-in or edit over {LIMIT_MS:.0f} ms: {'NOT MET' if failed else 'met'}")
    if args.json:
        args.json.write_text(json.dumps({"rows": args.rows, "base": args.base, "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
