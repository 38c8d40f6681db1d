"""Hypothesis strategies of valid multi-episode patients (synthetic), for every test of the episode model.

:func:`patient_records` draws one :class:`~oncosurg.pathway.flat.PatientRecord` that passes every
single-value rule and every rule across episodes (:func:`oncosurg.pathway.rules.check_patient`):
a timeline of phases — therapy lines (earlier ones possibly undated), surgical strategies
(hepatectomy, ablation, exploration, portal vein embolisation, two-stage hepatectomy, ALPPS, repeat
hepatectomy) with several complications each and pathology only on resections, progressions and
recurrences after a resection — then MDT reviews and response assessments within it, and contacts
that end it: at most one death, the last contact, postoperative (with a grade V complication on the
last operation) or beyond the postoperative window.  :func:`registries` draws several patients of
distinct (centre, patient_id), ordered.  Records are canonical (:func:`canonical`): every field of
every row present, rows ordered by key, tables without rows absent — the form readers return.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from hypothesis import strategies as st

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import (
    AGENTS,
    APPROACHES,
    EVENT_KINDS,
    GIVEN_AT,
    INTENTS,
    MDT_DECISIONS,
    MSI_STATUS,
    MUTATION_STATUS,
    SCHEDULES,
    SITES,
    STOP_REASONS,
    TABLE_BY_NAME,
    TABLES,
    Table,
    is_resection,
    join_list,
)
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS, MARGINS, RESPONSES

WINDOW = DEFAULT_POSTOP_WINDOW_DAYS
CENTRES = ("Centre A (synthetic)", "Hôpital B, synthétique", "C")
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_TEXT_CHARS = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), include_characters="\n\r")
GRADES_ALIVE = ("I", "II", "IIIa", "IIIb", "IVa", "IVb")


def canonical(record: PatientRecord) -> PatientRecord:
    """``record`` with every field of every row (``None`` when absent), rows ordered by key, empty tables dropped."""
    patient_spec = TABLES[0]
    patient = {f.name: record.patient.get(f.name) for f in patient_spec.fields}
    episodes: dict[Table, list[dict[str, Any]]] = {}
    for spec in TABLES[1:]:
        rows = [{f.name: row.get(f.name) for f in spec.fields} for row in record.rows(spec.table)]
        if rows:
            episodes[spec.table] = sorted(rows, key=lambda r, k=spec.key: tuple(r[c] for c in k))
    return PatientRecord(record.centre, patient, episodes)


def same(a: PatientRecord, b: PatientRecord) -> bool:
    """Equal centre, patient and episodes (``carried`` and ``where`` ignored)."""
    a, b = canonical(a), canonical(b)
    return (a.centre, a.patient, a.episodes) == (b.centre, b.patient, b.episodes)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _number(lo: float, hi: float, *, exclusive: bool = False) -> st.SearchStrategy[float]:
    return st.one_of(st.integers(math.ceil(lo) + exclusive, math.floor(hi)).map(float),
                     st.floats(lo, hi, exclude_min=exclusive, allow_nan=False, allow_infinity=False))


def free_text(max_size: int) -> st.SearchStrategy[str]:
    """Text a user may type (commas, quotes, accents, line breaks), never a formula nor blank."""
    return st.text(_TEXT_CHARS, min_size=1, max_size=max_size).filter(
        lambda t: t.strip() != "" and not t.startswith(("=", "+", "-", "@", "\t", "\r")))


patient_ids = st.text(_ID_CHARS, min_size=1, max_size=1).flatmap(
    lambda first: st.text(_ID_CHARS + "_.-", max_size=11).map(lambda rest: first + rest))


class _Timeline:
    """A cursor moving forward in days; every date drawn is on or after the previous one."""

    def __init__(self, draw: Any, start: dt.date) -> None:
        self.draw, self.now = draw, start

    def after(self, lo: int, hi: int) -> dt.date:
        self.now += dt.timedelta(days=self.draw(st.integers(lo, hi)))
        return self.now


@st.composite
def patient_records(draw: Any, centre: str | None = None, patient_id: str | None = None) -> PatientRecord:
    """One valid patient with a multi-episode pathway (see the module docstring)."""
    t = _Timeline(draw, dt.date(1998, 1, 1) + dt.timedelta(days=draw(st.integers(0, 4000))))
    referral = draw(st.sampled_from(("in_house", "referred")))
    patient: dict[str, Any] = {
        "patient_id": patient_id or draw(patient_ids),
        "sex": draw(_maybe(st.sampled_from(("F", "M")))),
        "birth_year": draw(_maybe(st.integers(1920, 1985))),
        "age_at_rescue": draw(_maybe(_number(18, 100))),
        "primary_site": draw(_maybe(st.sampled_from(("colon", "rectum")))),
        "primary_side": draw(_maybe(st.sampled_from(("left", "right")))),
        "ras_status": draw(_maybe(st.sampled_from(MUTATION_STATUS))),
        "braf_status": draw(_maybe(st.sampled_from(MUTATION_STATUS))),
        "msi_status": draw(_maybe(st.sampled_from(MSI_STATUS))),
        "referral": referral,
        "referral_date": None,
    }
    record = PatientRecord(centre or draw(st.sampled_from(CENTRES)), patient)
    rows = {table: [] for table in Table if table is not Table.PATIENT}
    referral_date = None
    if referral == "referred" and draw(st.booleans()):
        referral_date = t.now + dt.timedelta(days=draw(st.integers(0, 400)))
        patient["referral_date"] = referral_date
    line_number = draw(st.integers(1, 3))
    undated = draw(st.integers(0, 1)) if line_number == 1 else draw(st.integers(0, line_number - 1))
    for _ in range(undated):  # earlier lines known only by their number
        rows[Table.THERAPY_LINE].append(_line(draw, line_number, None, None, referral_date))
        line_number += 1
    phases = draw(st.lists(st.sampled_from(("line", "surgery", "event")), min_size=1, max_size=6))
    if "line" not in phases:
        phases.insert(0, "line")
    procedure_no = 0
    operations: list[dict[str, Any]] = []
    treated: list[dt.date] = []  # resections and ablations: a later event may be a recurrence
    for phase in phases:
        if phase == "line":
            start = t.after(1, 200)
            stop = t.after(0, 300) if draw(st.booleans()) else None
            rows[Table.THERAPY_LINE].append(_line(draw, line_number, start, stop, referral_date))
            line_number += 1
        elif phase == "surgery":
            for kind in draw(_strategies):
                procedure_no += 1
                proc = _procedure(draw, procedure_no, kind, t.after(7, 120))
                rows[Table.LIVER_PROCEDURE].append(proc)
                if kind != "pve":
                    operations.append(proc)
                if is_resection(kind, proc["resected_segments"]) or kind == "ablation":
                    treated.append(proc["procedure_date"])
                if is_resection(kind, proc["resected_segments"]) and draw(st.booleans()):
                    rows[Table.PATHOLOGY].append(_pathology(draw, procedure_no))
                days = draw(st.lists(_maybe(st.integers(0, 5)), max_size=3, unique=True))
                for number, day in enumerate(days, start=1):
                    date = None if day is None else proc["procedure_date"] + dt.timedelta(days=day)
                    rows[Table.COMPLICATION].append({
                        "procedure_no": procedure_no, "complication_no": number,
                        "grade": draw(st.sampled_from(GRADES_ALIVE)), "complication_date": date,
                        "description": draw(_maybe(free_text(200)))})
                t.after(6, 6)  # complications end before the next step
        else:
            date = t.after(1, 300)
            kind = draw(st.sampled_from(EVENT_KINDS)) if treated else "progression"
            rows[Table.DISEASE_EVENT].append({
                "event_no": len(rows[Table.DISEASE_EVENT]) + 1, "event_date": date, "event_kind": kind,
                "sites": draw(_maybe(st.lists(st.sampled_from(SITES), min_size=1, unique=True)
                                     .map(lambda s: join_list(s, SITES))))})
    first_day = min(ln["start_date"] for ln in rows[Table.THERAPY_LINE] if ln["start_date"] is not None)
    _contacts(draw, t, rows, operations)
    last = max(c["contact_date"] for c in rows[Table.CONTACT])
    span = (last - first_day).days
    numbers = [ln["line_number"] for ln in rows[Table.THERAPY_LINE]]
    review_days = draw(st.lists(st.integers(0, span + 30), max_size=3, unique=True))
    for number, day in enumerate(sorted(review_days), start=1):
        rows[Table.MDT_REVIEW].append({
            "review_no": number, "review_date": first_day + dt.timedelta(days=day),
            "decision": draw(st.sampled_from(MDT_DECISIONS)),
            "line_number": draw(_maybe(st.sampled_from(numbers))),
            "cycles_at_review": draw(_maybe(st.integers(0, 200))), "notes": draw(_maybe(free_text(300)))})
    assessment_days = draw(st.lists(st.integers(0, span), max_size=3, unique=True))
    for number, day in enumerate(sorted(assessment_days), start=1):
        rows[Table.RESPONSE_ASSESSMENT].append({
            "assessment_no": number, "assessment_date": first_day + dt.timedelta(days=day),
            "line_number": draw(_maybe(st.sampled_from(numbers))),
            "category": draw(_maybe(st.sampled_from(RESPONSES))),
            "baseline_sum_mm": draw(_maybe(_number(0, 2000))), "current_sum_mm": draw(_maybe(_number(0, 2000))),
            "nadir_sum_mm": draw(_maybe(_number(0, 2000))), "new_lesions": draw(_maybe(st.booleans()))})
    _renumber(draw, rows)
    record.episodes = {table: r for table, r in rows.items() if r}
    return canonical(record)


#: Surgical strategies of one surgery phase, as procedure types in date order.
_strategies = st.sampled_from((
    ("hepatectomy",), ("hepatectomy",), ("ablation",), ("exploration_only",), ("pve", "hepatectomy"),
    ("two_stage_first", "two_stage_second"), ("two_stage_first", "pve", "two_stage_second"),
    ("alpps_1", "alpps_2"), ("hepatectomy", "ablation"),
))


def _line(draw: Any, number: int, start: dt.date | None, stop: dt.date | None, referral: dt.date | None
          ) -> dict[str, Any]:
    given_at = draw(_maybe(st.sampled_from(GIVEN_AT)))
    if given_at == "centre" and referral is not None and (start is None or start < referral):
        given_at = "elsewhere"
    agents = draw(st.lists(st.sampled_from(AGENTS), min_size=1, max_size=4, unique=True))
    return {
        "line_number": number, "start_date": start, "stop_date": stop, "agents": join_list(agents, AGENTS),
        "intent": draw(_maybe(st.sampled_from(INTENTS))), "given_at": given_at,
        "cycles": draw(_maybe(st.integers(0, 200))), "best_response": draw(_maybe(st.sampled_from(RESPONSES))),
        "stop_reason": draw(_maybe(st.sampled_from(STOP_REASONS))),
        "schedule": draw(_maybe(st.sampled_from(SCHEDULES))),
        "dose_mg_m2": draw(_maybe(_number(0, 1000, exclusive=True))), "bsa_m2": draw(_maybe(_number(0.5, 3.5))),
        "liver_mets_count": draw(_maybe(st.integers(1, 60))),
        "largest_met_mm": draw(_maybe(_number(0, 300, exclusive=True))),
        "bilobar": draw(_maybe(st.booleans())), "extrahepatic_disease": draw(_maybe(st.booleans())),
    }


def _segments(draw: Any, lo: int = 1) -> str:
    chosen = draw(st.lists(st.integers(1, 8), min_size=lo, max_size=6, unique=True))
    return ";".join(str(s) for s in sorted(chosen))


def _procedure(draw: Any, number: int, kind: str, date: dt.date) -> dict[str, Any]:
    segments = None
    if kind in ("hepatectomy", "two_stage_second", "alpps_2"):
        segments = _segments(draw) if draw(st.integers(0, 2)) else None
    elif kind in ("two_stage_first", "alpps_1") and draw(st.booleans()):
        segments = _segments(draw)  # a clearance resection: the first stage is then a resection too
    resection = is_resection(kind, segments)
    return {
        "procedure_no": number, "procedure_date": date, "procedure_type": kind, "resected_segments": segments,
        "margin": draw(_maybe(st.sampled_from(MARGINS))) if resection else None,
        "approach": draw(_maybe(st.sampled_from(APPROACHES))) if kind != "pve" else None,
        "two_stage": draw(_maybe(st.booleans())), "portal_vein_embolization": draw(_maybe(st.booleans())),
        "complications_assessed": draw(_maybe(st.booleans())),
    }


def _pathology(draw: Any, number: int) -> dict[str, Any]:
    return {
        "procedure_no": number, "steatosis_pct": draw(_maybe(_number(0, 100))),
        "steatohepatitis": draw(_maybe(st.booleans())),
        "sinusoidal_dilatation_grade": draw(_maybe(st.integers(0, 3))),
        "fibrosis_stage": draw(_maybe(st.integers(0, 4))),
        "nodular_regenerative_hyperplasia": draw(_maybe(st.booleans())),
        "tumour_regression_grade": draw(_maybe(st.integers(1, 5))),
        "lesion_count": draw(_maybe(st.integers(0, 200))),
        "largest_lesion_mm": draw(_maybe(_number(0, 400, exclusive=True))),
        "margin_mm": draw(_maybe(_number(0, 200))),
    }


def _contacts(draw: Any, t: _Timeline, rows: dict[Table, list[dict[str, Any]]],
              operations: list[dict[str, Any]]) -> None:
    """Contacts after everything else; a death is the last one, postoperative only with a grade V."""
    fate = draw(st.sampled_from(("alive", "dead", "postoperative") if operations else ("alive", "dead")))
    last_op = max((p["procedure_date"] for p in operations), default=None)
    ends = [d for rs in rows.values() for r in rs for d in r.values() if isinstance(d, dt.date)]
    end = max([t.now, *ends])
    if fate == "postoperative" and (end - last_op).days > WINDOW - 6:
        fate = "dead"  # something happened after the last operation: the death cannot be postoperative
    dates = sorted({end + dt.timedelta(days=d) for d in draw(st.lists(st.integers(0, 800), min_size=1, max_size=3))})
    contacts = [{"contact_no": 0, "contact_date": d, "vital_status": "alive"} for d in dates]
    if fate == "dead":
        death = dates[-1] if last_op is None else max(dates[-1], last_op + dt.timedelta(days=WINDOW + 1))
        contacts[-1] = {"contact_no": 0, "contact_date": death, "vital_status": "dead"}
    elif fate == "postoperative":
        proc = max(operations, key=lambda p: p["procedure_date"])
        death = max(end, proc["procedure_date"] + dt.timedelta(days=draw(st.integers(6, WINDOW))))
        number = 1 + max((c["complication_no"] for c in rows[Table.COMPLICATION]
                          if c["procedure_no"] == proc["procedure_no"]), default=0)
        rows[Table.COMPLICATION].append({"procedure_no": proc["procedure_no"], "complication_no": number,
                                         "grade": "V", "complication_date": draw(st.sampled_from((None, death))),
                                         "description": None})
        contacts = [c for c in contacts if c["contact_date"] < death]
        contacts.append({"contact_no": 0, "contact_date": death, "vital_status": "dead"})
    rows[Table.CONTACT] = contacts
    for number, contact in enumerate(contacts, start=1):
        contact["contact_no"] = number


def _renumber(draw: Any, rows: dict[Table, list[dict[str, Any]]]) -> None:
    """Instance numbers name episodes, dates order them: shuffle the numbers of some tables."""
    for table in (Table.DISEASE_EVENT, Table.CONTACT, Table.MDT_REVIEW):
        if len(rows[table]) > 1 and draw(st.booleans()):
            key = TABLE_BY_NAME[table].own_key
            numbers = draw(st.permutations([r[key] for r in rows[table]]))
            for row, number in zip(rows[table], numbers, strict=True):
                row[key] = number


@st.composite
def registries(draw: Any, min_size: int = 1, max_size: int = 4) -> list[PatientRecord]:
    """Several valid patients with distinct (centre, patient_id), ordered by centre then patient_id."""
    keys = draw(st.lists(st.tuples(st.sampled_from(CENTRES), patient_ids), min_size=min_size, max_size=max_size,
                         unique=True))
    return [draw(patient_records(centre, pid)) for centre, pid in sorted(keys)]
