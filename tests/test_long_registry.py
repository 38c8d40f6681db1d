"""The long registry format: records → files → records, files → records → files, partial files, updates."""

from __future__ import annotations

import datetime as dt
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from episode_factory import canonical, patient_records, registries, same
from oncosurg.export.long import cell_text, write_long
from oncosurg.ingest.csv import read_registry_csv
from oncosurg.ingest.long import StoredLookup, parse_long, read_long
from oncosurg.pathway.flat import PatientRecord, from_flat
from oncosurg.pathway.model import TABLE_BY_NAME, TABLES, Table
from oncosurg.pathway.rules import check_patient

ROOT = Path(__file__).resolve().parents[1]
REGISTRIES = sorted((ROOT / "tests" / "reference" / "registries").glob("*.csv"))
EXAMPLE = ROOT / "docs" / "examples" / "long-registry"
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                              HealthCheck.too_slow])


def _read(path: Path, **kw: object) -> list[PatientRecord]:
    with read_long(path, **kw) as registry:
        assert registry.ok, [i.format() for i in registry.issues]
        return list(registry.records())


def _bytes(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


@SETTINGS
@given(records=registries(), zipped=st.booleans())
def test_records_to_long_to_records_are_equal(tmp_path_factory: pytest.TempPathFactory, records: list[PatientRecord],
                                              zipped: bool) -> None:
    out = tmp_path_factory.mktemp("rt") / ("registry.zip" if zipped else "registry")
    written = write_long(records, out)
    assert written.patients == len(records)
    back = _read(out)
    assert [(r.centre, r.patient_id) for r in back] == [(r.centre, r.patient_id) for r in records]
    for original, read in zip(records, back, strict=True):
        assert same(original, read)
        assert canonical(read).episodes == read.episodes  # the reader gives the canonical form
        assert check_patient(read) == []


@SETTINGS
@given(records=registries())
def test_long_to_records_to_long_is_byte_identical(tmp_path_factory: pytest.TempPathFactory,
                                                   records: list[PatientRecord]) -> None:
    tmp = tmp_path_factory.mktemp("bytes")
    write_long(records, tmp / "first")
    write_long(_read(tmp / "first"), tmp / "second")
    assert _bytes(tmp / "first") == _bytes(tmp / "second")
    write_long(_read(tmp / "second"), tmp / "first.zip")
    write_long(_read(tmp / "first.zip"), tmp / "second.zip")
    assert (tmp / "first.zip").read_bytes() == (tmp / "second.zip").read_bytes()
    with zipfile.ZipFile(tmp / "first.zip") as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == _bytes(tmp / "first")


@pytest.mark.parametrize("path", REGISTRIES, ids=lambda p: p.stem)
def test_flat_origin_records_round_trip(tmp_path: Path, path: Path) -> None:
    parsed = read_registry_csv(path, centre="Flat centre")
    records = sorted((from_flat(r.values) for r in parsed.records), key=lambda r: (r.centre, r.patient_id))
    write_long(records, tmp_path / "long.zip")
    back = _read(tmp_path / "long.zip")
    assert len(back) == len(records) == len(parsed.records)
    assert all(same(a, b) for a, b in zip(records, back, strict=True))
    write_long(back, tmp_path / "again.zip")
    assert (tmp_path / "long.zip").read_bytes() == (tmp_path / "again.zip").read_bytes()


def test_canonical_cells() -> None:
    fields = {f.name: f for spec in TABLES for f in spec.fields}
    assert cell_text(fields["largest_met_mm"], 71.0) == "71"
    assert cell_text(fields["largest_met_mm"], 71.25) == "71.25"
    assert cell_text(fields["cycles"], 6.0) == "6"
    assert cell_text(fields["bilobar"], True) == "yes" and cell_text(fields["bilobar"], False) == "no"
    assert cell_text(fields["start_date"], dt.date(2005, 3, 4)) == "2005-03-04"
    assert cell_text(fields["agents"], "irinotecan;cetuximab") == "cetuximab;irinotecan"
    assert cell_text(fields["resected_segments"], "8;5;6") == "5;6;8"
    assert cell_text(fields["notes"], None) == ""


def test_every_file_is_written_with_its_header_even_empty(tmp_path: Path) -> None:
    write_long([], tmp_path / "empty")
    assert sorted(f.name for f in (tmp_path / "empty").iterdir()) == sorted(spec.file for spec in TABLES)
    for spec in TABLES:
        assert (tmp_path / "empty" / spec.file).read_text() == ",".join(spec.columns) + "\n"
    with read_long(tmp_path / "empty") as registry:
        assert registry.ok and registry.patients == 0 and list(registry.records()) == []


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=patient_records(centre="C", patient_id="P1"))
def test_writer_refuses_unordered_records_and_existing_output(tmp_path: Path, record: PatientRecord) -> None:
    out = tmp_path / "out"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    with pytest.raises(ValueError, match="ordered"):
        write_long([record, record], out)
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []  # nothing left behind
    write_long([record], out)
    before = _bytes(out)
    with pytest.raises(FileExistsError):
        write_long([], out)
    assert _bytes(out) == before
    write_long([], out, overwrite=True)
    assert _bytes(out) != before and [p.name for p in tmp_path.iterdir()] == ["out"]
    (tmp_path / "empty").mkdir()
    write_long([record], tmp_path / "empty")  # an empty folder is fine
    assert _bytes(tmp_path / "empty") == before
    import shutil

    shutil.rmtree(tmp_path / "empty")


def test_the_example_registry_is_valid_and_canonical(tmp_path: Path) -> None:
    records = _read(EXAMPLE, today=dt.date(2024, 1, 1))
    assert records, "docs/examples/long-registry holds at least one patient"
    write_long(records, tmp_path / "again")
    assert _bytes(tmp_path / "again") == {f.name: f.read_bytes() for f in sorted(EXAMPLE.glob("*.csv"))}


# ------------------------------------------------------------------------------------------ partial files, updates

def _files(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


PATIENTS = "centre,patient_id,referral,sex\nC,P1,in_house,F\n"
CONTACTS = "centre,patient_id,contact_no,contact_date,vital_status\nC,P1,1,2008-01-01,alive\n"


def test_carried_names_present_files_and_columns(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {"patients.csv": PATIENTS, "contacts.csv": CONTACTS})
    (record,) = _read(folder)
    assert set(record.carried) == {Table.PATIENT, Table.CONTACT}
    assert record.carried[Table.PATIENT] == {"centre", "patient_id", "referral", "sex"}
    assert record.patient["sex"] == "F" and record.patient["birth_year"] is None  # absent column: None, not carried
    assert record.where[(Table.CONTACT, (1,))] == ("contacts.csv", 2)
    assert record.where[(Table.PATIENT, ("P1",))] == ("patients.csv", 2)


def test_centre_fills_empty_cells_and_absent_columns(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {
        "patients.csv": "patient_id,referral\nP1,in_house\n",
        "contacts.csv": "centre,patient_id,contact_no,contact_date,vital_status\n,P1,1,2008-01-01,alive\n"})
    (record,) = _read(folder, centre="Default")
    assert record.centre == "Default" and record.rows(Table.CONTACT)[0]["contact_date"] == dt.date(2008, 1, 1)


def _stored(record: PatientRecord) -> StoredLookup:
    def lookup(keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PatientRecord]:
        return {k: record for k in keys if k == (record.centre, record.patient_id)}
    return lookup


STORED = PatientRecord("C", {"patient_id": "P1", "referral": "in_house", "sex": "M"}, {
    Table.LIVER_PROCEDURE: [{"procedure_no": 1, "procedure_date": dt.date(2006, 5, 1),
                             "procedure_type": "hepatectomy"}],
    Table.CONTACT: [{"contact_no": 1, "contact_date": dt.date(2007, 1, 1), "vital_status": "alive"}],
})


def test_update_children_may_name_parents_only_in_the_store(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {
        "patients.csv": "centre,patient_id,referral\n",
        "complications.csv": "centre,patient_id,procedure_no,complication_no,grade\nC,P1,1,1,II\n"})
    with read_long(folder) as registry:  # not an update: the patient and its procedure are unknown
        assert [(i.code, i.file, i.line) for i in registry.issues] == [("E601", "complications.csv", 2)]
        assert "not in patients.csv" in registry.issues[0].message
    with read_long(folder, stored=_stored(STORED)) as registry:
        assert registry.ok, [i.format() for i in registry.issues]
        (record,) = registry.records()
    assert Table.PATIENT not in record.carried and set(record.carried) >= {Table.COMPLICATION}
    assert record.rows(Table.COMPLICATION)[0]["grade"] == "II"
    with read_long(folder, stored=lambda keys: {}) as registry:
        assert "nor in the registry" in registry.issues[0].message


def test_update_is_checked_on_the_merged_record(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {
        "patients.csv": "centre,patient_id,referral\nC,P1,in_house\n",
        "disease_events.csv": "centre,patient_id,event_no,event_date,event_kind\nC,P1,1,2007-06-01,recurrence\n",
        "complications.csv": "centre,patient_id,procedure_no,complication_no,grade\nC,P1,2,1,II\n"})
    with read_long(folder, stored=_stored(STORED)) as registry:
        found = [(i.code, i.file, i.line, i.column) for i in registry.issues]
    # the event follows the stored hepatectomy (no E610) but the stored last contact (E604);
    # procedure 2 is neither in the file nor in the store (E601)
    assert found == [("E601", "complications.csv", 2, "procedure_no"),
                     ("E604", "disease_events.csv", 2, "event_date")]


def test_update_keeps_stored_values_of_absent_columns(tmp_path: Path) -> None:
    from oncosurg.pathway.merge import overlay

    folder = _files(tmp_path / "r", {
        "patients.csv": "centre,patient_id,referral\nC,P1,in_house\n",
        "liver_procedures.csv": "centre,patient_id,procedure_no,procedure_date,procedure_type,margin\n"
                                "C,P1,1,2006-05-01,hepatectomy,R1\n"})
    (record,) = _read(folder, stored=_stored(STORED))
    merged = overlay(STORED, record)
    assert merged.patient["sex"] == "M"  # absent column: unchanged
    assert merged.rows(Table.LIVER_PROCEDURE)[0]["margin"] == "R1"
    assert merged.rows(Table.CONTACT) == STORED.rows(Table.CONTACT)  # absent file: unchanged


def test_parse_long_reads_zip_bytes(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {"patients.csv": PATIENTS, "contacts.csv": CONTACTS})
    with zipfile.ZipFile(tmp_path / "r.zip", "w") as archive:
        for f in folder.iterdir():
            archive.write(f, f"registry/{f.name}")  # one top folder inside the archive is fine
    with parse_long((tmp_path / "r.zip").read_bytes(), source="upload.zip") as registry:
        assert registry.ok and registry.patients == 1 and registry.rows == 2
        assert set(registry.files) == {"patients.csv", "contacts.csv"}


def test_records_are_ordered_by_centre_then_patient_id(tmp_path: Path) -> None:
    folder = _files(tmp_path / "r", {
        "patients.csv": "centre,patient_id,referral\nB,P1,in_house\nA,P2,in_house\nA,P10,in_house\n",
        "contacts.csv": "centre,patient_id,contact_no,contact_date,vital_status\n"
                        "A,P10,1,2008-01-01,alive\nB,P1,1,2008-01-01,alive\nA,P2,1,2008-01-01,alive\n"})
    assert [(r.centre, r.patient_id) for r in _read(folder)] == [("A", "P10"), ("A", "P2"), ("B", "P1")]


def test_table_key_columns_match_the_model() -> None:
    assert TABLE_BY_NAME[Table.PATIENT].columns.count("patient_id") == 1


# ------------------------------------------------------------------------------------------ docs/registry-long.md

DOC = (ROOT / "docs" / "registry-long.md").read_text(encoding="utf-8")


def test_the_worked_example_shows_the_example_files() -> None:
    import re

    shown = dict(re.findall(r"^`(\w+\.csv)`.*?```csv\n(.*?)```", DOC, flags=re.S | re.M))
    assert sorted(shown) == sorted(spec.file for spec in TABLES)
    for name, text in shown.items():
        assert (EXAMPLE / name).read_text(encoding="utf-8") == text, name


def test_the_documented_error_is_what_the_reader_says(tmp_path: Path) -> None:
    import re
    import shutil

    shutil.copytree(EXAMPLE, tmp_path / "registry")
    path = tmp_path / "registry" / "complications.csv"
    path.write_text(path.read_text().replace("2005-04-14", "2005-03-30"))
    with read_long(tmp_path / "registry") as registry:
        (issue,) = registry.issues
    documented = re.search(r"```text\n(registry/complications.csv.*?)\n```", DOC).group(1)
    assert issue.format("registry") == documented


def test_the_worked_example_projection_is_as_described() -> None:
    from oncosurg.pathway.flat import dropped_by_flat, to_flat

    first = _read(EXAMPLE)[0]
    flat = to_flat(first)
    assert (flat["prior_chemo_lines"], flat["cetuximab_partner"], flat["surgery_type"], flat["two_stage"],
            flat["clavien_dindo_max"], flat["progression_date"], flat["death_date"]) == (
        1, "irinotecan", "hepatectomy", True, "IIIa", dt.date(2006, 11, 20), dt.date(2009, 2, 14))
    assert dropped_by_flat(first)


# ------------------------------------------------------------------------ oncosurg validate --format long

def test_cli_validate_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import shutil
    import tempfile

    from click.testing import CliRunner

    from oncosurg.cli import cli

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    runner = CliRunner()
    ok = runner.invoke(cli, ["validate", "--format", "long", str(EXAMPLE)])
    assert ok.exit_code == 0 and "2 patient(s), 26 row(s) in 9 file(s), no errors" in ok.output
    shutil.make_archive(str(tmp_path / "example"), "zip", EXAMPLE)
    assert runner.invoke(cli, ["validate", "--format", "long", str(tmp_path / "example.zip")]).exit_code == 0
    shutil.copytree(EXAMPLE, tmp_path / "bad")
    (tmp_path / "bad" / "patients.csv").unlink()
    bad = runner.invoke(cli, ["validate", "--format", "long", "--json", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    report = json.loads(bad.output)
    assert report["error_count"] == 1 and report["errors"][0]["file"] == "patients.csv"
    assert report["errors"][0]["code"] == "F109"
    missing = runner.invoke(cli, ["validate", "--format", "long", str(tmp_path / "nothing")])
    assert missing.exit_code != 0 and "no such folder or file" in missing.output
    assert list(scratch.iterdir()) == []  # the staging database is gone: validate creates nothing


@settings(max_examples=40, deadline=None)
@given(stored=patient_records(centre="C", patient_id="P1"), source=patient_records(centre="C", patient_id="P1"),
       data=st.data())
def test_overlay_is_what_the_store_update_leaves(stored: PatientRecord, source: PatientRecord,
                                                 data: st.DataObject) -> None:
    """The reader checks updates on ``overlay``; the store writes ``plan_update``: the same patient."""
    import copy

    from oncosurg.pathway.merge import overlay
    from oncosurg.pathway.update import merged, plan_update

    carried: dict[Table, frozenset[str]] = {}
    for spec in TABLES:
        if data.draw(st.booleans()):
            optional = [f.name for f in spec.fields if f.name not in spec.key]
            kept = data.draw(st.lists(st.sampled_from(optional), unique=True)) if optional else []
            carried[spec.table] = frozenset((*spec.key, *kept))
    incoming = PatientRecord("C", {c: v for c, v in source.patient.items()
                                   if Table.PATIENT in carried and c in carried[Table.PATIENT]} | {"patient_id": "P1"},
                             {t: [{c: v for c, v in row.items() if c in carried[t]} for row in rows]
                              for t, rows in source.episodes.items() if t in carried}, carried)
    expected = merged(stored, plan_update(stored, copy.deepcopy(incoming)))
    assert same(overlay(stored, copy.deepcopy(incoming)), expected)


@pytest.mark.slow
def test_memory_does_not_grow_with_the_registry(tmp_path: Path) -> None:
    """Python's heap while reading, validating and iterating 4x more patients stays about the same."""
    import sys
    import tracemalloc

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_long import generate

    peaks = []
    for patients in (500, 2000):
        generate(tmp_path / str(patients), patients)
        tracemalloc.start()
        with read_long(tmp_path / str(patients), today=dt.date(2030, 1, 1)) as registry:
            assert registry.ok and sum(1 for _ in registry.records()) == patients
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0], peaks  # held in memory as Python objects, it would be 4x
