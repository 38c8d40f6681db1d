#!/usr/bin/env python
"""Web-app latency: the patient page and the dashboard with 10,000 patients and 20 concurrent clients.

    .venv/bin/python benchmarks/bench_web.py                    # SQLite and PostgreSQL, full size
    .venv/bin/python benchmarks/bench_web.py --quick            # 1,000 patients, 5 clients (smoke test)
    .venv/bin/python benchmarks/bench_web.py --backend sqlite   # one backend
    .venv/bin/python benchmarks/bench_web.py --json out.json    # also write the numbers

The registry is the synthetic reference cohort repeated with different seeds (151 patients each,
4 centres) up to ``--patients``, imported with the ordinary bulk import.  The server is the real
``oncosurg serve`` (one uvicorn process) in a child process on 127.0.0.1; PostgreSQL is a throw-away
cluster on a loopback port (the test suite's fixture).  Each of ``--clients`` clients signs in (its
own session) and sends its requests one after another; the clients run concurrently (asyncio +
httpx).  Measured from the client, per request, in milliseconds:

* ``patient page``: ``GET /patients/{pk}`` (HTML, random patient; the whole pathway, forms, timeline),
  first from one client alone (the latency of one request), then from every client at once;
* ``patient json``: its JSON twin;
* ``dashboard``: ``GET /dashboard`` (HTML; the protocol's endpoints and three Kaplan-Meier curves for
  all centres; cached until the data change);
* ``dashboard, after an edit``: one edit, then one dashboard request, repeated: the full recomputation.

Nothing leaves the machine; runs are bounded by the request counts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "benchmark password 2024"
CENTRES = ("Paul Brousse", "Beaujon", "Lyon Sud", "Bordeaux")


def build_registry(url: str, n: int) -> None:
    """``n`` synthetic patients (reference cohort, several seeds, 4 centres) and one admin account."""
    from oncosurg.ingest.csv import ParsedRecord
    from oncosurg.reference import build_reference_rows
    from oncosurg.rules import check_record, parse_record
    from oncosurg.store.repository import import_records
    from oncosurg.web.db import WebStore
    from oncosurg.web.services.users import create_user

    records: list[ParsedRecord] = []
    seed = 0
    while len(records) < n:
        seed += 1
        for row in build_reference_rows(seed):
            if len(records) >= n:
                break
            row = dict(row, patient_id=f"S{seed:03d}-{row['patient_id']}", centre=CENTRES[len(records) % 4])
            values, issues = parse_record(row, line=None)
            assert not issues and not check_record(values, line=None), issues
            records.append(ParsedRecord(len(records) + 2, values))
    store = WebStore(url)
    result = import_records(store.engine, records, source="bench", sha256="0" * 64, rows=len(records))
    assert not result.issues and result.created == n, result.issues[:3]
    with store.write() as conn:
        create_user(conn, username="bench", password=PASSWORD, role="admin", all_centres=True)
    store.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``oncosurg serve`` in a child process."""

    def __init__(self, url: str, workers: int = 1) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, ONCOSURG_WEB_LOGIN_MAX_FAILURES="1000")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - the access log (an unread pipe would block)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from oncosurg.cli import main; main()", "serve", "--db", url,
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log, cwd=tempfile.gettempdir())

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError("server exited: " + self.log.read().decode(errors="replace")[-2000:])
            try:
                if httpx.get(self.base + "/login.json", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def sign_in(base: str) -> tuple[httpx.AsyncClient, str]:
    client = httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=2))
    token = (await client.get("/login.json")).json()["csrf_token"]
    response = await client.post("/login", data={"username": "bench", "password": PASSWORD, "csrf_token": token},
                                 headers={"accept": "application/json"})
    response.raise_for_status()
    return client, response.json()["csrf_token"]


async def run_clients(base: str, clients: int, per_client: int, make_path: Any, accept: str) -> list[float]:
    sessions = [await sign_in(base) for _ in range(clients)]
    latencies: list[float] = []

    async def one(client: httpx.AsyncClient) -> None:
        for _ in range(per_client):
            start = time.perf_counter()
            response = await client.get(make_path(), headers={"accept": accept})
            latencies.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (response.status_code, response.text[:300])

    t0 = time.perf_counter()
    await asyncio.gather(*(one(c) for c, _ in sessions))
    wall = time.perf_counter() - t0
    for c, _ in sessions:
        await c.aclose()
    latencies.append(-wall)  # smuggle the wall time out; removed by summarise
    return latencies


def summarise(name: str, latencies: list[float]) -> dict[str, Any]:
    wall = -latencies.pop()
    ordered = sorted(latencies)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return {"name": name, "requests": len(ordered), "p50_ms": round(statistics.median(ordered), 1),
            "p95_ms": round(p95, 1), "max_ms": round(ordered[-1], 1), "throughput_rps": round(len(ordered) / wall, 1)}


async def after_edit(base: str, repeats: int, pks: list[int]) -> list[float]:
    client, csrf = await sign_in(base)
    latencies = []
    for i in range(repeats):
        pk = random.choice(pks)
        patient = (await client.get(f"/patients/{pk}.json", headers={"accept": "application/json"})).json()
        cycles = patient["record"]["cetuximab_cycles"]
        await client.post(f"/patients/{pk}/stages/cetuximab", headers={"accept": "application/json"},
                          data={"csrf_token": csrf, "version": patient["version"],
                                "cetuximab_cycles": str((cycles or 0) + 1 + i % 2)})
        start = time.perf_counter()
        response = await client.get("/dashboard", headers={"accept": "text/html"})
        latencies.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    await client.aclose()
    return latencies


def bench_backend(backend: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    build_registry(url, args.patients)
    print(f"[{backend}] {args.patients} patients imported in {time.perf_counter() - t0:.1f} s", flush=True)
    rows = []
    with Server(url, args.workers) as server:
        pks = list(range(1, args.patients + 1))

        async def main() -> None:
            warm, _ = await sign_in(server.base)
            for _ in range(3):
                await warm.get("/dashboard")
                await warm.get(f"/patients/{random.choice(pks)}")
            await warm.aclose()
            alone = await run_clients(server.base, 1, 2 * args.requests,
                                      lambda: f"/patients/{random.choice(pks)}", "text/html")
            rows.append({"backend": backend, "clients": 1} | summarise("patient page, one client", alone))
            print(f"[{backend}] {rows[-1]}", flush=True)
            for name, path, accept, count in (
                    ("patient page", lambda: f"/patients/{random.choice(pks)}", "text/html", args.requests),
                    ("patient json", lambda: f"/patients/{random.choice(pks)}.json", "application/json",
                     args.requests),
                    ("dashboard", lambda: "/dashboard", "text/html", max(2, args.requests // 2))):
                latencies = await run_clients(server.base, args.clients, count, path, accept)
                rows.append({"backend": backend, "clients": args.clients} | summarise(name, latencies))
                print(f"[{backend}] {rows[-1]}", flush=True)
            cold = await after_edit(server.base, args.cold, pks)
            cold.append(-sum(cold) / 1000)
            rows.append({"backend": backend, "clients": 1} | summarise("dashboard, after an edit", cold))
            for row in rows:
                row["workers"] = args.workers
            print(f"[{backend}] {rows[-1]}", flush=True)

        asyncio.run(main())
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=25, help="requests per client for each page")
    parser.add_argument("--cold", type=int, default=5, help="edit-then-dashboard repetitions")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (oncosurg serve --workers)")
    parser.add_argument("--quick", action="store_true", help="1,000 patients, 5 clients, 10 requests each")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.clients, args.requests, args.cold = 1000, 5, 10, 2
    random.seed(20240601)
    rows: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="oncosurg-bench-web-"))
    try:
        if args.backend in ("sqlite", "both"):
            rows += bench_backend("sqlite", f"sqlite:///{workdir / 'bench.db'}", args)
        if args.backend in ("postgresql", "both"):
            sys.path.insert(0, str(ROOT / "tests"))
            from conftest import PostgresServer

            server = PostgresServer()
            try:
                rows += bench_backend("postgresql", server.create_database("bench_web"), args)
            finally:
                server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"{args.patients} patients; oncosurg serve --workers {args.workers}; {os.cpu_count()} CPU(s)")
    print(f"{'backend':<11} {'page':<26} {'clients':>7} {'requests':>8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} "
          f"{'req/s':>7}")
    for r in rows:
        print(f"{r['backend']:<11} {r['name']:<26} {r['clients']:>7} {r['requests']:>8} {r['p50_ms']:>8} "
              f"{r['p95_ms']:>8} {r['max_ms']:>8} {r['throughput_rps']:>7}")
    if args.json:
        args.json.write_text(json.dumps({"patients": args.patients, "workers": args.workers,
                                         "cpus": os.cpu_count(), "results": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
