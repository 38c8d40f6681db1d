"""``oncosurg validate``, ``oncosurg import`` and ``oncosurg export``: the registry CSV in and out."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click

from oncosurg.cli import UserError, cli, db_option, json_option
from oncosurg.cli.interop import DEFAULT_PROTOCOL, export_interop, format_option, read_interop
from oncosurg.ingest.csv import ParsedFile, read_registry_csv
from oncosurg.rules import Issue
from oncosurg.schema import COLUMNS
from oncosurg.store.engine import StoreError, open_store
from oncosurg.store.repository import import_records, iter_records

DEFAULT_CENTRE = "main"


def _max_errors_option(f):  # type: ignore[no-untyped-def]
    return click.option("--max-errors", default=50, show_default=True, type=click.IntRange(1),
                        help="List at most this many errors (the total is always given).")(f)


def _centre_option(f):  # type: ignore[no-untyped-def]
    return click.option("--centre", default=None, metavar="NAME",
                        help=f"Centre for rows whose 'centre' cell is empty (default '{DEFAULT_CENTRE}').")(f)


def _read(path: str, centre: str | None, fmt: str = "csv") -> ParsedFile:
    if fmt != "csv":
        return read_interop(path, fmt, centre or DEFAULT_CENTRE)
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return read_registry_csv(file, centre=centre or DEFAULT_CENTRE)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None


def report_issues(source: str, issues: list[Issue], *, max_errors: int, as_json: bool) -> None:
    """Print every issue (capped at ``max_errors``) and the total, to stderr (JSON to stdout)."""
    if as_json:
        click.echo(json.dumps({"ok": False, "source": source, "error_count": len(issues),
                               "errors": [i.to_dict() for i in issues]}, indent=2))
        return
    click.echo(f"{source}: {len(issues)} error(s); nothing was imported.", err=True)
    for issue in issues[:max_errors]:
        click.echo("  " + issue.format(), err=True)
    if len(issues) > max_errors:
        click.echo(f"  … and {len(issues) - max_errors} more ({len(issues)} in total; "
                   "raise --max-errors to list them).", err=True)


@cli.command("validate")
@click.argument("file", type=click.Path())
@_centre_option
@_max_errors_option
@format_option("Input")
@json_option
def validate_cmd(file: str, centre: str | None, max_errors: int, fmt: str, as_json: bool) -> None:
    """Check a registry CSV (or --format redcap|fhir|xlsx) against every rule without importing it.

    Exit status 0 when the file is valid, 2 when it has errors (all listed at once, each with the
    line — the header is line 1 —, the column, the value, the rule code and how to fix it).
    """
    parsed = _read(file, centre, fmt)
    if parsed.issues:
        report_issues(file, parsed.issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"ok": True, "source": file, "rows": parsed.rows, "error_count": 0, "errors": []}))
    else:
        click.echo(f"{file}: {parsed.rows} row(s), no errors.")


@cli.command("import")
@click.argument("file", type=click.Path())
@db_option
@_centre_option
@format_option("Input")
@click.option("--update", is_flag=True, help="Allow rows for patients already registered; changes are recorded.")
@_max_errors_option
@json_option
def import_cmd(file: str, db: str | None, centre: str | None, update: bool, max_errors: int, as_json: bool,
               fmt: str = "csv") -> None:
    """Validate a registry CSV (or --format redcap|fhir|xlsx) and import it in one transaction.

    A file with any error changes nothing. A patient_id already registered in the same centre is
    refused unless --update, which overwrites the changed fields and records each change
    (field, old → new) in the change log.
    """
    parsed = _read(file, centre, fmt)
    if parsed.issues:
        report_issues(file, parsed.issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    try:
        engine = open_store(db)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    result = import_records(engine, parsed.records, source=file, sha256=parsed.sha256, rows=parsed.rows,
                            update=update)
    if result.issues:
        issues = parsed.locate(result.issues) if hasattr(parsed, "locate") else result.issues  # FHIR: name the file
        report_issues(file, issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    summary = {"ok": True, "source": file, "sha256": parsed.sha256, "batch": result.batch_id,
               "created": result.created, "updated": result.updated, "unchanged": result.unchanged,
               "changes": [{"centre": c, "patient_id": p, "field": f, "old": _s(o), "new": _s(n)}
                           for c, p, f, o, n in result.changes]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{file}: imported {result.created} new patient(s), updated {result.updated}, "
               f"{result.unchanged} unchanged (batch {result.batch_id}).")
    for change in summary["changes"][:max_errors]:
        click.echo(f"  {change['centre']}/{change['patient_id']}: {change['field']} "
                   f"{change['old']!r} → {change['new']!r}")


def _s(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


@cli.command("export")
@db_option
@click.option("--out", "out", type=click.Path(), default="-", show_default=True,
              help="Output file ('-' = standard output); a directory for --format fhir.")
@click.option("--centre", default=None, metavar="NAME", help="Only this centre.")
@format_option("Output")
@click.option("--deidentify", is_flag=True,
              help="Keyed pseudonyms, one date shift per patient, age capped at 90; a manifest of what was "
                   "removed is written beside the output.")
@click.option("--key-file", "key_file", type=click.Path(dir_okay=False), default=None, metavar="K",
              help="Secret key for --deidentify (at least 16 bytes; keep it apart from the export).")
@click.option("--protocol", "protocol", default=DEFAULT_PROTOCOL, show_default=True, metavar="ID_OR_PATH",
              help="With --deidentify: the study protocol whose accrual window the date shifts respect.")
def export_cmd(db: str | None, out: str, centre: str | None, fmt: str = "csv", deidentify: bool = False,
               key_file: str | None = None, protocol: str = DEFAULT_PROTOCOL) -> None:
    """Write the registry as a registry CSV (the import format; columns in registry order).

    --format redcap writes REDCap's flat record CSV (its import and export format), fhir one FHIR R4
    transaction Bundle per patient into the --out directory, xlsx an Excel workbook with a
    data-dictionary sheet and cell validation lists. --deidentify (with --key-file) replaces ids by
    keyed pseudonyms, shifts each patient's dates by one keyed offset (intervals and the protocol's
    cohort unchanged) and caps ages at 90; the manifest says what was removed.
    """
    try:
        engine = open_store(db)
    except StoreError as exc:
        raise UserError(str(exc)) from None
    if fmt != "csv" or deidentify or key_file:
        export_interop(engine, out=out, fmt=fmt, centre=centre, deidentify=deidentify, key_file=key_file,
                       protocol=protocol)
        return
    handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        with engine.connect() as conn:
            for record in iter_records(conn, centre=centre):
                writer.writerow(["" if record[c] is None else _s(record[c]) for c in COLUMNS])
    finally:
        if handle is not sys.stdout:
            handle.close()
