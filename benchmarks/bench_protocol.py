#!/usr/bin/env python
"""Protocol engine: both bundled studies on random multi-episode registries, against an anchor.

    .venv/bin/python benchmarks/bench_protocol.py                 # 1,000 and 10,000 patients, SQLite
    .venv/bin/python benchmarks/bench_protocol.py --patients 2000 --repeat 5

The registry is ``oncosurg.reference.random_registry`` (valid multi-centre episode records, about 10
episode rows per patient), imported into a SQLite file.  For each size it prints the median of
``--repeat`` runs of

* ``anchor``: one ``SELECT`` of the flat projection of every patient (the work any analysis does);
* ``view``: one ``SELECT`` of the whole format-2 analysis view of a protocol (index, derived columns,
  outcomes with their correlated episode queries);
* ``analyze``: ``run_protocol`` (every cohort step, endpoint and comparison; the view computed once
  into a temporary table);
* ``analyze, view per query``: the same without the temporary table (each query recomputes the view),

and the ratios to the anchor.  Accrual windows and data cuts are removed so that every patient counts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import sqlalchemy as sa

from oncosurg.protocol.engine import compile_protocol, run_protocol
from oncosurg.protocol.model import Protocol, load_protocol
from oncosurg.reference import random_registry
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from oncosurg.store.projection import flat_select
from oncosurg.store.repository import import_patients

STUDIES = ("rescue-cetuximab-2007", "crlm-first-hepatectomy")


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def view_per_query() -> Iterator[None]:
    @contextlib.contextmanager
    def passthrough(_conn: sa.Connection, cp: object) -> Iterator[object]:
        yield cp

    with mock.patch("oncosurg.protocol.materialize.materialized", passthrough):
        yield


def read_flat(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(flat_select(t.EPISODES, t.centre)).all()


def read_view(engine: sa.Engine, protocol: Protocol) -> None:
    cp = compile_protocol(protocol)
    with engine.connect() as conn:
        conn.execute(sa.select(cp.view.subquery)).all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for n in args.patients:
            engine = open_store(f"sqlite:///{Path(folder) / f'r{n}.db'}")
            records = random_registry(n, 5)
            import_patients(engine, records, source="bench", sha256="0" * 64, rows=n)

            base = median_seconds(lambda engine=engine: read_flat(engine), args.repeat)
            print(f"{n:,} patients: anchor (flat projection) {base:.3f} s")
            for study in STUDIES:
                protocol = dataclasses.replace(load_protocol(study), accrual_start=None, accrual_end=None,
                                               data_cut=None)
                view = functools.partial(read_view, engine, protocol)
                analyze = functools.partial(run_protocol, engine, protocol)
                v = median_seconds(view, args.repeat)
                a = median_seconds(analyze, args.repeat)
                with view_per_query():
                    slow = median_seconds(analyze, max(1, args.repeat // 2))
                print(f"  {study}: view {v:.2f} s ({v / base:.1f}x anchor), analyze {a:.2f} s ({a / base:.1f}x), "
                      f"analyze with the view per query {slow:.2f} s ({slow / base:.1f}x; {slow / a:.1f}x slower)")
            engine.dispose()


if __name__ == "__main__":
    main()
