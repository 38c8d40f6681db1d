"""Write patients' records as a long registry: a folder or a ``.zip`` of one CSV per table.

The writer streams: it takes records one at a time (ordered by centre, patient_id, as the store
yields them) and appends each patient's rows to the nine files, so memory holds one patient.
Every file gets its header even with no rows.  Values are written canonically — dates ISO
``YYYY-MM-DD``, booleans ``yes``/``no``, whole numbers without a decimal point (``71``, never
``71.0``), ``;``-lists in vocabulary order — and rows are ordered by centre, patient_id and key, so
reading a registry written here and writing it again gives the same bytes
(:func:`oncosurg.ingest.long.read_long` reads it back).  Output is atomic: the files are written
under a temporary name beside the target, then renamed into place; an existing non-empty folder
or an existing file is replaced only with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import TABLES, join_list, split_list
from oncosurg.schema import Field, Kind

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same registry gives the same archive


def cell_text(fld: Field, value: Any) -> str:
    """A typed value as the long registry writes it (empty for ``None``)."""
    if value is None:
        return ""
    kind = fld.kind
    if kind is Kind.BOOL:
        if isinstance(value, str):
            return value
        return "yes" if value else "no"
    if kind is Kind.DATE:
        return value.isoformat() if isinstance(value, dt.date) else str(value)
    if kind is Kind.INTEGER:
        return str(int(value))
    if kind is Kind.NUMBER:
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    if kind is Kind.CODES:
        return join_list(split_list(str(value)), fld.choices)
    if kind is Kind.SEGMENTS:
        return ";".join(sorted(str(value).split(";"), key=int))
    return str(value)


@dataclass(slots=True)
class WrittenRegistry:
    """What :func:`write_long` wrote: where, how many patients, and rows per file."""

    path: Path
    patients: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {spec.file: 0 for spec in TABLES})


def _row_key(key: tuple[str, ...]) -> Any:
    return lambda row: tuple((row.get(k) is None, row.get(k)) for k in key)


def write_long(records: Iterable[PatientRecord], out: str | Path, *, overwrite: bool = False,
               as_zip: bool | None = None) -> WrittenRegistry:
    """Write ``records`` (ordered by centre, patient_id) to the folder or ``.zip`` ``out``.

    ``as_zip`` defaults to whether ``out`` ends in ``.zip``.  Raises :class:`FileExistsError` when
    ``out`` is an existing file or non-empty folder and ``overwrite`` is false, and
    :class:`ValueError` (writing nothing) when the records are out of order or a patient repeats.
    """
    out = Path(out)
    as_zip = out.suffix.lower() == ".zip" if as_zip is None else as_zip
    if out.exists() and not overwrite and (out.is_file() or any(out.iterdir()) or as_zip):
        raise FileExistsError(f"{out} exists and is not empty (use overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        written = _write_folder(records, tmp)
        if as_zip:
            packed = tmp / "registry.zip"
            with zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as archive:
                for spec in TABLES:
                    info = zipfile.ZipInfo(spec.file, _ZIP_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    with (tmp / spec.file).open("rb") as src, archive.open(info, "w") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
            _replace(packed, out)
        else:
            _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    written.path = out
    return written


def _write_folder(records: Iterable[PatientRecord], folder: Path) -> WrittenRegistry:
    written = WrittenRegistry(folder)
    with contextlib.ExitStack() as stack:
        writers = []
        for spec in TABLES:
            handle = stack.enter_context((folder / spec.file).open("w", encoding="utf-8", newline=""))
            writer = _Writer(handle)
            writer.writerow(spec.columns)
            fields = [spec.field_by_name[c] for c in spec.columns[2:]]
            writers.append((spec, writer, fields, _row_key(spec.key)))
        previous: tuple[str, str] | None = None
        for record in records:
            key = (record.centre or "", record.patient_id)
            if previous is not None and key <= previous:
                raise ValueError(f"records must come ordered by centre, patient_id without repeats: {key} after "
                                 f"{previous}")
            previous = key
            written.patients += 1
            for spec, writer, fields, order in writers:
                rows = [record.patient] if spec is TABLES[0] else sorted(record.rows(spec.table), key=order)
                for row in rows:
                    writer.writerow([key[0], key[1], *(cell_text(f, row.get(f.name)) for f in fields)])
                written.rows[spec.file] += len(rows)
    return written


class _Writer:
    """CSV rows ending in ``\n``; a row holding a carriage return is written fully quoted (Python 3.11's
    minimal quoting only quotes the line terminator's characters, and a bare ``\r`` ends a line too)."""

    def __init__(self, handle: Any) -> None:
        self.minimal = csv.writer(handle, lineterminator="\n")
        self.quoted = csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, cells: Iterable[str]) -> None:
        cells = list(cells)
        (self.quoted if any("\r" in c for c in cells) else self.minimal).writerow(cells)


def _replace(new: Path, out: Path) -> None:
    """Move ``new`` to ``out`` (an existing ``out`` is set aside first and removed after)."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    os.replace(out, old)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old) if old.is_dir() else old.unlink()
