"""Linkage attacks on de-identified exports (issue 14), run as a suite.

The attacker holds the identified export (or knows the registry's order), one or more de-identified
releases and a dictionary of likely passwords.  The data holder's view (the key) is used only to
score the attacks.  Registry: nine centres, patient ids numbered in order of the start date, as
accession numbers are.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.deidentify.keys import KeyFileError, key_text, load_key, parse_key
from oncosurg.deidentify.release import MAX_SHIFT_DAYS, centre_pseudonym, pseudonym
from registry_factory import random_registry, write_registry

KEY = bytes.fromhex("3f9a0c7be4d15a62c8e07b1f94d3a2560ec1b7f8d9a4e3c2b1f0a9e8d7c6b5a4")
CENTRES = ("Paul Brousse", "Beaujon", "Henri Mondor", "Edouard Herriot", "Lyon Sud", "Strasbourg",
           "Lille", "Rennes", "Bordeaux")
#: What an attacker tries first (the key `oncosurgpassword` was recovered from a list like this).
DICTIONARY = ("password", "oncosurgpassword", "oncosurg", "registry", "hepatectomy", "cetuximab", "liver",
              "secret", "changeme", "letmein", "0123456789abcdef", "0123456789abcdef0123456789abcdef",
              "paulbrousse", "villejuif", "admin", "qwerty", "correcthorsebatterystaple", "deidentify")


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out
    return statistics.correlation(ranks(xs), ranks(ys))


def run(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The data holder's registry, its identified export and two limited releases made with one key."""
    folder = tmp_path_factory.mktemp("linkage")
    rows = random_registry(360, 14)
    rows.sort(key=lambda r: r["cetuximab_start"])
    for i, row in enumerate(rows):
        row["centre"] = CENTRES[i % len(CENTRES)]
        row["patient_id"] = f"H{i:05d}"  # accession numbers: in order of the start date
    source = write_registry(rows, folder / "registry.csv")
    db = f"sqlite:///{folder / 'registry.db'}"
    run("import", str(source), "--db", db)
    run("export", "--db", db, "--out", str(folder / "identified.csv"))
    key = folder / "key"
    key.write_text(key_text(KEY), encoding="ascii")
    wide = folder / "wide.toml"
    seed = Path(__file__).parents[1] / "src" / "oncosurg" / "studies" / "rescue-cetuximab-2007.toml"
    wide.write_text(seed.read_text(encoding="utf-8").replace("accrual_start = 2004-02-01", "accrual_start = 2003-01-01")
                    .replace("accrual_end = 2006-04-30", "accrual_end = 2007-12-31"), encoding="utf-8")
    run("export", "--db", db, "--deidentify", "--key-file", str(key), "--out", str(folder / "seed.csv"))
    run("export", "--db", db, "--deidentify", "--key-file", str(key), "--protocol", str(wide),
        "--out", str(folder / "wide.csv"))
    run("export", "--db", db, "--deidentify", "--key-file", str(key), "--protocol", str(wide), "--format", "fhir",
        "--out", str(folder / "fhir"))
    return {"folder": folder, "db": db, "key": key, "identified": read_rows(folder / "identified.csv"),
            "seed": read_rows(folder / "seed.csv"), "wide": read_rows(folder / "wide.csv")}


def truth(holder: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Pseudonym → the identified row (what the attacker tries to learn)."""
    return {pseudonym(KEY, r["centre"], r["patient_id"]): r for r in holder["identified"]}


# ---------------------------------------------------------------------------------------- row order

def test_rows_do_not_link_back_by_position(holder: dict[str, Any]) -> None:
    identified, released, real = holder["identified"], holder["wide"], truth(holder)
    assert len(released) == len(identified) == 360
    position = {r["patient_id"]: i for i, r in enumerate(identified)}
    linked = sum(real[row["patient_id"]]["patient_id"] == identified[i]["patient_id"] for i, row in enumerate(released))
    assert linked <= 3  # a random order matches about one row by chance; the registry's order matched them all
    rho = spearman([position[real[r["patient_id"]]["patient_id"]] for r in released], list(range(len(released))))
    assert abs(rho) < 0.15


def test_release_order_says_nothing_about_the_true_dates(holder: dict[str, Any]) -> None:
    real = truth(holder)
    starts = [dt.date.fromisoformat(real[r["patient_id"]]["cetuximab_start"]).toordinal() for r in holder["wide"]]
    assert abs(spearman(starts, list(range(len(starts))))) < 0.15


def test_centre_pseudonyms_do_not_map_back_by_position(holder: dict[str, Any]) -> None:
    identified, released = holder["identified"], holder["wide"]
    votes: dict[str, Counter[str]] = {}
    for mine, theirs in zip(released, identified, strict=True):  # the attacker pairs rows by position
        votes.setdefault(mine["centre"], Counter())[theirs["centre"]] += 1
    guessed = {code: counts.most_common(1)[0][0] for code, counts in votes.items()}
    right = sum(centre_pseudonym(KEY, name) == code for code, name in guessed.items())
    assert len(guessed) == 9 and right <= 3
    changes = sum(a["centre"] != b["centre"] for a, b in itertools.pairwise(released))
    assert changes > 200  # not grouped by centre (the identified export has 8 changes)


def test_fhir_file_numbers_follow_the_release_order(holder: dict[str, Any]) -> None:
    files = sorted((holder["folder"] / "fhir").glob("[0-9]*.json"))
    names = [p.name.split("-", 1)[1].removesuffix(".json") for p in files]
    assert names == [r["patient_id"] for r in holder["wide"]]


# ------------------------------------------------------------------------------- two exports compared

def test_two_exports_do_not_narrow_the_true_dates(holder: dict[str, Any]) -> None:
    """Each export bounds a true date to [shifted + 1, shifted + MAX_SHIFT_DAYS]; two exports with other
    protocols (and, in the old code, other days) intersected those bounds.  The shift now never changes."""
    seed = {r["patient_id"]: r for r in holder["seed"]}
    wide = {r["patient_id"]: r for r in holder["wide"]}
    common = seed.keys() & wide.keys()
    assert len(common) >= 250
    real = truth(holder)
    widths = []
    for name in common:
        lows, highs = [], []
        for release in (seed, wide):
            shifted = dt.date.fromisoformat(release[name]["cetuximab_start"]).toordinal()
            lows.append(shifted + 1)
            highs.append(shifted + MAX_SHIFT_DAYS)
            assert seed[name] == wide[name]
        widths.append(min(highs) - max(lows) + 1)
        true = dt.date.fromisoformat(real[name]["cetuximab_start"]).toordinal()
        assert max(lows) <= true <= min(highs)
    assert statistics.median(widths) == min(widths) == MAX_SHIFT_DAYS


def test_an_update_between_exports_does_not_move_the_shift(holder: dict[str, Any], tmp_path: Path) -> None:
    rows = [dict(r) for r in holder["identified"]]
    for row in rows[::3]:  # a new contact for every third patient
        last = dt.date.fromisoformat(row["last_contact_date"]) + dt.timedelta(days=90)
        if not row["death_date"]:
            row["last_contact_date"] = last.isoformat()
    source = write_registry(rows, tmp_path / "updated.csv")
    db = f"sqlite:///{tmp_path / 'updated.db'}"
    run("import", str(source), "--db", db)
    out = tmp_path / "later.csv"
    run("export", "--db", db, "--deidentify", "--key-file", str(holder["key"]), "--out", str(out))
    before = {r["patient_id"]: r["cetuximab_start"] for r in holder["seed"]}
    after = {r["patient_id"]: r["cetuximab_start"] for r in read_rows(out)}
    assert before == after


# --------------------------------------------------------------------------------------- guessed keys

@pytest.mark.parametrize("word", DICTIONARY)
def test_guessable_keys_are_refused(tmp_path: Path, word: str) -> None:
    raw = word.encode()
    padded = (raw * (32 // len(raw) + 1))[:32]
    for text in (word, raw.hex(), "oncosurg-key-v1:" + raw.hex(), "oncosurg-key-v1:" + padded.hex()):
        with pytest.raises(KeyFileError):
            parse_key(text)


def test_dictionary_attack_on_the_release_finds_nothing(holder: dict[str, Any]) -> None:
    """The manifest gives nothing to test a guess against, and guessed keys give none of the pseudonyms."""
    manifest = json.loads((holder["folder"] / "seed.csv.manifest.json").read_text(encoding="utf-8"))
    assert "key_fingerprint" not in manifest
    blob = json.dumps(manifest)
    released = {r["patient_id"] for r in holder["seed"]}
    known = holder["identified"][0]  # the attacker knows one patient's identity
    for word in DICTIONARY:
        for guess in (word.encode(), word.encode().hex().encode()):
            assert pseudonym(guess, known["centre"], known["patient_id"]) not in released
            assert centre_pseudonym(guess, known["centre"]) not in blob
    assert len(load_key(holder["key"])) == 32


# ------------------------------------------------------------------------------------- safe harbor

def test_safe_harbor_exports_cannot_be_linked_to_each_other_or_by_order(holder: dict[str, Any]) -> None:
    folder = holder["folder"]
    for name in ("sh1.csv", "sh2.csv"):
        run("export", "--db", holder["db"], "--deidentify", "safe-harbor", "--out", str(folder / name))
    first, second = read_rows(folder / "sh1.csv"), read_rows(folder / "sh2.csv")
    assert {r["patient_id"] for r in first}.isdisjoint({r["patient_id"] for r in second})
    # the attacker pairs the identified export's cohort with the release by position: the intervals disagree
    cohort = [r for r in holder["identified"] if "2004-02-01" <= r["cetuximab_start"] <= "2006-04-30"]
    assert len(first) == len(cohort)
    follow = [(dt.date.fromisoformat(r["last_contact_date"]) - dt.date.fromisoformat(r["cetuximab_start"])).days
              for r in cohort]
    matched = sum(int(r["days_to_last_contact"]) == f for r, f in zip(first, follow, strict=True))
    assert matched <= 0.1 * len(cohort)
    assert sorted(int(r["days_to_last_contact"]) for r in first) == sorted(follow)


def test_the_public_window_and_the_shift_range_leave_the_true_start_wide(holder: dict[str, Any]) -> None:
    """The attacker intersects the accrual window (public) with [shifted + 1, shifted + MAX_SHIFT_DAYS]."""
    start, end = dt.date(2004, 2, 1).toordinal(), dt.date(2006, 4, 30).toordinal()
    widths = []
    for row in holder["seed"]:
        shifted = dt.date.fromisoformat(row["cetuximab_start"]).toordinal()
        widths.append(min(end, shifted + MAX_SHIFT_DAYS) - max(start, shifted + 1) + 1)
    assert min(widths) >= 1 and statistics.median(widths) == end - start + 1
    assert sum(w < 200 for w in widths) <= 0.05 * len(widths)
