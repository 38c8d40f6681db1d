"""The synthetic reference cohort: every published figure, recomputed independently from the rows.

Nothing here uses oncosurg's own statistics: counts are plain Python, Kaplan-Meier and reverse
Kaplan-Meier medians are a few lines of numpy below, cross-checked with lifelines.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
import pytest

from oncosurg.reference import (
    REFERENCE_DESCRIPTION,
    build_reference_rows,
    write_reference_csv,
)

# The registry CSV columns in schema order (docs/registry-columns.md).
DESIGN_COLUMNS = [
    "patient_id", "centre", "referral", "sex", "age_at_cetuximab", "primary_site", "primary_side",
    "ras_status", "liver_mets_count", "largest_met_mm", "bilobar", "extrahepatic_disease",
    "prior_chemo_lines", "cetuximab_start", "cetuximab_partner", "cetuximab_cycles", "best_response",
    "surgery_date", "surgery_type", "resected_segments", "two_stage", "portal_vein_embolization",
    "margin", "clavien_dindo_max", "steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade",
    "fibrosis_stage", "nodular_regenerative_hyperplasia", "tumour_regression_grade",
    "progression_date", "death_date", "last_contact_date",
]
REQUIRED = [
    "patient_id", "referral", "prior_chemo_lines", "cetuximab_start", "cetuximab_partner",
    "last_contact_date",
]
SURGERY_COLUMNS = [
    "surgery_type", "resected_segments", "two_stage", "portal_vein_embolization", "margin",
    "clavien_dindo_max",
]
HEPATECTOMY_COLUMNS = [
    "margin", "steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade", "fibrosis_stage",
    "nodular_regenerative_hyperplasia", "tumour_regression_grade",
]
ENUMS = {
    "referral": {"in_house", "referred"},
    "sex": {"F", "M"},
    "primary_site": {"colon", "rectum"},
    "primary_side": {"left", "right"},
    "ras_status": {"wild_type", "mutant", "not_tested"},
    "cetuximab_partner": {"irinotecan", "oxaliplatin", "both", "none", "other"},
    "best_response": {"CR", "PR", "SD", "PD", "NE"},
    "surgery_type": {"hepatectomy", "exploration_only", "ablation_only"},
    "margin": {"R0", "R1", "R2"},
    "clavien_dindo_max": {"none", "I", "II", "IIIa", "IIIb", "IVa", "IVb", "V"},
}
BOOLS = ["bilobar", "extrahepatic_disease", "two_stage", "portal_vein_embolization", "steatohepatitis",
         "nodular_regenerative_hyperplasia"]
DATES = ["cetuximab_start", "surgery_date", "progression_date", "death_date", "last_contact_date"]
# column -> (integer?, minimum, maximum, exclusive minimum?)
NUMBERS = {
    "age_at_cetuximab": (False, 18, 100, False),
    "liver_mets_count": (True, 1, None, False),
    "largest_met_mm": (False, 0, None, True),
    "prior_chemo_lines": (True, 1, None, False),
    "cetuximab_cycles": (True, 0, None, False),
    "steatosis_pct": (False, 0, 100, False),
    "sinusoidal_dilatation_grade": (True, 0, 3, False),
    "fibrosis_stage": (True, 0, 4, False),
    "tumour_regression_grade": (True, 1, 5, False),
}

MONTH = 30.4375
POSTOP_WINDOW = 60
ACCRUAL = (dt.date(2004, 2, 1), dt.date(2006, 4, 30))
DATA_CUT = dt.date(2007, 3, 31)
CENTRE = "Reference Centre (synthetic)"
SEEDS = [2007, 1, 424242]


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def months(a: str, b: str) -> float:
    return (d(b) - d(a)).days / MONTH


# ---------------------------------------------------------------------------------------------
# Independent Kaplan-Meier
# ---------------------------------------------------------------------------------------------


def km_curve(times, events):
    """(event time, S(t)) pairs of the Kaplan-Meier estimator (events before censorings at ties)."""
    t = np.asarray(times, float)
    e = np.asarray(events, bool)
    s, out = 1.0, []
    for u in np.unique(t[e]):
        at_risk = int((t >= u).sum())
        deaths = int(((t == u) & e).sum())
        s *= 1.0 - deaths / at_risk
        out.append((float(u), s))
    return out


def km_median(times, events):
    """Smallest time with S(t) <= 0.5 (R's rule for S == 0.5 exactly), or None if not reached."""
    curve = km_curve(times, events)
    for i, (u, s) in enumerate(curve):
        if math.isclose(s, 0.5) and i + 1 < len(curve):
            return (u + curve[i + 1][0]) / 2
        if s <= 0.5:
            return u
    return None


def lifelines_median(times, events):
    lifelines = pytest.importorskip("lifelines")
    return float(lifelines.KaplanMeierFitter().fit(times, events).median_survival_time_)


# ---------------------------------------------------------------------------------------------
# Fixtures and populations
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows():
    return build_reference_rows()


@pytest.fixture(scope="module", params=SEEDS)
def seeded(request):
    return build_reference_rows(request.param)


def operated(rs):
    return [r for r in rs if r["surgery_date"]]


def hepatectomy(rs):
    return [r for r in rs if r["surgery_type"] == "hepatectomy"]


def postop_death(r) -> bool:
    return bool(r["death_date"]) and d(r["death_date"]) <= d(r["surgery_date"]) + dt.timedelta(POSTOP_WINDOW)


def liver_abnormal(r) -> bool:
    return (
        float(r["steatosis_pct"]) > 30
        or r["steatohepatitis"] == "yes"
        or int(r["sinusoidal_dilatation_grade"]) >= 2
        or int(r["fibrosis_stage"]) >= 2
        or r["nodular_regenerative_hyperplasia"] == "yes"
    )


def followup(rs):
    """Surgery -> last contact; reverse KM: 'event' = alive (censored for follow-up), dead = censored."""
    return [months(r["surgery_date"], r["last_contact_date"]) for r in rs], [not r["death_date"] for r in rs]


def os_data(rs):
    times = [months(r["cetuximab_start"], r["last_contact_date"]) for r in rs]
    return times, [bool(r["death_date"]) for r in rs]


def pfs_data(rs):
    times, events = [], []
    for r in rs:
        ends = [d(x) for x in (r["progression_date"], r["death_date"]) if x]
        end = min(ends) if ends else d(r["last_contact_date"])
        times.append((end - d(r["cetuximab_start"])).days / MONTH)
        events.append(bool(ends))
    return times, events


# ---------------------------------------------------------------------------------------------
# Shape, determinism, CSV
# ---------------------------------------------------------------------------------------------


def test_rows_have_exactly_the_registry_columns(rows):
    assert len(rows) == 151
    for r in rows:
        assert list(r) == DESIGN_COLUMNS
        assert all(isinstance(v, str) for v in r.values())


def test_columns_agree_with_schema_module_when_present():
    schema = pytest.importorskip("oncosurg.schema")
    assert list(schema.COLUMNS) == DESIGN_COLUMNS


def test_identifiers_and_centre(rows):
    ids = [r["patient_id"] for r in rows]
    assert ids == [f"REF-{i:03d}" for i in range(1, 152)]
    assert {r["centre"] for r in rows} == {CENTRE}


def test_deterministic():
    assert build_reference_rows() == build_reference_rows()
    assert build_reference_rows(2007) == build_reference_rows()
    assert build_reference_rows(5) == build_reference_rows(5)
    assert build_reference_rows(5) != build_reference_rows(6)


def test_marked_synthetic():
    assert "synthetic" in REFERENCE_DESCRIPTION.lower()
    assert "no real patients" in REFERENCE_DESCRIPTION.lower()
    assert "\n" not in REFERENCE_DESCRIPTION
    doc = Path(__file__).resolve().parents[1] / "docs" / "reference-cohort.md"
    assert "synthetic" in doc.read_text(encoding="utf-8").lower()


def test_write_csv(tmp_path, rows):
    path = write_reference_csv(tmp_path / "sub" / "reference.csv")
    assert isinstance(path, Path) and path.exists()
    raw = path.read_bytes()
    text = raw.decode("utf-8")  # strict UTF-8
    assert not text.startswith("\ufeff")
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == DESIGN_COLUMNS
        back = list(reader)
    assert back == rows
    assert "synthetic" in text


# ---------------------------------------------------------------------------------------------
# The registry rules (docs/rules.md), every row
# ---------------------------------------------------------------------------------------------


def row_errors(r) -> list[str]:
    errs = []
    for col in REQUIRED:
        if not r[col]:
            errs.append(f"{col} required")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", r["patient_id"]):
        errs.append("patient_id pattern")
    for col, allowed in ENUMS.items():
        if r[col] and r[col] not in allowed:
            errs.append(f"{col} enum {r[col]!r}")
    for col in BOOLS:
        if r[col] not in ("", "yes", "no"):
            errs.append(f"{col} bool {r[col]!r}")
    for col in DATES:
        if r[col]:
            try:
                d(r[col])
            except ValueError:
                errs.append(f"{col} date {r[col]!r}")
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", r[col]):
                errs.append(f"{col} ISO {r[col]!r}")
    for col, (integer, lo, hi, excl) in NUMBERS.items():
        if not r[col]:
            continue
        if integer and not re.fullmatch(r"-?\d+", r[col]):
            errs.append(f"{col} integer {r[col]!r}")
            continue
        x = float(r[col])
        if (excl and x <= lo) or (not excl and x < lo) or (hi is not None and x > hi):
            errs.append(f"{col} range {r[col]!r}")
    if r["resected_segments"]:
        segs = r["resected_segments"].split(";")
        if not all(re.fullmatch(r"[1-8]", s) for s in segs) or len(set(segs)) != len(segs):
            errs.append(f"resected_segments {r['resected_segments']!r}")
    if errs:
        return errs
    start, last = d(r["cetuximab_start"]), d(r["last_contact_date"])
    if start > last:
        errs.append("cetuximab_start after last contact")
    if r["surgery_date"]:
        s = d(r["surgery_date"])
        if not start <= s <= last:
            errs.append("surgery_date outside [cetuximab_start, last_contact_date]")
        for col in ("surgery_type", "clavien_dindo_max"):
            if not r[col]:
                errs.append(f"{col} required with surgery_date")
    else:
        errs += [f"{col} without surgery_date" for col in SURGERY_COLUMNS if r[col]]
    if r["surgery_type"] != "hepatectomy":
        errs += [f"{col} outside hepatectomy" for col in HEPATECTOMY_COLUMNS if r[col]]
    if r["progression_date"] and not start <= d(r["progression_date"]) <= last:
        errs.append("progression_date outside [cetuximab_start, last_contact_date]")
    if r["death_date"] and r["death_date"] != r["last_contact_date"]:
        errs.append("death_date != last_contact_date")
    if r["clavien_dindo_max"] == "V" and not postop_death(r):
        errs.append("Clavien-Dindo V without death in the postoperative window")
    return errs


def test_every_row_passes_design_rules(seeded):
    problems = {r["patient_id"]: row_errors(r) for r in seeded}
    assert {k: v for k, v in problems.items() if v} == {}
    ids = [(r["centre"], r["patient_id"]) for r in seeded]
    assert len(set(ids)) == len(ids)


def test_rule_checker_catches_bad_rows(rows):
    """The checker above is not vacuous."""
    r = dict(next(x for x in rows if x["surgery_type"] == "hepatectomy"))
    assert row_errors(r) == []
    assert row_errors({**r, "death_date": "2004-01-01"})
    assert row_errors({**r, "surgery_date": ""})
    assert row_errors({**r, "clavien_dindo_max": "V", "death_date": ""})
    assert row_errors({**r, "surgery_type": "exploration_only"})
    assert row_errors({**r, "resected_segments": "4;9"})
    assert row_errors({**r, "progression_date": "2003-01-01"})


def test_data_cut_and_accrual(seeded):
    for r in seeded:
        assert ACCRUAL[0] <= d(r["cetuximab_start"]) <= ACCRUAL[1]
        assert d(r["last_contact_date"]) <= DATA_CUT


# ---------------------------------------------------------------------------------------------
# Published counts
# ---------------------------------------------------------------------------------------------


def test_referral_and_operations(seeded):
    assert sum(r["referral"] == "in_house" for r in seeded) == 133
    assert sum(r["referral"] == "referred" for r in seeded) == 18
    ops = operated(seeded)
    assert len(ops) == 27
    hep = hepatectomy(seeded)
    assert len(hep) == 25
    assert sorted(r["surgery_type"] for r in ops if r["surgery_type"] != "hepatectomy") == [
        "exploration_only", "exploration_only"
    ]
    in_house = [r for r in seeded if r["referral"] == "in_house"]
    referred = [r for r in seeded if r["referral"] == "referred"]
    assert sum(r["surgery_type"] == "hepatectomy" for r in in_house) == 9  # 9/133
    assert sum(r["surgery_type"] == "hepatectomy" for r in referred) == 16  # 16/18
    assert sum(bool(r["surgery_date"]) for r in in_house) == 9
    assert sum(bool(r["surgery_date"]) for r in referred) == 18


def test_operated_treatment(seeded):
    ops = operated(seeded)
    partners = [r["cetuximab_partner"] for r in ops]
    assert partners.count("irinotecan") == 20
    assert partners.count("oxaliplatin") == 4
    assert partners.count("both") == 1
    assert sorted(p for p in partners if p in ("none", "other")) == ["none", "other"]
    assert float(np.median([int(r["cetuximab_cycles"]) for r in ops])) == 6.0
    assert sum(int(r["prior_chemo_lines"]) >= 2 for r in ops) == 18


def test_postoperative_mortality_and_complications(seeded):
    ops = operated(seeded)
    deaths = [r for r in ops if postop_death(r)]
    assert len(deaths) == 1
    assert deaths[0]["clavien_dindo_max"] == "V"
    assert deaths[0]["surgery_type"] == "hepatectomy"
    assert [r for r in ops if r["clavien_dindo_max"] == "V"] == deaths
    survivors = [r for r in ops if not postop_death(r)]
    assert len(survivors) == 26
    assert sum(r["clavien_dindo_max"] != "none" for r in survivors) == 13


def test_pathology(seeded):
    hep = hepatectomy(seeded)
    cols = HEPATECTOMY_COLUMNS
    assert all(r[c] != "" for r in hep for c in cols)  # non-missing for the 25 specimens
    assert sum(liver_abnormal(r) for r in hep) == 9
    assert sum(r["tumour_regression_grade"] == "1" for r in hep) == 2


def test_status_at_last_contact(seeded):
    hep = hepatectomy(seeded)
    assert sum(not r["death_date"] for r in hep) == 23
    assert sum(not r["death_date"] and not r["progression_date"] for r in hep) == 10


# ---------------------------------------------------------------------------------------------
# Published time figures (months = days / 30.4375), hepatectomy patients
# ---------------------------------------------------------------------------------------------


def test_median_followup_reverse_km(seeded):
    times, alive = followup(hepatectomy(seeded))
    median = km_median(times, alive)
    assert median == pytest.approx(16.0, abs=0.5)
    assert lifelines_median(times, alive) == pytest.approx(median, rel=1e-9)


def test_median_observed_os_time(seeded):
    times, _ = os_data(hepatectomy(seeded))
    assert float(np.median(times)) == pytest.approx(20.0, abs=0.5)


def test_km_pfs_median(seeded):
    times, events = pfs_data(hepatectomy(seeded))
    assert sum(events) == 15
    median = km_median(times, events)
    assert median == pytest.approx(13.0, abs=0.5)
    assert lifelines_median(times, events) == pytest.approx(median, rel=1e-9)


def test_km_os_median_not_reached(seeded):
    times, events = os_data(hepatectomy(seeded))
    assert sum(events) == 2
    assert km_median(times, events) is None
    assert min(s for _, s in km_curve(times, events)) > 0.5
    assert math.isinf(lifelines_median(times, events))


def test_figures_land_close_to_published(rows):
    """Tighter than the +-0.5 month contract: the construction aims at +-0.3."""
    hep = hepatectomy(rows)
    assert km_median(*followup(hep)) == pytest.approx(16.0, abs=0.3)
    assert float(np.median(os_data(hep)[0])) == pytest.approx(20.0, abs=0.3)
    assert km_median(*pfs_data(hep)) == pytest.approx(13.0, abs=0.3)


# ---------------------------------------------------------------------------------------------
# Plausibility of the rest
# ---------------------------------------------------------------------------------------------


def test_whole_cohort_survival_is_bond_like(seeded):
    median = km_median(*os_data(seeded))
    assert 8.5 <= median <= 11.0
    nonop = [r for r in seeded if not r["surgery_date"]]
    assert sum(bool(r["death_date"]) for r in nonop) / len(nonop) > 0.7
    assert sum(bool(r["progression_date"]) for r in nonop) / len(nonop) > 0.7


def test_optional_columns_partly_missing_but_required_never(rows):
    for col in ("sex", "age_at_cetuximab", "primary_side", "ras_status", "liver_mets_count",
                "largest_met_mm", "bilobar", "extrahepatic_disease"):
        assert 0 < sum(r[col] == "" for r in rows) < 10, col
    for col in REQUIRED:
        assert all(r[col] for r in rows)
    ras = [r["ras_status"] for r in rows if r["ras_status"]]
    assert ras.count("not_tested") / len(ras) > 0.75  # 2004-2006 era
    assert all(r["cetuximab_cycles"] for r in operated(rows))


def test_operated_timelines_are_clinically_plausible(seeded):
    for r in operated(seeded):
        washout = (d(r["surgery_date"]) - d(r["cetuximab_start"])).days - 14 * int(r["cetuximab_cycles"])
        assert 21 <= washout <= 70, r["patient_id"]
        if r["surgery_type"] == "hepatectomy":
            assert r["resected_segments"] and r["margin"]
        else:
            assert r["resected_segments"] == ""


def test_accepted_by_the_project_validator_when_present(tmp_path):
    """Cross-check with oncosurg's own CSV validator (skipped until that module exists)."""
    ingest = pytest.importorskip("oncosurg.ingest.csv")
    path = write_reference_csv(tmp_path / "reference.csv")
    parsed = ingest.parse_registry_csv(path.read_bytes())
    assert [str(i) for i in parsed.issues] == []
