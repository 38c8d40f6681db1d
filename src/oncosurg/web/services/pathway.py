"""The older item API beside the registry row: complications of the flat record's operation (with the
comprehensive complication index), MDT resectability reviews and RECIST response assessments of its
rescue line.  The patient page and its timeline use :mod:`oncosurg.web.services.episodes`.

Adding a row is append-only (it bumps the patient's version without requiring the version the page
was loaded with: two people adding two reviews lose nothing); deleting a row is an edit and needs
the current version.  The registry's rules still apply: a complication changes the worst
Clavien-Dindo grade, which is checked with :func:`oncosurg.rules.check_record` like any import.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from oncosurg.rules import clavien_rank
from oncosurg.schema import CLAVIEN_DINDO
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.repository import registry_select
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
    read_registry_record,
    registry_record_and_line,
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

def _next_no(conn: sa.Connection, column: sa.Column, where: sa.ColumnElement[bool]) -> int:
    """The next instance number of an episode (max + 1; numbers are never reused while the row exists)."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(column), 0) + 1).where(where)).scalar_one())


def operation_pk(conn: sa.Connection, pk: int) -> int | None:
    """The id of the operation the flat registry row describes (its complications are the card's)."""
    base = registry_select([pk]).subquery("r")
    return conn.execute(sa.select(base.c.operation_pk).where(base.c.pk == pk)).scalar()


def complications(conn: sa.Connection, *, pk: int) -> list[dict[str, Any]]:
    c = t.complication
    rows = conn.execute(sa.select(c.c.id, c.c.grade, c.c.description).where(c.c.patient_pk == pk)
                        .order_by(c.c.grade_rank.desc(), c.c.id)).mappings()
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


# ------------------------------------------------------------------------------------------ writing

def _begin(conn: sa.Connection, ctx: Context, pk: int, version: int | None) -> dict[str, Any]:
    _require_writer(ctx.user)
    head = _locked_head(conn, user=ctx.user, pk=pk)
    if version is not None and head["version"] != version:
        raise stale(conn, head=head, version=version)
    return head


def add_review(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str]) -> int:
    head = _begin(conn, ctx, pk, None)
    record, line = registry_record_and_line(conn, pk)
    values, errors = parse_fields(REVIEW_FIELDS, form, today=ctx.today)
    # an MDT review may follow the last contact (it discusses imaging, not a visit)
    errors += check_dates_within(record, "review_date", values.get("review_date"), until_contact=False)
    if errors:
        raise Invalid(f"{len(errors)} problem(s): the review was not recorded", errors=errors)
    if values.get("cycles_at_review") is None:
        values["cycles_at_review"] = record.get("cetuximab_cycles")
    version = bump_version(conn, head=head, version=None)
    rid = int(conn.execute(sa.insert(t.mdt_review).values(
        patient_pk=pk, review_no=_next_no(conn, t.mdt_review.c.review_no, t.mdt_review.c.patient_pk == pk),
        therapy_line_pk=line, **values)).inserted_primary_key[0])
    changes = [(k, None, v) for k, v in values.items() if v is not None]
    audit.append(conn, actor=ctx.actor, entries=_entries(head, version, "create", "mdt_review", rid, changes, None))
    return rid


def add_response(conn: sa.Connection, *, ctx: Context, pk: int, form: Mapping[str, str]) -> int:
    head = _begin(conn, ctx, pk, None)
    record, line = registry_record_and_line(conn, pk)
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
    a = t.response_assessment
    aid = int(conn.execute(sa.insert(a).values(
        patient_pk=pk, assessment_no=_next_no(conn, a.c.assessment_no, a.c.patient_pk == pk),
        therapy_line_pk=line, **values)).inserted_primary_key[0])
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
    operation = operation_pk(conn, pk)
    c = t.complication
    cid = int(conn.execute(sa.insert(c).values(
        patient_pk=pk, procedure_pk=operation, complication_no=_next_no(conn, c.c.complication_no,
                                                                        c.c.procedure_pk == operation),
        grade=values["grade"], grade_rank=CLAVIEN_DINDO.index(values["grade"]),
        description=values.get("description"))).inserted_primary_key[0])
    conn.execute(sa.update(t.liver_procedure).where(t.liver_procedure.c.id == operation)
                 .values(complications_assessed=True))
    changes = [(k, None, v) for k, v in values.items() if v is not None]
    audit.append(conn, actor=ctx.actor, entries=_entries(head, version, "create", "complication", cid, changes, why))
    return cid


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
    conn.execute(sa.delete(table).where(table.c.id == item_id))
    changes = [(k, row[k], None) for k in row if k not in ("id", "patient_pk", "grade_rank") and row[k] is not None]
    audit.append(conn, actor=ctx.actor, entries=_entries(head, new_version, "delete", entity, item_id, changes, why))


def best_of(categories: Sequence[str]) -> str | None:
    """Best overall response among assessments (CR > PR > SD > PD > NE)."""
    ranked = [c for c in _BEST_ORDER if c in categories]
    return ranked[0] if ranked else None
