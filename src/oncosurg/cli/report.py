"""``oncosurg report``: the study report (HTML, PDF, figures, Table 1, results.json) for a protocol."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oncosurg.cli import UserError, allow_empty_option, cli, csv_source_option, db_option, protocol_option

if TYPE_CHECKING:
    import sqlalchemy as sa

    from oncosurg.protocol.model import Protocol

DEFAULT_OUT = "oncosurg-report"


def _formats(value: str) -> tuple[str, ...]:
    from oncosurg.report.build import FORMATS

    parts = tuple(dict.fromkeys(p.strip().lower() for p in value.split(",") if p.strip()))
    unknown = [p for p in parts if p not in FORMATS]
    if unknown or not parts:
        raise UserError(f"--format: {', '.join(unknown) or 'nothing given'}; use a comma-separated list of "
                        f"{', '.join(FORMATS)}")
    return parts


def progress_lines(label: str, since: float | None = None) -> Callable[[str], None]:
    """One line per step on stderr, with the time since ``since`` (default: now): ``[  3.2 s] report: Table 1``."""
    started = time.perf_counter() if since is None else since
    return lambda msg: click.echo(f"[{time.perf_counter() - started:5.1f} s] {label}: {msg}", err=True)


@contextmanager
def progress_display(enabled: bool = True, since: float | None = None) -> Iterator[Callable[[str], None]]:
    """The current step on stderr: a rich spinner with the elapsed time on a terminal, else one line per
    step (a log, ``make demo`` piped); silent when disabled."""
    if not enabled:
        yield lambda _msg: None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield progress_lines("report", since)
        return
    with Progress(SpinnerColumn(), TextColumn("[bold]report[/bold] {task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        yield lambda msg: bar.update(task, description=msg)


def make_report(engine: sa.Engine, protocol: Protocol, results: dict[str, Any], out: str | Path, *,
                formats: tuple[str, ...] = ("html", "pdf"), show_progress: bool = True,
                since: float | None = None) -> Any:
    """Write the report; protocol problems in the ``[report]`` table become a :class:`UserError`."""
    from oncosurg.protocol.model import ProtocolError
    from oncosurg.report.build import write_report

    with progress_display(show_progress, since) as step:
        try:
            return write_report(out, engine, protocol, results, formats=formats, progress=step)
        except ProtocolError as exc:
            raise UserError(str(exc)) from None


@cli.command("report")
@db_option
@csv_source_option("Report on")
@protocol_option
@click.option("--out", "out", type=click.Path(file_okay=False), default=DEFAULT_OUT, show_default=True,
              metavar="DIR", help="Folder for index.html, report.pdf, results.json, figures/ and tables/.")
@click.option("--format", "fmt", default="html,pdf", show_default=True, metavar="LIST",
              help="Documents to write: html, pdf or both (results.json, figures and Table 1 files always).")
@click.option("--results", "results_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Render a federated result (`oncosurg federate --out FILE`) instead of analysing a registry: "
                   "index.html with the pooled tables, the sites and the disclosure section.")
@allow_empty_option
def report_cmd(db: str | None, csv_file: str | None, protocol: str, out: str, fmt: str, allow_empty: bool,
               results_file: str | None) -> None:
    """Write the study report: results paragraph, cohort flow, Table 1, endpoints, Kaplan-Meier plots.

    Every number is computed from the records by the protocol (results.json is the `analyze --json`
    object) and each figure is written as PNG (300 dpi) and SVG; Table 1 as CSV, XLSX and DOCX.
    index.html is self-contained (no network); report.pdf is made without a browser. The protocol's
    optional [report] table chooses Table 1 groups, Kaplan-Meier figures, Cox models and the wording
    of the results paragraph (docs/report.md). A cohort of 0 patients writes nothing and exits
    with status 3 unless --allow-empty.
    """
    from oncosurg.cli.analyze import _analyze, _load, refuse_empty, registry_source

    if results_file:
        _federated_report(results_file, out)
        return
    formats = _formats(fmt)
    started = time.perf_counter()
    if csv_file and db:
        raise UserError("give either --db or --csv, not both")
    proto = _load(protocol)
    engine, provenance = registry_source(db, csv_file)  # the same provenance as `oncosurg analyze`
    results = _analyze(engine, protocol, provenance)
    if not results["cohort"]["n"] and not allow_empty:
        engine.dispose()
        refuse_empty(results, allow_empty)  # writes nothing
    files = make_report(engine, proto, results, out, formats=formats, show_progress=True)
    engine.dispose()
    folder = files.folder
    click.echo(f"Report written to {folder}/ in {time.perf_counter() - started:.1f} s:")
    for name in ("index.html", "report.pdf", "results.json"):
        if (folder / name).exists() and (folder / name) in files.files:
            click.echo(f"  {folder / name}")
    n_fig = sum(1 for p in files.files if p.parent.name == "figures") // 2
    click.echo(f"  {folder / 'figures'}/  ({n_fig} figures, PNG 300 dpi + SVG)")
    click.echo(f"  {folder / 'tables'}/   (Table 1: CSV, XLSX, DOCX)")


def _federated_report(path: str, out: str) -> None:
    """``report --results FILE``: the report of a federated result (no registry is opened)."""
    import json

    from oncosurg.protocol.model import ProtocolError, load_protocol
    from oncosurg.report.federated import is_federated, write_federated_report

    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"--results {path}: cannot read a result JSON ({exc})") from None
    if not isinstance(results, dict) or not is_federated(results):
        raise UserError(f"--results {path}: not a federated result; write one with `oncosurg federate --out FILE` "
                        "(for a registry, use --db)")
    template = None
    for ref in (results["protocol"].get("source"), results["protocol"].get("id")):
        try:
            template = load_protocol(ref).report.get("results") if ref else None
            break
        except ProtocolError:
            continue
    files = write_federated_report(results, out, results_template=template)
    click.echo(f"Federated report written to {Path(out)}/: " + ", ".join(str(f) for f in files))
