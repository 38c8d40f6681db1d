"""A synthetic patient's whole pathway, written around the anchors of their flat registry row.

:func:`build_pathway` takes one flat row (typed values, as :func:`oncosurg.rules.parse_record` gives
them) and returns the patient as episodes whose flat projection (:func:`oncosurg.pathway.flat.to_flat`)
is that row again, exactly.  The projected episodes are the row's own (:func:`~oncosurg.pathway.flat.
from_flat`); everything added is placed where the projection does not look:

* earlier therapy lines 1..k (k = ``prior_chemo_lines``), each ended by a progression, all *before*
  the rescue line's start (the projection takes the first disease event on or after it);
* the rescue line's stop date, stop reason and regimen; later adjuvant and palliative lines
  (panitumumab, bevacizumab, aflibercept, hepatic arterial infusion…), never a conversion line;
* RECIST assessments during the rescue line whose best category is the row's ``best_response``,
  and MDT reviews: "resectable" before every operation, never for a patient who is not operated;
* before the operation only non-operations (portal vein embolisation) or, for a two-stage strategy,
  the first stage, which the projection replaces by its second stage; after it, only repeat
  hepatectomies and ablations for a recurrence;
* several complications per procedure, the worst one of the projected operation being the row's
  ``clavien_dindo_max``; pathology of every resection with lesion count, size and a margin in mm
  that agrees with the R status;
* further recurrences and progressions after the row's ``progression_date``; follow-up contacts
  before the last contact, which stays the row's (the death, when dead).

Every record passes :func:`oncosurg.pathway.rules.check_patient` by construction (no grade V without
a death within the postoperative window, no operation within the window before any other death,
nothing after the last contact).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oncosurg.pathway.flat import PatientRecord, from_flat
from oncosurg.pathway.model import AGENTS, GRADES, SITES, Table, join_list, split_list
from oncosurg.reference.builder import Draw, Pathway, Row, days
from oncosurg.schema import DEFAULT_POSTOP_WINDOW_DAYS

STRATEGIES = ("one_stage", "two_stage", "alpps", "two_stage_dropout")
IRI, OXA = "irinotecan;fluoropyrimidine", "oxaliplatin;fluoropyrimidine"

#: Complications by Clavien-Dindo grade (descriptions as a surgeon writes them).
COMPLICATIONS: dict[str, tuple[str, ...]] = {
    "I": ("wound infection, opened at the bedside", "transient hyperbilirubinaemia", "postoperative ileus",
          "small pleural effusion, no drainage", "transient ascites"),
    "II": ("pneumonia, antibiotics", "wound infection, antibiotics", "ascites requiring diuretics",
           "urinary tract infection", "transfusion for postoperative anaemia", "catheter-related infection"),
    "IIIa": ("bile leak, percutaneous drainage", "pleural effusion, thoracocentesis",
             "perihepatic collection, percutaneous drainage"),
    "IIIb": ("bile leak, relaparotomy", "postoperative haemorrhage, relaparotomy", "biloma, surgical drainage"),
    "IVa": ("post-hepatectomy liver failure, intensive care", "respiratory failure, ventilation",
            "acute kidney injury, haemofiltration"),
    "IVb": ("multi-organ failure, intensive care",),
    "V": ("death from post-hepatectomy liver failure", "death from multi-organ failure"),
}
_LOWER_GRADES = {g: GRADES[: GRADES.index(g) + 1] for g in GRADES if g != "V"} | {"V": GRADES[:5]}

#: Palliative regimens after progression (weights); panitumumab only without a known RAS mutation,
#: hepatic arterial infusion only for liver disease.
LATER_REGIMENS: tuple[tuple[str, float], ...] = (
    ("panitumumab", 0.15), ("bevacizumab;oxaliplatin;fluoropyrimidine", 0.2),
    ("bevacizumab;irinotecan;fluoropyrimidine", 0.1), ("aflibercept;irinotecan;fluoropyrimidine", 0.1),
    ("hai;oxaliplatin", 0.1), (OXA, 0.1), ("fluoropyrimidine", 0.15), ("other", 0.1),
)
RECURRENCE_SITES = (("liver", 0.5), ("lung", 0.2), ("liver;lung", 0.15), ("peritoneum", 0.05),
                    ("nodes", 0.05), ("liver;nodes", 0.05))
PROGRESSION_SITES = (("liver", 0.5), ("liver;lung", 0.2), ("liver;peritoneum", 0.1), ("lung", 0.1),
                     ("bone;liver", 0.05), ("nodes", 0.05))


@dataclass(frozen=True, slots=True)
class Plan:
    """What the flat row does not say about a patient's pathway.

    ``strategy``: how the projected operation was reached (``None``: two-stage when the row says
    ``two_stage`` for a hepatectomy, else one stage).  ``undated_lines``: the earliest lines known only
    by their number.  ``without_rescue``: the conversion line recorded as palliative (the patient then
    has no flat form).  ``episodes``: add follow-up contacts up to this many episode rows.
    ``entry_order``: instance numbers in a shuffled entry order instead of date order.  ``detail``:
    the chance that each optional episode is recorded — the earlier lines (else the rescue line's
    number alone says how many there were), every RECIST assessment but the last on the line, and the
    MDT review after each assessment.
    """

    strategy: str | None = None
    undated_lines: int = 0
    without_rescue: bool = False
    episodes: int | None = None
    entry_order: bool = False
    detail: float = 1.0


def recist(baseline: float, nadir: float, current: float, new_lesions: bool) -> str:
    """RECIST 1.1 category of target-lesion sums (mm): PD = new lesions or +20 % and +5 mm over the nadir."""
    if new_lesions or (current - nadir >= 5 and current >= 1.2 * nadir):
        return "PD"
    if current == 0:
        return "CR"
    return "PR" if current <= 0.7 * baseline else "SD"


def build_pathway(flat: Mapping[str, Any], draw: Draw, plan: Plan = Plan()) -> PatientRecord:
    """The patient of one valid flat row as episodes whose flat projection is the row (see the module)."""
    return _Story(flat, draw, plan).build()


@functools.lru_cache(maxsize=256)
def _canonical(codes: str, vocabulary: tuple[str, ...]) -> str:
    """A ';'-list in the vocabulary's (storage) order."""
    return join_list(codes.split(";"), vocabulary)


def _pick_sites(draw: Draw, options: tuple[tuple[str, float], ...]) -> str:
    return _canonical(draw.weighted(options), SITES)


class _Story:
    def __init__(self, flat: Mapping[str, Any], draw: Draw, plan: Plan) -> None:
        self.f, self.draw, self.plan = flat, draw, plan
        self.base = from_flat(flat)
        self.start: dt.date = flat["cetuximab_start"]
        self.prior: int = flat["prior_chemo_lines"]
        self.cycles: int | None = flat["cetuximab_cycles"]
        self.best: str | None = flat["best_response"]
        self.surgery: dt.date | None = flat["surgery_date"]
        self.progression: dt.date | None = flat["progression_date"]
        self.death: dt.date | None = flat["death_date"]
        self.end: dt.date = flat["last_contact_date"]  # = the death when dead
        self.referred = flat["referral"] == "referred"
        self.pw = Pathway(self.base.centre, self._patient())
        self.rescue_number = self.prior + 1
        self.next_number = self.rescue_number + 1
        self.busy_until = self.start  # no later line starts before this (stop of the latest line)
        self.referral_date: dt.date | None = None
        self.resected_segments: set[str] = set(split_list(flat.get("resected_segments")))
        self.first_operation: dt.date | None = None
        self.strategy = plan.strategy or ("two_stage" if flat.get("two_stage") and flat["surgery_type"] == "hepatectomy"
                                          else "one_stage")

    # ------------------------------------------------------------------------------ patient
    def _patient(self) -> Row:
        patient = dict(self.base.patient)
        draw, start = self.draw, self.start
        age = patient.get("age_at_rescue")
        if age is not None:
            birthday_later = draw.random() * 365.25 > start.timetuple().tm_yday
            patient["birth_year"] = start.year - int(age) - (1 if birthday_later else 0)
        tested = 0.7 if start.year >= 2012 else 0.08
        if draw.chance(tested):
            patient["braf_status"] = "mutant" if draw.chance(0.08) else "wild_type"
            patient["msi_status"] = "msi_high" if draw.chance(0.04) else "mss"
        else:
            patient["braf_status"] = patient["msi_status"] = "not_tested"
        return patient

    def _given_at(self, date: dt.date | None) -> str:
        if not self.referred:
            return "centre"
        if self.referral_date is not None and date is not None and date >= self.referral_date and self.draw.chance(0.5):
            return "centre"
        return "elsewhere"

    # ------------------------------------------------------------------------------ the story
    def build(self) -> PatientRecord:
        self._history()
        self._rescue_line()
        if self.surgery is not None:
            ops = self._plan_operations()
            self._referral(ops[0][0])
            on_line = self._rescue_assessments()
            self._rescue_reviews(on_line)
            self._operations(ops)
            self._adjuvant()
        else:
            if self.referred:
                self._referral(None)
            on_line = self._rescue_assessments()
            self._rescue_reviews(on_line)
        self._progression()
        self._contacts()
        return self.pw.record(entry_order=self.draw if self.plan.entry_order else None)

    # -- earlier lines ------------------------------------------------------------------------
    def _history(self) -> None:
        draw, pw = self.draw, self.pw
        partner = self.f.get("cetuximab_partner")
        last = OXA if partner == "oxaliplatin" else IRI  # the line before the rescue held its partner drug
        third = "hai;oxaliplatin" if draw.chance(0.25) else "fluoropyrimidine"
        sequence = [last, OXA if last == IRI else IRI, third] + ["other"] * max(0, self.prior - 3)
        anchor = self.start
        given = "elsewhere" if self.referred else "centre"
        dated = self.plan.detail >= 1 or draw.chance(self.plan.detail)  # else only the count is known
        for number in range(self.prior, 0, -1):
            agents = sequence[self.prior - number]
            if agents in (IRI, OXA) and draw.chance(0.3):
                agents = "bevacizumab;" + agents
            agents = _canonical(agents, AGENTS)
            if number <= self.plan.undated_lines:
                pw.line({"line_number": number, "agents": agents, "intent": "palliative", "given_at": given})
                continue
            if not dated:
                continue
            progression = anchor - days(draw.integer(14, 35))
            stop = progression - days(draw.integer(7, 21))
            cycles = draw.integer(4, 12)
            start = stop - days(14 * (cycles - 1))
            pw.line({"line_number": number, "start_date": start, "stop_date": stop, "agents": agents,
                     "intent": "palliative", "given_at": given, "cycles": cycles,
                     "best_response": draw.weighted((("PR", 0.35), ("SD", 0.45), ("PD", 0.2))),
                     "stop_reason": "progression"})
            pw.event({"event_date": progression, "event_kind": "progression",
                      "sites": _pick_sites(draw, PROGRESSION_SITES)})
            anchor = start

    # -- the rescue line ----------------------------------------------------------------------
    def _rescue_line(self) -> None:
        draw = self.draw
        line = dict(self.base.rows(Table.THERAPY_LINE)[0])
        start, cycles = self.start, self.cycles
        stop: dt.date | None = None
        reason: str | None = None
        if self.surgery is not None:
            stop = start + days(14 * max((cycles or 1) - 1, 0)) if cycles is not None else self.surgery - days(35)
            stop = max(start, min(stop, self.surgery - days(21)))
            reason = "surgery"
        elif cycles is not None:
            limit = min(d for d in (self.progression, self.end) if d is not None)
            stop = min(start + days(14 * max(cycles - 1, 0)), limit)
            if cycles == 0:
                reason = "other"
            elif self.best == "NE" and cycles <= 1:
                reason = "toxicity"
            elif self.progression is not None and (self.progression - stop).days <= 70:
                reason = "progression"
            elif self.death is not None:
                reason = "other"
            elif self.progression is None and (self.end - stop).days <= 35:
                stop = None  # still on treatment at the last contact
            else:
                reason = "completed"
        elif self.progression is not None:  # the cycles were not counted; the line ended with the progression
            stop, reason = max(start, self.progression - days(draw.integer(7, 21))), "progression"
        if stop is not None:
            line["stop_date"], line["stop_reason"] = stop, reason
            self.busy_until = stop
        weekly = draw.chance(0.8)
        male = self.f.get("sex") == "M"
        line.update({"schedule": "weekly" if weekly else "biweekly", "dose_mg_m2": 250.0 if weekly else 500.0,
                     "bsa_m2": round(draw.uniform(1.75, 2.2) if male else draw.uniform(1.5, 1.9), 2)})
        if self.plan.without_rescue:
            line["intent"] = "palliative"
        self.rescue = line
        self.pw.line(line)

    def _cycles_by(self, date: dt.date) -> int | None:
        if self.cycles is None:
            return None
        if date < self.start:
            return 0
        return min(self.cycles, (date - self.start).days // 14 + 1)

    def _referral(self, first_procedure: dt.date | None) -> None:
        if not self.referred:
            return
        draw, start = self.draw, self.start
        if first_procedure is None:
            date = min(start + days(draw.integer(14, 60)), self.end)
        else:
            date = first_procedure - days(draw.integer(14, 42))
            if date < start + days(14):
                date = min(start + days(14), first_procedure - days(7))
        self.referral_date = date
        self.pw.patient["referral_date"] = date

    # -- assessments and reviews on the rescue line ---------------------------------------------
    def _baseline_sum(self) -> float:
        draw = self.draw
        largest = self.f.get("largest_met_mm") or draw.uniform(25, 80)
        count = self.f.get("liver_mets_count") or 2
        total = largest + (largest * draw.uniform(0.4, 0.9) if count >= 2 else 0.0)
        if self.f.get("extrahepatic_disease"):
            total += draw.uniform(12, 30)
        return round(min(total, 2000.0), 1)

    def _rescue_assessments(self) -> list[tuple[dt.date, str]]:
        """RECIST assessments of the rescue line; returns (date, category) of those before any progression."""
        best, draw, start = self.best, self.draw, self.start
        if best is None or best == "NE":
            return []
        dates: list[dt.date] = []
        if self.surgery is not None and best == "PD":
            pass  # no scan showed a response: none recorded before the operation
        elif self.surgery is not None:
            first = self.first_operation or self.surgery
            t = start + days(56 + draw.integer(-3, 3))
            while t < first - days(28):
                dates.append(t)
                t += days(56 + draw.integer(-3, 3))
            dates.append(first - days(draw.integer(7, 21)))
        elif best != "PD":
            stop = self.rescue.get("stop_date")
            horizon = self.progression - days(7) if self.progression is not None else min(
                self.end, (stop or self.end) + days(28))
            t = start + days(56 + draw.integer(-3, 3))
            while t <= horizon:
                dates.append(t)
                t += days(56 + draw.integer(-3, 3))
            if not dates and self.progression is not None and (self.progression - start).days >= 28:
                dates.append(start + days((self.progression - start).days // 2))
        dates = [d for d in dates if start < d <= self.end]
        if self.plan.detail < 1:
            dates = [d for d in dates[:-1] if draw.chance(self.plan.detail)] + dates[-1:]
        baseline = self._baseline_sum()
        fractions = self._trajectory(best, len(dates))
        nadir, out = baseline, []
        for date, fraction in zip(dates, fractions, strict=True):
            current = round(baseline * fraction, 1)
            category = recist(baseline, nadir, current, False)
            self.pw.assessment({"assessment_date": date, "line_number": self.rescue_number, "category": category,
                                "baseline_sum_mm": baseline, "current_sum_mm": current, "nadir_sum_mm": nadir,
                                "new_lesions": False})
            out.append((date, category))
            nadir = min(nadir, current)
        if self.surgery is None and self.progression is not None:
            new = draw.chance(0.4)
            current = round(max(nadir * draw.uniform(1.25, 1.6), nadir + draw.uniform(6, 20)), 1)
            self.pw.assessment({"assessment_date": self.progression, "line_number": self.rescue_number,
                                "category": recist(baseline, nadir, current, new), "baseline_sum_mm": baseline,
                                "current_sum_mm": min(current, 2000.0), "nadir_sum_mm": nadir, "new_lesions": new})
        return out

    def _trajectory(self, best: str, n: int) -> list[float]:
        """Fractions of the baseline sum whose best RECIST category is ``best`` (n assessments)."""
        draw, out = self.draw, []
        if best == "PD" or n == 0:
            return [] if n == 0 else [1.0] * n
        if best in ("PR", "CR"):
            f = draw.uniform(0.45, 0.66)
            for _ in range(n):
                out.append(f)
                f *= draw.uniform(0.85, 1.0)
            if best == "CR":
                out[-1] = 0.0
            return out
        f, nadir = draw.uniform(0.75, 1.1), 1.0  # SD: above -30 % of baseline, below +20 % of the nadir
        for _ in range(n):
            f = min(max(f, 0.72), 1.15 * nadir)
            out.append(f)
            nadir = min(nadir, f)
            f *= draw.uniform(0.95, 1.08)
        return out

    def _rescue_reviews(self, on_line: list[tuple[dt.date, str]]) -> None:
        draw, pw, start = self.draw, self.pw, self.start
        operated = self.surgery is not None
        first = self.first_operation
        line = self.rescue_number
        if not self.referred:
            date = start - days(draw.integer(0, 10))
            decision = "potentially_resectable" if operated or draw.chance(0.2) else "unresectable_continue"
            pw.review({"review_date": date, "decision": decision, "line_number": line, "cycles_at_review": 0,
                       "notes": "Liver metastases progressing on previous chemotherapy; start of rescue therapy."})
        else:
            date = self.referral_date
            decision = "potentially_resectable" if operated or draw.chance(0.5) else "unresectable_continue"
            pw.review({"review_date": date, "decision": decision, "line_number": line,
                       "cycles_at_review": self._cycles_by(date), "notes": "Referred for an opinion on resection."})
        for i, (date, category) in enumerate(on_line):
            if self.plan.detail < 1 and not draw.chance(self.plan.detail):
                continue
            review = date + days(draw.integer(1, 6))
            following = on_line[i + 1][0] if i + 1 < len(on_line) else first
            if (following is not None and review >= following) or review > self.end:
                continue
            if self.referred and self.referral_date is not None and review < self.referral_date:
                continue
            if operated:
                decision = "resectable" if i == len(on_line) - 1 else "potentially_resectable"
                notes = (f"{category} after {self._cycles_by(review)} cycles; resection planned." if decision ==
                         "resectable" else f"{category}; continue and reassess.")
            else:
                decision = ("potentially_resectable" if category in ("PR", "CR") and draw.chance(0.5)
                            else "unresectable_continue")
                notes = f"{category}; not resectable yet, continue."
            pw.review({"review_date": review, "decision": decision, "line_number": line,
                       "cycles_at_review": self._cycles_by(review), "notes": notes})

    def _ensure_resectable(self, date: dt.date, after: dt.date | None, line: int | None) -> None:
        """An MDT review saying "resectable" between the previous operation (or 60 days) and ``date``."""
        low = after if after is not None else date - days(60)
        reviews = self.pw.dated[Table.MDT_REVIEW]
        if any(r["decision"] == "resectable" and low < r["review_date"] < date for r in reviews):
            return
        for back in range(2 + self.draw.integer(0, 8), 61):
            review = date - days(back)
            if review <= low:
                break
            if self.pw.review({"review_date": review, "decision": "resectable", "line_number": line,
                               "cycles_at_review": None if line is None else self._cycles_by(review),
                               "notes": "Resection planned."}):
                return

    # -- operations ---------------------------------------------------------------------------
    def _plan_operations(self) -> list[tuple[dt.date, str]]:
        """Dates and types of the procedures up to the projected operation (which comes last)."""
        draw, surgery = self.draw, self.surgery
        assert surgery is not None
        stop = self.rescue.get("stop_date") or self.start
        strategy = self.strategy
        ops: list[tuple[dt.date, str]] = []
        kind = {"hepatectomy": "hepatectomy", "exploration_only": "exploration_only",
                "ablation_only": "ablation"}[self.f["surgery_type"]]
        if strategy == "two_stage" and kind == "hepatectomy":
            low, high = stop + days(14), surgery - days(28)
            first = low + days(draw.integer(0, (high - low).days)) if high >= low else high
            ops.append((first, "two_stage_first"))
            if self.f.get("portal_vein_embolization"):
                pve = first + days(draw.integer(5, 10))
                if pve > surgery - days(21):
                    pve = first + days(max(1, (surgery - first).days // 2))
                ops.append((pve, "pve"))
            kind = "two_stage_second"
        elif strategy == "alpps" and kind == "hepatectomy":
            ops.append((surgery - days(draw.integer(7, 14)), "alpps_1"))
            kind = "alpps_2"
        elif strategy == "two_stage_dropout" and kind == "exploration_only":
            kind = "two_stage_first"
        if self.f.get("portal_vein_embolization") and not any(t == "pve" for _, t in ops):
            pve = surgery - days(draw.integer(28, 42))
            ops.append((max(pve, self.start + days(1)), "pve"))
        ops.sort()
        ops.append((surgery, kind))
        self.first_operation = next(d for d, t in ops if t != "pve")
        return ops

    def _operations(self, ops: list[tuple[dt.date, str]]) -> None:
        draw, pw = self.draw, self.pw
        surgery = self.surgery
        assert surgery is not None
        base_procedure = {k: v for k, v in self.base.rows(Table.LIVER_PROCEDURE)[0].items() if k != "procedure_no"}
        base_pathology = next(iter(self.base.rows(Table.PATHOLOGY)), None)
        major = len(self.resected_segments) >= 3
        previous: dt.date | None = None
        for date, kind in ops:  # the MDT decides an embolisation as part of the plan to resect
            self._ensure_resectable(date, previous, self.rescue_number)
            if kind != "pve":
                previous = date
        for date, kind in ops[:-1]:
            if kind == "pve":
                handle = pw.procedure({"procedure_date": date, "procedure_type": "pve",
                                       "two_stage": self.strategy == "two_stage" or None,
                                       "complications_assessed": True})
                if draw.chance(0.05):
                    pw.complication(handle, {"grade": "I", "complication_date": date + days(1),
                                             "description": "pain after embolisation, analgesics"})
                continue
            if kind == "two_stage_first":
                choices = [s for s in ("2", "3", "4") if s not in self.resected_segments] or ["3"]
                segments = draw.choice((choices, choices[-1:], choices[:1]))
                handle = pw.procedure({"procedure_date": date, "procedure_type": kind,
                                       "resected_segments": ";".join(sorted(segments, key=int)), "margin": "R0",
                                       "approach": "open", "two_stage": True, "portal_vein_embolization": False,
                                       "complications_assessed": True})
                self.resected_segments |= set(segments)
                pathology = {c: v for c, v in (base_pathology or {}).items() if c != "procedure_no"}
                pathology.update({"lesion_count": draw.integer(1, 3), "largest_lesion_mm": float(draw.integer(6, 25)),
                                  "margin_mm": float(draw.integer(2, 12))})
                pw.pathology(handle, pathology)
            else:  # alpps_1
                handle = pw.procedure({"procedure_date": date, "procedure_type": kind, "approach": "open",
                                       "two_stage": True, "complications_assessed": True})
            self._complications(handle, date, draw.weighted((("none", 0.6), ("I", 0.2), ("II", 0.2))), until=surgery)
        kind = ops[-1][1]
        procedure = {**base_procedure, "procedure_type": kind}
        if kind in ("exploration_only", "two_stage_first"):
            procedure["approach"] = "open"
        elif kind == "ablation":
            procedure["approach"] = draw.weighted((("open", 0.4), ("laparoscopic", 0.3), (None, 0.3)))
        else:
            procedure["approach"] = "laparoscopic" if not major and draw.chance(0.2) else "open"
        handle = pw.procedure(procedure)
        if procedure.get("complications_assessed"):
            self._complications(handle, surgery, self.f.get("clavien_dindo_max"))
        if base_pathology is not None:
            pathology = {c: v for c, v in base_pathology.items() if c != "procedure_no"}
            pathology.update(self._specimen(procedure.get("margin")))
            pw.pathology(handle, pathology)
        if kind in ("exploration_only", "two_stage_first"):
            review = surgery + days(draw.integer(7, 21))
            if review <= self.end:
                pw.review({"review_date": review, "decision": "unresectable_continue",
                           "notes": "Not resectable at laparotomy; back to systemic therapy."})

    def _specimen(self, margin: str | None) -> Row:
        """Lesion count, largest lesion and margin (mm) of the projected resection's specimen."""
        draw = self.draw
        count = self.f.get("liver_mets_count") or draw.integer(1, 6)
        largest = self.f.get("largest_met_mm") or draw.uniform(20, 80)
        shrink = {"CR": (0.15, 0.45), "PR": (0.4, 0.75), "SD": (0.75, 1.05)}.get(self.best or "", (0.6, 1.0))
        out: Row = {"lesion_count": draw.integer(max(1, count // 2), max(1, count)),
                    "largest_lesion_mm": float(max(3, round(largest * draw.uniform(*shrink))))}
        if margin is not None:
            out["margin_mm"] = float(draw.integer(1, 15)) if margin == "R0" else 0.0
        return out

    def _complications(self, handle: int, date: dt.date, worst: str | None, until: dt.date | None = None) -> None:
        """Complications of one procedure (dated before ``until``, default the last contact): the worst is
        ``worst``; up to two milder ones besides."""
        if worst in (None, "none"):
            return
        draw, pw = self.draw, self.pw
        room = max(0, ((until - days(1) if until is not None else self.end) - date).days)
        used: set[str] = set()

        def add(grade: str, when: dt.date) -> None:
            description = draw.choice([d for d in COMPLICATIONS[grade] if d not in used] or ["other complication"])
            if description in used:
                return
            used.add(description)
            pw.complication(handle, {"grade": grade, "complication_date": when, "description": description})

        add(worst, self.end if worst == "V" else date + days(draw.integer(1, min(room, 30)) if room else 0))
        for _ in range(draw.weighted(((0, 0.45), (1, 0.35), (2, 0.2)))):
            grade = draw.choice(_LOWER_GRADES[worst])
            add(grade, date + days(draw.integer(1, min(room, 21)) if room else 0))

    def _adjuvant(self) -> None:
        """Adjuvant chemotherapy after a resection, for half of the patients it fits."""
        draw, surgery = self.draw, self.surgery
        assert surgery is not None
        if self.f.get("margin") not in ("R0", "R1") or (self.death is not None and (self.death - surgery).days <= 120):
            return
        if not draw.chance(0.5):
            return
        start = surgery + days(draw.integer(35, 56))
        limit = (self.progression - days(14)) if self.progression is not None else self.end - days(7)
        cycles = draw.integer(4, 8)
        while cycles >= 3 and start + days(14 * (cycles - 1)) > limit:
            cycles -= 1
        if cycles < 3:
            return
        agents = self.rescue["agents"] if draw.chance(0.5) else _canonical(OXA, AGENTS)
        stop = start + days(14 * (cycles - 1))
        self.pw.line({"line_number": self.next_number, "start_date": start, "stop_date": stop, "agents": agents,
                      "intent": "adjuvant", "given_at": self._given_at(start), "cycles": cycles,
                      "stop_reason": "completed"})
        self.next_number += 1
        self.busy_until = stop

    # -- after the first progression -------------------------------------------------------------
    def _progression(self) -> None:
        draw, pw = self.draw, self.pw
        progression, end = self.progression, self.end
        if progression is None:
            return
        event = dict(self.base.rows(Table.DISEASE_EVENT)[0])
        del event["event_no"]
        recurrence = event["event_kind"] == "recurrence"
        event["sites"] = _pick_sites(draw, RECURRENCE_SITES if recurrence else PROGRESSION_SITES)
        pw.event(event)
        dead = self.death is not None
        window = (end - progression).days
        local = recurrence and event["sites"] == "liver" and window >= (150 if dead else 120)
        treated = None
        if local and draw.chance(0.45):
            treated = self._local_treatment(progression, "hepatectomy")
        elif local and draw.chance(0.4):
            treated = self._local_treatment(progression, "ablation")
        lines_before = self.next_number
        if treated is None:
            self._palliative_lines(progression)
        else:
            if (end - treated).days >= 150 and draw.chance(0.4):
                again = treated + days(draw.integer(90, (end - treated).days - 30))
                pw.event({"event_date": again, "event_kind": "recurrence",
                          "sites": _pick_sites(draw, RECURRENCE_SITES)})
                self._palliative_lines(again)
        if self.surgery is None:
            review = progression + days(draw.integer(1, 10))
            if review <= end:
                decision = "unresectable_continue" if self.next_number > lines_before else "unresectable_stop"
                pw.review({"review_date": review, "decision": decision, "line_number": self.rescue_number,
                           "cycles_at_review": self.cycles, "notes": "Progression on rescue therapy."})

    def _local_treatment(self, recurrence: dt.date, kind: str) -> dt.date | None:
        """A repeat hepatectomy or an ablation for a liver-only recurrence (None if it does not fit)."""
        draw, pw = self.draw, self.pw
        latest = self.end - days(DEFAULT_POSTOP_WINDOW_DAYS + 1 if self.death is not None else 21)
        date = recurrence + days(draw.integer(42, 84) if kind == "hepatectomy" else draw.integer(21, 56))
        date = min(date, latest)
        if date < recurrence + days(21):
            return None
        pw.review({"review_date": date - days(draw.integer(7, 14)), "decision": "resectable",
                   "notes": "Liver-only recurrence; " + ("repeat hepatectomy." if kind == "hepatectomy"
                                                         else "small lesion, ablation.")})
        self._ensure_resectable(date, recurrence, None)
        if kind == "hepatectomy":
            free = [s for s in "2345678" if s not in self.resected_segments] or list("23")
            take = sorted({draw.choice(free) for _ in range(draw.integer(1, 2))}, key=int)
            self.resected_segments |= set(take)
            margin = "R0" if draw.chance(0.8) else "R1"
            handle = pw.procedure({"procedure_date": date, "procedure_type": "hepatectomy",
                                   "resected_segments": ";".join(take), "margin": margin,
                                   "approach": "laparoscopic" if draw.chance(0.2) else "open",
                                   "two_stage": False, "portal_vein_embolization": False,
                                   "complications_assessed": True})
            pw.pathology(handle, {"steatosis_pct": float(draw.choice((0, 5, 10, 20))), "steatohepatitis": False,
                                  "sinusoidal_dilatation_grade": draw.choice((0, 0, 1)), "fibrosis_stage": 0,
                                  "nodular_regenerative_hyperplasia": False, "lesion_count": draw.integer(1, 2),
                                  "largest_lesion_mm": float(draw.integer(8, 40)),
                                  "margin_mm": float(draw.integer(1, 10)) if margin == "R0" else 0.0})
            worst = draw.weighted((("none", 0.55), ("I", 0.15), ("II", 0.15), ("IIIa", 0.1), ("IIIb", 0.05)))
        else:
            handle = pw.procedure({"procedure_date": date, "procedure_type": "ablation",
                                   "approach": draw.weighted((("laparoscopic", 0.5), (None, 0.5))),
                                   "complications_assessed": True})
            worst = draw.weighted((("none", 0.8), ("I", 0.15), ("II", 0.05)))
        self._complications(handle, date, worst)
        return date

    def _palliative_lines(self, after: dt.date) -> None:
        """Lines after a progression, each perhaps ended by the next progression."""
        draw, pw, end = self.draw, self.pw, self.end
        mutant = self.pw.patient.get("ras_status") == "mutant"
        start = max(after, self.busy_until) + days(draw.integer(14, 35))
        p, previous = 0.75, None
        while draw.chance(p) and start <= end - days(21):
            options = [(r, w) for r, w in LATER_REGIMENS if r != previous and not (mutant and r == "panitumumab")]
            agents = draw.weighted(options)
            previous = agents
            cycles = draw.integer(2, 12)
            stop: dt.date | None = start + days(14 * (cycles - 1))
            reason: str | None = "completed"
            if stop > end - days(7):  # type: ignore[operator]
                if self.death is None:
                    stop, reason, cycles = None, None, (end - start).days // 14 + 1  # still on it
                else:
                    stop = max(start, end - days(draw.integer(7, 21)))
                    reason, cycles = "other", (stop - start).days // 14 + 1
            progression = None
            if stop is not None and reason == "completed" and (end - stop).days > 28 and draw.chance(0.75):
                progression = stop + days(draw.integer(7, 21))
                reason = "progression"
            pw.line({"line_number": self.next_number, "start_date": start, "stop_date": stop,
                     "agents": _canonical(agents, AGENTS), "intent": "palliative",
                     "given_at": self._given_at(start), "cycles": cycles,
                     "best_response": draw.weighted((("PR", 0.15), ("SD", 0.5), ("PD", 0.35))),
                     "stop_reason": reason})
            self.next_number += 1
            if stop is not None:
                self.busy_until = stop
            if progression is None:
                break
            pw.event({"event_date": progression, "event_kind": "progression",
                      "sites": _pick_sites(draw, PROGRESSION_SITES)})
            start = progression + days(draw.integer(14, 35))
            p *= 0.5

    # -- contacts -----------------------------------------------------------------------------
    def _contacts(self) -> None:
        draw, pw, end, start = self.draw, self.pw, self.end, self.start
        pw.contact({"contact_date": end, "vital_status": "dead" if self.death is not None else "alive"})
        span = (end - start).days
        if self.plan.episodes is None:
            t = start + days(draw.integer(21, 42))
            while t < end - days(7):
                pw.contact({"contact_date": t, "vital_status": "alive"})
                t += days(draw.integer(56, 112))
            return
        wanted = min(self.plan.episodes - pw.count(), (span - 1) // 3)
        if wanted <= 0:
            return
        step = span / (wanted + 1)
        for i in range(1, wanted + 1):
            offset = int(step * i + draw.uniform(-step / 3, step / 3))
            if 0 < offset < span:
                pw.contact({"contact_date": start + days(offset), "vital_status": "alive"})
