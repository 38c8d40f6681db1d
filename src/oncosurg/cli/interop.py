"""Interoperability: ``oncosurg redcap …`` and the non-CSV formats of ``import``/``export``.

``oncosurg import --format redcap|fhir|xlsx`` and ``oncosurg export --format redcap|fhir|xlsx``
(with ``--deidentify --key-file K``) are options of the registry commands
(:mod:`oncosurg.cli.registry`), which call :func:`read_interop` and :func:`export_interop` here.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oncosurg.cli import UserError, cli
from oncosurg.export import record_texts
from oncosurg.export import redcap as redcap_export
from oncosurg.ingest import _validate  # noqa: F401  (registers the F106-F108 rules for every command)
from oncosurg.ingest.csv import ParsedFile
from oncosurg.schema import COLUMNS

if TYPE_CHECKING:
    import sqlalchemy as sa

FORMATS = ("csv", "redcap", "fhir", "xlsx")
DEFAULT_PROTOCOL = "rescue-cetuximab-2007"
MANIFEST = "deidentification-manifest.json"


def format_option(verb: str, *, long: bool = False):  # type: ignore[no-untyped-def]
    """``--format csv|redcap|fhir|xlsx`` for ``import`` (``verb='Input'``) and ``export`` (``long``: and the
    long registry, a folder or .zip of one CSV per table)."""
    return click.option(
        "--format", "fmt", type=click.Choice(FORMATS + ("long",) * long), default="csv", show_default=True,
        help=f"{verb} format: registry CSV; REDCap flat CSV record export; a directory of FHIR R4 "
             "Bundles (one .json per patient); Excel .xlsx workbook"
             + ("; long registry (a folder or .zip of CSV files, one per table: docs/registry-long.md)." if long
                else "."))


def read_interop(path: str, fmt: str, centre: str | None, **options: Any) -> ParsedFile:
    """Read and validate a REDCap export, a FHIR bundle directory (or file) or an Excel workbook
    (``options``: ``case_sensitive_ids``, ``postop_window_days``)."""
    file = Path(path)
    if fmt == "fhir":
        if not file.exists():
            raise UserError(f"{path}: no such directory or file")
    elif not file.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if fmt == "redcap":
            from oncosurg.ingest.redcap import read_redcap_export

            return read_redcap_export(file, centre=centre, **options)
        if fmt == "fhir":
            from oncosurg.ingest.fhir import read_fhir_bundles

            return read_fhir_bundles(file, centre=centre, **options)
        if fmt == "xlsx":
            from oncosurg.ingest.xlsx import read_workbook

            return read_workbook(file, centre=centre, **options)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    raise UserError(f"unknown format {fmt!r}")  # pragma: no cover - click.Choice


def _window(protocol: str, engine: sa.Engine, records: list[dict[str, Any]]) -> Any:
    """The protocol's accrual window for the date shift; a format-2 window is on each patient's index date,
    which the protocol engine computes from the episodes and which is put beside each record (not exported)."""
    import sqlalchemy as sa

    from oncosurg.export.deidentify import Window
    from oncosurg.protocol.model import ProtocolError, load_protocol

    try:
        proto = load_protocol(protocol)
        if proto.accrual_column == "index_date":
            from oncosurg.protocol.engine import compile_protocol

            c = compile_protocol(proto).view.subquery.c
            with engine.connect() as conn:
                index = {(r[0], r[1]): r[2] for r in conn.execute(sa.select(c.centre, c.patient_id, c.index_date))}
            for record in records:
                record["index_date"] = index.get((record.get("centre"), record.get("patient_id")))
    except ProtocolError as exc:
        raise UserError(str(exc)) from None
    return Window(proto.accrual_column, proto.accrual_start, proto.accrual_end)


def _write_csv(records: Iterable[Mapping[str, Any]], handle: Any) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for record in records:
        texts = record_texts(record)
        writer.writerow([texts[c] for c in COLUMNS])
        count += 1
    return count


def export_interop(
    engine: sa.Engine,
    *,
    out: str,
    fmt: str,
    centre: str | None,
    deidentify: bool,
    key_file: str | None,
    protocol: str,
) -> None:
    """``oncosurg export`` for the non-CSV formats and for de-identified exports (any format)."""
    if fmt in ("fhir", "xlsx") and out == "-":
        raise UserError(f"--format {fmt} needs --out ({'a directory' if fmt == 'fhir' else 'an .xlsx file'})")
    if deidentify and out == "-":
        raise UserError("--deidentify needs --out: the manifest of what was removed is written beside the export")
    if deidentify and not key_file:
        raise UserError("--deidentify needs --key-file K (a file with at least 16 secret bytes, e.g. "
                        "`python -c 'import secrets; print(secrets.token_hex(32))' > K`)")
    if key_file and not deidentify:
        raise UserError("--key-file is only used with --deidentify")
    from oncosurg.store.repository import iter_records

    with engine.connect() as conn:
        records: list[dict[str, Any]] = list(iter_records(conn, centre=centre))
    manifest: dict[str, Any] | None = None
    if deidentify:
        from oncosurg.export.deidentify import KeyFileError, load_key
        from oncosurg.export.deidentify import deidentify as run_deidentify

        try:
            key = load_key(str(key_file))
            records, manifest = run_deidentify(records, key, window=_window(protocol, engine, records))
            for record in records:
                record.pop("index_date", None)  # the original date that anchored the shift: never exported
        except KeyFileError as exc:
            raise UserError(str(exc)) from None
        except ValueError as exc:
            raise UserError(str(exc)) from None
    target = Path(out)
    if fmt == "fhir":
        from oncosurg.export.fhir import write_bundles

        if target.exists() and not target.is_dir():
            raise UserError(f"{out}: exists and is not a directory")
        if target.is_dir() and any(target.glob("*.json")):
            raise UserError(f"{out}: the directory already holds .json files; export into an empty directory "
                            "(old bundles would be imported with the new ones)")
        count = write_bundles(records, target)
        manifest_path = target / MANIFEST
    elif fmt == "xlsx":
        from oncosurg.export.xlsx import write_workbook

        count = write_workbook(records, target)
        manifest_path = target.with_name(target.name + ".manifest.json")
    else:
        handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            count = (redcap_export.write_records(records, handle) if fmt == "redcap"
                     else _write_csv(records, handle))
        finally:
            if handle is not sys.stdout:
                handle.close()
        manifest_path = target.with_name(target.name + ".manifest.json")
    if manifest is not None:
        manifest["format"] = fmt
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        click.echo(f"{out}: {len(records)} de-identified patient(s); manifest {manifest_path}", err=True)
    elif out != "-":
        click.echo(f"{out}: {len(records)} patient(s) ({count} {'bundles' if fmt == 'fhir' else 'rows'}).", err=True)


@cli.group("redcap")
def redcap_group() -> None:
    """REDCap: the data dictionary (and repeating-instrument setup) of the oncosurg REDCap project.

    Capture in REDCap with `oncosurg redcap dictionary > dict.csv` (upload in Project Setup → Data
    Dictionary) and `oncosurg redcap repeating` (Project Setup → Repeating instruments → upload);
    bring records back with `oncosurg import --format redcap EXPORT.csv`.
    """


@redcap_group.command("dictionary")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Output CSV file ('-' = standard output).")
def redcap_dictionary_cmd(out: str) -> None:
    """Write the REDCap data dictionary of the registry.

    One instrument per pathway stage, REDCap validation types (date_ymd, integer, number with
    min/max), choices with the registry codes, yes/no fields, branching logic for surgery-only and
    hepatectomy-only fields, and the repeating 'complication' instrument (one instance per
    complication with its Clavien-Dindo grade).
    """
    if out == "-":
        redcap_export.write_dictionary(sys.stdout)
        return
    with open(out, "w", encoding="utf-8", newline="") as handle:
        redcap_export.write_dictionary(handle)


@redcap_group.command("repeating")
@click.option("--longitudinal", is_flag=True,
              help="Event-based layout (event_name,form_name,custom_form_label) for longitudinal projects.")
def redcap_repeating_cmd(longitudinal: bool) -> None:
    """Write REDCap's repeating-instruments setup: the 'complication' instrument repeats."""
    redcap_export.write_repeating_setup(sys.stdout, longitudinal=longitudinal)
