"""Shared last step of every non-CSV reader (REDCap, FHIR, Excel): raw cells → validated records.

Each reader turns its format into registry cells (column → text exactly as the registry CSV would
hold it) and hands them here, so values go through the same :func:`~oncosurg.rules.parse_record`
and :func:`~oncosurg.rules.check_record` as the registry CSV, with the same duplicate check, and
come out as the same :class:`~oncosurg.ingest.csv.ParsedFile` of
:class:`~oncosurg.ingest.csv.ParsedRecord`.  Issues keep the registry column and the value; a reader
may point each column at a line of its file (REDCap) or prefix the message with where the value
came from (a FHIR resource and element).

The three interoperability rules below are file-level (``F1xx``) because they describe how a file
is laid out, not a registry value.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from oncosurg.ingest.csv import ParsedFile, ParsedRecord, SeenIds
from oncosurg.rules import Issue, check_record, parse_record
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS


@dataclass(slots=True)
class RawRecord:
    """One patient as read from a file, before validation.

    ``cells`` maps the registry columns the file carries for this record to their text (``""`` =
    present and empty); a column missing from ``cells`` is absent (an update leaves it unchanged,
    see :class:`~oncosurg.ingest.csv.ParsedRecord`).  ``lines`` points a
    column at the line its value came from (default ``line``); ``where`` names, per column, the
    place in the file (e.g. ``Procedure/… performedDateTime``) and ``record_where`` the record
    itself — both are prefixed to the messages.  ``issues`` are problems the reader already found;
    ``covered`` names registry columns they already explain (cross-field rules skip those columns).
    """

    line: int
    cells: dict[str, str]
    lines: dict[str, int] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    record_where: str = ""
    issues: list[Issue] = field(default_factory=list)
    covered: set[str] = field(default_factory=set)


def locate(issue: Issue, where: str) -> Issue:
    """The issue with ``where`` prefixed to its message (no-op when ``where`` is empty)."""
    return dataclasses.replace(issue, message=f"{where}: {issue.message}") if where else issue


def validate_records(
    raws: Iterable[RawRecord],
    *,
    source: str,
    sha256: str,
    centre: str | None = None,
    postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS,
    today: dt.date | None = None,
    file_issues: Iterable[Issue] = (),
    case_sensitive_ids: bool = False,
    unit: str = "record",
) -> ParsedFile:
    """Validate every raw record as the registry CSV reader does; collect all issues.

    Only the columns in each record's ``cells`` are read (and carried): a reader puts ``""`` in a
    column its file carries empty, and leaves out a column its file does not carry.  ``unit`` names
    what ``RawRecord.line`` counts in messages (``line``, ``row``, ``record``).
    """
    today = today or dt.date.today()
    result = ParsedFile(source=source, sha256=sha256)
    result.issues += list(file_issues)
    seen = SeenIds(case_sensitive=case_sensitive_ids, unit=unit)
    for raw in raws:
        result.rows += 1
        cells = dict(raw.cells)
        if centre is not None and not cells.get("centre", "").strip():
            cells["centre"] = centre
        by_line: dict[int, dict[str, str]] = {}
        for name, text in cells.items():
            by_line.setdefault(raw.lines.get(name, raw.line), {})[name] = text
        record: dict[str, object] = {}
        issues: list[Issue] = list(raw.issues)
        for line, group in by_line.items():
            values, found = parse_record(group, line=line, today=today)
            record.update(values)
            issues += found
        failed = {i.column for i in issues if i.column} | raw.covered
        for issue in check_record(record, line=raw.line, postop_window_days=postop_window_days, failed=failed):
            line = raw.lines.get(issue.column or "", issue.line)
            issues.append(dataclasses.replace(issue, line=line))
        if "patient_id" not in failed:
            duplicate = seen.check(raw.line, record.get("centre"), record.get("patient_id"))  # type: ignore[arg-type]
            issues += [duplicate] if duplicate else []
        if issues:
            result.issues += [locate(i, raw.where.get(i.column or "", raw.record_where)) for i in issues]
        else:
            result.records.append(ParsedRecord.of(raw.line, record))
    return result
