#!/usr/bin/env python
"""Reading and validating a large long registry (a folder of CSV files, one per episode table).

    .venv/bin/python benchmarks/bench_long.py                  # 100,000 patients (~1.05M episode rows), 3 runs
    .venv/bin/python benchmarks/bench_long.py --patients 10000 --runs 1   # quick
    .venv/bin/python benchmarks/bench_long.py --zip            # the same registry as one .zip

The registry is synthetic and valid (:func:`generate`): per patient 3 therapy lines, an MDT review,
a response assessment, a hepatectomy — or, one patient in four, a two-stage hepatectomy — with 1-2
complications and its pathology, a recurrence and a contact, in 4 centres, files sorted by patient.
Each run happens in a child process so that its peak RSS (``ru_maxrss``) is its own:

* ``csv anchor``: ``csv.reader`` over every file, nothing else — the floor of any CSV reader in Python;
* ``read_long``: staging, single-value checks and every rule across episodes (the whole validation);
* ``records``: then iterating every :class:`PatientRecord` (what an import does next).

Printed: median seconds of ``--runs`` runs, ratios to the anchor, episode rows per second and peak RSS.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CENTRES = ("Centre A (synthetic)", "Centre B (synthetic)", "Centre C (synthetic)", "Centre D (synthetic)")


def generate(folder: Path, patients: int, seed: int = 20241130) -> int:
    """Write a valid synthetic long registry of ``patients`` patients; returns the number of episode rows."""
    from oncosurg.pathway.model import TABLES

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    handles = {spec.file: (folder / spec.file).open("w", encoding="utf-8", newline="") for spec in TABLES}
    writers = {name: csv.writer(h, lineterminator="\n") for name, h in handles.items()}
    for spec in TABLES:
        writers[spec.file].writerow(spec.columns)
    day = dt.timedelta(days=1)
    episodes = 0
    keys = sorted((CENTRES[i % 4], f"SYN{i:07d}") for i in range(patients))
    for centre, pid in keys:
        w = writers
        start = dt.date(2000, 1, 1) + rng.randrange(3650) * day
        w["patients.csv"].writerow([centre, pid, rng.choice("FM"), rng.randrange(1930, 1980),
                                    f"{rng.uniform(30, 85):.1f}", "colon", "left", "wild_type", "", "", "in_house", ""])
        d = start
        for n in (1, 2, 3):
            stop = d + rng.randrange(30, 200) * day
            w["therapy_lines.csv"].writerow([
                centre, pid, n, d, stop, "cetuximab;irinotecan" if n == 2 else "oxaliplatin;fluoropyrimidine",
                "conversion" if n == 2 else "palliative", "centre", rng.randrange(1, 12), "PR", "surgery", "biweekly",
                500, f"{rng.uniform(1.5, 2.2):.2f}", rng.randrange(1, 12), rng.randrange(5, 90), "yes", "no"])
            d = stop + rng.randrange(1, 30) * day
        w["mdt_reviews.csv"].writerow([centre, pid, 1, d, "resectable", 3, 6, "resectable after conversion"])
        w["response_assessments.csv"].writerow([centre, pid, 1, d, 3, "PR", 80, 50, 50, "no"])
        procedures = [("two_stage_first", "2;3"), ("two_stage_second", "5;6;7;8")] if rng.random() < 0.25 else [
            ("hepatectomy", "5;6")]
        for no, (kind, segments) in enumerate(procedures, start=1):
            d += rng.randrange(20, 60) * day
            margin = "R0" if no == len(procedures) else ""
            w["liver_procedures.csv"].writerow([centre, pid, no, d, kind, segments, margin, "open",
                                                "yes" if len(procedures) == 2 else "no", "no", "yes"])
            for c in range(1, rng.randrange(2, 4)):
                w["complications.csv"].writerow([centre, pid, no, c, rng.choice(("I", "II", "IIIa")),
                                                 d + c * day, "bile leak" if c == 1 else ""])
                episodes += 1
            w["pathology.csv"].writerow([centre, pid, no, rng.randrange(0, 60), "no", 1, 1, "no", 3, 4, 25, 5])
            episodes += 2
        d += rng.randrange(100, 400) * day
        w["disease_events.csv"].writerow([centre, pid, 1, d, "recurrence", "liver;lung"])
        d += rng.randrange(10, 400) * day
        w["contacts.csv"].writerow([centre, pid, 1, d, "alive"])
        episodes += 3 + 1 + 1 + 1 + 1
    for h in handles.values():
        h.close()
    return episodes


def _child(mode: str, path: str) -> dict[str, float]:
    began, cpu = time.perf_counter(), time.process_time()
    rows = 0
    if mode == "csv anchor":
        from oncosurg.pathway.model import TABLES

        for spec in TABLES:
            with (Path(path) / spec.file).open(encoding="utf-8", newline="") as handle:
                rows += sum(1 for _ in csv.reader(handle))
    else:
        from oncosurg.ingest.long import read_long

        with read_long(path, today=dt.date(2030, 1, 1)) as registry:
            if not registry.ok:
                raise SystemExit(f"the synthetic registry has {registry.error_count} issue(s): "
                                 f"{registry.issues[0].format()}")
            rows = registry.rows
            if mode == "records":
                rows = sum(1 for _ in registry.records())
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "cpu": time.process_time() - cpu, "rows": rows,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--zip", action="store_true", help="read the registry as one .zip")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        folder = Path(tmp) / "registry"
        began = time.perf_counter()
        episodes = generate(folder, args.patients)
        size = sum(f.stat().st_size for f in folder.iterdir())
        print(f"generated {args.patients:,} patients, {episodes:,} episode rows, {size / 2**20:.0f} MiB "
              f"in {time.perf_counter() - began:.1f} s")
        target = folder
        if args.zip:
            import zipfile

            target = Path(tmp) / "registry.zip"
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
                for f in sorted(folder.iterdir()):
                    archive.write(f, f.name)
            print(f"zipped to {target.stat().st_size / 2**20:.0f} MiB")
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.runs):
            for mode in ("csv anchor", "read_long", "records"):
                path = folder if mode == "csv anchor" else target
                out = subprocess.run([sys.executable, __file__, "--child", mode, str(path)], check=True,
                                     capture_output=True, text=True).stdout
                results.setdefault(mode, []).append(json.loads(out))
    anchor = statistics.median(r["seconds"] for r in results["csv anchor"])
    print(f"\n{'step':<12} {'median s':>9} {'cpu s':>7} {'x anchor':>9} {'episode rows/s':>15} {'peak RSS MiB':>13}")
    for mode, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        rss = max(r["rss_mib"] for r in runs)
        print(f"{mode:<12} {seconds:>9.2f} {cpu:>7.2f} {seconds / anchor:>9.2f} {episodes / seconds:>15,.0f} "
              f"{rss:>13.0f}")
    print(f"\n(median of {args.runs} run(s); 'records' includes read_long; each run in its own process; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall time above CPU time is waiting "
          "for a CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
