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

from oncosurg.ingest.csv import ParsedFile, ParsedRecord
from oncosurg.rules import X_DUPLICATE_ID, Issue, check_record, parse_record
from oncosurg.schema import COLUMNS, DEFAULT_POSTOP_WINDOW_DAYS


@dataclass(slots=True)
class RawRecord:
    """One patient as read from a file, before validation.

    ``cells`` maps registry columns to text; missing columns count as empty.  ``lines`` points a
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
    every_column: bool = True,
) -> ParsedFile:
    """Validate every raw record as the registry CSV reader does; collect all issues.

    With ``every_column`` (REDCap, FHIR) a column missing from ``cells`` is empty; without it
    (Excel, like the registry CSV) only the columns given are read, so ``--update`` with a partial
    sheet changes only those columns.
    """
    today = today or dt.date.today()
    result = ParsedFile(source=source, sha256=sha256)
    result.issues += list(file_issues)
    seen: dict[tuple[str, str], int] = {}
    for raw in raws:
        result.rows += 1
        cells = {c: raw.cells.get(c, "") for c in COLUMNS} if every_column else dict(raw.cells)
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
        for issue in check_record(record, line=raw.line, postop_window_days=postop_window_days):
            if issue.column in raw.covered:
                continue
            line = raw.lines.get(issue.column or "", issue.line)
            issues.append(dataclasses.replace(issue, line=line))
        record = {c: record[c] for c in COLUMNS if c in record}  # registry order, whatever the grouping
        record.setdefault("centre", None)
        if not issues:
            key = (str(record["centre"] or ""), str(record["patient_id"]))
            if key in seen:
                issues.append(Issue(X_DUPLICATE_ID.code, f"patient_id already used by record {seen[key]}",
                                    "give each patient of a centre one record", raw.line, "patient_id", key[1]))
            else:
                seen[key] = raw.line
        if issues:
            result.issues += [locate(i, raw.where.get(i.column or "", raw.record_where)) for i in issues]
        else:
            record["centre"] = record["centre"] or ""
            result.records.append(ParsedRecord(raw.line, record))
    return result
