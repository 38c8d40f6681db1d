"""``oncosurg validate``, ``oncosurg import`` and ``oncosurg export``: the registry CSV in and out."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from oncosurg.cli import UserError, cli, create_registry, db_option, json_option, open_registry
from oncosurg.cli.interop import (
    DEFAULT_PROTOCOL,
    EPISODE_FORMATS,
    export_interop,
    format_option,
    read_interop,
)
from oncosurg.export import cell_text
from oncosurg.ingest.csv import ParsedFile, read_registry_csv
from oncosurg.schema import COLUMNS, DEFAULT_CENTRE, DEFAULT_POSTOP_WINDOW_DAYS

if TYPE_CHECKING:
    import sqlalchemy as sa

    from oncosurg.ingest.episode_rows import EpisodeFile, StoredLookup
    from oncosurg.rules import Issue
    from oncosurg.store.repository import ImportOptions, ImportResult


def _max_errors_option(f):  # type: ignore[no-untyped-def]
    return click.option("--max-errors", default=50, show_default=True, type=click.IntRange(1),
                        help="List at most this many errors (the total is always given).")(f)


def _centre_option(f):  # type: ignore[no-untyped-def]
    return click.option("--centre", default=None, metavar="NAME",
                        help=f"Centre of the rows whose 'centre' cell is empty (or of every row, without a 'centre' "
                             f"column). Without it they go to '{DEFAULT_CENTRE}', which import refuses when the "
                             "registry holds named centres.")(f)


def _reading_options(f):  # type: ignore[no-untyped-def]
    f = click.option("--postop-window-days", "postop_window_days", type=click.IntRange(0),
                     default=DEFAULT_POSTOP_WINDOW_DAYS, show_default=True,
                     help="Postoperative window of the Clavien-Dindo V rules (X408, X412), in days: the "
                          "protocol's postop_window_days.")(f)
    return click.option("--case-sensitive-ids", "case_sensitive_ids", is_flag=True,
                        help="patient_ids that differ only in case (pb-001, PB-001) are different patients "
                             "(without it they are refused as probable duplicates, in the file and against the "
                             "registry).")(f)


def _read(path: str, centre: str | None, fmt: str = "csv", *, case_sensitive_ids: bool = False,
          postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS, stored: StoredLookup | None = None
          ) -> ParsedFile | EpisodeFile:
    options = {"centre": centre, "case_sensitive_ids": case_sensitive_ids, "postop_window_days": postop_window_days}
    if fmt != "csv":
        return read_interop(path, fmt, **options, **({"stored": stored} if stored is not None else {}))
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return read_registry_csv(file, **options)
    except OSError as exc:
        raise UserError(f"{path}: cannot read the file ({exc.strerror})") from None


def report_issues(source: str, issues: list[Issue], *, max_errors: int, as_json: bool,
                  total: int | None = None) -> None:
    """Print every issue (capped at ``max_errors``) and the total, to stderr (JSON to stdout).

    ``total`` counts issues beyond those given (a reader that keeps only the first ones)."""
    total = len(issues) if total is None else total
    if as_json:
        click.echo(json.dumps({"ok": False, "source": source, "error_count": total,
                               "errors": [i.to_dict() for i in issues]}, indent=2))
        return
    click.echo(f"{source}: {total} error(s); nothing was imported.", err=True)
    for issue in issues[:max_errors]:
        click.echo("  " + issue.format(source), err=True)  # file:line: column 'x' = 'v': … [code rule] — fix: …
    if total > max_errors:
        click.echo(f"  … and {total - max_errors} more ({total} in total; "
                   "raise --max-errors to list them).", err=True)


@cli.command("validate")
@click.argument("file", type=click.Path())
@_centre_option
@_max_errors_option
@format_option("Input", long=True)
@_reading_options
@json_option
def validate_cmd(file: str, centre: str | None, max_errors: int, fmt: str, as_json: bool,
                 case_sensitive_ids: bool = False, postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS) -> None:
    """Check a registry CSV (or --format redcap|fhir|xlsx|long) against every rule without importing it.

    Exit status 0 when the file is valid, 2 when it has errors (all listed at once, each with the
    line — the header is line 1 —, the column, the value, the rule code and how to fix it). A long
    registry is a folder or .zip of CSV files; its errors also name the file.
    """
    if fmt == "long":
        _validate_long(file, centre, max_errors, as_json, postop_window_days)
        return
    parsed = _read(file, centre, fmt, case_sensitive_ids=case_sensitive_ids, postop_window_days=postop_window_days)
    _ignored(parsed, as_json)
    if parsed.issues:
        report_issues(file, parsed.issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    patients = getattr(parsed, "patients", None)  # the episode forms: patients and their rows
    if as_json:
        click.echo(json.dumps({"ok": True, "source": file, "rows": parsed.rows, "error_count": 0, "errors": [],
                               **({"patients": patients} if patients is not None else {})}))
    else:
        click.echo(f"{file}: " + (f"{patients} patient(s), " if patients is not None else "")
                   + f"{parsed.rows} row(s), no errors.")


def _validate_long(path: str, centre: str | None, max_errors: int, as_json: bool, postop_window_days: int) -> None:
    from oncosurg.ingest.long import read_long

    try:
        registry = read_long(path, centre=centre or DEFAULT_CENTRE, postop_window_days=postop_window_days)
    except FileNotFoundError:
        raise UserError(f"{path}: no such folder or file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    with registry:
        if not registry.ok:
            report_issues(path, registry.issues, max_errors=max_errors, as_json=as_json, total=registry.error_count)
            sys.exit(2)
        files = sorted(registry.files)
        if as_json:
            click.echo(json.dumps({"ok": True, "source": path, "files": files, "patients": registry.patients,
                                   "rows": registry.rows, "error_count": 0, "errors": []}))
        else:
            click.echo(f"{path}: {registry.patients} patient(s), {registry.rows} row(s) in {len(files)} file(s), "
                       "no errors.")


def _ignored(parsed: object, as_json: bool) -> None:
    """FHIR: say what the bundles held that the registry does not read (resources ignored, with counts)."""
    text = parsed.ignored_text() if hasattr(parsed, "ignored_text") else ""
    if text and not as_json:
        click.echo(f"note: {text}", err=True)


@cli.command("import")
@click.argument("file", type=click.Path())
@db_option
@_centre_option
@format_option("Input", long=True)
@click.option("--update", is_flag=True,
              help="Change registered patients: only the columns the file carries, each change recorded "
                   "(field, old → new). Rows of patients not registered are refused unless --allow-new.")
@click.option("--allow-new", "allow_new", is_flag=True, help="With --update: also register the new patients.")
@click.option("--allow-clear", "allow_clear", is_flag=True,
              help="With --update: a present, empty cell empties the registered value (without it such an "
                   "update is refused and the values it would clear are listed).")
@click.option("--allow-id-in-other-centre", "allow_id_in_other_centre", is_flag=True,
              help="A new patient whose patient_id is registered in another centre is a different patient "
                   "(without it the row is refused as a probable duplicate).")
@_reading_options
@_max_errors_option
@json_option
def import_cmd(file: str, db: str | None, centre: str | None, update: bool, max_errors: int, as_json: bool,
               fmt: str = "csv", allow_new: bool = False, allow_clear: bool = False,
               allow_id_in_other_centre: bool = False, case_sensitive_ids: bool = False,
               postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS) -> None:
    """Validate a registry CSV (or --format redcap|fhir|xlsx|long) and import it in one transaction.

    REDCap exports of the episode project and episode workbooks carry episodes: with --update an
    instrument, sheet or column the file does not carry is kept, an episode it does not list is kept.

    A file with any error changes nothing, and every error is listed at once (exit status 2). A
    patient is (centre, patient_id). A patient already registered is refused unless --update, which
    changes only the columns the file carries — a column the file leaves out is kept, an empty cell
    clears only with --allow-clear — and records each change (field, old → new). Probable
    duplicates are refused: ids differing only in case (unless --case-sensitive-ids) and ids
    registered in another centre (unless --allow-id-in-other-centre).
    """
    from oncosurg.store.engine import StoreError
    from oncosurg.store.repository import ImportOptions, import_patients, import_records, stored_lookup

    if (allow_new or allow_clear) and not update:
        raise UserError("--allow-new and --allow-clear go with --update (a plain import only registers new patients)")
    options = ImportOptions(update=update, allow_new=allow_new, allow_clear=allow_clear,
                            case_sensitive_ids=case_sensitive_ids, allow_id_in_other_centre=allow_id_in_other_centre,
                            postop_window_days=postop_window_days)
    if fmt == "long":
        _import_long(file, db, centre, options, max_errors=max_errors, as_json=as_json)
        return
    engine = None
    if update and fmt in EPISODE_FORMATS:  # an update of episodes is checked against the registered records
        engine = open_registry(db)  # an update needs the registry; read it first
    parsed = _read(file, centre, fmt, case_sensitive_ids=case_sensitive_ids, postop_window_days=postop_window_days,
                   stored=None if engine is None else stored_lookup(engine))
    _ignored(parsed, as_json)
    if parsed.issues:
        report_issues(file, parsed.issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    engine = engine or create_registry(db)
    # a flat file: flat records; REDCap's episode project, the episode workbook, FHIR: records with their episodes
    write = import_records if isinstance(parsed, ParsedFile) else import_patients
    try:
        result = write(engine, parsed.records, source=file, sha256=parsed.sha256, rows=parsed.rows, options=options)
    except StoreError as exc:  # the database stayed locked by another writer
        raise UserError(f"{exc}; nothing was imported") from None
    if result.issues:
        issues = parsed.locate(result.issues) if hasattr(parsed, "locate") else result.issues  # FHIR: name the file
        report_issues(file, issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    _import_summary(file, parsed.sha256, result, max_errors=max_errors, as_json=as_json)
    _release_note(file)


def _release_note(path: str) -> None:
    """A de-identified release holds its protocol's cohort with shifted dates: say how to analyse it."""
    from oncosurg.deidentify.release import release_cohort

    cohort = release_cohort(path)
    if cohort is not None and cohort["protocol"]:
        click.echo(f"note: {path} is a de-identified release of the patients whose true {cohort['column']} lies in "
                   f"{cohort['start'] or '…'} to {cohort['end'] or '…'}; its dates are shifted, so analyse the "
                   f"registry with --protocol {cohort['protocol']}, not with that window again.", err=True)


def _import_long(path: str, db: str | None, centre: str | None, options: ImportOptions, *, max_errors: int,
                 as_json: bool) -> None:
    """``import --format long``: validate the whole folder or .zip (with the stored patients an update
    changes), then write it patient batch by patient batch in one transaction."""
    from oncosurg.ingest.long import read_long
    from oncosurg.store.repository import import_patients, stored_lookup

    engine = open_registry(db) if options.update else None  # an update needs the registry; read it first
    try:
        registry = read_long(path, centre=centre, postop_window_days=options.postop_window_days,
                             stored=None if engine is None else stored_lookup(engine))
    except FileNotFoundError:
        raise UserError(f"{path}: no such folder or file") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    with registry:
        if not registry.ok:
            report_issues(path, registry.issues, max_errors=max_errors, as_json=as_json, total=registry.error_count)
            sys.exit(2)
        engine = engine or create_registry(db)
        result = import_patients(engine, registry.records(), source=path, sha256=registry.sha256,
                                 rows=registry.patients, options=options)
    if result.issues:
        report_issues(path, result.issues, max_errors=max_errors, as_json=as_json)
        sys.exit(2)
    _import_summary(path, registry.sha256, result, max_errors=max_errors, as_json=as_json)
    _release_note(path)


def _import_summary(file: str, sha256: str, result: ImportResult, *, max_errors: int, as_json: bool) -> None:
    summary = {"ok": True, "source": file, "sha256": sha256, "batch": result.batch_id,
               "created": result.created, "updated": result.updated, "unchanged": result.unchanged,
               "changes": [{"centre": c, "patient_id": p, "field": f, "old": _s(o), "new": _s(n)}
                           for c, p, f, o, n in result.changes]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    if result.batch_id is None:
        click.echo(f"{file}: every row ({result.unchanged}) is already registered with these values; nothing changed."
                   if result.unchanged else f"{file}: no rows; nothing imported.")
        return
    click.echo(f"{file}: imported {result.created} new patient(s), updated {result.updated}, "
               f"{result.unchanged} unchanged (batch {result.batch_id}).")
    for change in summary["changes"][:max_errors]:
        click.echo(f"  {change['centre']}/{change['patient_id']}: {change['field']} "
                   f"{change['old']!r} → {change['new']!r}")


def _s(value: object) -> str | None:
    return None if value is None else cell_text(value)


@cli.command("export")
@db_option
@click.option("--out", "out", type=click.Path(), default="-", show_default=True,
              help="Output file ('-' = standard output); a directory for --format fhir; a folder or .zip for "
                   "--format long.")
@click.option("--centre", default=None, metavar="NAME", help="Only this centre.")
@format_option("Output", long=True)
@click.option("--deidentify", "deidentify", type=click.Choice(("limited", "safe-harbor")), is_flag=False,
              flag_value="limited", default=None,
              help="De-identify (alone: limited). limited: keyed pseudonyms, dates shifted by a keyed per-patient "
                   "offset (needs --key-file); safe-harbor: HIPAA Safe Harbor CSV, no date but the year. Only the "
                   "protocol's cohort, in a keyed or random order; a manifest is written beside the output.")
@click.option("--key-file", "key_file", type=click.Path(dir_okay=False), default=None, metavar="K",
              help="Key for --deidentify limited, made by `oncosurg key new` (keep it apart from the export).")
@click.option("--k-anonymity", "k_anonymity", type=click.IntRange(min=2), default=None, metavar="K",
              help="With --deidentify: suppress quasi-identifiers, then rows, until every group of rows sharing "
                   "sex, age band, primary site and side, centre and year has K rows or more (e.g. 5).")
@click.option("--protocol", "protocol", default=DEFAULT_PROTOCOL, show_default=True, metavar="ID_OR_PATH",
              help="With --deidentify: the study protocol whose cohort (accrual window, on the true dates) is "
                   "released.")
@click.option("--previous", "previous", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="With --format fhir: the earlier FHIR export of this registry; the new bundles also DELETE "
                   "the resources removed since (a FHIR server stays in step).")
def export_cmd(db: str | None, out: str, centre: str | None, fmt: str = "csv", deidentify: str | None = None,
               key_file: str | None = None, k_anonymity: int | None = None, protocol: str = DEFAULT_PROTOCOL,
               previous: str | None = None) -> None:
    """Write the registry as a registry CSV (the import format; columns in registry order).

    The registry CSV holds one row per patient: the rescue line, the operation that follows it, the
    first disease event and the last contact (a projection of the episodes); a warning counts the
    patients whose other episodes it leaves out. --format long writes every episode: a folder (or a
    .zip) of one CSV per table (docs/registry-long.md).

    --format redcap writes REDCap's flat record CSV of the episode project (`oncosurg redcap
    dictionary`; one row per patient and per episode instance: REDCap's import and export format),
    xlsx an Excel workbook with one sheet per table (the long format's files), validation lists and a
    dictionary sheet, fhir one FHIR R4 transaction Bundle per patient (every episode, mCODE STU4
    profiles) into the new --out directory (written whole or not at all). --deidentify releases the
    protocol's cohort as the flat projection (the long format: every episode): limited (with
    --key-file) replaces ids by keyed pseudonyms and moves each patient's dates back by one keyed
    offset (intervals kept; analyse with the .protocol.toml written beside it); safe-harbor keeps no
    date but the year of time zero. The manifest says what was removed and the k-anonymity.
    """
    from oncosurg.store.repository import iter_records, patients_beyond_flat

    engine = open_registry(db)
    if fmt == "long" and not (deidentify or key_file or k_anonymity):
        _export_long(engine, out, centre)
        return
    if fmt != "csv" or deidentify or key_file or k_anonymity or previous:
        export_interop(engine, out=out, fmt=fmt, centre=centre, deidentify=deidentify, key_file=key_file,
                       protocol=protocol, k_anonymity=k_anonymity, previous=previous)
        return
    handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
    try:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        with engine.connect() as conn:
            for record in iter_records(conn, centre=centre):
                writer.writerow(["" if record[c] is None else _s(record[c]) for c in COLUMNS])
            beyond = patients_beyond_flat(conn, centre=centre)
    finally:
        if handle is not sys.stdout:
            handle.close()
    if beyond:
        click.echo(f"note: {beyond} patient(s) hold episodes or fields that the registry CSV cannot show (other "
                   "therapy lines, procedures, disease events or contacts, MDT reviews, response assessments, "
                   "itemised complications, fields of the episode model); `oncosurg export --format long` "
                   "writes them all.", err=True)


def _export_long(engine: sa.Engine, out: str, centre: str | None) -> None:
    from oncosurg.export.long import write_long
    from oncosurg.store import tables as t
    from oncosurg.store.episodes import iter_records as iter_patients

    if out == "-":
        raise UserError("--format long writes a folder or a .zip: give --out PATH")
    with engine.connect() as conn:
        try:
            written = write_long((r for _, r in iter_patients(conn, t.EPISODES, t.centre, centre_name=centre)),
                                 out)
        except FileExistsError as exc:
            raise UserError(f"{exc}; choose another --out") from None
    click.echo(f"{out}: {written.patients} patient(s), {sum(written.rows.values())} row(s) in {len(written.rows)} "
               "file(s).", err=True)
