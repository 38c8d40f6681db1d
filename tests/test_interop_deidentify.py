"""De-identified export: no identifier or true date left, intervals and every seed endpoint unchanged.

The linkage attacks of issue 14 (row order, two exports compared, guessed keys) are in
``tests/test_deidentify_linkage.py``; this file covers the modes, formats, keys and manifest.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from interop_helpers import registries, typed_records
from oncosurg.cli import cli
from oncosurg.deidentify import kanon
from oncosurg.deidentify.keys import KeyFileError, key_text, load_key, new_key, parse_key
from oncosurg.deidentify.release import DATE_COLUMNS, MAX_SHIFT_DAYS, Window, limited, pseudonym, safe_harbor
from oncosurg.ingest.csv import read_registry_csv
from registry_factory import random_registry, write_registry

KEY = bytes.fromhex("9c4be0f1d27a6e83f4b51c08a9d37e62b5f01c9e48a73d26e1f0b8c5a4d79e03")
SEED_WINDOW = Window("cetuximab_start", dt.date(2004, 2, 1), dt.date(2006, 4, 30))


def key_file(tmp_path: Path, key: bytes = KEY) -> Path:
    path = tmp_path / "key"
    path.write_text(key_text(key), encoding="ascii")
    return path


def export(db: str, tmp_path: Path, *extra: str, name: str = "deid.csv", key: bool = True) -> Path:
    out = tmp_path / name
    args = ["export", "--db", db, "--deidentify", *extra, "--out", str(out)]
    if key:
        args += ["--key-file", str(key_file(tmp_path))]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return out


def imported(csv_path: Path, tmp_path: Path, name: str = "registry.db") -> str:
    db = f"sqlite:///{tmp_path / name}"
    result = CliRunner().invoke(cli, ["import", str(csv_path), "--db", db])
    assert result.exit_code == 0, result.output
    return db


def analyze(*source: str, protocol: str | None = None) -> dict[str, Any]:
    args = ["analyze", *source, "--json"] + (["--protocol", protocol] if protocol else [])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def manifest_of(out: Path) -> dict[str, Any]:
    return json.loads(out.with_name(out.name + ".manifest.json").read_text(encoding="utf-8"))


def test_no_identifier_or_true_date_in_the_export(reference_csv: Path, tmp_path: Path) -> None:
    originals = [r.values for r in read_registry_csv(reference_csv).records]
    out = export(imported(reference_csv, tmp_path), tmp_path)
    text = out.read_text(encoding="utf-8")
    for record in originals:
        assert record["patient_id"] not in text
    assert originals[0]["centre"] not in text
    released = {r.values["patient_id"]: r.values for r in read_registry_csv(out).records}
    assert len(released) == len(originals) == 151
    for record in originals:
        new = released[pseudonym(KEY, record["centre"], record["patient_id"])]
        shifts = {(new[c] - record[c]).days for c in DATE_COLUMNS if record[c] is not None}
        assert len(shifts) == 1 and -MAX_SHIFT_DAYS <= shifts.pop() <= -1, record["patient_id"]


def test_every_seed_endpoint_is_identical(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path)
    protocol = out.with_name(out.name + ".protocol.toml")
    assert manifest_of(out)["protocol_for_analysis"] == protocol.name
    original = analyze("--csv", str(reference_csv))["endpoints"]
    assert analyze("--csv", str(out), protocol=str(protocol))["endpoints"] == original
    # `analyze --csv` finds the manifest beside the release and does not apply the window to shifted dates
    auto = analyze("--csv", str(out))
    assert auto["endpoints"] == original
    assert auto["provenance"]["deidentified_release"]["accrual"].startswith("applied to the true dates")
    renamed = tmp_path / "copied-without-manifest.csv"
    renamed.write_bytes(out.read_bytes())
    assert "deidentified_release" not in analyze("--csv", str(renamed))["provenance"]


def test_the_long_release_keeps_every_seed_endpoint(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path, "--format", "long", name="deid-long")
    text = "".join(p.read_text(encoding="utf-8") for p in out.glob("*.csv"))
    assert "REF-0" not in text and "Reference Centre" not in text
    with (out / "patients.csv").open(encoding="utf-8") as handle:
        assert {row["birth_year"] for row in csv.DictReader(handle)} == {""}
    db = f"sqlite:///{tmp_path / 'long.db'}"
    protocol = str(out.with_name(out.name + ".protocol.toml"))
    result = CliRunner().invoke(cli, ["import", "--format", "long", str(out) + "/", "--db", db])
    assert result.exit_code == 0 and f"--protocol {protocol}," in result.output, result.output
    assert analyze("--db", db, protocol=protocol)["endpoints"] == analyze("--csv", str(reference_csv))["endpoints"]


def test_only_the_cohort_is_released_and_its_endpoints_are_identical(tmp_path: Path) -> None:
    original = write_registry(random_registry(400, 11), tmp_path / "random.csv")
    out = export(imported(original, tmp_path), tmp_path)
    before = analyze("--csv", str(original))
    after = analyze("--csv", str(out), protocol=str(out.with_name(out.name + ".protocol.toml")))
    outside = before["cohort"]["flow"][-1]["excluded"]
    assert outside > 0  # some patients start outside the accrual window: they are not released
    assert manifest_of(out)["cohort"]["outside_window_not_released"] == outside
    assert manifest_of(out)["records"] == 400 - outside == len(read_registry_csv(out).records)
    assert after["endpoints"] == before["endpoints"] == analyze("--csv", str(out))["endpoints"]


def test_manifest_says_what_was_removed_and_nothing_secret(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path)
    manifest = manifest_of(out)
    actions = {m["column"]: m["action"] for m in manifest["columns"]}
    assert actions["patient_id"] == "replaced" and actions["centre"] == "replaced"
    assert actions["age_at_cetuximab"] == "coarsened" and all(actions[c] == "shifted" for c in DATE_COLUMNS)
    assert manifest["records"] == 151 and manifest["format"] == "csv" and manifest["mode"] == "limited"
    blob = json.dumps(manifest)
    assert "key_fingerprint" not in manifest and KEY.hex() not in blob and "REF-0" not in blob
    assert not re.search(r"\b[0-9a-f]{12,}\b", blob)  # nothing derived from the key alone


@pytest.mark.parametrize("fmt", ["fhir", "xlsx", "redcap"])
def test_other_formats_are_deidentified_too(reference_csv: Path, tmp_path: Path, fmt: str) -> None:
    db = imported(reference_csv, tmp_path)
    out = export(db, tmp_path, "--format", fmt, name=f"deid-{fmt}")
    files = sorted(out.glob("*.json")) if fmt == "fhir" else [out]
    blob = b"".join(p.read_bytes() for p in files)
    assert b"REF-0" not in blob and b"Reference Centre" not in blob
    manifest = (out / "deidentification-manifest.json") if fmt == "fhir" else out.with_name(out.name + ".manifest.json")
    assert json.loads(manifest.read_text(encoding="utf-8"))["format"] == fmt
    result = CliRunner().invoke(cli, ["import", "--format", fmt, str(out), "--db", f"sqlite:///{tmp_path / 'b.db'}"])
    assert result.exit_code == 0, result.output
    protocol = out / "release-protocol.toml" if fmt == "fhir" else out.with_name(out.name + ".protocol.toml")
    assert f"analyse the registry with --protocol {protocol}" in result.output  # the importer is told


def test_ages_are_whole_years_capped_at_90() -> None:
    rows = [{"patient_id": f"P{i}", "referral": "in_house", "prior_chemo_lines": "1", "cetuximab_start": "2005-01-10",
             "cetuximab_partner": "none", "last_contact_date": "2005-06-01", "age_at_cetuximab": age}
            for i, age in enumerate(["61.9", "89.99", "90", "97.5", ""])]
    release = limited(typed_records(rows), KEY)
    ages = {r["patient_id"]: r["age_at_cetuximab"] for r in release.records}
    assert [ages[pseudonym(KEY, "main", f"P{i}")] for i in range(5)] == [61, 89, 90, 90, None]
    assert next(m for m in release.manifest["columns"] if m["column"] == "age_at_cetuximab")["capped"] == 2
    pooled = {r["age_at_cetuximab"] for r in safe_harbor(typed_records(rows)).records}
    assert pooled == {61, 89, "90+", None}


def test_safe_harbor_keeps_no_date_and_no_age_over_89(reference_csv: Path, tmp_path: Path) -> None:
    db = imported(reference_csv, tmp_path)
    out = export(db, tmp_path, "safe-harbor", key=False)
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    with out.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 151 and not set(rows[0]) & set(DATE_COLUMNS)
    assert {r["start_year"] for r in rows} <= {"2004", "2005", "2006"}
    assert all(r["age_at_cetuximab"] in ("", "90+") or int(r["age_at_cetuximab"]) < 90 for r in rows)
    originals = {r.values["patient_id"]: r.values for r in read_registry_csv(reference_csv).records}
    days = sorted((v["last_contact_date"] - v["cetuximab_start"]).days for v in originals.values())
    assert sorted(int(r["days_to_last_contact"]) for r in rows) == days  # intervals from time zero are kept
    assert manifest_of(out)["mode"] == "safe-harbor" and not out.with_name(out.name + ".protocol.toml").exists()


def test_k_anonymity_is_measured_and_enforced(reference_csv: Path, tmp_path: Path) -> None:
    db = imported(reference_csv, tmp_path)
    for mode, extra in (("limited", ()), ("safe-harbor", ())):
        plain = export(db, tmp_path, mode, *extra, name=f"{mode}.csv", key=mode == "limited")
        enforced = export(db, tmp_path, mode, "--k-anonymity", "5", name=f"{mode}-k5.csv", key=mode == "limited")
        for out in (plain, enforced):
            with out.open(encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            groups: dict[tuple[str, ...], int] = {}
            for row in rows:  # an independent count on the written file
                year = row["start_year"] if "start_year" in row else row["cetuximab_start"][:4]
                age = kanon.age_band(row["age_at_cetuximab"]) or ""
                key = (row["sex"], age, row["primary_site"], row["primary_side"], row["centre"], year)
                groups[key] = groups.get(key, 0) + 1
            measured = manifest_of(out)["k_anonymity"]
            reported = measured.get("after", measured["before"])
            assert reported["k"] == min(groups.values()) and reported["groups"] == len(groups)
            assert reported["unique_rows"] == sum(n == 1 for n in groups.values())
        assert manifest_of(plain)["k_anonymity"]["before"]["k"] == 1
        after = manifest_of(enforced)["k_anonymity"]
        assert after["after"]["k"] >= 5 and after["after"]["rows"] == 151 - after["rows_dropped"]
        ages = {r["age_at_cetuximab"] for r in read_rows(enforced)}  # no finer than the band that was measured
        assert all(a == "" or re.fullmatch(r"\d0-\d9|90\+" if mode == "safe-harbor" else r"18|[2-9]0", a) for a in ages)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_k_anonymity_of_the_long_release(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path, "--format", "long", "--k-anonymity", "5", name="long")
    measured = manifest_of(out)["k_anonymity"]
    assert measured["after"]["k"] >= 5 and measured["after"]["rows"] == 151 - measured["rows_dropped"]
    patients = read_rows(out / "patients.csv")
    assert len(patients) == measured["after"]["rows"]
    assert {p["age_at_rescue"] for p in patients} <= {"", "18", "20", "30", "40", "50", "60", "70", "80", "90"}


def test_kanon_enforce_drops_rows_only_after_suppressing_columns() -> None:
    rows = [{"sex": s, "age_at_cetuximab": a, "primary_site": "colon", "primary_side": "left", "centre": "c",
             "start_year": 2005} for s, a in [("F", 50)] * 5 + [("M", 61)] * 3 + [("M", 75)] * 3]
    kept, done = kanon.enforce([dict(r) for r in rows], lambda r: kanon.quasi_identifiers(r, "x"), 5,
                               {"age_band": lambda r: r.update(age_at_cetuximab=None)})
    assert done == {"target_k": 5, "suppressed_quasi_identifiers": ["age_band"], "rows_dropped": 0}
    assert len(kept) == 11 and {r["age_at_cetuximab"] for r in kept} == {None}


def test_key_new_makes_a_private_random_key(tmp_path: Path) -> None:
    path = tmp_path / "k"
    runner = CliRunner()
    assert runner.invoke(cli, ["key", "new", "--out", str(path)]).exit_code == 0
    assert len(load_key(path)) == 32 and os.stat(path).st_mode & 0o777 == 0o600
    first = path.read_bytes()
    again = runner.invoke(cli, ["key", "new", "--out", str(path)])
    assert again.exit_code == 2 and "never overwritten" in again.output and path.read_bytes() == first
    other = tmp_path / "k2"
    assert runner.invoke(cli, ["key", "new", str(other)]).exit_code == 0
    assert load_key(other) != load_key(path)
    printed = runner.invoke(cli, ["key", "new"])
    assert printed.exit_code == 0 and len(parse_key(printed.output)) == 32


@pytest.mark.parametrize(("content", "message"), [
    ("0123456789abcdef0123456789abcdef", "16 bytes"),  # yesterday's accepted 32-character key
    ("0123456789abcdef" * 4, "distinct byte values"),
    ("oncosurgpassword", "not an oncosurg key"),
    ("correct horse battery staple oncosurg", "not an oncosurg key"),
    ("oncosurg-key-v1:" + b"oncosurgpasswordoncosurgpassword".hex(), "printable text"),
    ("oncosurg-key-v1:" + bytes(range(200, 216)).hex(), "16 bytes"),
    ("oncosurg-key-v1:" + (b"\x01\x9f" * 16).hex(), "distinct byte values"),
    ("oncosurg-key-v1:zz" + KEY.hex(), "not hexadecimal"),
])
def test_weak_or_foreign_keys_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "weak"
    path.write_text(content + "\n", encoding="ascii")
    with pytest.raises(KeyFileError, match=message):
        load_key(path)


def test_export_option_problems_write_nothing(reference_csv: Path, tmp_path: Path) -> None:
    db = imported(reference_csv, tmp_path)
    weak = tmp_path / "weak"
    weak.write_text("0123456789abcdef0123456789abcdef\n", encoding="ascii")
    good = str(key_file(tmp_path))
    out = str(tmp_path / "x.csv")
    cases = [(["--deidentify", "--out", out], "oncosurg key new"),
             (["--deidentify", "--key-file", str(weak), "--out", out], "at least 32 random bytes"),
             (["--deidentify", "--key-file", str(tmp_path / "missing"), "--out", out], "cannot read"),
             (["--deidentify", "--key-file", good], "needs --out"),
             (["--key-file", good, "--out", out], "only used with --deidentify"),
             (["--k-anonymity", "5", "--out", out], "only used with --deidentify"),
             (["--deidentify", "safe-harbor", "--key-file", good, "--out", out], "no key"),
             (["--deidentify", "safe-harbor", "--format", "fhir", "--out", out], "--format csv"),
             (["--deidentify", "--key-file", good, "--protocol", "no-such-study", "--out", out], "no protocol")]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["export", "--db", db, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not Path(out).exists() and not Path(out + ".manifest.json").exists()


@settings(max_examples=60, deadline=None)
@given(registries(), st.binary(min_size=32, max_size=48).filter(lambda k: len(set(k)) >= 24))
def test_shift_keeps_intervals_and_the_past_and_depends_on_the_patient_only(rows: list[dict[str, str]],
                                                                            key: bytes) -> None:
    records = typed_records(rows)
    released = {r["patient_id"]: r for r in limited(records, key).records}
    today = dt.date.today()
    for before in records:
        after = released[pseudonym(key, before["centre"] or "", before["patient_id"])]
        shifts = {(after[c] - before[c]).days for c in DATE_COLUMNS if before[c] is not None}
        assert len(shifts) == 1 and -MAX_SHIFT_DAYS <= shifts.pop() <= -1
        assert all(after[c] <= today for c in DATE_COLUMNS if after[c] is not None)
    moved = [dict(r, cetuximab_start=r["cetuximab_start"] - dt.timedelta(days=400),
                  last_contact_date=r["last_contact_date"] + dt.timedelta(days=30)) for r in records]
    again = {r["patient_id"]: r for r in limited(moved, key).records}
    for before, after in zip(records, moved, strict=True):
        name = pseudonym(key, before["centre"] or "", before["patient_id"])
        assert (released[name]["cetuximab_start"] - before["cetuximab_start"]
                == again[name]["cetuximab_start"] - after["cetuximab_start"])


def test_a_random_hex_or_binary_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "hex").write_text(KEY.hex() + "\n", encoding="ascii")  # secrets.token_hex(32)
    (tmp_path / "raw").write_bytes(KEY)
    assert load_key(tmp_path / "hex") == load_key(tmp_path / "raw") == KEY
    (tmp_path / "weak").write_bytes(b"\xff" * 40)
    with pytest.raises(KeyFileError, match="distinct byte values"):
        load_key(tmp_path / "weak")


def test_hostile_key_paths_are_refused_without_reading_them_whole(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(KEY * 1000)
    for path, message in ((tmp_path / "big", "not a key file"), (Path("/dev/zero"), "not a key file"),
                          (tmp_path, "cannot read")):
        with pytest.raises(KeyFileError, match=message):
            load_key(path)


def test_new_keys_pass_the_checks() -> None:
    assert all(len(new_key()) == 32 for _ in range(200))
