"""The long registry format: a folder or a ``.zip`` of CSV files, one per table of the episode model.

``patients.csv`` holds one row per patient; ``therapy_lines.csv``, ``liver_procedures.csv``,
``complications.csv``… one row per episode, keyed by ``centre`` + ``patient_id`` + the episode's key
(:mod:`oncosurg.pathway.model` declares files, columns and keys; ``docs/registry-long.md`` describes
them).  :func:`read_long` validates everything and reports every issue at once, each naming the file
inside the folder or archive, the line (the header is line 1), the column, the value, the rule and
the fix; :meth:`LongRegistry.records` then yields one :class:`~oncosurg.pathway.flat.PatientRecord`
per patient, ordered by centre and patient_id, saying which files and columns the source carried.

Memory stays bounded whatever the size of the registry: each CSV is streamed once (1 MiB chunks)
into a temporary on-disk SQLite staging table (raw cells, file and line), which is then read back
ordered by centre, patient_id, file and line, so one patient's rows are in memory at a time.

Updates: a child row may name a patient, a procedure or a therapy line that is only in the store.
Pass ``stored`` (stored records by (centre, patient_id), asked for a batch of patients at a time):
each patient of the file is then laid over its stored record (:func:`oncosurg.pathway.merge.overlay`:
absent files and columns unchanged, listed keys replaced, new keys added) and the rules across
episodes are checked on the result.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import itertools
import re
import shutil
import sqlite3
import stat
import tempfile
import weakref
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import get_close_matches
from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import IO, Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.merge import overlay
from oncosurg.pathway.model import PATIENT, TABLES, EpisodeTable, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.rules import (
    E_ORPHAN,
    F_ARCHIVE,
    F_BINARY,
    F_EMPTY,
    F_ENCODING,
    F_LONG_FILES,
    F_ROW_WIDTH,
    F_SYNTAX,
    H_BLANK,
    H_DUPLICATE,
    H_MISSING,
    H_UNKNOWN,
    V_FORMULA,
    V_LENGTH,
    V_REQUIRED,
    X_DUPLICATE_ID,
    Issue,
    parse_cell,
)
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS, FIELD_BY_NAME, Kind

#: Stored records of the patients asked for (an update's view of the store); keys (centre, patient_id).
StoredLookup = Callable[[Sequence[tuple[str, str]]], Mapping[tuple[str, str], PatientRecord]]

FILES = {spec.file: spec for spec in TABLES}
_TAB = {spec.table: i for i, spec in enumerate(TABLES)}
_CHUNK = 1 << 20  # bytes read at a time
_FIELD_LIMIT = 16 * 1024 * 1024  # largest CSV cell read at all (longer: F104)
_BATCH_ROWS, _BATCH_CHARS = 5000, 8 << 20
_STORED_BATCH = 500  # patients per call of the stored-record lookup
_CACHE = 50_000  # parsed values remembered per column
#: Archive limits: members, unpacked bytes (each member and in all) and compression ratio.
MAX_MEMBERS = 64
MAX_UNPACKED = 8 << 30
MAX_RATIO = 200
_CENTRE = FIELD_BY_NAME["centre"]


def _key_getter(key: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    get = itemgetter(*key)
    return (lambda row: (get(row),)) if len(key) == 1 else get  # type: ignore[return-value]


#: A row's key tuple, per table (rows of a valid registry have no empty key).
_KEY_OF = {spec.table: _key_getter(spec.key) for spec in TABLES}
_ID = PATIENT.field_by_name["patient_id"]
_MISS = object()


def _issue(rule: Any, message: str, hint: str, file: str | None, line: int | None = None,
           column: str | None = None, value: str | None = None) -> Issue:
    if value is not None and len(value) > 200:
        value = value[:200] + "…"
    return Issue(rule.code, message, hint, line, column, value, file)


class _Issues:
    """Every issue found, the first ``limit`` kept (the count is always exact)."""

    def __init__(self, limit: int | None) -> None:
        self.kept: list[Issue] = []
        self.count = 0
        self.limit = limit

    def add(self, issue: Issue) -> None:
        self.count += 1
        if self.limit is None or len(self.kept) < self.limit:
            self.kept.append(issue)


# ------------------------------------------------------------------------------------------ members

@dataclass(slots=True)
class _Member:
    """One CSV of the registry, however it is stored (a file of the folder, a member of the zip)."""

    file: str
    open: Callable[[], IO[bytes]]


def _guess(name: str) -> str:
    near = get_close_matches(name.lower(), list(FILES), n=1, cutoff=0.6)
    return f"did you mean '{near[0]}'?" if near else "the files are " + ", ".join(FILES)


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in ("__MACOSX", "Thumbs.db", "desktop.ini")


def _folder_members(folder: Path, issues: _Issues) -> list[_Member]:
    members: list[_Member] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        name = entry.name
        if _ignored(name):
            continue
        if entry.is_symlink():
            issues.add(_issue(F_LONG_FILES, f"'{name}' is a symbolic link", "copy the file itself into the folder",
                              name))
        elif entry.is_dir():
            issues.add(_issue(F_LONG_FILES, f"'{name}' is a sub-folder: a long registry is one flat folder",
                              "move its CSV files up into the registry folder (or remove it)", name))
        elif name not in FILES:
            issues.add(_issue(F_LONG_FILES, f"'{name}' is not a file of the long registry", _guess(name), name))
        elif not stat.S_ISREG(entry.stat().st_mode):
            issues.add(_issue(F_LONG_FILES, f"'{name}' is not a regular file", "copy the CSV file itself", name))
        else:
            members.append(_Member(name, lambda p=entry: p.open("rb")))
    return members


def _zip_members(archive: zipfile.ZipFile, issues: _Issues) -> list[_Member] | None:
    """The registry's members of a zip (``None`` when the whole archive is refused)."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        issues.add(_issue(F_ARCHIVE, f"the archive holds {len(infos)} members (at most {MAX_MEMBERS})",
                          "zip only the registry's CSV files", None))
        return None
    wanted: list[tuple[PurePosixPath, zipfile.ZipInfo]] = []
    total = 0
    for info in infos:
        raw = info.filename
        path = PurePosixPath(raw)
        if "\\" in raw or raw.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            issues.add(_issue(F_ARCHIVE, f"member path '{raw}' leaves the archive (absolute or with '..')",
                              "zip the registry folder itself, with relative paths", raw))
            continue
        if info.is_dir() or any(_ignored(p) for p in path.parts):
            continue
        if info.flag_bits & 0x1:
            issues.add(_issue(F_ARCHIVE, f"'{raw}' is encrypted", "zip the files without a password", raw))
            continue
        total += info.file_size
        if info.file_size > MAX_UNPACKED or total > MAX_UNPACKED:
            issues.add(_issue(F_ARCHIVE, f"the archive unpacks to more than {MAX_UNPACKED >> 30} GiB",
                              "split the registry, or check that this is the file you meant", raw))
            return None
        if info.file_size > (1 << 20) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            issues.add(_issue(F_ARCHIVE, f"'{raw}' unpacks {info.file_size // max(info.compress_size, 1)} times its "
                              f"packed size (at most {MAX_RATIO}): a zip bomb, not a registry",
                              "zip the registry's CSV files with an ordinary archiver", raw))
            continue
        wanted.append((path, info))
    tops = {p.parts[0] for p, _ in wanted if len(p.parts) > 1}
    prefix = next(iter(tops)) if len(tops) == 1 and all(len(p.parts) == 2 for p, _ in wanted) else None
    members: list[_Member] = []
    seen: set[str] = set()
    for path, info in wanted:
        parts = path.parts[1:] if prefix is not None else path.parts
        if len(parts) != 1:
            issues.add(_issue(F_LONG_FILES, f"'{info.filename}' is in a sub-folder of the archive",
                              "zip the registry's CSV files side by side (at the top, or in one folder)",
                              info.filename))
            continue
        name = parts[0]
        if name not in FILES:
            issues.add(_issue(F_LONG_FILES, f"'{info.filename}' is not a file of the long registry", _guess(name),
                              info.filename))
        elif name in seen:
            issues.add(_issue(F_LONG_FILES, f"'{name}' appears twice in the archive", "keep one copy", name))
        else:
            seen.add(name)
            members.append(_Member(name, lambda i=info: archive.open(i)))
    return members


# ------------------------------------------------------------------------------------------ reading one CSV

_EOL = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)")


def _text_lines(stream: IO[bytes], file: str, issues: _Issues, digest: Any, state: dict[str, bool]
                ) -> Iterator[str]:
    """The lines of a UTF-8 CSV stream (endings kept), stopping at the first NUL or invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    newlines = 0  # newlines in the bytes before the current chunk
    pending = ""
    first = True
    while True:
        chunk = stream.read(_CHUNK)
        digest.update(chunk)
        if first:
            first = False
            chunk = chunk.removeprefix(codecs.BOM_UTF8)
        if b"\x00" in chunk:
            line = newlines + chunk[: chunk.index(b"\x00")].count(b"\n") + 1
            issues.add(_issue(F_BINARY, "the file contains NUL bytes: it is binary, not CSV text",
                              "export the table as a UTF-8 CSV file", file, line))
            state["broken"] = True
            return
        buffered = decoder.getstate()[0]
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            data = buffered + chunk
            line = newlines + data[: exc.start].count(b"\n") + 1
            start = data.rfind(b"\n", 0, exc.start) + 1
            issues.add(_issue(
                F_ENCODING, f"byte 0x{data[exc.start]:02x} at byte {exc.start - start + 1} of the line is not valid "
                "UTF-8 (expected encoding: UTF-8)",
                "re-save the file as UTF-8 (in Excel: 'CSV UTF-8 (comma delimited)')", file, line))
            state["broken"] = True
            return
        newlines += chunk.count(b"\n")
        if not chunk:
            if pending:
                yield pending
            return
        text = pending + text
        if "\r" not in text:
            lines = text.split("\n")
            pending = lines.pop()
            for ln in lines:
                yield ln + "\n"
            continue
        end = 0
        for match in _EOL.finditer(text):
            if match.end() == len(text) and text.endswith("\r"):
                break  # a "\r\n" may be split across chunks
            end = match.end()
            yield match.group()
        pending = text[end:]


def _check_header(header: list[str], spec: EpisodeTable, file: str, issues: _Issues, line: int
                  ) -> dict[str, int] | None:
    columns: dict[str, int] = {}
    known = spec.columns
    ok = True
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        sep = next(s for s in (";", "\t", "|") if s in header[0])
        issues.add(_issue(F_SYNTAX, f"the header is one cell holding {sep!r}: the file is not comma-separated",
                          "save as comma-separated values (in Excel: 'CSV UTF-8')", file, line))
        return None
    for i, raw in enumerate(header):
        name = raw.strip()
        if len(name) > 64:
            issues.add(_issue(V_LENGTH, f"header cell {i + 1} is {len(name)} characters long",
                              f"use the column names of {file}", file, line, None, name))
            ok = False
        elif not name:
            issues.add(_issue(H_BLANK, f"header cell {i + 1} is empty", "name the column or delete it", file, line))
            ok = False
        elif name.startswith(("=", "+", "@", "-")):
            issues.add(_issue(V_FORMULA, "header cell looks like a spreadsheet formula",
                              f"use the column names of {file}", file, line, name, name))
            ok = False
        elif name in columns:
            issues.add(_issue(H_DUPLICATE, f"column '{name}' appears twice", "keep one of the two columns",
                              file, line, name))
            ok = False
        elif name not in known:
            elsewhere = [s.file for s in TABLES if name in s.columns]
            guess = get_close_matches(name.lower(), known, n=1)
            hint = (f"did you mean '{guess[0]}'?" if guess else
                    f"'{name}' is a column of {elsewhere[0]}" if elsewhere else
                    f"remove it or rename it to a column of {file}")
            issues.add(_issue(H_UNKNOWN, f"unknown column '{name}' in {file}", hint, file, line, name))
            ok = False
        else:
            columns[name] = i
    required = ("patient_id", *spec.key, *(f.name for f in spec.fields if f.required == "yes"))
    for name in dict.fromkeys(required):
        if name not in columns and not any(i.column == name and i.file == file for i in issues.kept):
            issues.add(_issue(H_MISSING, f"required column '{name}' is missing from {file}",
                              f"add a '{name}' column", file, line, name))
            ok = False
    return columns if ok else None


@dataclass(slots=True)
class _Plan:
    """How a table's staged cells map to its fields (in the order of ``names``), with a cache per field
    of the values already parsed (most cells repeat: dates, codes, small numbers)."""

    spec: EpisodeTable
    table: Table
    file: str
    patient: bool
    names: tuple[str, ...]
    fields: tuple[Any, ...]
    caches: tuple[dict[str, Any], ...]
    misses: tuple[object, ...]
    template: dict[str, Any]
    complete: bool  # every field of the table is a column of the file


#: The staging table: a row's cells are joined by NUL, which no accepted file contains (F103).
_STAGE = "CREATE TABLE stage (centre TEXT, patient_id TEXT, tab INTEGER, line INTEGER, bad TEXT, cells TEXT)"
_INSERT = "INSERT INTO stage VALUES (?, ?, ?, ?, ?, ?)"
_SEP = "\x00"


def _stage_file(db: sqlite3.Connection, member: _Member, spec: EpisodeTable, *, centre: str | None,
                issues: _Issues, digest: Any) -> tuple[frozenset[str] | None, int, bool]:
    """Stream one CSV into the staging table; returns (columns carried, data rows, whether it read cleanly)."""
    file = member.file
    state = {"broken": False}
    tab = _TAB[spec.table]
    try:
        stream = member.open()
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        issues.add(_issue(F_ARCHIVE, f"cannot read {file} ({type(exc).__name__}: {exc})"[:300],
                          "re-create the archive or copy the file again", file))
        return None, 0, False
    rows = 0
    try:
        with stream:
            reader = csv.reader(_text_lines(stream, file, issues, digest, state), strict=True)
            header: list[str] | None = None
            line = 0
            try:
                for row in reader:
                    if any(c.strip() for c in row):
                        header = row
                        line = reader.line_num
                        break
            except csv.Error as exc:
                issues.add(_issue(F_SYNTAX, f"the header row cannot be read as CSV ({exc})",
                                  "save the file as comma-separated values", file, reader.line_num))
                return None, 0, False
            if header is None:
                if not state["broken"]:
                    issues.add(_issue(F_EMPTY, "the file is empty",
                                      "write the header row (even with no data rows): " + ",".join(spec.columns),
                                      file))
                return None, 0, False
            columns = _check_header(header, spec, file, issues, line)
            if columns is None:
                return None, 0, False
            names = [f.name for f in spec.fields if f.name in columns and f.name != "patient_id"]
            picks = [columns[n] for n in names]
            limits = [(columns[f.name], f) for f in spec.fields if f.name in columns]
            if "centre" in columns:
                limits.append((columns["centre"], _CENTRE))
            ci, pi, width = columns.get("centre"), columns["patient_id"], len(header)
            batch: list[tuple[Any, ...]] = []
            chars = 0
            try:
                for row in reader:
                    line = reader.line_num
                    if len(row) != width:
                        if not "".join(row).strip():
                            continue
                        issues.add(_issue(F_ROW_WIDTH, f"row has {len(row)} cells, the header has {width}",
                                          "check for an unquoted comma or a missing cell", file, line))
                        rows += 1
                        state["broken"] = True  # a row left out: its patient would look incomplete
                        continue
                    longest = max(map(len, row), default=0)
                    if not longest or not "".join(row).strip():
                        continue
                    rows += 1
                    bad = None
                    if longest > 64:
                        long = [f.name for i, f in limits if len(row[i]) > max(f.max_length, 64)]
                        for name in long:
                            f = spec.field_by_name.get(name, _CENTRE)
                            value = row[columns[name]]
                            issues.add(_issue(V_LENGTH, f"value is {len(value)} characters long; at most "
                                              f"{f.max_length} allowed",
                                              f"shorten it to {f.max_length} characters or fewer", file, line,
                                              name, value))
                        if long:
                            bad = ";".join(long)
                            cut = {columns[n] for n in long}
                            row = ["" if i in cut else c for i, c in enumerate(row)]
                            if "patient_id" in long or "centre" in long:
                                state["broken"] = True  # the row's patient is unknown: no rule across rows
                                continue
                    c = row[ci] if ci is not None else ""
                    if not c.strip():
                        c = centre or ""
                    joined = _SEP.join([row[i] for i in picks])
                    batch.append((c, row[pi], tab, line, bad, joined))
                    chars += len(joined)
                    if len(batch) >= _BATCH_ROWS or chars > _BATCH_CHARS:
                        db.executemany(_INSERT, batch)
                        batch, chars = [], 0
            except csv.Error as exc:
                issues.add(_issue(F_SYNTAX, f"CSV syntax error ({exc})",
                                  "close the quoted cell or remove the stray quote", file, line + 1))
                state["broken"] = True
            if batch:
                db.executemany(_INSERT, batch)
            return frozenset(columns), rows, not state["broken"]
    except (OSError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        issues.add(_issue(F_ARCHIVE, f"cannot read {file} ({type(exc).__name__}: {exc})"[:300],
                          "re-create the archive or copy the file again", file))
        return None, rows, False


# ------------------------------------------------------------------------------------------ the registry

@dataclass(slots=True, weakref_slot=True)
class LongRegistry:
    """A read long registry: ``issues`` (refuse it if any) and, once valid, :meth:`records`.

    Holds an on-disk staging database until :meth:`close` (or the end of a ``with`` block).
    ``error_count`` is exact even when only the first ``max_errors`` issues are kept.
    """

    source: str
    sha256: str = ""
    files: dict[str, frozenset[str]] = field(default_factory=dict)  # file → columns carried
    rows: int = 0
    patients: int = 0
    issues: list[Issue] = field(default_factory=list)
    error_count: int = 0
    _db: sqlite3.Connection | None = None
    _plans: dict[int, _Plan] = field(default_factory=dict)
    _today: dt.date = dt.date.min
    _cleanup: Any = None

    @property
    def ok(self) -> bool:
        return self.error_count == 0

    def __enter__(self) -> LongRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Delete the staging database."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._cleanup is not None:
            self._cleanup()

    def _carried(self, with_patient: bool) -> dict[Table, frozenset[str]]:
        out = {FILES[f].table: cols for f, cols in self.files.items()}
        if not with_patient:
            out.pop(Table.PATIENT, None)
        return out

    def records(self) -> Iterator[PatientRecord]:
        """One record per patient (ordered by centre, patient_id), rows ordered by key.

        Rows hold every field of their table (``None`` when empty or not carried); ``carried`` says
        which files and columns were present (absent = unchanged on update; present and empty = clear).
        Only meaningful for a registry without issues: values that failed their check are ``None``.
        """
        for (centre, patient_id), staged in self._patients():
            built = self._build(centre, patient_id, staged, None)
            record = built.record
            for table, rows in record.episodes.items():
                rows.sort(key=_KEY_OF[table])
            record.where = {(table, key): loc for (table, key), loc in built.keyed_where().items()}
            yield record

    # -- internals --------------------------------------------------------------------------------

    def _patients(self) -> Iterator[tuple[tuple[str, str], list[tuple[Any, ...]]]]:
        assert self._db is not None, "the registry is closed"
        cursor = self._db.execute("SELECT * FROM stage ORDER BY centre, patient_id, tab, line")
        for key, group in itertools.groupby(cursor, key=itemgetter(0, 1)):
            yield key, list(group)

    def _build(self, centre: str, patient_id: str, staged: list[tuple[Any, ...]], sink: _Issues | None) -> _Built:
        built = _Built(PatientRecord(centre, {}))
        episodes = built.record.episodes
        where = built.where
        plans = self._plans
        for srow in staged:
            _, _, tab, line, bad, joined = srow
            plan = plans[tab]
            file = plan.file
            cells = joined.split(_SEP) if plan.names else []
            values = list(map(dict.get, plan.caches, cells, plan.misses))
            if _MISS in values or bad:
                skip = bad.split(";") if bad else ()
                for name in skip:
                    built.failed.append((plan.table, name, line))
                for i, value in enumerate(values):
                    if value is _MISS:
                        values[i] = self._convert(plan, i, cells[i], file, line, skip, built, sink)
            if plan.complete:
                row = dict(zip(plan.names, values, strict=False))  # split() gives one cell per name
            else:
                row = dict(plan.template)
                row.update(zip(plan.names, values, strict=False))
            if plan.patient:
                row["patient_id"] = patient_id
                if built.patient_line is None:
                    built.record.patient = row
                    built.patient_line = line
                    built.where[id(row)] = (file, line)
                elif sink is not None:
                    sink.add(_issue(X_DUPLICATE_ID, f"patient_id already used on line {built.patient_line}",
                                    "give each patient of a centre one row", file, line, "patient_id", patient_id))
                continue
            rows = episodes.get(plan.table)
            if rows is None:
                rows = episodes[plan.table] = []
            rows.append(row)
            where[id(row)] = (file, line)
        if built.patient_line is None:
            built.record.patient = {"patient_id": patient_id}
        built.record.carried = self._carried(built.patient_line is not None)
        return built

    def _convert(self, plan: _Plan, i: int, raw: str, file: str, line: int, skip: Sequence[str], built: _Built,
                 sink: _Issues | None) -> Any:
        """Parse one cell not met before (remembering its value); report it to ``sink`` when it fails."""
        fld, cache = plan.fields[i], plan.caches[i]
        name = fld.name
        text = raw if fld.kind is Kind.TEXT else raw.strip()
        if not text.strip():
            if fld.required != "yes":
                if len(cache) < _CACHE:
                    cache[raw] = None
            elif name not in skip:
                built.failed.append((plan.spec.table, name, line))
                if sink is not None:
                    sink.add(_issue(V_REQUIRED, "required value is empty", f"fill in {fld.describe_type()}",
                                    file, line, name, raw))
            return None
        value, problem = parse_cell(fld, text, line=line, today=self._today)
        if problem is not None:
            built.failed.append((plan.spec.table, name, line))
            if sink is not None:
                sink.add(dataclasses.replace(problem, file=file))
            return None
        if len(cache) < _CACHE:
            cache[raw] = value
        return value


@dataclass(slots=True)
class _Built:
    record: PatientRecord
    where: dict[int, tuple[str | None, int | None]] = field(default_factory=dict)
    failed: list[tuple[Table, str, int | None]] = field(default_factory=list)
    patient_line: int | None = None

    def locate(self, table: Table, row: Mapping[str, Any]) -> tuple[str | None, int | None]:
        return self.where.get(id(row), (None, None))

    def keyed_where(self) -> dict[tuple[Table, tuple[Any, ...]], tuple[str | None, int | None]]:
        out: dict[tuple[Table, tuple[Any, ...]], tuple[str | None, int | None]] = {}
        record = self.record
        if self.patient_line is not None:
            out[(Table.PATIENT, (record.patient_id,))] = (PATIENT.file, self.patient_line)
        for table, rows in record.episodes.items():
            key_of = _KEY_OF[table]
            for row in rows:
                out.setdefault((table, key_of(row)), self.where[id(row)])
        return out


def _plans(files: Mapping[str, frozenset[str]]) -> dict[int, _Plan]:
    plans: dict[int, _Plan] = {}
    for file, columns in files.items():
        spec = FILES[file]
        fields = tuple(f for f in spec.fields if f.name in columns and f.name != "patient_id")
        plans[_TAB[spec.table]] = _Plan(spec, spec.table, spec.file, spec.table is Table.PATIENT,
                                        tuple(f.name for f in fields), fields, tuple({} for _ in fields),
                                        (_MISS,) * len(fields), dict.fromkeys(f.name for f in spec.fields),
                                        all(f.name in columns for f in spec.fields))
    return plans


def read_long(
    path: str | Path,
    *,
    centre: str | None = None,
    today: dt.date | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    max_errors: int | None = 10_000,
    stored: StoredLookup | None = None,
    workdir: str | Path | None = None,
) -> LongRegistry:
    """Read and validate a long registry: a folder or a ``.zip`` of the model's CSV files.

    ``centre`` fills empty ``centre`` cells (and the column when absent); ``today`` refuses later
    dates (default: the current date); ``max_errors`` bounds the issues kept (``error_count`` counts
    them all); ``stored`` looks up stored patients for an update (see the module docstring);
    ``workdir`` is where the staging database goes (default: the system's temporary folder).
    Raises :class:`FileNotFoundError` when ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such folder or file")
    kw = dict(centre=centre, today=today, postop_window_days=postop_window_days, max_errors=max_errors,
              stored=stored, workdir=workdir)
    if path.is_dir():
        issues = _Issues(max_errors)
        members = _folder_members(path, issues)
        return _read(str(path), members, issues, **kw)  # type: ignore[arg-type]
    with path.open("rb") as handle:
        return _read_zip(handle, str(path), **kw)  # type: ignore[arg-type]


def parse_long(data: bytes, *, source: str = "<input>", **kw: Any) -> LongRegistry:
    """Validate the bytes of a zipped long registry (an upload); keywords as :func:`read_long`."""
    return _read_zip(io.BytesIO(data), source, **kw)


def _read_zip(handle: IO[bytes], source: str, *, max_errors: int | None = 10_000, **kw: Any) -> LongRegistry:
    issues = _Issues(max_errors)
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        issues.add(_issue(F_ARCHIVE, f"not a folder or a .zip archive ({type(exc).__name__}: {exc})"[:300],
                          "give the folder of CSV files, or a .zip of them", None))
        return _read(source, [], issues, max_errors=max_errors, layout_only=True, **kw)
    with archive:
        members = _zip_members(archive, issues)
        return _read(source, members or [], issues, max_errors=max_errors, layout_only=members is None, **kw)


def _read(source: str, members: list[_Member], issues: _Issues, *, centre: str | None = None,
          today: dt.date | None = None, postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
          max_errors: int | None = 10_000, stored: StoredLookup | None = None, workdir: str | Path | None = None,
          layout_only: bool = False) -> LongRegistry:
    result = LongRegistry(source)
    result._today = today or dt.date.today()
    if not layout_only and not any(m.file == PATIENT.file for m in members):
        issues.add(_issue(F_LONG_FILES, "patients.csv is missing: every long registry has one",
                          "add patients.csv (one row per patient: " + ",".join(PATIENT.columns) + ")",
                          PATIENT.file))
    tmp = tempfile.mkdtemp(prefix="oncosurg-long-", dir=workdir)
    result._cleanup = weakref.finalize(result, shutil.rmtree, tmp, True)
    db = sqlite3.connect(Path(tmp) / "stage.sqlite3", check_same_thread=False)  # used by one caller at a time
    result._db = db
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "temp_store=FILE", "cache_size=-65536"):
        db.execute(f"PRAGMA {pragma}")
    db.execute(_STAGE)
    csv.field_size_limit(_FIELD_LIMIT)
    clean = issues.count == 0
    digests = []
    for member in sorted(members, key=lambda m: _TAB[FILES[m.file].table]):
        digest = hashlib.sha256()
        columns, rows, ok = _stage_file(db, member, FILES[member.file], centre=centre, issues=issues, digest=digest)
        digests.append(f"{member.file} {digest.hexdigest()}\n")
        result.rows += rows
        clean = clean and ok and columns is not None
        if columns is not None:
            result.files[member.file] = columns
    result.sha256 = hashlib.sha256("".join(digests).encode()).hexdigest()
    db.execute("CREATE INDEX stage_key ON stage (centre, patient_id, tab, line)")
    result._plans = _plans(result.files)
    _validate(result, issues, cross=clean, stored=stored, postop_window_days=postop_window_days)
    order = {spec.file: i for i, spec in enumerate(TABLES)}
    result.issues = sorted(issues.kept, key=lambda i: (order.get(i.file or "", -1), i.line or 0))
    result.error_count = issues.count
    return result


def _validate(result: LongRegistry, issues: _Issues, *, cross: bool, stored: StoredLookup | None,
              postop_window_days: int) -> None:
    """Single-value checks of every staged row; with ``cross``, the rules across files and episodes."""
    batch: list[_Built] = []

    def flush() -> None:
        keys = [(b.record.centre, b.record.patient_id) for b in batch]
        found = stored(keys) if stored is not None else {}
        for built, key in zip(batch, keys, strict=True):
            _cross(built, found.get(key), issues, update=stored is not None, postop_window_days=postop_window_days)
        batch.clear()

    for (centre, patient_id), staged in result._patients():
        result.patients += 1
        id_ok = True
        first = staged[0]
        for fld, value in ((_CENTRE, centre), (_ID, patient_id)):
            if not value.strip():
                if fld is _ID:
                    issues.add(_issue(V_REQUIRED, "required value is empty", f"fill in {fld.describe_type()}",
                                      TABLES[first[2]].file, first[3], fld.name, value))
                    id_ok = False
                continue
            _, problem = parse_cell(fld, value, line=first[3], today=result._today)
            if problem is not None:
                issues.add(dataclasses.replace(problem, file=TABLES[first[2]].file))
                id_ok = False
        built = result._build(centre, patient_id, staged, issues)
        if cross and id_ok:
            batch.append(built)
            if len(batch) >= _STORED_BATCH:
                flush()
    if batch:
        flush()


def _cross(built: _Built, stored: PatientRecord | None, issues: _Issues, *, update: bool,
           postop_window_days: int) -> None:
    record = built.record
    if built.patient_line is None and stored is None:
        for table, rows in record.episodes.items():
            for row in rows:
                file, line = built.locate(table, row)
                issues.add(_issue(E_ORPHAN, f"patient {record.patient_id} of centre '{record.centre}' is not in "
                                  "patients.csv" + (" nor in the registry" if update else ""),
                                  "add the patient to patients.csv, or correct centre and patient_id",
                                  file, line, "patient_id", record.patient_id))
        return
    checked = record if stored is None else overlay(stored, record)
    for issue in check_patient(checked, where=built.locate, failed=built.failed,
                               postop_window_days=postop_window_days):
        issues.add(issue)
