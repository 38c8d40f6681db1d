"""Assembling one synthetic patient's pathway, episode by episode, into a :class:`PatientRecord`.

:class:`Draw` is the random source of the episode generators.  It uses only
:meth:`random.Random.random`, whose stream Python guarantees for a given integer seed, so a seed gives
the same episodes on every Python version.  :class:`Pathway` collects the episodes of one patient in
any order and numbers them when the record is made: by date (a registry typed in order), or in a
shuffled "entry order" (REDCap instances are numbered as they are entered; dates, not numbers,
order episodes).
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from collections.abc import Sequence
from typing import Any, TypeVar

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import Table

T = TypeVar("T")
Row = dict[str, Any]


class Draw:
    """Seeded random draws built on ``random()`` alone (a stream Python keeps stable across versions)."""

    __slots__ = ("random",)

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed).random

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def integer(self, low: int, high: int) -> int:
        """A whole number in ``low..high`` inclusive (``low`` when ``high < low``)."""
        if high <= low:
            return low
        return low + int(self.random() * (high - low + 1))

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, options: Sequence[T]) -> T:
        return options[int(self.random() * len(options))]

    def weighted(self, options: Sequence[tuple[T, float]]) -> T:
        """One option, with probability proportional to its weight."""
        cached = _TOTALS.get(id(options))
        if cached is not None and cached[0] is options:
            total = cached[1]
        else:
            total = sum(w for _, w in options)
            if isinstance(options, tuple) and len(_TOTALS) < 256:  # constant option tables: remember their total
                _TOTALS[id(options)] = (options, total)
        u = self.random() * total
        for option, weight in options:
            u -= weight
            if u < 0:
                return option
        return options[-1][0]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        """A permutation of ``items`` (Fisher-Yates on ``random()``)."""
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = int(self.random() * (i + 1))
            out[i], out[j] = out[j], out[i]
        return out


_TOTALS: dict[int, tuple[Any, float]] = {}


@functools.lru_cache(maxsize=4096)
def days(n: int) -> dt.timedelta:
    """``n`` days (cached: the generators use a few hundred distinct durations)."""
    return dt.timedelta(days=n)


class Pathway:
    """The episodes of one patient, collected in any order, numbered by :meth:`record`.

    Reviews, assessments, events and contacts keep one row per date (a second row on a date already
    taken is not added and the call returns ``False``), so no two rows can look like a duplicate
    entry (rule E603).
    """

    def __init__(self, centre: str, patient: Row) -> None:
        self.centre = centre
        self.patient = patient
        self.lines: list[Row] = []
        self.procedures: list[Row] = []
        self.complications: list[tuple[int, Row]] = []  # (index into procedures, row)
        self.pathologies: list[tuple[int, Row]] = []
        self.dated: dict[Table, list[Row]] = {Table.MDT_REVIEW: [], Table.RESPONSE_ASSESSMENT: [],
                                              Table.DISEASE_EVENT: [], Table.CONTACT: []}
        self._dates: dict[Table, set[dt.date]] = {t: set() for t in self.dated}

    # -- adding episodes -----------------------------------------------------------------------
    def line(self, row: Row) -> Row:
        """Add a therapy line (the row carries its clinical ``line_number``)."""
        self.lines.append(row)
        return row

    def procedure(self, row: Row) -> int:
        """Add a liver procedure; returns its handle for complications and pathology."""
        self.procedures.append(row)
        return len(self.procedures) - 1

    def complication(self, procedure: int, row: Row) -> None:
        self.complications.append((procedure, row))

    def pathology(self, procedure: int, row: Row) -> None:
        self.pathologies.append((procedure, row))

    def _dated(self, table: Table, column: str, row: Row) -> bool:
        date = row[column]
        if date in self._dates[table]:
            return False
        self._dates[table].add(date)
        self.dated[table].append(row)
        return True

    def review(self, row: Row) -> bool:
        return self._dated(Table.MDT_REVIEW, "review_date", row)

    def assessment(self, row: Row) -> bool:
        return self._dated(Table.RESPONSE_ASSESSMENT, "assessment_date", row)

    def event(self, row: Row) -> bool:
        return self._dated(Table.DISEASE_EVENT, "event_date", row)

    def contact(self, row: Row) -> bool:
        return self._dated(Table.CONTACT, "contact_date", row)

    def has_contact_on(self, date: dt.date) -> bool:
        return date in self._dates[Table.CONTACT]

    def count(self) -> int:
        """Episode rows so far (every table but the patient)."""
        return (len(self.lines) + len(self.procedures) + len(self.complications) + len(self.pathologies)
                + sum(len(rows) for rows in self.dated.values()))

    # -- the record ----------------------------------------------------------------------------
    def record(self, entry_order: Draw | None = None) -> PatientRecord:
        """The patient's record; instance numbers follow the dates, or a shuffled entry order."""

        def numbers(count: int) -> list[int]:
            ordinal = list(range(1, count + 1))
            return ordinal if entry_order is None else entry_order.shuffled(ordinal)

        episodes: dict[Table, list[Row]] = {}
        if self.lines:
            episodes[Table.THERAPY_LINE] = sorted(self.lines, key=lambda r: r["line_number"])
        for table, column, key in ((Table.MDT_REVIEW, "review_date", "review_no"),
                                   (Table.RESPONSE_ASSESSMENT, "assessment_date", "assessment_no")):
            rows = sorted(self.dated[table], key=lambda r, c=column: r[c])
            if rows:
                episodes[table] = [{key: n, **r} for n, r in zip(numbers(len(rows)), rows, strict=True)]
        if self.procedures:
            order = sorted(range(len(self.procedures)), key=lambda i: (self.procedures[i]["procedure_date"], i))
            number = dict(zip(order, numbers(len(order)), strict=True))
            episodes[Table.LIVER_PROCEDURE] = [{"procedure_no": number[i], **self.procedures[i]} for i in order]
            if self.complications:
                rows = []
                for i in order:
                    own = [r for p, r in self.complications if p == i]
                    own.sort(key=lambda r: r.get("complication_date") or dt.date.min)
                    rows += [{"procedure_no": number[i], "complication_no": n, **r}
                             for n, r in zip(numbers(len(own)), own, strict=True)]
                episodes[Table.COMPLICATION] = rows
            if self.pathologies:
                episodes[Table.PATHOLOGY] = sorted(({"procedure_no": number[p], **r} for p, r in self.pathologies),
                                                   key=lambda r: r["procedure_no"])
        for table, column, key in ((Table.DISEASE_EVENT, "event_date", "event_no"),
                                   (Table.CONTACT, "contact_date", "contact_no")):
            rows = sorted(self.dated[table], key=lambda r, c=column: r[c])
            if rows:
                episodes[table] = [{key: n, **r} for n, r in zip(numbers(len(rows)), rows, strict=True)]
        return PatientRecord(self.centre, self.patient, episodes)
