"""Issue 9, items 1 and 2: no silent duplicate patients, and a partial update never erases.

Every format (registry CSV, REDCap, FHIR, Excel) goes through ``oncosurg import`` as a data manager
would run it; the registry is read back with ``oncosurg export``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from oncosurg.cli import cli
from oncosurg.export import redcap as rc
from oncosurg.ingest.csv import ParsedFile
from oncosurg.ingest.redcap import parse_redcap_export
from oncosurg.ingest.redcap_episodes import read_redcap
from oncosurg.schema import COLUMNS, REQUIRED
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store

PB = "Paul Brousse"
OPERATED = {
    "patient_id": "PB-001", "referral": "in_house", "sex": "F", "age_at_cetuximab": "61",
    "liver_mets_count": "6", "largest_met_mm": "45", "bilobar": "yes", "prior_chemo_lines": "2",
    "cetuximab_start": "2004-03-02", "cetuximab_partner": "irinotecan", "cetuximab_cycles": "6",
    "best_response": "PR", "surgery_date": "2004-06-15", "surgery_type": "hepatectomy",
    "resected_segments": "5;6;7", "two_stage": "no", "portal_vein_embolization": "no", "margin": "R0",
    "clavien_dindo_max": "IIIa", "steatosis_pct": "35", "steatohepatitis": "no", "sinusoidal_dilatation_grade": "1",
    "fibrosis_stage": "1", "nodular_regenerative_hyperplasia": "no", "tumour_regression_grade": "3",
    "progression_date": "2005-02-01", "last_contact_date": "2006-11-30",
}
OTHER = {"patient_id": "PB-002", "referral": "referred", "prior_chemo_lines": "1", "cetuximab_start": "2005-01-10",
         "cetuximab_partner": "oxaliplatin", "cetuximab_cycles": "8", "last_contact_date": "2005-09-01"}


def csv_file(path: Path, *rows: dict[str, str], columns: tuple[str, ...] | None = None) -> Path:
    columns = columns or tuple(c for c in COLUMNS if any(c in r for r in rows))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({c: r.get(c, "") for c in columns} for r in rows)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


class Registry:
    """A registry database driven through the command line."""

    def __init__(self, tmp_path: Path, name: str = "r.db") -> None:
        self.tmp = tmp_path
        self.db = f"sqlite:///{tmp_path / name}"
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        return self.runner.invoke(cli, [*args, "--db", self.db])

    def imports(self, path: Path, *args: str) -> Result:
        return self.run("import", str(path), *args)

    def rows(self) -> list[dict[str, str]]:
        result = self.run("export")
        assert result.exit_code == 0, result.output
        return list(csv.DictReader(io.StringIO(result.stdout)))  # the CSV (notes go to stderr)

    def count(self) -> int:
        engine = open_store(self.db)
        with engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(t.patient)).scalar_one()
        engine.dispose()
        return n


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path)
    result = reg.imports(csv_file(tmp_path / "registry.csv", OPERATED, OTHER), "--centre", PB)
    assert result.exit_code == 0, result.output
    return reg


# ------------------------------------------------------------------ item 1: no silent duplicates

def test_readme_tour_update_without_centre_creates_no_second_copy(registry: Registry) -> None:
    corrections = csv_file(registry.tmp / "corrections.csv", {**OPERATED, "cetuximab_cycles": "7"})
    result = registry.imports(corrections, "--update")
    assert result.exit_code == 2
    assert "X416" in result.output and f"'{PB}'" in result.output and "--centre" in result.output
    assert registry.count() == 2
    done = registry.imports(corrections, "--update", "--centre", PB)
    assert done.exit_code == 0, done.output
    assert "updated 1" in done.output and registry.count() == 2
    assert {r["patient_id"]: r["cetuximab_cycles"] for r in registry.rows()} == {"PB-001": "7", "PB-002": "8"}


def test_reimporting_the_same_file_never_doubles_the_cohort(registry: Registry) -> None:
    again = registry.imports(registry.tmp / "registry.csv")  # without --centre
    assert again.exit_code == 2 and "X416" in again.output
    same = registry.imports(registry.tmp / "registry.csv", "--centre", PB)
    assert same.exit_code == 2 and "every row of the file (2) is already registered" in same.output
    unchanged = registry.imports(registry.tmp / "registry.csv", "--centre", PB, "--update")
    assert unchanged.exit_code == 0 and "imported" not in unchanged.output
    assert "every row (2) is already registered" in unchanged.output
    assert registry.count() == 2


def test_a_registry_without_named_centres_keeps_the_default_centre(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    file = csv_file(tmp_path / "registry.csv", OPERATED, OTHER)
    assert reg.imports(file).exit_code == 0
    assert reg.imports(file, "--update").exit_code == 0
    assert reg.count() == 2 and {r["centre"] for r in reg.rows()} == {"main"}


def test_update_never_creates_patients_unless_allow_new(registry: Registry) -> None:
    new = {**OTHER, "patient_id": "PB-003"}
    file = csv_file(registry.tmp / "u.csv", {**OPERATED, "cetuximab_cycles": "7"}, new)
    refused = registry.imports(file, "--update", "--centre", PB)
    assert refused.exit_code == 2
    assert "u.csv:3: column 'patient_id' = 'PB-003'" in refused.output and "X415" in refused.output
    assert "--allow-new" in refused.output
    assert registry.count() == 2 and registry.rows()[0]["cetuximab_cycles"] == "6"  # one transaction: nothing
    done = registry.imports(file, "--update", "--allow-new", "--centre", PB)
    assert done.exit_code == 0 and "imported 1 new patient(s), updated 1" in done.output
    assert registry.imports(file, "--allow-new", "--centre", PB).exit_code == 2  # --allow-new goes with --update


def test_patient_id_registered_in_another_centre_names_the_centre_and_the_fix(registry: Registry) -> None:
    file = csv_file(registry.tmp / "b.csv", OTHER)
    refused = registry.imports(file, "--centre", "Beaujon")
    assert refused.exit_code == 2 and "X414" in refused.output
    assert f"registered in centre '{PB}'" in refused.output and f"--centre '{PB}'" in refused.output
    assert "--allow-id-in-other-centre" in refused.output
    update = registry.imports(file, "--centre", "Beaujon", "--update", "--allow-new")
    assert update.exit_code == 2 and "X414" in update.output
    assert registry.count() == 2
    assert registry.imports(file, "--centre", "Beaujon", "--allow-id-in-other-centre").exit_code == 0
    assert registry.count() == 3


def test_ids_differing_only_in_case_are_probable_duplicates(registry: Registry) -> None:
    lower = csv_file(registry.tmp / "lower.csv", {**OTHER, "patient_id": "pb-002"})
    refused = registry.imports(lower, "--centre", PB)
    assert refused.exit_code == 2 and "X413" in refused.output and "'PB-002'" in refused.output
    both = csv_file(registry.tmp / "both.csv", {**OTHER, "patient_id": "XY-1"}, {**OTHER, "patient_id": "xy-1"})
    in_file = registry.runner.invoke(cli, ["validate", str(both)])
    assert in_file.exit_code == 2 and "both.csv:3: column 'patient_id' = 'xy-1'" in in_file.output
    assert "X413" in in_file.output and "line 2" in in_file.output
    assert registry.imports(both, "--centre", PB).exit_code == 2
    assert registry.count() == 2
    assert registry.imports(lower, "--centre", PB, "--case-sensitive-ids").exit_code == 0
    assert registry.imports(both, "--centre", PB, "--case-sensitive-ids").exit_code == 0
    assert registry.count() == 5


TWO_CENTRES = [{**OPERATED, "centre": "A"}, {**OPERATED, "centre": "B", "cetuximab_cycles": "9", "sex": "M"},
               {**OTHER, "centre": ""}]


@pytest.mark.parametrize("fmt", ["redcap", "fhir", "xlsx", "csv"])
def test_same_patient_id_in_two_centres_round_trips(tmp_path: Path, fmt: str) -> None:
    source = Registry(tmp_path, "a.db")
    result = source.imports(csv_file(tmp_path / "two.csv", *TWO_CENTRES))
    assert result.exit_code == 0, result.output
    original = source.rows()
    assert len(original) == 3
    out = tmp_path / ("bundles" if fmt == "fhir" else f"export.{'xlsx' if fmt == 'xlsx' else 'csv'}")
    assert source.run("export", "--format", fmt, "--out", str(out)).exit_code == 0
    if fmt == "redcap":
        ids = [r[rc.RECORD_ID] for r in csv.DictReader(out.open(encoding="utf-8")) if not r[rc.REPEAT_INSTRUMENT]]
        assert sorted(ids) == ["A::PB-001", "B::PB-001", "main::PB-002"]
    if fmt == "fhir":
        identifiers = [tuple(sorted((i["system"], i["value"]) for i in e["resource"]["identifier"]))
                       for path in out.glob("*.json") for e in json.loads(path.read_text())["entry"]
                       if e["resource"]["resourceType"] == "Patient"]
        assert len(identifiers) == 3 and len({i for ident in identifiers for i in ident}) == 6  # all distinct
    target = Registry(tmp_path, "b.db")
    result = target.imports(out, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert target.rows() == original
    again = source.imports(out, "--format", fmt, "--update")  # back into the registry it came from
    assert again.exit_code == 0 and "every row (3) is already registered" in again.output


# ------------------------------------------------------------------ item 2: a partial update never erases

def flat_redcap_export(registry: Registry) -> Path:
    """The registry as an export of the flat REDCap project of earlier releases (which must still import)."""
    from oncosurg.ingest.csv import parse_registry_csv

    result = registry.run("export")
    records = [r.values for r in parse_registry_csv(result.output.encode(), source="export.csv").records]
    path = registry.tmp / "redcap.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        rc.write_records(records, fh)
    return path


def redcap_selected(path: Path, forms: set[str], changes: dict[str, str], only: str = "") -> Path:
    """Keep the columns of ``forms`` (plus the record id) of a REDCap export, as REDCap's 'selected
    instruments' export writes it, and change some values (of the record ids ending with ``only``)."""
    rows = list(csv.DictReader(path.open(encoding="utf-8")))

    def kept(column: str) -> bool:
        if column in (rc.RECORD_ID, rc.REPEAT_INSTRUMENT, rc.REPEAT_INSTANCE):
            return True
        field = rc.FIELD_MAP.get(column.partition("___")[0])
        return (field.form if field else column.removesuffix("_complete")) in forms

    keep = [c for c in rows[0] if kept(c)]
    rows = [r for r in rows if not r[rc.REPEAT_INSTRUMENT] or r[rc.REPEAT_INSTRUMENT] in forms]
    out = path.with_name("selected.csv")
    with out.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keep, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows({**r, **changes} if r[rc.RECORD_ID].endswith(only) else r for r in rows)
    return out


def test_redcap_export_of_selected_instruments_changes_only_what_it_carries(registry: Registry) -> None:
    before = registry.rows()
    full = flat_redcap_export(registry)  # the flat project (today's episode project: test_redcap_episodes)
    selected = redcap_selected(full, {"patient", "follow_up"}, {"last_contact_date": "2006-12-15"})
    rows = list(csv.DictReader(selected.open(encoding="utf-8")))
    assert "surgery_date" not in rows[0] and "steatosis_pct" not in rows[0]
    parsed = parse_redcap_export(selected.read_bytes())
    assert parsed.ok and "surgery_date" not in parsed.records[0].carried
    assert isinstance(read_redcap(selected), ParsedFile)  # `import --format redcap` reads it with the flat reader
    result = registry.imports(selected, "--format", "redcap", "--update")
    assert result.exit_code == 0, result.output
    after = registry.rows()
    changed = {(a["patient_id"], c) for a, b in zip(after, before, strict=True) for c in COLUMNS if a[c] != b[c]}
    assert changed == {("PB-001", "last_contact_date"), ("PB-002", "last_contact_date")}
    assert after[0]["surgery_date"] == "2004-06-15" and after[0]["clavien_dindo_max"] == "IIIa"


def test_redcap_selected_fields_without_the_patient_instrument(registry: Registry) -> None:
    full = flat_redcap_export(registry)  # the flat project (today's episode project: test_redcap_episodes)
    selected = redcap_selected(full, {"cetuximab_course"}, {"cetuximab_cycles": "5"})
    result = registry.imports(selected, "--format", "redcap", "--update")  # the centre is in the record id
    assert result.exit_code == 0, result.output
    assert [r["cetuximab_cycles"] for r in registry.rows()] == ["5", "5"]
    assert registry.rows()[0]["sex"] == "F"


def test_redcap_surgery_without_the_complication_instrument_keeps_the_grade(registry: Registry) -> None:
    full = flat_redcap_export(registry)  # the flat project (today's episode project: test_redcap_episodes)
    selected = redcap_selected(full, {"patient", "surgery"}, {"margin": "R1"}, only="::PB-001")
    result = registry.imports(selected, "--format", "redcap", "--update")  # any_complication = yes, no grades
    assert result.exit_code == 0, result.output
    row = registry.rows()[0]
    assert (row["margin"], row["clavien_dindo_max"]) == ("R1", "IIIa")


def test_fhir_bundle_without_the_procedure_keeps_the_surgery(registry: Registry) -> None:
    before = registry.rows()
    folder = registry.tmp / "bundles"
    assert registry.run("export", "--format", "fhir", "--out", str(folder)).exit_code == 0
    for path in folder.glob("*.json"):
        bundle = json.loads(path.read_text())
        surgery = {e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure"}
        bundle["entry"] = [e for e in bundle["entry"] if e["fullUrl"] not in surgery  # the Procedure and
                           and not {r["reference"] for r in e["resource"].get("partOf", [])} & surgery]  # its parts
        path.write_text(json.dumps(bundle))
    result = registry.imports(folder, "--format", "fhir", "--update")
    assert result.exit_code == 0, result.output
    assert "every row (2) is already registered" in result.output
    assert registry.rows() == before


def test_present_and_empty_clears_only_with_allow_clear(registry: Registry) -> None:
    file = csv_file(registry.tmp / "clear.csv", {**OPERATED, "sex": "", "cetuximab_cycles": ""},
                    columns=(*REQUIRED, "sex", "cetuximab_cycles", "steatosis_pct"))
    refused = registry.imports(file, "--update", "--centre", PB)
    assert refused.exit_code == 2 and refused.output.count("X417") == 2
    assert "clear.csv:2: column 'sex' = '': the update would clear sex (registered: F)" in refused.output
    assert "cetuximab_cycles (registered: 6)" in refused.output and "--allow-clear" in refused.output
    assert registry.rows()[0]["sex"] == "F"
    done = registry.imports(file, "--update", "--centre", PB, "--allow-clear")
    assert done.exit_code == 0 and "'F' → None" in done.output
    row = registry.rows()[0]
    assert (row["sex"], row["cetuximab_cycles"], row["steatosis_pct"], row["age_at_cetuximab"]) == ("", "", "35", "61")


def test_excel_partial_sheet_and_empty_cells(registry: Registry) -> None:
    from openpyxl import Workbook

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "registry"
    ws.append([*REQUIRED, "centre", "best_response", "margin"])
    ws.append([OPERATED[c] for c in REQUIRED] + [PB, "CR", None])
    wb.save(registry.tmp / "part.xlsx")
    refused = registry.imports(registry.tmp / "part.xlsx", "--format", "xlsx", "--update")
    assert refused.exit_code == 2 and "column 'margin'" in refused.output and "X417" in refused.output
    ws.cell(row=2, column=len(REQUIRED) + 3, value="R1")
    wb.save(registry.tmp / "part.xlsx")
    assert registry.imports(registry.tmp / "part.xlsx", "--format", "xlsx", "--update").exit_code == 0
    row = registry.rows()[0]
    assert (row["best_response"], row["margin"], row["surgery_date"]) == ("CR", "R1", "2004-06-15")


# ------------------------------------------------------------------ the web upload follows the same rules

def test_web_upload_plans_with_the_import_rules(tmp_path: Path) -> None:
    from web_helpers import CENTRE_A, Api, add_user, make_app

    app = make_app(f"sqlite:///{tmp_path / 'web.db'}")
    add_user(app, "dm", "data_manager", CENTRE_A)
    dm = Api(app, "dm")

    def upload(path: Path, mode: str) -> dict:
        return dm.client.post("/upload", files={"file": (path.name, path.read_bytes(), "text/csv")},
                              data={"centre": CENTRE_A, "mode": mode, "csrf_token": dm.csrf}).json()

    staged = upload(csv_file(tmp_path / "first.csv", OPERATED), "insert")
    assert dm.post("/upload/confirm", {"token": staged["token"]}).json()["created"] == 1
    second = csv_file(tmp_path / "second.csv", {**OPERATED, "cetuximab_cycles": "7"}, OTHER)
    refused = upload(second, "update")
    assert [(e["code"], e["line"]) for e in refused["errors"]] == [("X415", 3)]
    assert "update+new" in refused["errors"][0]["hint"]
    planned = upload(second, "update+new")
    assert (planned["ok"], planned["create"], planned["update"]) == (True, 1, 1)
    case = upload(csv_file(tmp_path / "case.csv", {**OPERATED, "patient_id": "pb-001"}), "insert")
    assert [e["code"] for e in case["errors"]] == ["X413"]
    clears = csv_file(tmp_path / "clears.csv", {**OPERATED, "sex": ""}, columns=(*REQUIRED, "sex"))
    assert [e["code"] for e in upload(clears, "update")["errors"]] == ["X417"]
    assert upload(clears, "update+clear")["changes"] == [
        {"patient_id": "PB-001", "centre": CENTRE_A, "field": "sex", "old": "F", "new": None}]
    app.state.store.dispose()


def test_exports_write_whole_numbers_as_integers(registry: Registry) -> None:
    row = registry.rows()[0]
    assert (row["age_at_cetuximab"], row["largest_met_mm"], row["steatosis_pct"]) == ("61", "45", "35")
    out = registry.tmp / "r.csv"
    assert registry.run("export", "--format", "redcap", "--out", str(out)).exit_code == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    line = next(r for r in rows if r["redcap_repeat_instrument"] == "therapy_line")
    assert (rows[0]["age_at_rescue"], line["largest_met_mm"]) == ("61", "45")
    folder = registry.tmp / "fhir"
    assert registry.run("export", "--format", "fhir", "--out", str(folder)).exit_code == 0
    text = next(folder.glob("*PB-001.json")).read_text()
    assert '"value": 61,' in text and "61.0" not in text
