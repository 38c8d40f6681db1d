"""Interoperability: ``oncosurg redcap …`` and the non-CSV formats of ``import``/``export``.

``oncosurg import --format redcap|fhir|xlsx`` and ``oncosurg export --format redcap|fhir|xlsx``
(with ``--deidentify [limited|safe-harbor]``) are options of the registry commands
(:mod:`oncosurg.cli.registry`), which call :func:`read_interop` and :func:`export_interop` here.
REDCap and Excel carry the episode model (the REDCap episode project, one sheet per table); a
de-identified export and the FHIR bundles carry the flat projection.
"""

from __future__ import annotations

import csv
import json
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from oncosurg.cli import UserError, cli
from oncosurg.export import cell_text
from oncosurg.export import redcap as redcap_export
from oncosurg.ingest import _validate  # noqa: F401  (registers the F106-F108 rules for every command)
from oncosurg.schema import COLUMNS

if TYPE_CHECKING:
    import sqlalchemy as sa


FORMATS = ("csv", "redcap", "fhir", "xlsx")
#: Formats that carry the episode model (the others carry the flat projection).
EPISODE_FORMATS = ("redcap", "xlsx")
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


def read_interop(path: str, fmt: str, centre: str | None, **options: Any) -> Any:
    """Read and validate a REDCap export, a FHIR bundle directory (or file) or an Excel workbook
    (``options``: ``case_sensitive_ids``, ``postop_window_days``; for REDCap and Excel also ``stored``,
    the registered records an update is checked against).  REDCap exports of the episode project and
    episode workbooks give an :class:`EpisodeFile`, FHIR a :class:`~oncosurg.ingest.fhir.FhirBundles`
    (patient records with their episodes); exports of the flat project of earlier releases and
    one-sheet workbooks a flat :class:`ParsedFile`."""
    stored = options.pop("stored", None)
    file = Path(path)
    if fmt == "fhir":
        if not file.exists():
            raise UserError(f"{path}: no such directory or file")
    elif not file.is_file():
        raise UserError(f"{path}: no such file")
    try:
        if fmt == "redcap":
            from oncosurg.ingest.redcap_episodes import read_redcap

            return read_redcap(file, centre=centre, stored=stored, **options)
        if fmt == "fhir":
            from oncosurg.ingest.fhir import read_fhir_bundles

            return read_fhir_bundles(file, centre=centre, **options)
        if fmt == "xlsx":
            from oncosurg.ingest.xlsx_episodes import read_workbook

            return read_workbook(file, centre=centre, stored=stored, **options)
    except OSError as exc:
        raise UserError(f"{path}: cannot read ({exc.strerror})") from None
    raise UserError(f"unknown format {fmt!r}")  # pragma: no cover - click.Choice


def _release_protocol(protocol: str) -> tuple[Any, str | None]:
    """The accrual window of ``protocol`` and the text of the same protocol without it (``None`` when it has none):
    a release holds the cohort already, selected on the true dates."""
    from oncosurg.deidentify.release import Window
    from oncosurg.protocol.model import ProtocolError, load_protocol, resolve_protocol

    try:
        proto = load_protocol(protocol)
        path = resolve_protocol(protocol)
    except ProtocolError as exc:
        raise UserError(str(exc)) from None
    if proto.accrual_start is None and proto.accrual_end is None:
        return None, None
    lines = path.read_text(encoding="utf-8").splitlines()
    section = ""
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[cohort]" and stripped.split("=")[0].strip() in ("accrual_start", "accrual_end"):
            lines[i] = "# (de-identified release: accrual applied before the date shift) # " + line
    header = (f"# {proto.id} for a de-identified release written by `oncosurg export --deidentify`: the release\n"
              f"# holds the patients whose true {proto.accrual_column} lies in {proto.accrual_start or '…'} to "
              f"{proto.accrual_end or '…'}; its dates are shifted, so the window is not applied again.\n")
    text = header + "\n".join(lines) + "\n"
    window = Window(proto.accrual_column, proto.accrual_start, proto.accrual_end)
    cohort = tomllib.loads(text).get("cohort", {})
    if "accrual_start" in cohort or "accrual_end" in cohort:  # written in a form this edit does not read
        return window, None
    return window, text


def _write_csv(records: Iterable[Mapping[str, Any]], handle: Any, columns: tuple[str, ...] = COLUMNS) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for record in records:
        writer.writerow([cell_text(record.get(c)) for c in columns])
        count += 1
    return count


def _index_dates(protocol: str, engine: sa.Engine) -> dict[tuple[str, str], Any] | None:
    """Each patient's index date under a format-2 protocol (the protocol engine computes it from the
    episodes; the accrual window is on it), ``None`` when the window is on a registry date column."""
    import sqlalchemy as sa

    from oncosurg.protocol.model import ProtocolError, load_protocol

    try:
        proto = load_protocol(protocol)
        if proto.accrual_column != "index_date":
            return None
        from oncosurg.protocol.engine import compile_protocol

        c = compile_protocol(proto).view.subquery.c
    except ProtocolError as exc:
        raise UserError(str(exc)) from None
    with engine.connect() as conn:
        return {(r[0], r[1]): r[2] for r in conn.execute(sa.select(c.centre, c.patient_id, c.index_date))}


def _deidentified(records: list[Any], *, mode: str, fmt: str, key_file: str | None, protocol: str,
                  k: int | None, index: dict[tuple[str, str], Any] | None = None) -> tuple[Any, str | None]:
    """The release of ``records`` and the text of the protocol to analyse it with (``None`` if unchanged)."""
    from oncosurg.deidentify import release
    from oncosurg.deidentify.keys import KeyFileError, load_key

    if mode == "safe-harbor":
        if fmt != "csv":
            raise UserError("--deidentify safe-harbor writes a CSV of years and day intervals (no date): use "
                            "--format csv, or --deidentify limited for the other formats")
        if key_file:
            raise UserError("--deidentify safe-harbor uses random codes and no key: leave out --key-file")
    elif not key_file:
        raise UserError("--deidentify limited needs --key-file K (make one with `oncosurg key new --out K` and "
                        "keep it apart from the exports)")
    window, protocol_text = _release_protocol(protocol)
    if index is not None and fmt != "long":  # a format-2 window: on each patient's index date (never exported)
        for record in records:
            record["index_date"] = index.get((record.get("centre"), record.get("patient_id")))
    if mode == "safe-harbor":
        return release.safe_harbor(records, window=window, k=k), None
    try:
        key = load_key(str(key_file))
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    if fmt == "long":
        from oncosurg.deidentify.long import limited_long

        return limited_long(records, key, window=window, k=k, index_dates=index), protocol_text
    return release.limited(records, key, window=window, k=k), protocol_text


def export_interop(
    engine: sa.Engine,
    *,
    out: str,
    fmt: str,
    centre: str | None,
    deidentify: str | None,
    key_file: str | None,
    protocol: str,
    k_anonymity: int | None = None,
    previous: str | None = None,
) -> None:
    """``oncosurg export`` for the non-CSV formats and for de-identified exports (``deidentify``: a mode)."""
    if fmt in ("fhir", "xlsx") and out == "-":
        raise UserError(f"--format {fmt} needs --out ({'a directory' if fmt == 'fhir' else 'an .xlsx file'})")
    if previous is not None and fmt != "fhir":
        raise UserError("--previous is for --format fhir (the earlier export whose removed resources to delete)")
    if deidentify and out == "-":
        raise UserError("--deidentify needs --out: the manifest of what was removed is written beside the export")
    if key_file and not deidentify:
        raise UserError("--key-file is only used with --deidentify")
    if k_anonymity is not None and not deidentify:
        raise UserError("--k-anonymity is only used with --deidentify")
    if fmt == "fhir" and not deidentify:
        _export_fhir(engine, out=out, centre=centre, previous=previous)
        return
    if fmt in EPISODE_FORMATS and not deidentify:
        _export_episodes(engine, out=out, fmt=fmt, centre=centre)
        return
    from oncosurg.store.repository import iter_records

    records: list[Any]
    with engine.connect() as conn:
        if fmt == "long":
            from oncosurg.store import tables as t
            from oncosurg.store.episodes import iter_records as iter_patients

            records = [r for _, r in iter_patients(conn, t.EPISODES, t.centre, centre_name=centre)]
        else:
            records = list(iter_records(conn, centre=centre))
    manifest: dict[str, Any] | None = None
    protocol_text: str | None = None
    columns = COLUMNS
    if deidentify:
        released, protocol_text = _deidentified(records, mode=deidentify, fmt=fmt, key_file=key_file,
                                                protocol=protocol, k=k_anonymity, index=_index_dates(protocol, engine))
        records, manifest, columns = released.records, released.manifest, released.columns
        if fmt != "long":
            for record in records:
                record.pop("index_date", None)  # the true date the window was applied to: never exported
    target = Path(out)
    if fmt == "long":
        from oncosurg.export.long import write_long

        try:
            written = write_long(records, target)
        except FileExistsError as exc:
            raise UserError(f"{exc}; choose another --out") from None
        count = written.patients
        manifest_path = target.with_name(target.name + ".manifest.json")
        protocol_path = target.with_name(target.name + ".protocol.toml")
    elif fmt == "fhir":  # de-identified: the flat projection of each patient, as its episodes
        from oncosurg.pathway.flat import from_flat

        assert manifest is not None
        manifest["format"] = fmt
        manifest["fhir_content"] = ("the flat projection of each patient (rescue line, operation, first event, "
                                    "last contact): the de-identification works on the flat registry columns")
        extra = {}
        if protocol_text is not None:
            manifest["protocol_for_analysis"] = "release-protocol.toml"
            extra["release-protocol.toml"] = protocol_text
        extra[MANIFEST] = json.dumps(manifest, indent=2) + "\n"
        _export_fhir(engine, out=out, centre=centre, previous=previous, records=[from_flat(r) for r in records],
                     extra_files=extra)
        k = manifest["k_anonymity"].get("after", manifest["k_anonymity"]["before"])["k"]
        click.echo(f"{out}: {len(records)} de-identified patient(s) ({deidentify}; k-anonymity {k}); manifest "
                   f"{target / MANIFEST}" + ("; analyse with --protocol " + str(target / "release-protocol.toml")
                                              if protocol_text else ""), err=True)
        return
    elif fmt == "xlsx":
        from oncosurg.export.xlsx import write_workbook

        count = write_workbook(records, target)
        manifest_path = target.with_name(target.name + ".manifest.json")
        protocol_path = target.with_name(target.name + ".protocol.toml")
    else:
        handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            count = (redcap_export.write_records(records, handle) if fmt == "redcap"
                     else _write_csv(records, handle, columns))
        finally:
            if handle is not sys.stdout:
                handle.close()
        manifest_path = target.with_name(target.name + ".manifest.json")
        protocol_path = target.with_name(target.name + ".protocol.toml")
    if manifest is not None:
        manifest["format"] = fmt
        if protocol_text is not None:
            protocol_path.write_text(protocol_text, encoding="utf-8")
            manifest["protocol_for_analysis"] = protocol_path.name
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        k = manifest["k_anonymity"].get("after", manifest["k_anonymity"]["before"])["k"]
        click.echo(f"{out}: {len(records)} de-identified patient(s) ({deidentify}; k-anonymity {k}); manifest "
                   f"{manifest_path}" + (f"; analyse with --protocol {protocol_path}" if protocol_text else ""),
                   err=True)
    elif out != "-":
        click.echo(f"{out}: {len(records)} patient(s) ({count} rows).", err=True)


def _export_fhir(engine: sa.Engine, *, out: str, centre: str | None, previous: str | None,
                 records: list[Any] | None = None, extra_files: dict[str, str] | None = None) -> None:
    """One FHIR transaction Bundle per patient into the new folder ``out``, atomically (all or nothing)."""
    from oncosurg.export.fhir import FhirExportError, previous_resources, write_bundles
    from oncosurg.store import tables as t
    from oncosurg.store.episodes import iter_records as iter_patients

    target = Path(out)
    if target.exists() and not target.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    if target.is_dir() and any(target.iterdir()):
        raise UserError(f"{out}: the directory is not empty; export into a new or empty directory (old bundles "
                        "would be imported with the new ones; pass the previous export as --previous)")
    before = None
    if previous is not None:
        if not Path(previous).is_dir():
            raise UserError(f"--previous {previous}: no such directory (give the folder of the earlier FHIR export)")
        try:
            before = previous_resources(previous)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    try:
        with engine.connect() as conn:
            source = records if records is not None else (
                r for _, r in iter_patients(conn, t.EPISODES, t.centre, centre_name=centre))
            written = write_bundles(source, target, previous=before, centre=centre, extra_files=extra_files)
    except FhirExportError as exc:
        shown = "\n".join("  " + i.format() for i in exc.issues[:50])
        more = f"\n  … and {len(exc.issues) - 50} more" if len(exc.issues) > 50 else ""
        raise UserError(f"{out}: nothing was written; {len(exc.issues)} value(s) cannot be written as FHIR R4:\n"
                        f"{shown}{more}") from None
    if records is None:
        deleted = (f"; {written.deleted_resources} resource(s) deleted as removed since the previous export"
                   f" ({written.deleted_patients} patient(s) no longer registered)") if before is not None else ""
        click.echo(f"{out}: {written.patients} patient(s) ({written.bundles} bundles){deleted}.", err=True)


def _export_episodes(engine: sa.Engine, *, out: str, fmt: str, centre: str | None) -> None:
    """``export --format redcap|xlsx``: every patient with their episodes (the REDCap episode project, the
    episode workbook)."""
    from oncosurg.store import tables as t
    from oncosurg.store.episodes import iter_records as iter_episode_records

    with engine.connect() as conn:
        records = (record for _, record in iter_episode_records(conn, t.EPISODES, t.centre, centre_name=centre))
        if fmt == "xlsx":
            from oncosurg.export.xlsx_episodes import write_workbook

            count = write_workbook(records, Path(out))
            click.echo(f"{out}: {count} patient(s), one sheet per table.", err=True)
            return
        from oncosurg.export import redcap_episodes

        handle = sys.stdout if out == "-" else open(out, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            rows = redcap_episodes.write_records(_counted(records, counter := [0]), handle)
        finally:
            if handle is not sys.stdout:
                handle.close()
    if out != "-":
        click.echo(f"{out}: {counter[0]} patient(s) ({rows} rows: one per patient and per episode).", err=True)


def _counted(items: Iterable[Any], counter: list[int]) -> Iterable[Any]:
    for item in items:
        counter[0] += 1
        yield item


@cli.group("key")
def key_group() -> None:
    """Keys of de-identified exports (`oncosurg export --deidentify limited --key-file K`)."""


@key_group.command("new")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Key file to create (never overwritten; readable by its owner only). Without it (or PATH) the "
                   "key is printed on standard output.")
def key_new_cmd(path: str | None, out: str | None) -> None:
    """Create a key: 32 random bytes from the operating system, hex-encoded, in PATH (or --out).

    The same key gives the same pseudonyms and date shifts in every export, so exports made with it
    can be linked; keep the key apart from the exports, and make a new one for unlinkable releases.
    """
    from oncosurg.deidentify.keys import key_text, new_key, write_new_key

    if path and out and path != out:
        raise UserError("give the key file either as PATH or as --out, not both")
    target = out or path
    if target is None:
        click.echo(key_text(new_key()), nl=False)
        return
    try:
        write_new_key(target)
    except FileExistsError:
        raise UserError(f"{target}: exists; a key is never overwritten (choose another --out)") from None
    except OSError as exc:
        raise UserError(f"{target}: cannot create the key file ({exc.strerror})") from None
    click.echo(f"{target}: new key (32 random bytes); keep it apart from the exports.", err=True)


@cli.group("redcap")
def redcap_group() -> None:
    """REDCap: the data dictionary, repeating instruments and events of the oncosurg REDCap project.

    Capture in REDCap with `oncosurg redcap dictionary > dict.csv` (upload in Project Setup → Data
    Dictionary) and `oncosurg redcap repeating > repeating.csv` (Project Setup → Repeating
    instruments → upload); for a longitudinal project also `oncosurg redcap events --list` (Define
    my events) and `oncosurg redcap events` (Designate instruments). Bring records back with
    `oncosurg import --format redcap EXPORT.csv`.
    """


_FLAT_HELP = ("The flat project of earlier releases instead (one instrument per stage, one row per patient): "
              "the form of de-identified exports (--deidentify) and of projects built before the episode model.")


@redcap_group.command("dictionary")
@click.option("--out", "out", type=click.Path(dir_okay=False), default="-", show_default=True,
              help="Output CSV file ('-' = standard output).")
@click.option("--flat", is_flag=True, help=_FLAT_HELP)
def redcap_dictionary_cmd(out: str, flat: bool = False) -> None:
    """Write the REDCap data dictionary of the episode model.

    A 'patient' instrument and one repeating instrument per episode table (therapy_line,
    mdt_review, response_assessment, liver_procedure, complication, pathology, disease_event,
    contact); variable names of at most 26 characters; REDCap validation types (date_ymd, integer,
    number with min/max), choices with the model's codes, yes/no fields, checkboxes for lists
    (agents, sites, resected segments) and branching logic. Keys: the repeat instance numbers MDT
    reviews, assessments, procedures, disease events and contacts; line_number, procedure_no /
    complication_no and pathology_procedure_no are fields.
    """
    from oncosurg.export import redcap_episodes

    project = redcap_export if flat else redcap_episodes
    if out == "-":
        project.write_dictionary(sys.stdout)
        return
    with open(out, "w", encoding="utf-8", newline="") as handle:
        project.write_dictionary(handle)


@redcap_group.command("repeating")
@click.option("--longitudinal", is_flag=True,
              help="Event-based layout (event_name,form_name,custom_form_label) for longitudinal projects.")
@click.option("--flat", is_flag=True, help=_FLAT_HELP)
def redcap_repeating_cmd(longitudinal: bool, flat: bool = False) -> None:
    """Write REDCap's repeating-instruments setup: every episode instrument repeats (--flat: the complication)."""
    from oncosurg.export import redcap_episodes

    (redcap_export if flat else redcap_episodes).write_repeating_setup(sys.stdout, longitudinal=longitudinal)


@redcap_group.command("events")
@click.option("--list", "as_list", is_flag=True,
              help="The events themselves (Define my events: event_name,arm_num,unique_event_name).")
def redcap_events_cmd(as_list: bool) -> None:
    """Write the instrument-event mapping of a longitudinal project (arm_num,unique_event_name,form).

    Three events on one arm: enrolment (patient, therapy lines, MDT reviews, response assessments),
    surgery (liver procedures, complications, pathology), follow-up (disease events, contacts).
    Each instrument sits in one event, so its instance numbers stay the episodes' numbers.
    """
    from oncosurg.export import redcap_episodes

    (redcap_episodes.write_events if as_list else redcap_episodes.write_event_mapping)(sys.stdout)
