"""Pathway details beyond the registry row: complications (with the comprehensive complication
index), MDT resectability reviews, RECIST response assessments, and the patient's timeline.

Adding a row is append-only (it bumps the patient's version without requiring the version the page
was loaded with: two people adding two reviews lose nothing); deleting a row is an edit and needs
the current version.  The registry's rules still apply: the worst Clavien-Dindo grade is derived
from the complications, and checked with :func:`oncosurg.rules.check_record` like any import.  A
complication recorded one by one replaces the row that stood for a worst grade it accounts for
(:mod:`oncosurg.store.complications`; the removal is audited).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from oncosurg.rules import clavien_rank
from oncosurg.schema import CLAVIEN_DINDO, FIELD_BY_NAME
from oncosurg.store import audit, audit_state
from oncosurg.store import complications as store_complications
from oncosurg.store import tables as t
from oncosurg.web.errors import Invalid, NotFound
from oncosurg.web.services.forms import (
    COMPLICATION_FIELDS,
    RESPONSE_FIELDS,
    REVIEW_FIELDS,
    check_dates_within,
    parse_fields,
    validate_registry,
    web_error,
)
from oncosurg.web.services.patients import (
    Context,
    _entries,
    _locked_head,
    _reason,
    _require_writer,
    bump_version,
    consequence_entry,
    read_registry_record,
    stale,
)

#: Clavien-Dindo weights of the comprehensive complication index (Slankamenac et al., Ann Surg 2013).
CCI_WEIGHTS: dict[str, int] = {"I": 300, "II": 1750, "IIIa": 2750, "IIIb": 4550, "IVa": 7200, "IVb": 8550,
                               "V": 10000}
_BEST_ORDER = ("CR", "PR", "SD", "PD", "NE")


def comprehensive_complication_index(grades: Sequence[str]) -> float:
    """CCI = sqrt(sum of weights) / 2, capped at 100 (grade V = 100); 0 without complications."""
    total = sum(CCI_WEIGHTS[g] for g in grades if g in CCI_WEIGHTS)
    return round(min(100.0, math.sqrt(total) / 2), 1)


def recist_category(*, baseline: float, current: float, nadir: float, new_lesions: bool | None) -> tuple[str, str]:
    """RECIST 1.1 target-lesion category and why (Eisenhauer et al., Eur J Cancer 2009)."""
    if new_lesions:
        return "PD", "new lesions"
    if nadir > 0 and current - nadir >= 0.2 * nadir and current - nadir >= 5:
        return "PD", f"sum {current:g} mm is ≥ 20% and ≥ 5 mm above the nadir {nadir:g} mm"
    if current == 0:
        return "CR", "all target lesions disappeared"
    if baseline > 0 and current <= 0.7 * baseline:
        return "PR", f"sum {current:g} mm is ≥ 30% below the baseline {baseline:g} mm"
    return "SD", f"sum {current:g} mm: neither 30% below the baseline {baseline:g} mm nor 20% above the nadir"


def dose_mg(regimen: Mapping[str, Any]) -> float | None:
    """Dose per administration = dose (mg/m²) × body-surface area (m²)."""
    dose, bsa = regimen.get("dose_mg_m2"), regimen.get("bsa_m2")
    return None if dose is None or bsa is None else round(dose * bsa, 1)


# ------------------------------------------------------------------------------------------ reading

def complications(conn: sa.Connection, *, pk: int) -> list[dict[str, Any]]:
    """The patient's complications, worst first (``from_worst_grade``: the row stands for a worst grade
    given by the registry CSV or the surgery card, without details)."""
    c = t.complication
    rows = conn.execute(sa.select(c.c.id, c.c.grade, c.c.description, c.c.from_worst_grade)
                        .where(c.c.patient_pk == pk).order_by(c.c.grade_rank.desc(), c.c.id)).mappings()
    return [dict(r) for r in rows]


def reviews(conn: sa.Connection, *, pk: int) -> list[dict[str, Any]]:
    r = t.mdt_review
    rows = conn.execute(sa.select(r.c.id, r.c.review_date, r.c.decision, r.c.cycles_at_review, r.c.notes)
                        .where(r.c.patient_pk == pk).order_by(r.c.review_date, r.c.id)).mappings()
    return [dict(x) for x in rows]


def responses(conn: sa.Connection, *, pk: int) -> list[dict[str, Any]]:
    a = t.response_assessment
    rows = conn.execute(sa.select(a.c.id, a.c.assessment_date, a.c.category, a.c.baseline_sum_mm, a.c.current_sum_mm,
                                  a.c.nadir_sum_mm, a.c.new_lesions)
                        .where(a.c.patient_pk == pk).order_by(a.c.assessment_date, a.c.id)).mappings()
    return [dict(x) for x in rows]


def timeline(record: Mapping[str, Any], regimen: Mapping[str, Any], comps: Sequence[Mapping[str, Any]],
             revs: Sequence[Mapping[str, Any]], resps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Dated pathway events in order (the patient page's timeline)."""
    events: list[dict[str, Any]] = []

    def add(date: Any, kind: str, label: str, stage: str) -> None:
        if date is not None:
            events.append({"date": audit.text(date), "kind": kind, "label": label, "stage": stage})

    partner = record.get("cetuximab_partner")
    add(record.get("cetuximab_start"), "cetuximab_start",
        f"cetuximab started{f' with {partner}' if partner and partner != 'none' else ''} "
        f"(after {record.get('prior_chemo_lines') or '?'} prior line(s))", "cetuximab")
    for a in resps:
        add(a["assessment_date"], "response", f"response assessment: {a['category']}", "responses")
    for r in revs:
        add(r["review_date"], "mdt_review", f"MDT review: {str(r['decision']).replace('_', ' ')}", "reviews")
    add(regimen.get("stop_date"), "cetuximab_stop", "cetuximab stopped", "cetuximab")
    if record.get("surgery_date") is not None:
        grade = record.get("clavien_dindo_max")
        worst = f"; worst complication {grade}" if grade and grade != "none" else ""
        cci = comprehensive_complication_index([c["grade"] for c in comps])
        add(record["surgery_date"], "surgery",
            f"{str(record.get('surgery_type') or 'surgery').replace('_', ' ')}{worst}"
            f"{f' (CCI {cci:g})' if comps else ''}", "surgery")
    add(record.get("progression_date"), "progression", "progression or recurrence", "follow_up")
    if record.get("death_date") is not None:
        add(record["death_date"], "death", "death", "follow_up")
    else:
        add(record.get("last_contact_date"), "last_contact", "last contact (alive)", "follow_up")
    order = {"cetuximab_start": 0, "response": 1, "mdt_review": 2, "cetuximab_stop": 3, "surgery": 4,
             "progression": 5, "death": 6, "last_contact": 6}
    events.sort(key=lambda e: (e["date"], order[e["kind"]]))
    return events


# ------------------------------------------------------------------------------------------ writing

def _begin(conn: sa.Connection, ctx: Context, pk: int, version: int | None) -> dict[str, Any]:
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    if version is not None and head["version"] != version:
        raise stale(conn, head=head, version=version)
    return head


def add_review(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str]) -> int:
    head = _begin(conn, ctx, pk, None)
    record = read_registry_record(conn, pk)
    values, errors = parse_fields(REVIEW_FIELDS, form, today=ctx.today)
    # an MDT review may follow the last contact (it discusses imaging, not a visit)
    errors += check_dates_within(record, "review_date", values.get("review_date"), until_contact=False)
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the review was not recorded", errors=errors)
    if values.get("cycles_at_review") is None:
        values["cycles_at_review"] = record.get("cetuximab_cycles")
    version = bump_version(conn, head=head, version=None)
    rid = int(conn.execute(sa.insert(t.mdt_review).values(patient_pk=pk, **values)).inserted_primary_key[0])
    changes = [(k, None, v) for k, v in values.items() if v is not None]
    audit.append(conn, actor=ctx.actor, entries=_entries(head, version, "create", "mdt_review", rid, changes, None))
    return rid


def add_response(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str]) -> int:
    head = _begin(conn, ctx, pk, None)
    record = read_registry_record(conn, pk)
    values, errors = parse_fields(RESPONSE_FIELDS, form, today=ctx.today)
    date = values.get("assessment_date")
    errors += check_dates_within(record, "assessment_date", date)
    earlier = [r for r in responses(conn, pk=pk) if date is None or r["assessment_date"] <= date]
    current, given = values.get("current_sum_mm"), values.get("category")
    baseline = values.get("baseline_sum_mm")
    if baseline is None:
        baseline = next((r["baseline_sum_mm"] for r in earlier if r["baseline_sum_mm"] is not None), None)
    if current is not None:
        if baseline is None:
            errors.append(web_error("W504", "baseline_sum_mm", None, "the baseline sum is needed with the current sum",
                                    "fill in the sum of target-lesion diameters at the start of cetuximab"))
        else:
            nadir = min([baseline, *[r["current_sum_mm"] for r in earlier if r["current_sum_mm"] is not None]])
            computed, why = recist_category(baseline=baseline, current=current, nadir=nadir,
                                            new_lesions=values.get("new_lesions"))
            if given is not None and given != computed:
                errors.append(web_error("W503", "category", given, f"the sums give {computed} ({why})",
                                        f"write {computed}, or leave the category empty to compute it"))
            values |= {"category": computed, "baseline_sum_mm": baseline, "nadir_sum_mm": nadir}
    elif given is None and not any(e["column"] == "category" for e in errors):
        errors.append(web_error("W504", "category", None, "neither a RECIST category nor the current sum is given",
                                "choose the category, or fill in the target-lesion sums"))
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the assessment was not recorded", errors=errors)
    version = bump_version(conn, head=head, version=None)
    aid = int(conn.execute(sa.insert(t.response_assessment).values(patient_pk=pk, **values)).inserted_primary_key[0])
    changes = [(k, None, v) for k, v in values.items() if v is not None]
    audit.append(conn, actor=ctx.actor,
                 entries=_entries(head, version, "create", "response_assessment", aid, changes, None))
    return aid


def _grade_after(conn: sa.Connection, pk: int, grades: Sequence[str], ctx: Context) -> list[dict[str, Any]]:
    """Registry rules on the record with the worst grade implied by ``grades``."""
    record = read_registry_record(conn, pk)
    worst = max(grades, key=lambda g: clavien_rank(g) or 0) if grades else "none"
    if record.get("surgery_date") is None:
        return [web_error("W506", "grade", None, "no surgery is recorded for this patient",
                          "record the surgery (date and type) first")]
    _, errors = validate_registry(record, {"clavien_dindo_max": worst}, ["clavien_dindo_max"], today=ctx.today,
                                  postop_window_days=ctx.postop_window_days)
    for e in errors:
        if e.get("column") == "clavien_dindo_max":
            e["column"] = "grade"
    return errors


def add_complication(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str], reason: str = "") -> int:
    head = _begin(conn, ctx, pk, None)
    values, errors = parse_fields(COMPLICATION_FIELDS, form, today=ctx.today)
    if not errors:
        grades = [c["grade"] for c in complications(conn, pk=pk)] + [values["grade"]]
        errors += _grade_after(conn, pk, grades, ctx)
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the complication was not recorded", errors=errors)
    why = _reason(ctx, conn, head, reason)
    version = bump_version(conn, head=head, version=None)
    worst_before = read_registry_record(conn, pk).get("clavien_dindo_max")
    cid = int(conn.execute(sa.insert(t.complication).values(
        patient_pk=pk, grade=values["grade"], grade_rank=CLAVIEN_DINDO.index(values["grade"]),
        description=values.get("description"), from_worst_grade=False)).inserted_primary_key[0])
    conn.execute(sa.update(t.surgery).where(t.surgery.c.patient_pk == pk).values(complications_assessed=True))
    changes = [(k, None, v) for k, v in values.items() if v is not None]
    entries = _entries(head, version, "create", "complication", cid, changes, why)
    # a row standing for a worst grade this complication now accounts for is removed, audited
    for old in store_complications.superseded(store_complications.load(conn, pk), values["grade"]):
        if old.id == cid:
            continue
        conn.execute(sa.delete(t.complication).where(t.complication.c.id == old.id))
        entries += [consequence_entry(head, version, e, f"replaced by complication {cid}, recorded one by one")
                    for e in store_complications.entries("delete", old.id, store_complications.values(old), None)]
    audit.append(conn, actor=ctx.actor, entries=entries + _worst_grade(conn, head, version, worst_before, why))
    return cid


def _worst_grade(conn: sa.Connection, head: Mapping[str, Any], version: int, before: str | None,
                 why: str | None) -> list[dict[str, Any]]:
    """An update row for the registry's worst Clavien-Dindo grade when a complication moved it."""
    after = read_registry_record(conn, head["id"]).get("clavien_dindo_max")
    if after == before:
        return []
    entity = FIELD_BY_NAME["clavien_dindo_max"].stage.value
    return _entries(head, version, "update", entity, head["id"], [("clavien_dindo_max", before, after)], why)


_DELETABLE = {"complication": t.complication, "mdt_review": t.mdt_review, "response_assessment": t.response_assessment}


def delete_item(conn: sa.Connection, *, ctx: Context, pk: int, entity: str, item_id: int, version: int,
                reason: str = "") -> None:
    """Delete one complication, review or assessment (needs the current version)."""
    table = _DELETABLE.get(entity)
    if table is None:
        raise NotFound(f"no such kind of item: '{entity}'")
    head = _begin(conn, ctx, pk, version)
    row = conn.execute(sa.select(table).where(table.c.id == item_id, table.c.patient_pk == pk)).mappings().first()
    if row is None:
        raise NotFound(f"{entity} {item_id} not found for this patient")
    if entity == "complication":
        left = [c["grade"] for c in complications(conn, pk=pk) if c["id"] != item_id]
        errors = _grade_after(conn, pk, left, ctx) if left else []
        if errors:
            raise Invalid("the complication cannot be removed", errors=errors)
    why = _reason(ctx, conn, head, reason)
    new_version = bump_version(conn, head=head, version=version)
    worst_before = read_registry_record(conn, pk).get("clavien_dindo_max") if entity == "complication" else None
    conn.execute(sa.delete(table).where(table.c.id == item_id))
    changes = [(k, row[k], None) for k in row if k not in audit_state.ITEM_SKIP and row[k] is not None]
    worst = _worst_grade(conn, head, new_version, worst_before, why) if entity == "complication" else []
    audit.append(conn, actor=ctx.actor, entries=_entries(head, new_version, "delete", entity, item_id, changes, why)
                 + worst)


def best_of(categories: Sequence[str]) -> str | None:
    """Best overall response among assessments (CR > PR > SD > PD > NE)."""
    ranked = [c for c in _BEST_ORDER if c in categories]
    return ranked[0] if ranked else None
