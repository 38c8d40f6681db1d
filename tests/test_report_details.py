"""Small report defects (issue 9, item 9): Table 1 decimals and missing values, provenance paths, PDF path breaks."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.report.table_one import Variable, table_one


# ------------------------------------------------------------------------------------------ Table 1
def test_a_numeric_row_uses_one_number_of_decimals_across_groups() -> None:
    # group A's quartiles are whole (53 (46–65)), group B's are not (57.5 (44.8–77.0)): the row uses 1 decimal
    counts = {"age": {"a": {46.0: 1, 50.0: 1, 53.0: 1, 59.0: 1, 65.0: 1},
                      "b": {40.0: 1, 46.0: 1, 57.0: 1, 58.0: 1, 77.0: 1, 78.0: 1}}}
    table = table_one([Variable("age", "Age", "numeric")], counts, [("a", "A", 5), ("b", "B", 6)])
    cells = table["rows"][1]["cells"]
    assert cells[0] == "53.0 (50.0–59.0)"
    decimals = {len(part.split(".")[1]) if "." in part else 0
                for cell in cells for part in cell.replace("(", " ").replace(")", " ").replace("–", " ").split()}
    assert decimals == {1}, cells
    whole = table_one([Variable("age", "Age", "numeric")],
                      {"age": {"a": {46.0: 1, 50.0: 1, 53.0: 1, 59.0: 1, 65.0: 1},
                               "b": {40.0: 1, 45.0: 1, 50.0: 1, 55.0: 1, 60.0: 1}}},
                      [("a", "A", 5), ("b", "B", 5)])
    assert whole["rows"][1]["cells"] == ["53 (50–59)", "50 (45–55)"]


def test_a_variable_never_recorded_says_so() -> None:
    variables = [Variable("bilobar", "Bilobar", "binary"), Variable("ras", "RAS", "categorical", ("wt", "mut")),
                 Variable("size", "Size", "numeric")]
    counts = {"bilobar": {"a": {None: 3}, "b": {None: 2}}, "ras": {"a": {None: 3}, "b": {"wt": 1, None: 1}},
              "size": {"a": {None: 3}, "b": {None: 2}}}
    table = table_one(variables, counts, [("a", "A", 3), ("b", "B", 2)])
    rows = {(r["variable"], r["level"]): r for r in table["rows"]}
    assert rows[("bilobar", None)]["cells"] == ["not recorded", "not recorded"]
    assert rows[("size", None)]["cells"] == ["not recorded", "not recorded"]
    assert rows[("ras", None)]["cells"] == ["not recorded", ""]
    assert rows[("ras", "wt")]["cells"] == ["", "1 (100)"]
    assert not any("0 (—)" in c for r in table["rows"] for c in r["cells"])
    assert any("'not recorded'" in n for n in table["notes"])


def test_missing_is_given_per_group() -> None:
    counts = {"sex": {"a": {"F": 3, None: 2}, "b": {"F": 1, "M": 1, None: 5}}}
    table = table_one([Variable("sex", "Sex", "categorical", ("F", "M"))], counts, [("a", "A", 5), ("b", "B", 7)])
    row = table["rows"][1]
    assert row["missing"] == [2, 5]
    assert row["missing_text"] == "7 (2 / 5)"
    single = table_one([Variable("sex", "Sex", "categorical", ("F", "M"))], {"sex": {"all": {"F": 1, None: 4}}},
                       [("all", "All", 5)])
    assert single["rows"][1]["missing_text"] == "4"


def test_table_one_files_carry_the_missing_per_group() -> None:
    from oncosurg.report.export import table_one_csv

    counts = {"sex": {"a": {"F": 3, None: 2}, "b": {"F": 1, "M": 1, None: 5}}}
    table = table_one([Variable("sex", "Sex", "categorical", ("F", "M"))], counts, [("a", "A", 5), ("b", "B", 7)])
    table |= {"title": "t", "by": "g"}
    assert "7 (2 / 5)" in table_one_csv(table)


# --------------------------------------------------------------------------------------- provenance
def test_display_path_is_relative_to_the_working_folder_or_the_name(tmp_path: Path) -> None:
    from oncosurg.report.text import display_path

    assert display_path(str(tmp_path / "sub" / "registry.csv"), cwd=tmp_path) == "sub/registry.csv"
    assert display_path(f"sqlite:///{tmp_path / 'reg.db'}", cwd=tmp_path) == "sqlite:///reg.db"
    assert display_path("/home/someone/private/registry.csv", cwd=tmp_path) == "registry.csv"
    assert display_path("registry.csv", cwd=tmp_path) == "registry.csv"
    assert display_path("postgresql+psycopg://u:***@db/registry") == "postgresql+psycopg://u:***@db/registry"
    from oncosurg.protocol.model import resolve_protocol

    bundled = display_path(str(resolve_protocol("rescue-cetuximab-2007")), cwd=tmp_path)
    assert bundled.startswith("rescue-cetuximab-2007.toml") and "/" not in bundled


@pytest.mark.slow
def test_the_report_prints_no_absolute_local_path(tmp_path: Path, reference_csv: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pypdf import PdfReader

    work = tmp_path / "a-rather-long-folder-name" / "with-another-long-folder-name-inside"
    work.mkdir(parents=True)
    csv = work / "registry-of-the-hepatobiliary-centre.csv"
    csv.write_bytes(reference_csv.read_bytes())
    db = work / "data" / "registry-of-the-hepatobiliary-centre.db"
    assert CliRunner().invoke(cli, ["import", str(csv), "--db", f"sqlite:///{db}"]).exit_code == 0
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["report", "--db", f"sqlite:///{db}", "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "index.html").read_text(encoding="utf-8")
    assert str(tmp_path) not in html
    relative = ("a-rather-long-folder-name/with-another-long-folder-name-inside/data/"
                "registry-of-the-hepatobiliary-centre.db")
    assert f"sqlite:///{relative}" in html
    assert "rescue-cetuximab-2007.toml" in html and "/src/oncosurg/" not in html
    text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO((out / "report.pdf").read_bytes())).pages)
    assert str(tmp_path) not in text
    # the path is broken only after a "/": the long names stay whole on their lines
    for name in ("a-rather-long-folder-name/", "with-another-long-folder-name-inside/",
                 "registry-of-the-hepatobiliary-centre.db"):
        assert name in text, name


def test_pdf_paths_break_only_after_a_separator() -> None:
    from reportlab.pdfbase import pdfmetrics

    from oncosurg.report import pdf

    pdf._register_fonts()
    path = "sqlite:///a-rather-long-folder-name/with-another-long-folder-name-inside/data/registry-of-the-centre.db"
    markup = pdf.path_markup(path, 200)
    lines = markup.removeprefix("<font name='Mono' size='6.8'>").removesuffix("</font>").split("<br/>")
    assert len(lines) > 1 and "".join(lines) == path
    assert all(line.endswith("/") for line in lines[:-1])
    assert all(pdfmetrics.stringWidth(line, "Mono", 6.8) <= 200 for line in lines)
    # a single name wider than the line is the only thing ever cut
    cut = pdf.path_markup("x" * 200, 60)
    assert cut.count("<br/>") >= 1


# ------------------------------------------------------------------------------------------ survival
@pytest.mark.parametrize("level", ["-0.5", "2", "0", "1"])
def test_survival_refuses_a_confidence_level_outside_0_1(tmp_path: Path, level: str) -> None:
    data = tmp_path / "s.csv"
    data.write_text("t,e\n1,1\n2,0\n3,1\n4,1\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["survival", str(data), "--time", "t", "--event", "e", "--conf-level", level])
    assert result.exit_code == 2
    assert "--conf-level" in result.output
