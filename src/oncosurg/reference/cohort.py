"""Construction of the synthetic reference cohort (151 patients, Reference Centre (synthetic)).

The cohort is *synthetic*: no row describes a real patient.  It is built so that every figure
published by the seed study (Adam et al., J Clin Oncol 2007;25:4593-602; see docs/seed-study.md) comes out of
the patient-level records when they are analysed with the seed protocol.

Two layers (see ``docs/reference-cohort.md``):

* **Pinned** - the 27 operated patients are written out in :data:`OPERATED` (referral, operation,
  partner drug, cycles, prior lines, Clavien-Dindo grade, liver pathology class, tumour regression
  and, above all, the *intervals* cetuximab start -> surgery -> progression -> last contact/death in
  months).  Every published count and every time figure depends only on those pinned values, so
  they hold for any seed.
* **Plausible** - a seeded :class:`numpy.random.Generator` fills what the publication does not
  constrain: calendar placement of each operated patient inside the accrual window, demographics
  and tumour burden, the normal-range pathology values, and the whole course of the 124
  non-operated patients (BOND-era survival), plus a few deliberately empty optional cells.

These rows are the flat *projection* of the cohort: :mod:`oncosurg.reference.episodes` writes each
patient's whole pathway (earlier and later lines, reviews, assessments, procedures, complications,
events, contacts) around its row without changing it, and :func:`oncosurg.reference.reference_records`
returns the result.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from oncosurg.schema import COLUMNS, DAYS_PER_MONTH, DEFAULT_POSTOP_WINDOW_DAYS

CENTRE = "Reference Centre (synthetic)"
ACCRUAL_START = dt.date(2004, 2, 1)
ACCRUAL_END = dt.date(2006, 4, 30)
#: Data cut: no last_contact_date is later than this.
DATA_CUT = dt.date(2007, 3, 31)
POSTOP_WINDOW_DAYS = DEFAULT_POSTOP_WINDOW_DAYS
N_PATIENTS = 151
N_IN_HOUSE = 133
DEFAULT_SEED = 2007

#: Last contact of a living operated patient lies at most this many days before the data cut.
_MAX_ALIVE_GAP_DAYS = 90


def days(months: float) -> int:
    """Whole days for a duration given in months (months = days / 30.4375)."""
    return round(months * DAYS_PER_MONTH)


# --------------------------------------------------------------------------------------------
# Pinned part: the 27 operated patients
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operated:
    """One pinned operated patient.

    Times are months from cetuximab start: ``surgery`` (start -> operation), ``progression``
    (start -> first progression/recurrence, None = none recorded) and ``last`` (start -> last
    contact, which is the death when ``dead``).  ``liver`` is ``"normal"`` (all non-tumoral
    findings below the seed protocol's thresholds) or the name of an abnormal profile in
    :data:`_ABNORMAL_LIVER`.
    """

    key: str
    referral: str
    surgery_type: str
    surgery: float
    progression: float | None
    last: float
    dead: bool
    cycles: int
    partner: str
    prior_lines: int
    clavien: str
    best_response: str
    segments: str = ""
    margin: str = ""
    two_stage: str = "no"
    pve: str = "no"
    liver: str = "normal"
    trg: int | None = None


_H, _X = "hepatectomy", "exploration_only"
_IN, _REF = "in_house", "referred"
_I, _O, _B = "irinotecan", "oxaliplatin", "both"

# Roles (docs/reference-cohort.md): P = alive after recurrence, D = alive and disease-free,
# A = dead (A1 postoperative death, A2 death after recurrence), X = exploration only.
OPERATED: tuple[Operated, ...] = (
    # --- 9 in-house hepatectomies ---------------------------------------------------------
    Operated("P1", _IN, _H, 4.0, 6.8, 13.5, False, 6, _I, 2, "II", "PR", "5;6;7;8", "R0"),
    Operated("P5", _IN, _H, 4.1, 10.4, 18.3, False, 6, _I, 1, "none", "PR", "2;3", "R0",
             liver="steatosis"),
    Operated("P9", _IN, _H, 3.9, 13.0, 26.9, False, 5, _I, 2, "none", "SD", "6;7", "R1"),
    Operated("P12", _IN, _H, 3.7, 19.5, 31.5, False, 5, _O, 3, "I", "PR", "4;5;6;7;8", "R0",
             pve="yes"),
    Operated("D2", _IN, _H, 4.5, None, 11.0, False, 7, _I, 1, "none", "PR", "5;6", "R0"),
    Operated("D5", _IN, _H, 3.7, None, 19.6, False, 5, _I, 2, "IIIa", "PR", "2;3;4", "R0",
             liver="sinusoidal"),
    Operated("D8", _IN, _H, 3.3, None, 27.5, False, 4, _I, 1, "none", "CR", "5;6;7;8", "R0", trg=1),
    Operated("D10", _IN, _H, 6.1, None, 37.0, False, 10, _I, 2, "II", "PR", "4;5;6;7;8", "R0",
             two_stage="yes", pve="yes", trg=1),
    Operated("A2", _IN, _H, 3.9, 9.0, 15.6, True, 6, _I, 2, "none", "SD", "6;7;8", "R1",
             liver="fibrosis"),
    # --- 16 referred hepatectomies --------------------------------------------------------
    Operated("A1", _REF, _H, 4.2, None, 5.0, True, 6, _I, 3, "V", "PR", "4;5;6;7;8", "R0",
             pve="yes", liver="sinusoidal_nrh"),
    Operated("P2", _REF, _H, 3.6, 7.9, 17.2, False, 5, _I, 2, "IIIb", "SD", "2;3;6", "R1"),
    Operated("P3", _REF, _H, 4.4, 8.8, 14.6, False, 7, _O, 2, "none", "PR", "5;6;7;8", "R0",
             liver="steatohepatitis"),
    Operated("P4", _REF, _H, 3.9, 9.6, 20.0, False, 6, _I, 1, "II", "PR", "3;4", "R0"),
    Operated("P6", _REF, _H, 4.7, 11.3, 21.4, False, 8, "none", 2, "none", "PR", "5;6;7;8", "R0"),
    Operated("P7", _REF, _H, 3.5, 12.1, 19.1, False, 4, _I, 2, "I", "SD", "7;8", "R0",
             liver="steatosis_high"),
    Operated("P8", _REF, _H, 4.3, 12.4, 23.8, False, 6, _O, 1, "none", "PR", "4;5;6;7;8", "R1",
             liver="sinusoidal_fibrosis"),
    Operated("P10", _REF, _H, 5.2, 12.7, 24.6, False, 8, _I, 3, "IVa", "PR", "5;6;7;8", "R0",
             two_stage="yes", pve="yes"),
    Operated("P11", _REF, _H, 4.6, 16.8, 29.8, False, 7, _B, 2, "none", "SD", "2;3;4;5;8", "R0"),
    Operated("P13", _REF, _H, 4.9, 23.0, 35.2, False, 8, _I, 1, "none", "PR", "6;7", "R0"),
    Operated("D1", _REF, _H, 3.4, None, 10.2, False, 5, _I, 1, "IIIa", "PR", "2;3", "R0"),
    Operated("D3", _REF, _H, 4.0, None, 12.0, False, 6, _O, 1, "II", "PR", "5;6;7;8", "R0",
             liver="steatohepatitis_mild"),
    Operated("D4", _REF, _H, 4.8, None, 16.4, False, 8, _I, 2, "none", "PR", "4;5;6;7;8", "R0",
             two_stage="yes", pve="yes"),
    Operated("D6", _REF, _H, 4.6, None, 20.6, False, 7, _I, 1, "II", "PR", "6;7;8", "R1"),
    Operated("D7", _REF, _H, 5.5, None, 22.7, False, 9, _I, 2, "IIIa", "PR", "5;6;7;8", "R0",
             liver="nrh"),
    Operated("D9", _REF, _H, 4.1, None, 32.8, False, 6, _I, 3, "none", "PR", "2;3;4", "R0"),
    # --- 2 referred laparotomies without resection ----------------------------------------
    Operated("X1", _REF, _X, 4.5, 5.6, 11.0, True, 7, _I, 2, "none", "SD"),
    Operated("X2", _REF, _X, 3.8, 6.0, 14.0, False, 4, "other", 2, "I", "SD"),
)

# Non-tumoral liver profiles that meet the seed protocol's abnormality predicate (steatosis_pct > 30 or
# steatohepatitis or sinusoidal dilatation grade >= 2 or fibrosis stage >= 2 or NRH):
# (steatosis_pct, steatohepatitis, sinusoidal_dilatation_grade, fibrosis_stage, NRH)
_ABNORMAL_LIVER: dict[str, tuple[int, str, int, int, str]] = {
    "steatosis": (40, "no", 1, 1, "no"),
    "steatosis_high": (60, "no", 0, 1, "no"),
    "steatohepatitis": (35, "yes", 1, 1, "no"),
    "steatohepatitis_mild": (25, "yes", 0, 1, "no"),
    "sinusoidal": (10, "no", 2, 0, "no"),
    "sinusoidal_nrh": (5, "no", 3, 1, "yes"),
    "sinusoidal_fibrosis": (15, "no", 2, 2, "no"),
    "fibrosis": (20, "no", 1, 2, "no"),
    "nrh": (0, "no", 1, 0, "yes"),
}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _iso(d: dt.date | None) -> str:
    return "" if d is None else d.isoformat()


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"


def _pick(rng: np.random.Generator, choices: tuple[str, ...], probs: tuple[float, ...]) -> str:
    return str(choices[int(rng.choice(len(choices), p=np.asarray(probs) / sum(probs)))])


def _window_days() -> int:
    return (ACCRUAL_END - ACCRUAL_START).days


def _baseline(rng: np.random.Generator, operated: bool) -> dict[str, str]:
    """Demographics and tumour burden at cetuximab start (plausible, seeded)."""
    age = float(np.clip(rng.normal(57.0 if operated else 61.0, 9.5), 29, 84))
    site = _pick(rng, ("colon", "rectum"), (0.7, 0.3))
    side = "left" if site == "rectum" else _pick(rng, ("left", "right"), (0.65, 0.35))
    mets = 1 + int(rng.poisson(5.0 if operated else 7.0))
    largest = float(np.clip(rng.lognormal(np.log(48.0 if operated else 55.0), 0.45), 12, 190))
    return {
        "sex": _pick(rng, ("M", "F"), (0.6, 0.4)),
        "age_at_cetuximab": str(round(age)),
        "primary_site": site,
        "primary_side": side,
        "ras_status": _pick(rng, ("not_tested", "wild_type", "mutant"), (0.9, 0.07, 0.03)),
        "liver_mets_count": str(mets),
        "largest_met_mm": str(round(largest)),
        "bilobar": _yn(mets >= 3 and rng.random() < (0.85 if operated else 0.9)),
        "extrahepatic_disease": _yn(rng.random() < (0.1 if operated else 0.35)),
    }


def _empty_row() -> dict[str, str]:
    return dict.fromkeys(COLUMNS, "")


def _operated_row(p: Operated, rng: np.random.Generator) -> dict[str, str]:
    """Row of one pinned operated patient; the seed only places it in calendar time."""
    surgery_d, last_d = days(p.surgery), days(p.last)
    prog_d = None if p.progression is None else days(p.progression)
    cut_minus_last = (DATA_CUT - ACCRUAL_START).days - last_d  # latest possible start offset
    if p.dead:
        # Death anywhere compatible with the accrual window and the data cut.
        hi = min(_window_days(), cut_minus_last)
        start = ACCRUAL_START + dt.timedelta(days=int(rng.integers(0, hi + 1)))
    else:
        # Alive: last contact within _MAX_ALIVE_GAP_DAYS of the data cut, start inside accrual.
        lo = max(0, (DATA_CUT - ACCRUAL_END).days - last_d)
        hi = min(_MAX_ALIVE_GAP_DAYS, (DATA_CUT - ACCRUAL_START).days - last_d)
        if lo > hi:  # pragma: no cover - guarded by the pinned table and the tests
            raise ValueError(f"{p.key}: follow-up of {p.last} months does not fit the accrual window")
        gap = int(rng.integers(lo, hi + 1))
        start = DATA_CUT - dt.timedelta(days=gap + last_d)
    row = _empty_row()
    row.update(_baseline(rng, operated=True))
    last = start + dt.timedelta(days=last_d)
    row.update({
        "referral": p.referral,
        "prior_chemo_lines": str(p.prior_lines),
        "cetuximab_start": _iso(start),
        "cetuximab_partner": p.partner,
        "cetuximab_cycles": str(p.cycles),
        "best_response": p.best_response,
        "surgery_date": _iso(start + dt.timedelta(days=surgery_d)),
        "surgery_type": p.surgery_type,
        "resected_segments": p.segments,
        "two_stage": p.two_stage,
        "portal_vein_embolization": p.pve,
        "clavien_dindo_max": p.clavien,
        "progression_date": _iso(None if prog_d is None else start + dt.timedelta(days=prog_d)),
        "death_date": _iso(last if p.dead else None),
        "last_contact_date": _iso(last),
    })
    if p.surgery_type == _H:
        if p.liver == "normal":
            liver = (
                int(rng.choice([0, 5, 10, 15, 20, 25])),
                "no",
                int(rng.choice([0, 0, 1])),
                int(rng.choice([0, 0, 1])),
                "no",
            )
        else:
            liver = _ABNORMAL_LIVER[p.liver]
        trg = p.trg if p.trg is not None else int(rng.choice([2, 3, 3, 4, 4, 5]))
        row.update({
            "margin": p.margin,
            "steatosis_pct": str(liver[0]),
            "steatohepatitis": liver[1],
            "sinusoidal_dilatation_grade": str(liver[2]),
            "fibrosis_stage": str(liver[3]),
            "nodular_regenerative_hyperplasia": liver[4],
            "tumour_regression_grade": str(trg),
        })
    return row


# --------------------------------------------------------------------------------------------
# Plausible part: the 124 non-operated in-house patients
# --------------------------------------------------------------------------------------------

#: Weibull overall survival of non-operated patients (months): shape and scale give a median of
#: about 7.5 months, BOND-like (cetuximab + irinotecan after irinotecan failure: 8.6 months).
_NONOP_OS_SHAPE = 1.4
_NONOP_OS_SCALE = 9.7


def _nonoperated_rows(rng: np.random.Generator, n: int) -> list[dict[str, str]]:
    # Stratified (Latin-hypercube) quantiles: the spread of survival times is fixed, the seed only
    # decides who gets which, so cohort-level medians barely move between seeds.
    u = (rng.permutation(n) + rng.uniform(0.05, 0.95, n)) / n
    os_months = _NONOP_OS_SCALE * (-np.log1p(-u)) ** (1.0 / _NONOP_OS_SHAPE)
    os_months = np.maximum(os_months, 0.7)
    rows = []
    for i in range(n):
        start = ACCRUAL_START + dt.timedelta(days=int(rng.integers(0, _window_days() + 1)))
        available = (DATA_CUT - start).days
        os_d = days(float(os_months[i]))
        pfs_d = max(21, round(os_d * float(rng.uniform(0.3, 0.75))))
        lost = rng.random() < 0.05  # lost to follow-up, alive at an earlier last contact
        if lost:
            last_d = max(30, round(min(os_d, available) * float(rng.uniform(0.3, 0.9))))
            dead = False
        elif os_d <= available:
            last_d, dead = os_d, True
        else:
            last_d, dead = available - int(rng.integers(0, 61)), False
        documented = rng.random() >= 0.08  # some deaths without documented progression
        prog_d = pfs_d if documented and pfs_d <= last_d else None
        pfs_m = pfs_d / DAYS_PER_MONTH
        if pfs_m < 2.3:
            response = "PD"
        elif pfs_m > 6.0:
            response = _pick(rng, ("PR", "SD", "CR"), (0.58, 0.4, 0.02))
        else:
            response = _pick(rng, ("SD", "PR"), (0.75, 0.25))
        cycles = int(np.clip(round(min(pfs_d, last_d) / 14), 1, 26))
        if rng.random() < 0.04:
            response, cycles = "NE", int(rng.integers(0, 2))  # stopped early (toxicity, refusal)
        row = _empty_row()
        row.update(_baseline(rng, operated=False))
        last = start + dt.timedelta(days=last_d)
        row.update({
            "referral": _IN,
            "prior_chemo_lines": str(1 + int(rng.choice(4, p=[0.35, 0.45, 0.17, 0.03]))),
            "cetuximab_start": _iso(start),
            "cetuximab_partner": _pick(
                rng, (_I, _O, _B, "none", "other"), (0.8, 0.1, 0.03, 0.05, 0.02)
            ),
            "cetuximab_cycles": str(cycles),
            "best_response": response,
            "progression_date": _iso(None if prog_d is None else start + dt.timedelta(days=prog_d)),
            "death_date": _iso(last if dead else None),
            "last_contact_date": _iso(last),
        })
        rows.append(row)
    return rows


# Deliberately empty optional cells (missing-data handling): column -> number of rows, and whether
# only non-operated rows may lose it (the published figures need the operated patients' values).
_MISSING: tuple[tuple[str, int, bool], ...] = (
    ("sex", 2, False),
    ("age_at_cetuximab", 3, False),
    ("primary_side", 6, False),
    ("ras_status", 5, False),
    ("liver_mets_count", 4, False),
    ("largest_met_mm", 6, False),
    ("bilobar", 3, False),
    ("extrahepatic_disease", 3, False),
    ("cetuximab_cycles", 3, True),
    ("best_response", 4, True),
)


def build_rows(seed: int = DEFAULT_SEED) -> list[dict[str, str]]:
    """Build the 151 synthetic registry rows (see the module docstring)."""
    rng = np.random.default_rng(seed)
    operated = [_operated_row(p, rng) for p in OPERATED]
    nonoperated = _nonoperated_rows(rng, N_IN_HOUSE - sum(p.referral == _IN for p in OPERATED))
    rows = operated + nonoperated
    for column, count, nonoperated_only in _MISSING:
        pool = range(len(operated), len(rows)) if nonoperated_only else range(len(rows))
        for i in rng.choice(np.fromiter(pool, int), size=count, replace=False):
            rows[int(i)][column] = ""
    rows.sort(key=lambda r: (r["cetuximab_start"], r["last_contact_date"], r["surgery_date"]))
    for number, row in enumerate(rows, start=1):
        row["patient_id"] = f"REF-{number:03d}"
        row["centre"] = CENTRE
    return rows
