"""Random multi-centre, multi-episode registries (synthetic) for tests and benchmarks.

Each patient is a random *valid flat row* (:func:`random_flat`) wrapped in a whole pathway by the
same episode writer as the reference cohort (:func:`oncosurg.reference.episodes.build_pathway`), so
every record passes the rules across episodes, its flat projection is the drawn row (except for the
few patients recorded without a conversion line, who have no flat form), and the patient ``i`` of a
seed is the same whatever ``n`` is.  Besides the reference cohort's episodes they include what a
real registry holds and the projection must handle: ALPPS, ablation as the only operation, a
two-stage strategy stopped after its first stage, earlier lines known only by their number,
instance numbers in entry order rather than date order.

    >>> from oncosurg.reference import random_registry
    >>> records = random_registry(1000, seed=7, centres=3, episodes=12)
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Sequence
from typing import Any

from oncosurg.pathway.flat import PatientRecord
from oncosurg.reference.builder import Draw, days
from oncosurg.reference.episodes import Plan, build_pathway
from oncosurg.schema import COLUMNS

FIRST_START = dt.date(2008, 1, 1)
LAST_START = dt.date(2022, 6, 30)
#: Data cut of random registries: no date is later.
CUT = dt.date(2024, 6, 30)
DEFAULT_EPISODES = 10

_RESECTIONS = ("2;3", "3", "6", "5;6", "6;7", "7;8", "4;5", "2;3;4", "5;6;7;8", "4;5;6;7;8", "2;3;4;5;8")


def centre_names(centres: int | Sequence[str]) -> tuple[str, ...]:
    """Centre names: the given ones, or ``Centre 1 (synthetic)`` … for a count."""
    if isinstance(centres, int):
        if centres < 1:
            raise ValueError("centres: at least one centre")
        return tuple(f"Centre {i} (synthetic)" for i in range(1, centres + 1))
    names = tuple(centres)
    if not names:
        raise ValueError("centres: at least one centre")
    return names


def iter_random_registry(n: int, seed: int = 0, *, centres: int | Sequence[str] = 4,
                         episodes: int = DEFAULT_EPISODES, without_rescue: float = 0.02
                         ) -> Iterator[PatientRecord]:
    """``n`` random patients, one at a time (constant memory), identical for identical arguments.

    ``centres``: names, or how many; patients are dealt round-robin.  ``episodes``: the mean number
    of episode rows per patient, from about 9 up (the clinical story takes about 7 rows without its
    optional episodes and 15 with all of them: :attr:`Plan.detail` rises from 0 to 1 as ``episodes``
    goes from 10 to 17, and follow-up contacts make up the rest).  ``without_rescue``: share of
    patients whose conversion line is recorded as palliative, who have no flat form.
    """
    for _, record in iter_random_pairs(n, seed, centres=centres, episodes=episodes, without_rescue=without_rescue):
        yield record


def iter_random_pairs(n: int, seed: int = 0, *, centres: int | Sequence[str] = 4, episodes: int = DEFAULT_EPISODES,
                      without_rescue: float = 0.02) -> Iterator[tuple[dict[str, Any] | None, PatientRecord]]:
    """Like :func:`iter_random_registry`, each record with the flat row it projects onto (typed values;
    ``None`` for a patient without a conversion line, who has no flat form)."""
    if seed < 0:
        raise ValueError("seed: a whole number >= 0")
    names = centre_names(centres)
    detail = min(1.0, max(0.0, (episodes - 10) / 7))
    for i in range(n):
        draw = Draw((((seed << 32) + i) << 1) | 1)
        flat, strategy = random_flat(draw, f"RND-{i + 1:06d}", names[i % len(names)])
        prior = flat["prior_chemo_lines"]
        plan = Plan(strategy=strategy,
                    undated_lines=draw.integer(1, prior) if draw.chance(0.1) else 0,
                    without_rescue=draw.chance(without_rescue),
                    episodes=draw.integer(episodes - episodes // 3, episodes + episodes // 3),
                    entry_order=draw.chance(0.1), detail=detail)
        yield (None if plan.without_rescue else flat), build_pathway(flat, draw, plan)


def random_registry(n: int, seed: int = 0, *, centres: int | Sequence[str] = 4, episodes: int = DEFAULT_EPISODES,
                    without_rescue: float = 0.02) -> list[PatientRecord]:
    """``n`` random valid patients with their episodes (see :func:`iter_random_registry`)."""
    return list(iter_random_registry(n, seed, centres=centres, episodes=episodes, without_rescue=without_rescue))


def _weibull_days(draw: Draw, scale_months: float, shape: float) -> int:
    return max(21, round(scale_months * 30.4375 * (-math.log(1.0 - draw.random())) ** (1.0 / shape)))


def _maybe(draw: Draw, value: Any, missing: float = 0.03) -> Any:
    return None if draw.chance(missing) else value


def random_flat(draw: Draw, patient_id: str, centre: str) -> tuple[dict[str, Any], str]:
    """One random valid flat row (typed values) and the surgical strategy behind its operation."""
    f: dict[str, Any] = dict.fromkeys(COLUMNS)
    start = FIRST_START + days(draw.integer(0, (LAST_START - FIRST_START).days))
    referred = draw.chance(0.2)
    modern = start.year >= 2009
    mets = draw.integer(1, 4) + (draw.integer(0, 10) if draw.chance(0.5) else 0)
    site = draw.weighted((("colon", 0.7), ("rectum", 0.3)))
    f.update({
        "patient_id": patient_id, "centre": centre, "referral": "referred" if referred else "in_house",
        "sex": _maybe(draw, draw.weighted((("M", 0.6), ("F", 0.4)))),
        "age_at_cetuximab": _maybe(draw, round(draw.uniform(28, 86), 1)),
        "primary_site": site,
        "primary_side": _maybe(draw, "left" if site == "rectum" else draw.weighted((("left", 0.6), ("right", 0.4)))),
        "ras_status": _maybe(draw, draw.weighted((("wild_type", 0.55), ("mutant", 0.4), ("not_tested", 0.05))
                                                  if modern else (("not_tested", 0.85), ("wild_type", 0.1),
                                                                  ("mutant", 0.05)))),
        "liver_mets_count": _maybe(draw, mets),
        "largest_met_mm": _maybe(draw, float(draw.integer(10, 150))),
        "bilobar": _maybe(draw, mets >= 3 and draw.chance(0.85)),
        "extrahepatic_disease": _maybe(draw, draw.chance(0.25)),
        "prior_chemo_lines": draw.weighted(((1, 0.45), (2, 0.35), (3, 0.15), (4, 0.05))),
        "cetuximab_start": start,
        "cetuximab_partner": draw.weighted((("irinotecan", 0.6), ("oxaliplatin", 0.2), ("both", 0.08),
                                            ("none", 0.07), ("other", 0.05))),
    })
    operated = draw.chance(0.7 if referred else 0.25)
    cycles = draw.integer(2, 16)
    strategy = "one_stage"
    if operated:
        surgery = start + days(14 * cycles + draw.integer(21, 60))
        kind = draw.weighted((("hepatectomy", 0.78), ("exploration_only", 0.08), ("ablation_only", 0.14)))
        if kind == "hepatectomy":
            strategy = draw.weighted((("two_stage", 0.08), ("alpps", 0.03), ("one_stage", 0.89)))
        elif kind == "exploration_only" and draw.chance(0.15):
            strategy = "two_stage_dropout"
        f.update({"cetuximab_cycles": _maybe(draw, cycles),
                  "best_response": _maybe(draw, draw.weighted((("CR", 0.05), ("PR", 0.6), ("SD", 0.35)))),
                  "surgery_date": surgery, "surgery_type": kind,
                  "two_stage": strategy != "one_stage", "portal_vein_embolization": False})
        postop_death = draw.chance(0.02)
        if kind == "hepatectomy":
            segments = ("4;5;6;7;8" if strategy == "alpps" else draw.choice(("5;6;7;8", "4;5;6;7;8"))
                        if strategy == "two_stage" else draw.choice(_RESECTIONS))
            f["resected_segments"] = segments
            f["margin"] = draw.weighted((("R0", 0.8), ("R1", 0.17), ("R2", 0.03)))
            f["portal_vein_embolization"] = strategy == "two_stage" or (
                strategy == "one_stage" and segments.count(";") >= 3 and draw.chance(0.3))
            if draw.chance(0.85):
                f.update({"steatosis_pct": _maybe(draw, float(5 * draw.integer(0, 12))),
                          "steatohepatitis": _maybe(draw, draw.chance(0.1)),
                          "sinusoidal_dilatation_grade": _maybe(draw, draw.integer(0, 3)),
                          "fibrosis_stage": _maybe(draw, draw.integer(0, 3)),
                          "nodular_regenerative_hyperplasia": _maybe(draw, draw.chance(0.05)),
                          "tumour_regression_grade": _maybe(draw, draw.integer(1, 5))})
        if postop_death:
            f["clavien_dindo_max"] = "V"
            last, dead = surgery + days(draw.integer(1, 59)), True
        else:
            f["clavien_dindo_max"] = draw.weighted((("none", 0.5), ("I", 0.15), ("II", 0.17), ("IIIa", 0.08),
                                                    ("IIIb", 0.04), ("IVa", 0.04), ("IVb", 0.02)))
            death = max(start + days(_weibull_days(draw, 60, 1.2)), surgery + days(61 + draw.integer(0, 90)))
            last, dead = _follow_up(draw, death, surgery + days(30))
        progression = None
        if not postop_death and (last - surgery).days > 61:
            recurs = {"hepatectomy": 0.9 if f["margin"] == "R2" else 0.6,
                      "exploration_only": 0.9, "ablation_only": 0.5}[kind]
            if draw.chance(recurs):
                progression = surgery + days(draw.integer(21 if kind == "exploration_only" else 60,
                                                          (last - surgery).days - 1))
    else:
        death = start + days(_weibull_days(draw, 14, 1.3))
        last, dead = _follow_up(draw, death, start + days(21))
        progression = None
        if draw.chance(0.85):
            candidate = start + days(max(21, int((last - start).days * draw.uniform(0.3, 0.8))))
            progression = candidate if candidate <= last else None
        horizon = (progression or last) - start
        cycles = max(1, min(cycles, horizon.days // 14))
        best = "PD" if progression is not None and (progression - start).days < 70 else draw.weighted(
            (("PR", 0.35), ("SD", 0.55), ("CR", 0.02), ("NE", 0.08)))
        if best == "NE":
            cycles = draw.integer(0, 1)
        f.update({"cetuximab_cycles": _maybe(draw, cycles), "best_response": _maybe(draw, best)})
    f.update({"progression_date": progression, "death_date": last if dead else None, "last_contact_date": last})
    return f, strategy


def _follow_up(draw: Draw, death: dt.date, earliest: dt.date) -> tuple[dt.date, bool]:
    """Last contact and vital status: the death if before the cut, else alive near the cut (5 % lost)."""
    if death <= CUT:
        return death, True
    last = CUT - days(draw.integer(0, 120))
    if draw.chance(0.05):
        last = earliest + days(int((last - earliest).days * draw.random()))
    return max(last, earliest), False
