#!/usr/bin/env python
"""Federated analysis of the seed protocol across simulated sites, against the pooled single-database analysis.

    .venv/bin/python benchmarks/bench_federated.py                          # 20 sites x 50,000 patients
    .venv/bin/python benchmarks/bench_federated.py --sites 20 --patients 5000 --repeat 3

Each site is a SQLite registry of ``oncosurg.reference.random_registry`` patients (its own seed, its
own centre names); the pooled registry holds all of them.  The protocol is the seed study with its
accrual window removed, so that every patient counts.  For each of ``--repeat`` runs it times

* ``pooled``: ``run_protocol`` on the pooled registry (what ``oncosurg analyze`` does), the anchor;
* ``federated``: the vantage6 algorithm through ``MockAlgorithmClient`` (what ``oncosurg federate``
  does): every site's partials in turn, in one process, then the pooling, at the default disclosure
  threshold (3);

and prints the medians, their ratio, the rounds, the bytes the sites sent, and the critical path (the
slowest site of each round, summed: the wall-clock time when the nodes run in parallel, as they do in a
deployment).  A threshold-1 run then checks that the federated counts and Kaplan-Meier medians equal
the pooled ones.  Building the registries (generation and import) is not timed and dominates at full
scale: about 1.5 ms per patient and registry on this machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import tempfile
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oncosurg.cli.federate import run_mock
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import protocol_from_dict, resolve_protocol
from oncosurg.reference import random_registry
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_patients

STUDY = "rescue-cetuximab-2007"


def protocol_text() -> str:
    """The seed protocol without its accrual window and data cut (every simulated patient counts)."""
    text = resolve_protocol(STUDY).read_text(encoding="utf-8")
    return re.sub(r"(?m)^(accrual_start|accrual_end|data_cut)\s*=.*$", "", text)


def build(folder: Path, sites: int, patients: int) -> tuple[dict[str, str], str]:
    pooled = open_store(f"sqlite:///{folder / 'pooled.db'}")
    urls = {}
    for i in range(sites):
        # each site's own centre names and pseudonyms: the pooled registry keeps every site's patients apart
        records = [dataclasses.replace(r, centre=f"site{i:02d} {r.centre}",
                                       patient={**r.patient, "patient_id": f"S{i:02d}-{r.patient_id}"})
                   for r in random_registry(patients, 1000 + i)]
        url = f"sqlite:///{folder / f'site{i:02d}.db'}"
        engine = open_store(url)
        digest = f"{i:064x}"  # one import batch per site (an identical digest is taken for a repeated file)
        for target in (engine, pooled):
            result = import_patients(target, records, source=f"site{i:02d}", sha256=digest, rows=patients)
            assert not result.issues and result.created == patients, [x.message for x in result.issues[:3]]
        engine.dispose()
        urls[f"site{i:02d}"] = url
        print(f"  built site {i + 1}/{sites}", flush=True)
    pooled.dispose()
    return urls, f"sqlite:///{folder / 'pooled.db'}"


class Spy:
    """Times every partial at every site and counts the bytes it returns."""

    def __init__(self) -> None:
        import v6_oncosurg.partial as partial

        self.partial = partial
        self.real: Callable[..., dict[str, Any]] = partial.run_partial
        self.calls: list[tuple[str, str, float, int]] = []

    def __enter__(self) -> Spy:
        def timed(method: str, uri: str, kwargs: dict[str, Any]) -> dict[str, Any]:
            start = time.perf_counter()
            reply = self.real(method, uri, kwargs)
            self.calls.append((method, uri, time.perf_counter() - start, len(json.dumps(reply))))
            return reply

        self.partial.run_partial = timed
        return self

    def __exit__(self, *exc: object) -> None:
        self.partial.run_partial = self.real

    def critical_path(self, sites: int) -> float:
        """Sum over rounds of the slowest site (calls come in rounds of ``sites`` or of the Cox sites)."""
        total, i = 0.0, 0
        while i < len(self.calls):
            method = self.calls[i][0]
            j = i
            while j < len(self.calls) and self.calls[j][0] == method and j - i < sites:
                j += 1
            total += max(c[2] for c in self.calls[i:j])
            i = j
        return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--patients", type=int, default=50_000, help="patients per site")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    text = protocol_text()
    protocol = protocol_from_dict(tomllib.loads(text), source=STUDY)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        print(f"building {args.sites} site registries of {args.patients:,} patients and the pooled one")
        urls, pooled_url = build(folder, args.sites, args.patients)
        print(f"  ({time.perf_counter() - started:.0f} s, not timed)")
        pooled = open_store(pooled_url)
        run_protocol(pooled, protocol)  # warm-up: numba kernels, file cache
        pooled_times, fed_times, paths, sent = [], [], [], []
        result: dict[str, Any] = {}
        for _ in range(args.repeat):
            start = time.perf_counter()
            reference = run_protocol(pooled, protocol)
            pooled_times.append(time.perf_counter() - start)
            with Spy() as spy:
                start = time.perf_counter()
                result = run_mock(urls, text, STUDY, threshold=3, small_site="refuse")
                fed_times.append(time.perf_counter() - start)
            assert "error" not in result, result["error"]
            paths.append(spy.critical_path(args.sites))
            sent.append(sum(c[3] for c in spy.calls))
        p, f, c = (statistics.median(x) for x in (pooled_times, fed_times, paths))
        n = args.sites * args.patients
        print(f"{args.sites} sites x {args.patients:,} patients ({n:,}), cohort {reference['cohort']['n']:,}; "
              f"medians of {args.repeat} runs:")
        print(f"  pooled analysis (anchor)        {p:7.2f} s")
        print(f"  federated, sites in turn        {f:7.2f} s  ({f / p:.2f}x pooled)")
        print(f"  federated, parallel sites (critical path of the partials) {c:7.2f} s  ({c / p:.2f}x pooled)")
        print(f"  rounds {result['disclosure']['rounds']}; sites sent {statistics.median(sent) / 1e6:.2f} MB in all; "
              f"disclosure items {len(result['disclosure']['items'])}")
        with Spy():
            exact = run_mock(urls, text, STUDY, threshold=1, small_site="refuse")
        keys = ("n", "numerator", "denominator", "median")
        same = [eid for eid, ep in reference["endpoints"].items()
                if all(exact["endpoints"][eid].get(k) == ep.get(k) for k in keys)]
        print(f"  threshold 1: {len(same)}/{len(reference['endpoints'])} endpoints equal the pooled analysis "
              "(counts, numerators, denominators, medians)")
        pooled.dispose()


if __name__ == "__main__":
    main()
