"""Comparisons that respect time equal R survival on registries the engine was not tuned on.

``tests/reference/comparisons_reference.R`` re-implements the comparisons of
``tests/reference/comparisons-protocol.toml`` from their text with R survival 3.5.3 (landmark with
``survdiff``/``coxph``, ``tmerge`` + ``coxph(Surv(tstart, tstop, status) ~ exposed)``, Simon-Makuch
``survfit`` on the split data, ``Surv(entry, time, status)`` for delayed entry) on the simulated
long-format registries of ``tests/reference/episodes/`` (``tests/episode_registry.py``; ``ties`` has
exposures, events and entries on the same day), with and without a data cut, and wrote
``comparisons_expected.json``.  Counts must match exactly, estimates to 1e-6 relative; on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from oncosurg.ingest.long import read_long
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol
from oncosurg.store.repository import import_patients

REF = Path(__file__).parent / "reference"
EXPECTED: dict[str, Any] = json.loads((REF / "comparisons_expected.json").read_text())
PROTOCOL = load_protocol(str(REF / "comparisons-protocol.toml"))
CUTS = {"none": None, "2012-06-30": dt.date(2012, 6, 30)}
CASES = [(name, cut) for name in sorted(EXPECTED) for cut in CUTS]


def load(store: sa.Engine, name: str) -> None:
    """Import a long registry of tests/reference/episodes/ as `oncosurg import --format long` does."""
    with read_long(REF / "episodes" / name) as registry:
        assert registry.ok, [i.format() for i in registry.issues[:3]]
        result = import_patients(store, registry.records(), source=name, sha256=registry.sha256,
                                 rows=registry.patients)
    assert not result.issues, [i.format() for i in result.issues[:3]]


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12)


def check_hr(ours: dict[str, Any], r: dict[str, Any], where: str, bad: list[str]) -> None:
    hr = ours["hr"]
    for key in ("hr", "lower", "upper", "p", "score_p"):
        if not close(hr[key], r[key]):
            bad.append(f"{where}.{key}: ours {hr[key]!r} R {r[key]!r}")
    if (hr["events"], hr["n"]) != (r["events"], r["n_fit"]):
        bad.append(f"{where}.events/n: ours {hr['events']}/{hr['n']} R {r['events']}/{r['n_fit']}")


def check_groups(ours: dict[str, Any], r: dict[str, Any], where: str, bad: list[str]) -> None:
    groups = {g["key"]: g for g in ours["groups"]}
    for key, name in (("0", "unexposed"), ("1", "exposed"), ("in_house", "in_house"), ("referred", "referred")):
        if name not in r:
            continue
        g = groups[key]
        for ours_key, r_key in (("median", "median"), ("ci_low", "lower"), ("ci_high", "upper")):
            if not close(g[ours_key], r[name][r_key]):
                bad.append(f"{where}.{name}.{ours_key}: ours {g[ours_key]!r} R {r[name][r_key]!r}")


@pytest.mark.parametrize(("name", "cut"), CASES)
def test_comparisons_match_r(store: sa.Engine, name: str, cut: str) -> None:
    load(store, name)
    protocol = dataclasses.replace(PROTOCOL, data_cut=CUTS[cut])
    ours = run_protocol(store, protocol)["comparisons"]
    bad: list[str] = []
    for variant, suffix in (("entry", "_entry"), ("no_entry", "")):
        r = EXPECTED[name][cut][variant]
        lm = ours[f"landmark{suffix}"]
        if lm["n"] != r["landmark"]["n"]:
            bad.append(f"landmark{suffix}.n: ours {lm['n']} R {r['landmark']['n']}")
        if not close(lm["test"]["p"], r["landmark"]["logrank_p"]):
            bad.append(f"landmark{suffix}.logrank_p: ours {lm['test']['p']} R {r['landmark']['logrank_p']}")
        check_hr(lm, r["landmark"], f"landmark{suffix}", bad)
        check_groups(lm, r["landmark"]["groups"], f"landmark{suffix}", bad)
        td = ours[f"td{suffix}"]
        assert (td["n"], td["n_rows"]) == (r["time_dependent"]["n"], r["time_dependent"]["n_rows"])
        check_hr(td, r["time_dependent"], f"td{suffix}", bad)
        check_groups(ours[f"sm{suffix}"], r["simon_makuch"]["groups"], f"sm{suffix}", bad)
    ref = ours["referral"]
    r = EXPECTED[name][cut]["entry"]["referral"]
    assert ref["n"] == r["n"]
    check_hr(ref, r, "referral", bad)
    assert ref["test"]["p"] == ref["hr"]["score_p"]
    check_groups(ref, r["groups"], "referral", bad)
    assert bad == []


def test_reference_is_not_trivial() -> None:
    # the data cut changes the data, delayed entry changes the data, and both effects are visible
    for name in ("sim-1", "sim-2", "sim-3"):  # the reference cohort (2004-2007) ends before the cut
        none, cut = EXPECTED[name]["none"], EXPECTED[name]["2012-06-30"]
        assert none["entry"]["time_dependent"]["n"] > cut["entry"]["time_dependent"]["n"]
        assert none["entry"]["landmark"]["hr"] != none["no_entry"]["landmark"]["hr"]
    # simulated effects of resection: protective (0.5) in sim-2, harmful (2.0) in sim-3
    assert EXPECTED["sim-2"]["none"]["entry"]["time_dependent"]["hr"] < 0.8
    assert EXPECTED["sim-3"]["none"]["entry"]["time_dependent"]["lower"] > 1
