#!/usr/bin/env python
"""Generation speed of random multi-episode registries (the input of the import-scale benchmark).

    .venv/bin/python benchmarks/bench_random_registry.py              # 100,000 patients, ~10 episodes each
    .venv/bin/python benchmarks/bench_random_registry.py --quick      # 10,000 patients
    .venv/bin/python benchmarks/bench_random_registry.py --runs 5 --episodes 20

Times ``oncosurg.reference.iter_random_registry`` streaming ``--patients`` patients (records are
counted and dropped, as an importer consumes them in batches) and, on the first ``--sample``
patients, two anchors any import of the same records must pay anyway: the rules across episodes
(``check_patient``) and the single-value check of every cell of the records' text form
(``parse_cell``).  Prints the median of ``--runs`` runs and the ratio anchor / generation per
patient: a ratio near or above 1 means generation does not dominate an import.
"""

from __future__ import annotations

import argparse
import statistics
import time

from oncosurg.export import cell_text
from oncosurg.pathway.model import TABLES, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.reference import iter_random_registry, random_registry
from oncosurg.rules import parse_cell


def generate(n: int, seed: int, episodes: int) -> tuple[float, float, int]:
    """Wall-clock and CPU seconds to stream ``n`` patients, and their episode rows."""
    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for record in iter_random_registry(n, seed, episodes=episodes):
        rows += sum(len(v) for v in record.episodes.values())
    return time.perf_counter() - start, time.process_time() - cpu, rows


def check_rules(records: list) -> float:
    start = time.perf_counter()
    for record in records:
        check_patient(record)
    return time.perf_counter() - start


def parse_texts(records: list) -> float:
    cells = []
    for record in records:
        for spec in TABLES:
            rows = [record.patient] if spec.table is Table.PATIENT else record.rows(spec.table)
            for row in rows:
                cells += [(f, cell_text(row[f.name])) for f in spec.fields if row.get(f.name) is not None]
    start = time.perf_counter()
    for field, text in cells:
        parse_cell(field, text, line=None)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--sample", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument("--quick", action="store_true", help="10,000 patients, 2,000 for the anchors")
    args = parser.parse_args(argv)
    if args.quick:
        args.patients, args.sample = 10_000, 2_000
    gen, cpu, rules, parse = [], [], [], []
    rows = 0
    for _ in range(args.runs):
        seconds, cpu_seconds, rows = generate(args.patients, args.seed, args.episodes)
        gen.append(seconds)
        cpu.append(cpu_seconds)
        sample = random_registry(args.sample, args.seed, episodes=args.episodes)
        rules.append(check_rules(sample))
        parse.append(parse_texts(sample))
    g, r, p = statistics.median(gen), statistics.median(rules), statistics.median(parse)
    per = g / args.patients
    print(f"random registry: {args.patients:,} patients, {rows:,} episode rows "
          f"({rows / args.patients:.2f} per patient), episodes={args.episodes}, median of {args.runs} run(s)")
    print(f"{'task':<44}{'total':>10}{'per patient':>14}{'anchor / generation':>22}")
    print(f"{'generate (iter_random_registry)':<44}{g:>9.2f}s{per * 1e6:>11.1f} µs{'':>22}")
    for name, seconds in (("anchor: check_patient (E6xx)", r), ("anchor: parse_cell of every text cell", p)):
        each = seconds / args.sample
        print(f"{name:<44}{seconds:>9.2f}s{each * 1e6:>11.1f} µs{each / per:>21.2f}x")
    print(f"(anchors timed on the first {args.sample:,} patients; generation CPU time "
          f"{statistics.median(cpu):.2f} s; extrapolated to 1,000,000 episode rows: {g / rows * 1e6:.1f} s wall)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
