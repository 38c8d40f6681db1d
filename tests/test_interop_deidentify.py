"""De-identified export: no identifier or original date left, intervals and every seed endpoint unchanged."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from interop_helpers import registries, typed_records
from oncosurg.cli import cli
from oncosurg.export.deidentify import DATE_COLUMNS, Window, date_shift, deidentify, pseudonym
from oncosurg.ingest.csv import read_registry_csv
from registry_factory import random_registry, write_registry

KEY = b"0123456789abcdef0123456789abcdef"
SEED_WINDOW = Window("cetuximab_start", dt.date(2004, 2, 1), dt.date(2006, 4, 30))


def export(db: str, tmp_path: Path, *extra: str, name: str = "deid.csv") -> Path:
    key = tmp_path / "key"
    key.write_bytes(KEY + b"\n")
    out = tmp_path / name
    result = CliRunner().invoke(cli, ["export", "--db", db, "--deidentify", "--key-file", str(key), "--out", str(out),
                                      *extra])
    assert result.exit_code == 0, result.output
    return out


def imported(csv_path: Path, tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'registry.db'}"
    assert CliRunner().invoke(cli, ["import", str(csv_path), "--db", db]).exit_code == 0
    return db


def endpoints(csv_path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    result = CliRunner().invoke(cli, ["analyze", "--csv", str(csv_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    return data["endpoints"], data["cohort"]["flow"]


def dates_of(record: dict[str, Any]) -> set[str]:
    return {record[c].isoformat() for c in DATE_COLUMNS if record.get(c) is not None}


def test_no_identifier_or_original_date_in_the_export(reference_csv: Path, tmp_path: Path) -> None:
    originals = [r.values for r in read_registry_csv(reference_csv).records]
    out = export(imported(reference_csv, tmp_path), tmp_path)
    text = out.read_text(encoding="utf-8")
    for record in originals:
        assert record["patient_id"] not in text
    assert originals[0]["centre"] not in text
    deidentified = {r.values["patient_id"]: r.values for r in read_registry_csv(out).records}
    assert len(deidentified) == len(originals) == 151
    for record in originals:
        new = deidentified[pseudonym(KEY, record["centre"], record["patient_id"])]
        assert dates_of(record).isdisjoint(dates_of(new)), record["patient_id"]
        row = next(line for line in text.splitlines() if line.startswith(new["patient_id"] + ","))
        assert not any(d in row for d in dates_of(record))


def test_every_seed_endpoint_is_identical(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path)
    assert endpoints(out) == endpoints(reference_csv)


def test_endpoints_identical_when_patients_straddle_the_accrual_window(tmp_path: Path) -> None:
    original = write_registry(random_registry(400, 11), tmp_path / "random.csv")
    out = export(imported(original, tmp_path), tmp_path)
    before, after = endpoints(original), endpoints(out)
    assert before[1][-1]["excluded"] > 0  # some patients fall outside the accrual window
    assert after == before


def test_manifest_says_what_was_removed(reference_csv: Path, tmp_path: Path) -> None:
    out = export(imported(reference_csv, tmp_path), tmp_path)
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text(encoding="utf-8"))
    removed = {m["column"]: m["action"] for m in manifest["removed"]}
    assert removed["patient_id"] == "replaced" and removed["centre"] == "replaced"
    assert removed["age_at_cetuximab"] == "coarsened" and all(removed[c] == "shifted" for c in DATE_COLUMNS)
    assert manifest["records"] == 151 and manifest["format"] == "csv"
    assert KEY.decode() not in json.dumps(manifest)


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


def test_ages_are_whole_years_capped_at_90() -> None:
    rows = [{"patient_id": f"P{i}", "referral": "in_house", "prior_chemo_lines": "1", "cetuximab_start": "2005-01-10",
             "cetuximab_partner": "none", "last_contact_date": "2005-06-01", "age_at_cetuximab": age}
            for i, age in enumerate(["61.9", "89.99", "90", "97.5", ""])]
    out, manifest = deidentify(typed_records(rows), KEY)
    assert [r["age_at_cetuximab"] for r in out] == [61, 89, 90, 90, None]
    assert next(m for m in manifest["removed"] if m["column"] == "age_at_cetuximab")["capped"] == 2


def test_keyed_and_deterministic() -> None:
    records = typed_records(random_registry(30, 2))
    first, _ = deidentify(records, KEY)
    again, _ = deidentify(records, KEY)
    other, _ = deidentify(records, b"another key of at least 16 bytes")
    assert first == again
    assert {r["patient_id"] for r in first}.isdisjoint({r["patient_id"] for r in other})


def test_key_file_problems(reference_csv: Path, tmp_path: Path) -> None:
    db = imported(reference_csv, tmp_path)
    runner = CliRunner()
    short = tmp_path / "short"
    short.write_bytes(b"too short")
    out = str(tmp_path / "x.csv")
    cases = [(["--deidentify", "--out", out], "--key-file"),
             (["--deidentify", "--key-file", str(short), "--out", out], "at least 16"),
             (["--deidentify", "--key-file", str(tmp_path / "missing"), "--out", out], "cannot read"),
             (["--deidentify", "--key-file", str(short)], "needs --out"),
             (["--key-file", str(short), "--out", out], "only used with --deidentify")]
    for args, message in cases:
        result = runner.invoke(cli, ["export", "--db", db, *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not Path(out).exists()


@settings(max_examples=60, deadline=None)
@given(registries(), st.binary(min_size=16, max_size=40))
def test_shift_keeps_intervals_window_and_the_past(rows: list[dict[str, str]], key: bytes) -> None:
    records = typed_records(rows)
    today = dt.date(2024, 1, 1)
    out, _ = deidentify(records, key, window=SEED_WINDOW, today=today)
    for before, after in zip(records, out, strict=True):
        shifts = {(after[c] - before[c]).days for c in DATE_COLUMNS if before[c] is not None}
        assert len(shifts) == 1 and 0 not in shifts and abs(shifts.pop()) <= 365
        assert dates_of(before).isdisjoint(dates_of(after))
        assert max(after[c] for c in DATE_COLUMNS if after[c] is not None) <= today
        inside = SEED_WINDOW.start <= before["cetuximab_start"] <= SEED_WINDOW.end
        assert inside == (SEED_WINDOW.start <= after["cetuximab_start"] <= SEED_WINDOW.end)
        assert date_shift(key, before, window=SEED_WINDOW, today=today) == (
            after["cetuximab_start"] - before["cetuximab_start"]).days
