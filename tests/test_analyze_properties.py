"""Property tests: on generated registries the engine's counts and proportions equal a plain-Python
computation of the seed protocol's definitions, and do not depend on the order of the rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol
from oncosurg.schema import COLUMNS
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_records
from registry_factory import random_registry

SEED = load_protocol("rescue-cetuximab-2007")
START, END = dt.date(2004, 2, 1), dt.date(2006, 4, 30)


def analyse(rows: list[dict[str, str]], tmp: Path) -> dict:
    text = "\n".join([",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in rows]) + "\n"
    parsed = parse_registry_csv(text.encode())
    assert parsed.ok
    engine = open_store("sqlite://")
    import_records(engine, parsed.records, source="x", sha256=parsed.sha256, rows=parsed.rows)
    try:
        return run_protocol(engine, SEED)["endpoints"]
    finally:
        engine.dispose()


def expected(rows: list[dict[str, str]]) -> dict[str, tuple[int, int]]:
    d = dt.date.fromisoformat
    cohort = [r for r in rows if START <= d(r["cetuximab_start"]) <= END]
    operated = [r for r in cohort if r["surgery_date"]]
    hep = [r for r in operated if r["surgery_type"] == "hepatectomy"]

    def postop(r: dict[str, str]) -> bool:
        return bool(r["death_date"]) and (d(r["death_date"]) - d(r["surgery_date"])).days <= 60

    def abnormal(r: dict[str, str]) -> bool | None:
        vals = [r["steatosis_pct"], r["steatohepatitis"], r["sinusoidal_dilatation_grade"], r["fibrosis_stage"],
                r["nodular_regenerative_hyperplasia"]]
        if not any(vals):
            return None
        return ((bool(vals[0]) and float(vals[0]) > 30) or vals[1] == "yes" or (bool(vals[2]) and int(vals[2]) >= 2)
                or (bool(vals[3]) and int(vals[3]) >= 2) or vals[4] == "yes")

    def frac(pred, pop) -> tuple[int, int]:  # type: ignore[no-untyped-def]
        values = [pred(r) for r in pop]
        known = [v for v in values if v is not None]
        return sum(bool(v) for v in known), len(known)

    in_house = [r for r in cohort if r["referral"] == "in_house"]
    return {
        "partner_irinotecan": frac(lambda r: r["cetuximab_partner"] == "irinotecan", operated),
        "two_or_more_prior_lines": frac(lambda r: int(r["prior_chemo_lines"]) >= 2, operated),
        "resectability_in_house": frac(lambda r: r["surgery_type"] == "hepatectomy", in_house),
        "postoperative_mortality": frac(postop, operated),
        "complications": frac(lambda r: r["clavien_dindo_max"] != "none", [r for r in operated if not postop(r)]),
        "liver_abnormality": frac(abnormal, hep),
        "pathologic_complete_response": frac(
            lambda r: None if not r["tumour_regression_grade"] else r["tumour_regression_grade"] == "1", hep),
        "disease_free_at_last_contact": frac(lambda r: not r["death_date"] and not r["progression_date"], hep),
        "_counts": (len(cohort), len(operated)),
        "_hep": (len(hep), 0),
    }


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(min_value=0, max_value=120), seed=st.integers(min_value=0, max_value=10**6))
def test_counts_and_proportions_match_plain_python(tmp_path: Path, n: int, seed: int) -> None:
    rows = random_registry(n, seed)
    ours = analyse(rows, tmp_path)
    exp = expected(rows)
    assert (ours["evaluated"]["n"], ours["operated"]["n"]) == exp["_counts"]
    assert ours["hepatectomy"]["n"] == exp["_hep"][0]
    for eid, (num, den) in exp.items():
        if eid.startswith("_"):
            continue
        assert (ours[eid]["numerator"], ours[eid]["denominator"]) == (num, den), eid
        if den:
            ci = binomtest(num, den).proportion_ci(method="exact")
            assert np.isclose(ours[eid]["ci_low"], ci.low, rtol=1e-9, atol=1e-12)
            assert np.isclose(ours[eid]["ci_high"], ci.high, rtol=1e-9)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=10**6), shuffle=st.randoms(use_true_random=False))
def test_results_do_not_depend_on_row_order(tmp_path: Path, seed: int, shuffle) -> None:  # type: ignore[no-untyped-def]
    rows = random_registry(80, seed)
    before = analyse(rows, tmp_path)
    shuffled = list(rows)
    shuffle.shuffle(shuffled)
    assert analyse(shuffled, tmp_path) == before


def test_same_results_on_postgresql(postgres_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = random_registry(300, 77)
    text = "\n".join([",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in rows]) + "\n"
    parsed = parse_registry_csv(text.encode())
    engine = open_store(postgres_server.create_database("props_pg"))
    import_records(engine, parsed.records, source="x", sha256=parsed.sha256, rows=parsed.rows)
    on_pg = run_protocol(engine, SEED)["endpoints"]
    engine.dispose()
    assert on_pg == analyse(rows, tmp_path)
