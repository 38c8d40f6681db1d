"""Simulated multi-episode registries (synthetic) and their long-format CSV files, for tests.

:func:`simulate` draws patients along the pathway of the seed study: an earlier line that failed, a
rescue (conversion) line with cetuximab that is the index, perhaps a hepatectomy while alive and
followed (a decision taken *after* time zero), recurrences or progressions, perhaps a repeat
hepatectomy, contacts up to the last one (the death when dead).  Referred patients are referred
after their rescue line started elsewhere.  ``effect`` is the hazard ratio of death after the
hepatectomy (1 = no effect).  Every record passes the episode rules (a death within the
postoperative window gets its grade V complication).

``tests/reference/make_episode_registries.py`` writes some of them as long registries (the files the
R scripts of ``tests/reference/`` read).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import Table

DAY = dt.timedelta(days=1)


def simulate(n: int, seed: int, *, effect: float = 1.0, referred: float = 0.2, median_death: float = 420.0,
             median_resection: float = 150.0, resectable: float = 0.5, start: dt.date = dt.date(2010, 1, 1),
             accrual_days: int = 900, follow_days: int = 1500, centre: str = "Simulated centre (synthetic)"
             ) -> list[PatientRecord]:
    """``n`` patients; times in whole days.  A resectable patient is resected at an exponential time
    (median ``median_resection`` days) if still alive and followed then; death hazard after the
    resection is ``effect`` times the hazard before it."""
    rng = np.random.default_rng(seed)
    lam = np.log(2) / median_death
    out: list[PatientRecord] = []
    i = -1
    while len(out) < n:
        i += 1
        index = start + int(rng.integers(0, accrual_days)) * DAY
        is_referred = rng.random() < referred
        admin = (start + follow_days * DAY - index).days  # administrative end of follow-up
        censor = min(admin, int(rng.integers(60, admin + 400)))
        resectable_patient = rng.random() < resectable
        surgery = max(1, round(rng.exponential(median_resection / np.log(2)))) if resectable_patient else None
        t0 = rng.exponential(1 / lam)  # time to death without a resection
        referral_day = int(rng.integers(0, 240)) if is_referred else None
        if surgery is not None and referral_day is not None and surgery <= referral_day:
            surgery = referral_day + int(rng.integers(7, 60))  # operated at the centre, after the referral
        # the hazard of death is multiplied by `effect` from the day of the operation on
        death = t0 if surgery is None or t0 <= surgery else surgery + rng.exponential(1 / (lam * effect))
        death = max(1, round(death))
        end = min(death, censor)
        dead = death <= censor
        # a referred patient who died or was lost before the referral never reaches this registry
        if referral_day is not None and referral_day >= end:
            continue
        if surgery is not None and not surgery < end:
            surgery = None  # dead or lost before the operation
        patient: dict[str, Any] = {
            "patient_id": f"S{seed}-{i:05d}", "sex": str(rng.choice(["F", "M"])),
            "age_at_rescue": float(round(rng.uniform(35, 80), 1)),
            "ras_status": str(rng.choice(["wild_type", "not_tested"])),
            "referral": "referred" if is_referred else "in_house",
            "referral_date": index + referral_day * DAY if is_referred else None,
        }
        given = "elsewhere" if is_referred else "centre"
        prior = index - int(rng.integers(120, 400)) * DAY
        lines = [
            {"line_number": 1, "start_date": prior, "stop_date": index - 14 * DAY,
             "agents": "oxaliplatin;fluoropyrimidine", "intent": "palliative", "given_at": given,
             "stop_reason": "progression"},
            {"line_number": 2, "start_date": index, "agents": "cetuximab;irinotecan", "intent": "conversion",
             "given_at": given, "cycles": int(rng.integers(2, 12))},
        ]
        record = PatientRecord(centre, patient)
        record.episodes[Table.THERAPY_LINE] = lines
        events = [{"event_no": 1, "event_date": prior + int(rng.integers(60, 100)) * DAY,
                   "event_kind": "progression", "sites": "liver"}]
        procedures: list[dict[str, Any]] = []
        complications: list[dict[str, Any]] = []
        end_date = index + end * DAY
        reviews = [{"review_no": 1, "review_date": index + 7 * DAY if referral_day is None
                    else index + referral_day * DAY, "decision": "unresectable_continue", "line_number": 2}]
        if surgery is not None:
            margin = str(rng.choice(["R0", "R0", "R0", "R1"]))
            segments = str(rng.choice(["5;6", "2;3", "4;5;6;7;8", "6;7;8"]))
            procedures.append({"procedure_no": 1, "procedure_date": index + surgery * DAY,
                               "procedure_type": "hepatectomy", "resected_segments": segments, "margin": margin,
                               "complications_assessed": True})
            reviews.append({"review_no": 2, "review_date": index + max(surgery - 14, 1) * DAY,
                            "decision": "resectable", "line_number": 2})
            if rng.random() < 0.3:
                grade = str(rng.choice(["I", "II", "IIIa", "IIIb"]))
                complications.append({"procedure_no": 1, "complication_no": 1, "grade": grade,
                                      "complication_date": index + (surgery + 3) * DAY})
            adjuvant = surgery + int(rng.integers(30, 75))
            if rng.random() < 0.5 and adjuvant < end:
                lines.append({"line_number": 3, "start_date": index + adjuvant * DAY, "agents":
                              "oxaliplatin;fluoropyrimidine", "intent": "adjuvant", "given_at": "centre",
                              "cycles": 6})
            recur = surgery + int(rng.exponential(300)) + 1
            if recur < end:
                events.append({"event_no": 2, "event_date": index + recur * DAY, "event_kind": "recurrence",
                               "sites": "liver"})
                repeat = recur + int(rng.integers(30, 120))
                if rng.random() < 0.4 and repeat < end:
                    procedures.append({"procedure_no": 2, "procedure_date": index + repeat * DAY,
                                       "procedure_type": "hepatectomy", "resected_segments": "3",
                                       "margin": "R0", "complications_assessed": True})
        elif rng.random() < 0.8:
            progress = int(rng.integers(30, 400))
            if progress < end:
                events.append({"event_no": 2, "event_date": index + progress * DAY, "event_kind": "progression",
                               "sites": "liver;lung"})
        complications = [c for c in complications if c["complication_date"] <= end_date]
        if dead and procedures:
            last = procedures[-1]
            if 0 <= (end_date - last["procedure_date"]).days <= 60:
                number = 1 + sum(c["procedure_no"] == last["procedure_no"] for c in complications)
                complications.append({"procedure_no": last["procedure_no"], "complication_no": number, "grade": "V",
                                      "complication_date": end_date})
        record.episodes[Table.MDT_REVIEW] = [r for r in reviews if r["review_date"] <= end_date]
        contacts = [{"contact_no": k + 1, "contact_date": index + d * DAY, "vital_status": "alive"}
                    for k, d in enumerate(range(90, end, 90))]
        contacts.append({"contact_no": len(contacts) + 1, "contact_date": index + end * DAY,
                         "vital_status": "dead" if dead else "alive"})
        record.episodes[Table.DISEASE_EVENT] = events
        record.episodes[Table.CONTACT] = contacts
        if procedures:
            record.episodes[Table.LIVER_PROCEDURE] = procedures
        if complications:
            record.episodes[Table.COMPLICATION] = complications
        out.append(record)
    return out
