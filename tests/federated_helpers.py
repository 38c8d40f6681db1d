"""Registries for the federated tests: the reference cohort split by centre, and the pooled registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.reference import reference_records
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_patients


def split_reference(assign: Callable[[int, PatientRecord], str]) -> dict[str, list[PatientRecord]]:
    """The reference cohort's patients by centre name, ``assign(number, record)`` choosing the centre."""
    sites: dict[str, list[PatientRecord]] = {}
    for number, record in enumerate(reference_records()):
        centre = assign(number, record)
        sites.setdefault(centre, []).append(dataclasses.replace(record, centre=centre))
    return sites


def write_registry(url: str, records: Sequence[PatientRecord]) -> str:
    engine = open_store(url)
    result = import_patients(engine, list(records), source="split", sha256="0" * 64, rows=len(records))
    assert not result.issues, [i.format() for i in result.issues[:3]]
    engine.dispose()
    return url


def build_split(folder: Path, assign: Callable[[int, PatientRecord], str]) -> tuple[dict[str, str], str]:
    """One SQLite registry per centre and the pooled registry holding them all: ({name: url}, pooled url)."""
    sites = split_reference(assign)
    urls = {name: write_registry(f"sqlite:///{folder / f'site-{name}.db'}", recs) for name, recs in sites.items()}
    pooled = write_registry(f"sqlite:///{folder / 'pooled.db'}", [r for recs in sites.values() for r in recs])
    return urls, pooled


def direct_ask(urls: Sequence[str], log: list[Any] | None = None) -> Callable[..., list[Any]]:
    """``ask`` for :func:`oncosurg.federated.central.federate` calling each site's partial in-process."""
    from oncosurg.federated.site import run_partial

    def ask(method: str, kwargs: dict[str, Any], sites: Sequence[int]) -> list[Any]:
        replies = [run_partial(method, urls[i], kwargs) for i in sites]
        if log is not None:
            log.append((method, kwargs, replies))
        return replies

    return ask


def round_robin(number: int, _record: PatientRecord) -> str:
    """The split of the federated tests: patients dealt to centres A, B and C in turn."""
    return "ABC"[number % 3]


COX_COLUMNS = ("time", "status", "entry")


def cox_model_rows(urls: dict[str, str], protocol: str = "rescue-cetuximab-2007", model: int = 0
                   ) -> list[dict[str, Any]]:
    """The complete-case rows of the protocol's ``[[report.cox]]`` model at each site, with the site as ``centre``:
    the pooled data R fits with ``strata(centre)`` (tests/reference/federated_cox_reference.R)."""
    import sqlalchemy as sa

    from oncosurg.protocol.engine import compile_protocol
    from oncosurg.protocol.materialize import materialized
    from oncosurg.protocol.model import load_protocol
    from oncosurg.report.data import cox_rows
    from oncosurg.report.spec import report_spec

    proto = load_protocol(protocol)
    spec = report_spec(proto).cox[model]
    out = []
    for centre, url in urls.items():
        engine = sa.create_engine(url)
        with engine.connect() as conn, materialized(conn, compile_protocol(proto)) as cp:
            kinds, complete, _ = cox_rows(conn, cp, spec)
        engine.dispose()
        for r in complete:
            row = {"centre": centre, "time": float(r[0]), "status": int(bool(r[1])), "entry": float(r[2])}
            for j, (name, kind, _choices) in enumerate(kinds):
                v = r[3 + j]
                row[name] = int(bool(v)) if kind == "binary" else v
            out.append(row)
    return out
