"""The worklist: who is due for an MDT resectability review, and whose follow-up is overdue.

Due for review: a patient on cetuximab (started, not operated, alive, not stopped, last decision
not "unresectable_stop" or "resectable") when, since the start or the last review, at least
``review_cycles`` cycles were given, or ``review_weeks`` weeks passed, or a partial/complete
response was recorded and not yet reviewed.  Patients declared resectable and not yet operated are
listed apart.  A line without a stop date whose latest news (last contact or MDT review) is older
than ``review_horizon_weeks`` is "status unknown" (:func:`status_unknown`), listed apart and never
due: a start years ago with no stop date says nothing about today.  Follow-up is overdue when a
living patient's last contact is older than ``followup_overdue_months``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from oncosurg.schema import DAYS_PER_MONTH
from oncosurg.store import audit
from oncosurg.store import tables as t
from oncosurg.store.repository import registry_select
from oncosurg.web.services.users import User

RESPONDED = ("PR", "CR")
#: Default of the ``review_horizon_weeks`` setting.
REVIEW_HORIZON_WEEKS = 52


def last_news(last_contact: dt.date | None, last_review: dt.date | None) -> dt.date | None:
    """The latest date anything was heard of the patient: the last contact or the last MDT review."""
    known = [d for d in (last_contact, last_review) if d is not None]
    return max(known) if known else None


def status_unknown(news: dt.date | None, *, today: dt.date, horizon_weeks: int) -> bool:
    """A cetuximab line without a stop date is of unknown status when the latest news is older than the horizon."""
    return news is None or (today - news).days > 7 * horizon_weeks


def worklist(conn: sa.Connection, *, user: User, today: dt.date, review_cycles: int, review_weeks: int,
             followup_overdue_months: int, review_horizon_weeks: int = REVIEW_HORIZON_WEEKS,
             limit: int = 500) -> dict[str, Any]:
    base = registry_select().subquery("r")
    reg = t.therapy_line
    scope = [] if user.all_centres else [base.c.centre.in_(sorted(user.centres))]
    on_cetuximab = sa.and_(base.c.surgery_date.is_(None), base.c.death_date.is_(None), reg.c.stop_date.is_(None),
                           *scope)
    joined = base.outerjoin(reg, reg.c.id == base.c.rescue_line_pk)
    candidates = conn.execute(
        sa.select(base.c.pk, base.c.patient_id, base.c.centre, base.c.cetuximab_start, base.c.cetuximab_cycles,
                  base.c.best_response, base.c.last_contact_date).select_from(joined).where(on_cetuximab)
        .order_by(base.c.centre, base.c.patient_id)).mappings().all()
    pks = sa.select(base.c.pk).select_from(joined).where(on_cetuximab).scalar_subquery()
    last_review: dict[int, dict[str, Any]] = {}
    for row in conn.execute(sa.select(t.mdt_review).where(t.mdt_review.c.patient_pk.in_(pks))
                            .order_by(t.mdt_review.c.review_date, t.mdt_review.c.id)).mappings():
        last_review[row["patient_pk"]] = dict(row)
    responses: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(sa.select(t.response_assessment).where(
            t.response_assessment.c.patient_pk.in_(pks), t.response_assessment.c.category.in_(RESPONDED))
            .order_by(t.response_assessment.c.assessment_date)).mappings():
        responses[row["patient_pk"]].append(dict(row))
    due, awaiting, unknown = [], [], []
    for p in candidates:
        review = last_review.get(p["pk"])
        if review and review["decision"] == "unresectable_stop":
            continue
        news = last_news(p["last_contact_date"], review["review_date"] if review else None)
        if status_unknown(news, today=today, horizon_weeks=review_horizon_weeks):
            weeks = (today - news).days // 7 if news else 0
            why = f"no stop date and no news since {news} ({weeks} weeks): record the stop date, a contact or a review"
            unknown.append(_item(p, review, [why]) | {"weeks": weeks, "last_news": audit.text(news)})
            continue
        if review and review["decision"] == "resectable":
            awaiting.append(_item(p, review, [f"declared resectable on {review['review_date']}; no surgery recorded"]))
            continue
        anchor_date = review["review_date"] if review else p["cetuximab_start"]
        anchor_cycles = (review["cycles_at_review"] or 0) if review else 0
        since = "the last review" if review else "the start of cetuximab"
        reasons = []
        cycles = p["cetuximab_cycles"]
        if cycles is not None and cycles - anchor_cycles >= review_cycles:
            reasons.append(f"{cycles - anchor_cycles} cycle(s) since {since}")
        weeks = (today - anchor_date).days // 7
        if weeks >= review_weeks:
            reasons.append(f"{weeks} week(s) since {since}")
        fresh = [r for r in responses.get(p["pk"], []) if review is None or r["assessment_date"] > anchor_date]
        if fresh:
            r = fresh[-1]
            reasons.append(f"{r['category']} on {r['assessment_date']} not yet reviewed")
        elif review is None and p["best_response"] in RESPONDED and not responses.get(p["pk"]):
            reasons.append(f"best response {p['best_response']} not yet reviewed")
        if reasons:
            due.append(_item(p, review, reasons) | {"weeks": weeks})
    due.sort(key=lambda d: (-d["weeks"], d["centre"], d["patient_id"]))
    unknown.sort(key=lambda d: (-d["weeks"], d["centre"], d["patient_id"]))
    cutoff = today - dt.timedelta(days=round(followup_overdue_months * DAYS_PER_MONTH))
    overdue_where = sa.and_(base.c.death_date.is_(None), base.c.last_contact_date < cutoff, *scope)
    overdue_total = conn.execute(sa.select(sa.func.count()).select_from(base).where(overdue_where)).scalar_one()
    overdue = [
        {"pk": r["pk"], "patient_id": r["patient_id"], "centre": r["centre"],
         "last_contact_date": audit.text(r["last_contact_date"]),
         "months_since": round((today - r["last_contact_date"]).days / DAYS_PER_MONTH, 1)}
        for r in conn.execute(sa.select(base.c.pk, base.c.patient_id, base.c.centre, base.c.last_contact_date)
                              .where(overdue_where).order_by(base.c.last_contact_date, base.c.patient_id)
                              .limit(limit)).mappings()]
    return {
        "today": today.isoformat(),
        "settings": {"review_cycles": review_cycles, "review_weeks": review_weeks,
                     "review_horizon_weeks": review_horizon_weeks, "followup_overdue_months": followup_overdue_months},
        "review_due": due[:limit], "review_due_total": len(due),
        "awaiting_surgery": awaiting[:limit], "awaiting_surgery_total": len(awaiting),
        "status_unknown": unknown[:limit], "status_unknown_total": len(unknown),
        "followup_overdue": overdue, "followup_overdue_total": int(overdue_total),
    }


def _item(p: Any, review: dict[str, Any] | None, reasons: list[str]) -> dict[str, Any]:
    return {"pk": p["pk"], "patient_id": p["patient_id"], "centre": p["centre"],
            "cetuximab_start": audit.text(p["cetuximab_start"]), "cycles": p["cetuximab_cycles"],
            "last_review": audit.text(review["review_date"]) if review else None,
            "last_decision": review["decision"] if review else None, "reasons": reasons, "weeks": 0}
