"""Typed rows of the episode tables, read from a file → checked patient records (REDCap, Excel).

A reader of an episode format turns its layout (REDCap instruments and instances, Excel sheets)
into rows of the model's tables — column → value, key columns included — each with the place it
came from (file or sheet, line or row), and hands them to a :class:`RecordBuilder`, saying which
tables and columns the file carries.  The builder groups the rows by patient and checks what is
across rows, reporting every issue with its place:

* a new patient needs its patient row, and every new row its required columns (``V301``, also when
  the file does not carry the column: an export of selected fields cannot create a row);
* duplicate patients (``X410``, and ``X413`` for ids differing only in case);
* the rules across episodes (:func:`oncosurg.pathway.rules.check_patient`, ``E6xx``) on each patient
  as it will be stored: with a ``stored`` lookup (an update) the file's rows are laid over the
  registered record first (:func:`oncosurg.pathway.update.plan_update`: what the file does not
  carry is unchanged, an episode it does not list is kept), so a child may name a parent that is
  only in the registry.

:class:`EpisodeFile` is the result: the records (``PatientRecord.carried`` says what the file held,
``where`` where each row came from) and the issues; a file with any issue imports nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from oncosurg.ingest.csv import SeenIds
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import PATIENT, TABLE_BY_NAME, Table
from oncosurg.pathway.rules import check_patient
from oncosurg.pathway.update import merged, plan_update
from oncosurg.rules import E_ORPHAN, V_REQUIRED, Issue
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS

#: Registered records of the patients asked for, by (centre, patient_id) (an update's view of the store).
StoredLookup = Callable[[Sequence[tuple[str, str]]], Mapping[tuple[str, str], PatientRecord]]
Where = tuple[str | None, int | None]
_BATCH = 500


@dataclass(slots=True)
class EpisodeFile:
    """What an episode-format reader found: the patients' records and every issue (refuse if any)."""

    source: str
    sha256: str
    rows: int = 0
    records: list[PatientRecord] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    form: str = "episodes"

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def patients(self) -> int:
        return len(self.records)


def key_of(table: Table, row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row.get(k) for k in TABLE_BY_NAME[table].key)


@dataclass(slots=True)
class _Draft:
    centre: str
    patient_id: str
    patient: dict[str, Any] | None = None
    rows: dict[Table, list[dict[str, Any]]] = field(default_factory=dict)
    where: dict[tuple[Table, tuple[Any, ...]], Where] = field(default_factory=dict)
    failed: list[tuple[Table, str, int | None]] = field(default_factory=list)
    bad_key: bool = False


class RecordBuilder:
    """Collects typed rows by patient and builds the checked records (see the module docstring).

    ``carried`` maps each table the file holds to the columns it holds; ``unit`` names what a line
    counts in messages ("line", "row").
    """

    def __init__(self, carried: Mapping[Table, frozenset[str]], *, case_sensitive_ids: bool = False,
                 unit: str = "line") -> None:
        self.carried = dict(carried)
        self.unit = unit
        self.drafts: dict[tuple[str, str], _Draft] = {}
        self.issues: list[Issue] = []
        self.seen = SeenIds(case_sensitive=case_sensitive_ids, unit=unit)

    def _draft(self, centre: str, patient_id: str) -> _Draft:
        draft = self.drafts.get((centre, patient_id))
        if draft is None:
            draft = self.drafts[(centre, patient_id)] = _Draft(centre, patient_id)
        return draft

    def patient_row(self, centre: str, patient_id: str, values: Mapping[str, Any], where: Where) -> None:
        """The patient's own row (values by model column; ``patient_id`` is added)."""
        duplicate = self.seen.check(where[1] or 0, centre, patient_id)
        if duplicate is not None:
            self.issues.append(_at(duplicate, where))
            return
        draft = self._draft(centre, patient_id)
        draft.patient = {f.name: values.get(f.name) for f in PATIENT.fields} | {"patient_id": patient_id}
        draft.where[(Table.PATIENT, (patient_id,))] = where

    def episode_row(self, centre: str, patient_id: str, table: Table, values: Mapping[str, Any],
                    where: Where) -> None:
        """One episode row (values by model column, key columns included)."""
        spec = TABLE_BY_NAME[table]
        row = {f.name: values.get(f.name) for f in spec.fields}
        draft = self._draft(centre, patient_id)
        draft.rows.setdefault(table, []).append(row)
        draft.where.setdefault((table, key_of(table, row)), where)

    def failed(self, centre: str, patient_id: str, table: Table, column: str, line: int | None, *,
               key: bool = False) -> None:
        """A cell that failed its own check (its value is unknown: no rule compares it)."""
        draft = self._draft(centre, patient_id)
        draft.failed.append((table, column, line))
        draft.bad_key = draft.bad_key or key

    def build(self, *, stored: StoredLookup | None = None,
              postop_window_days: int = DEFAULT_POSTOP_WINDOW_DAYS) -> tuple[list[PatientRecord], list[Issue]]:
        """The records, ordered by centre and patient_id, and every issue found (with the rows' issues)."""
        records: list[PatientRecord] = []
        issues = list(self.issues)
        drafts = [self.drafts[k] for k in sorted(self.drafts)]
        for start in range(0, len(drafts), _BATCH):
            chunk = drafts[start:start + _BATCH]
            found = stored([(d.centre, d.patient_id) for d in chunk]) if stored is not None else {}
            for draft in chunk:
                record = self._record(draft)
                issues += self._check(draft, record, found.get((draft.centre, draft.patient_id)),
                                      update=stored is not None, window=postop_window_days)
                records.append(record)
        return records, issues

    def _record(self, draft: _Draft) -> PatientRecord:
        carried = dict(self.carried)
        if draft.patient is None:
            carried.pop(Table.PATIENT, None)
        episodes = {}
        for table, rows in draft.rows.items():
            episodes[table] = sorted(rows, key=lambda r, t=table: tuple((v is None, v) for v in key_of(t, r)))
        return PatientRecord(draft.centre, draft.patient or {"patient_id": draft.patient_id}, episodes,
                             carried, dict(draft.where))

    def _check(self, draft: _Draft, record: PatientRecord, registered: PatientRecord | None, *, update: bool,
               window: int) -> list[Issue]:
        out: list[Issue] = []
        if draft.patient is None and registered is None:
            where = min(draft.where.values(), key=lambda w: (w[0] or "", w[1] or 0))
            out.append(_at(Issue(E_ORPHAN.code, f"patient {draft.patient_id!r} of centre '{draft.centre}' has no "
                                 "patient row" + (" and is not registered" if update else ""),
                                 "add the patient (with its required values) to the file, or correct the centre "
                                 "and patient_id" + ("" if update else "; a partial export of registered patients "
                                                     "imports with --update"), None, "patient_id", draft.patient_id),
                           where))
            return out
        out += self._required(draft, record, registered)
        if draft.bad_key or out:
            return out
        checked = record if registered is None else merged(registered, plan_update(registered, record))

        def locate(table: Table, row: Mapping[str, Any]) -> Where:
            if table is Table.PATIENT:
                return draft.where.get((table, (draft.patient_id,)), (None, None))
            return draft.where.get((table, key_of(table, row)), (None, None))

        return out + check_patient(checked, where=locate, failed=draft.failed, postop_window_days=window)

    def _required(self, draft: _Draft, record: PatientRecord, registered: PatientRecord | None) -> list[Issue]:
        """Required values: empty cells, and columns a new row needs that the file does not carry."""
        out = []
        bad = {(t, c, line) for t, c, line in draft.failed}
        carried = record.carried or {}
        for spec in TABLE_BY_NAME.values():
            rows = ([draft.patient] if draft.patient is not None else []) if spec.table is Table.PATIENT else \
                draft.rows.get(spec.table, [])
            have = set() if registered is None else {
                key_of(spec.table, r) for r in ([registered.patient] if spec.table is Table.PATIENT
                                               else registered.rows(spec.table))}
            columns = carried.get(spec.table, frozenset())
            for row in rows:
                key = key_of(spec.table, row)
                where = draft.where.get((spec.table, key), (None, None))
                for f in spec.fields:
                    if f.required != "yes" or row.get(f.name) is not None or (spec.table, f.name, where[1]) in bad:
                        continue
                    if f.name in columns:
                        out.append(_at(Issue(V_REQUIRED.code, "required value is empty",
                                             f"fill in {f.describe_type()}", None, f.name, ""), where))
                    elif key not in have:
                        title = "patient" if spec.table is Table.PATIENT else spec.title.lower().rstrip("s")
                        out.append(_at(Issue(V_REQUIRED.code, f"a new {title} needs {f.name}; the file does not "
                                             "carry it", f"add {f.name} to the file (or register the {title} first)",
                                             None, f.name, None), where))
        return out


def _at(issue: Issue, where: Where) -> Issue:
    file, line = where
    return Issue(issue.code, issue.message, issue.hint, line if line is not None else issue.line, issue.column,
                 issue.value, file if file is not None else issue.file)
