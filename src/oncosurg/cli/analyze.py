"""``oncosurg analyze`` and ``oncosurg demo``: run a study protocol on registry records."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oncosurg.cli import (
    SEED_PROTOCOL,
    EmptyCohort,
    UserError,
    allow_empty_option,
    cli,
    csv_source_option,
    db_option,
    json_option,
    open_registry,
    protocol_option,
)
from oncosurg.cli.registry import DEFAULT_CENTRE, report_issues

if TYPE_CHECKING:
    import sqlalchemy as sa

    from oncosurg.protocol.model import Protocol


def _load(protocol: str) -> Protocol:
    from oncosurg.protocol.model import ProtocolError, load_protocol

    try:
        return load_protocol(protocol)
    except ProtocolError as exc:
        raise UserError(str(exc)) from None


def _store_from_csv(path: str, *, max_errors: int = 50) -> tuple[sa.Engine, dict[str, Any]]:
    """A temporary in-memory store holding the validated CSV (refused files exit with status 2)."""
    from oncosurg.ingest.csv import read_registry_csv
    from oncosurg.store.engine import open_store
    from oncosurg.store.repository import import_records

    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    parsed = read_registry_csv(path, centre=DEFAULT_CENTRE)
    if parsed.issues:
        report_issues(path, parsed.issues, max_errors=max_errors, as_json=False)
        sys.exit(2)
    engine = open_store("sqlite://")
    import_records(engine, parsed.records, source=path, sha256=parsed.sha256, rows=parsed.rows)
    provenance = {"source": path, "records": parsed.rows, "sha256": parsed.sha256}
    from oncosurg.deidentify.release import release_cohort

    cohort = release_cohort(path)
    if cohort is not None:
        provenance["deidentified_release"] = cohort
    return engine, provenance


def registry_source(db: str | None, csv_file: str | None) -> tuple[sa.Engine, dict[str, Any]]:
    """The store to analyse and its provenance: ``--csv`` through memory, else the registry at ``--db``."""
    from oncosurg.store.repository import count_patients

    if csv_file and db:
        raise UserError("give either --db or --csv, not both")
    if csv_file:
        return _store_from_csv(csv_file)
    engine = open_registry(db)
    with engine.connect() as conn:
        provenance = {"source": engine.url.render_as_string(hide_password=True), "records": count_patients(conn)}
    return engine, provenance


def _analyze(engine: sa.Engine, protocol: str, provenance: dict[str, Any]) -> dict[str, Any]:
    from oncosurg.protocol.engine import run_protocol
    from oncosurg.protocol.model import ProtocolError

    proto = _load(protocol)
    release = provenance.get("deidentified_release")
    if release is not None:
        from oncosurg.deidentify.release import without_applied_window

        released = without_applied_window(proto, release)
        if released is not proto:
            release["accrual"] = "applied to the true dates before de-identification, not again to the shifted dates"
        proto = released
    try:
        return run_protocol(engine, proto, provenance=provenance)
    except ProtocolError as exc:
        raise UserError(str(exc)) from None


def refuse_empty(results: dict[str, Any], allow_empty: bool) -> None:
    """Exit with status 3 when the cohort holds no patient, unless ``--allow-empty``."""
    if results["cohort"]["n"] or allow_empty:
        return
    why = next((w["message"] for w in results["warnings"] if w["code"] == "cohort-empty"), "the cohort is empty")
    raise EmptyCohort(f"{why}. Nothing can be estimated (n = 0); pass --allow-empty to accept an empty cohort.")


@cli.command("analyze")
@db_option
@csv_source_option("Analyse")
@protocol_option
@allow_empty_option
@json_option
def analyze_cmd(db: str | None, csv_file: str | None, protocol: str, allow_empty: bool, as_json: bool) -> None:
    """Compute every endpoint of a study protocol from the patient-level records.

    Prints a table (estimate, 95% CI, n, and the published value where the protocol lists one)
    and the warnings a biostatistician would raise; --json prints the results object. An empty
    cohort is printed, then refused with exit status 3 unless --allow-empty.
    """
    from oncosurg.report.terminal import render_results

    _load(protocol)  # a bad protocol is refused before any database is opened
    engine, provenance = registry_source(db, csv_file)
    results = _analyze(engine, protocol, provenance)
    engine.dispose()
    if as_json:
        click.echo(json.dumps(results, indent=2))
    else:
        render_results(results)
    refuse_empty(results, allow_empty)


#: The second bundled study: the demo writes its report on the same registry.
SECOND_STUDY = "crlm-first-hepatectomy"


@cli.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False), default="oncosurg-demo", show_default=True,
              help="Directory for the reference registry, its database, results.json and the study report.")
@json_option
def demo_cmd(out: str, as_json: bool) -> None:
    """Build the synthetic reference registry and reproduce the seed study (Adam et al., JCO 2007).

    Writes the reference cohort (151 synthetic patients with every episode of their pathway) as a
    long registry OUT/reference-cohort/ (one CSV per table) and as its flat projection
    OUT/reference-cohort.csv, imports the long registry into a fresh SQLite registry OUT/oncosurg.db,
    runs the rescue-cetuximab-2007 protocol, prints each endpoint beside the published value, writes
    OUT/results.json and the study report (OUT/index.html, OUT/report.pdf, OUT/figures/,
    OUT/tables/, as `oncosurg report`), then the report of a second study on the same registry,
    crlm-first-hepatectomy, in OUT/crlm-first-hepatectomy/.
    """
    from oncosurg.cli.report import make_report, progress_lines

    started = time.perf_counter()
    step = progress_lines("demo", started) if not as_json else (lambda _msg: None)
    step("building the synthetic reference cohort (151 patients and their episodes)")
    from oncosurg.export.long import write_long
    from oncosurg.ingest.long import read_long
    from oncosurg.reference import REFERENCE_DESCRIPTION, reference_records, write_reference_csv
    from oncosurg.report.terminal import render_results
    from oncosurg.store.engine import open_store
    from oncosurg.store.repository import import_patients

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = write_reference_csv(folder / "reference-cohort.csv")
    long_path = folder / "reference-cohort"
    write_long(sorted(reference_records(), key=lambda r: (r.centre, r.patient_id)), long_path, overwrite=True)
    db_path = folder / "oncosurg.db"
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    with read_long(long_path) as registry:
        if not registry.ok:  # the reference cohort must satisfy every rule; say so loudly if it does not
            report_issues(str(long_path), registry.issues, max_errors=20, as_json=False)
            raise click.ClickException("the bundled reference cohort fails validation (a bug in oncosurg)")
        step(f"importing it into {db_path}")
        engine = open_store(f"sqlite:///{db_path}")
        result = import_patients(engine, registry.records(), source=str(long_path), sha256=registry.sha256,
                                 rows=registry.patients)
        if result.issues:
            report_issues(str(long_path), result.issues, max_errors=20, as_json=False)
            raise click.ClickException("the bundled reference cohort cannot be imported (a bug in oncosurg)")
        provenance = {"source": str(long_path), "records": registry.patients, "sha256": registry.sha256,
                      "synthetic": True, "note": REFERENCE_DESCRIPTION}
    from oncosurg.stats.compiled import kernels_cached

    step(f"running the protocol {SEED_PROTOCOL}" + ("" if kernels_cached() else
         " (first run: compiling the survival kernels, cached for later runs)"))
    results = _analyze(engine, SEED_PROTOCOL, provenance)
    (folder / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    if not as_json:
        click.echo("SYNTHETIC DATA — the reference cohort is computer-generated; no real patients.")
        render_results(results)
    step("writing the study report")
    make_report(engine, _load(SEED_PROTOCOL), results, folder, show_progress=not as_json, since=started)
    second = folder / SECOND_STUDY
    step(f"running the protocol {SECOND_STUDY} and writing its report")
    second_results = _analyze(engine, SECOND_STUDY, provenance)
    second.mkdir(exist_ok=True)
    make_report(engine, _load(SECOND_STUDY), second_results, second, show_progress=not as_json, since=started)
    engine.dispose()
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    click.echo(f"\nRegistry: {long_path}/ (flat: {csv_path})  Database: {db_path}  Results: {folder / 'results.json'}")
    click.echo(f"Report: {folder / 'index.html'}  PDF: {folder / 'report.pdf'}  Figures: {folder / 'figures'}/  "
               f"Table 1: {folder / 'tables'}/  ({time.perf_counter() - started:.1f} s)")
    click.echo(f"Second study ({SECOND_STUDY}): {second / 'index.html'}")

