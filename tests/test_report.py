"""The study report: same numbers as `analyze`, the flow of the seed study, self-contained HTML, a real PDF."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.report.terminal import format_estimate
from oncosurg.schema import DAYS_PER_MONTH


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Report: {out / 'index.html'}" in result.output
    return out


@pytest.fixture(scope="module")
def from_csv(demo: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`oncosurg report --csv` on the reference CSV, and `oncosurg analyze --csv --json` on the same file."""
    out = tmp_path_factory.mktemp("report")
    csv_file = str(demo / "reference-cohort.csv")
    result = CliRunner().invoke(cli, ["report", "--csv", csv_file, "--out", str(out)])
    assert result.exit_code == 0, result.output
    analyzed = CliRunner().invoke(cli, ["analyze", "--csv", csv_file, "--json"])
    assert analyzed.exit_code == 0, analyzed.output
    return out, analyzed.output


def _data(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "report-data.json").read_text(encoding="utf-8"))


def test_results_json_is_the_analyze_json(from_csv: tuple[Path, str]) -> None:
    out, analyzed = from_csv
    assert (out / "results.json").read_text(encoding="utf-8").strip() == analyzed.strip()


def test_demo_writes_every_file(demo: Path) -> None:
    for name in ("index.html", "report.pdf", "results.json", "report-data.json", "tables/table-1.xlsx",
                 "tables/table-1.docx", "tables/table-1a-resected.csv", "tables/table-1b-referral.csv"):
        assert (demo / name).is_file(), name
    pngs = sorted((demo / "figures").glob("*.png"))
    svgs = sorted((demo / "figures").glob("*.svg"))
    assert len(pngs) == len(svgs) >= 6
    assert [p.stem for p in pngs] == [p.stem for p in svgs]


def test_flow_of_the_seed_study(demo: Path) -> None:
    flow = _data(demo)["flow"]
    assert (flow["registered"], flow["evaluated"]) == (151, 151)
    assert [(a["key"], a["n"]) for a in flow["arms"]] == [("in_house", 133), ("referred", 18)]
    assert (flow["operated"], flow["hepatectomy"], flow["exploration_only"]) == (27, 25, 2)
    assert flow["not_operated"] == 151 - 27
    assert [e["n"] for e in flow["exclusions"]] == [0]
    assert "outside the accrual window" in flow["exclusions"][0]["reason"]
    html = (demo / "index.html").read_text(encoding="utf-8")
    assert "151 in the registry, 151 evaluated, 133 in-house and 18 referred, 27 operated, 25 hepatectomies" in html


def test_flow_counts_equal_the_endpoints(demo: Path) -> None:
    flow = _data(demo)["flow"]
    eps = json.loads((demo / "results.json").read_text())["endpoints"]
    assert flow["evaluated"] == eps["evaluated"]["n"]
    assert flow["operated"] == eps["operated"]["n"]
    assert flow["hepatectomy"] == eps["hepatectomy"]["n"]
    arms = {a["key"]: a for a in flow["arms"]}
    assert arms["in_house"]["n"] == eps["in_house"]["n"]
    assert arms["in_house"]["hepatectomy"] == eps["resectability_in_house"]["numerator"]
    assert arms["referred"]["hepatectomy"] == eps["resectability_referred"]["numerator"]


def test_every_endpoint_row_shows_the_analyze_numbers(demo: Path) -> None:
    results = json.loads((demo / "results.json").read_text())
    html = (demo / "index.html").read_text(encoding="utf-8")
    for eid, ep in results["endpoints"].items():
        match = re.search(rf'<tr id="ep-{eid}">(.*?)</tr>', html, flags=re.S)
        assert match, eid
        row = match.group(1)
        estimate, ci, n = format_estimate(ep)
        assert f'<td class="est">{estimate}</td>' in row, (eid, estimate)
        assert f'<td class="n">{n}</td>' in row, (eid, n)
        if ci and "NR–NR" not in ci:
            assert ci in row, (eid, ci)
        if "published" in ep:
            assert ep["published"]["text"].replace("'", "&#39;") in row


def test_results_paragraph_links_every_number_to_an_endpoint_row(demo: Path) -> None:
    html = (demo / "index.html").read_text(encoding="utf-8")
    results_section = html.split('<section id="results"', 1)[1].split("</section>", 1)[0]
    refs = re.findall(r'<a class="ref" href="#ep-([a-z0-9_]+)"[^>]*>([^<]+)</a>', results_section)
    assert len(refs) >= 25
    for eid, _text in refs:
        assert f'<tr id="ep-{eid}">' in html
    texts: dict[str, str] = {}
    for eid, text in refs:
        texts.setdefault(eid, text)  # the first mention
    assert texts["operated"] == "27"
    assert texts["cycles_before_surgery"] == "six"
    assert texts["resectability_in_house"] == "9/133 (6.8%)"
    assert texts["os_median"] == "not reached"
    assert "A total of" in results_section and "patients underwent surgery after a median of" in results_section


def test_html_has_no_external_references(demo: Path) -> None:
    html = (demo / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, flags=re.I)
    assert "@import" not in html
    assert not re.search(r"url\(\s*['\"]?\s*(?:https?:)?//", html, flags=re.I)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    # figures are inline
    assert html.count('src="data:image/svg+xml;base64,') >= 6


def test_figures_are_300_dpi_png_and_valid_svg(demo: Path) -> None:
    from xml.etree import ElementTree

    from PIL import Image

    for png in (demo / "figures").glob("*.png"):
        with Image.open(png) as im:
            dpi = im.info.get("dpi")
            assert dpi and round(dpi[0]) == 300, (png.name, dpi)
            assert im.size[0] >= 1500
    for svg in (demo / "figures").glob("*.svg"):
        root = ElementTree.parse(svg).getroot()
        assert root.tag.endswith("svg")


def test_km_figures_agree_with_the_endpoints(demo: Path) -> None:
    eps = json.loads((demo / "results.json").read_text())["endpoints"]
    figures = {f["id"]: f for f in _data(demo)["km"]}
    for eid in ("os_median", "pfs_median", "followup_median"):
        fig = figures[eid]
        (group,) = fig["groups"]
        ep = eps[eid]
        assert (group["n"], group["events"]) == (ep["n"], ep["events"])
        for key in ("median", "ci_low", "ci_high"):
            assert group[key] == pytest.approx(ep[key]) if ep[key] is not None else group[key] is None
        assert group["risk"][0]["n_risk"] == ep["n"]


def _months(start: str, end: str) -> float:
    return (dt.date.fromisoformat(end) - dt.date.fromisoformat(start)).days / DAYS_PER_MONTH


def test_numbers_at_risk_are_counted_from_the_records(demo: Path) -> None:
    """n at risk at t = resected patients whose OS time is >= t, counted straight from the CSV."""
    with (demo / "reference-cohort.csv").open(encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["surgery_type"] == "hepatectomy"]
    os_months = [_months(r["cetuximab_start"], r["death_date"] or r["last_contact_date"]) for r in rows]
    pfs_months = [_months(r["cetuximab_start"], r["progression_date"] or r["death_date"] or r["last_contact_date"])
                  for r in rows]
    figures = {f["id"]: f for f in _data(demo)["km"]}
    for fid, times in (("os_median", os_months), ("pfs_median", pfs_months)):
        fig = figures[fid]
        assert fig["times"] == [0, 6, 12, 18, 24, 30, 36]
        for point in fig["groups"][0]["risk"]:
            assert point["n_risk"] == sum(1 for t in times if t >= point["time"] - 1e-9), (fid, point)
        last = fig["groups"][0]["risk"][-1]
        assert last["events"] + last["censored"] + last["n_risk"] >= len(times) - 1


def test_resection_is_compared_only_by_methods_that_respect_time(demo: Path) -> None:
    data = _data(demo)
    assert not any(f["by"] for f in data["km"])  # no Kaplan-Meier split by a later decision
    figures = {f["comparison"]: f for f in data["comparisons"]}
    assert set(figures) == {"os_resection_landmark", "os_resection_simon_makuch", "os_by_referral"}
    landmark = figures["os_resection_landmark"]
    assert "6 months" in landmark["method_line"] and landmark["time_label"] == "Months since the 6-month landmark"
    assert any(line.startswith("HR ") for line in landmark["stats_lines"])
    assert not any("og-rank" in line for line in figures["os_resection_simon_makuch"]["stats_lines"])
    html = (demo / "index.html").read_text(encoding="utf-8")
    assert 'id="cmp-os_resection_time_dependent"' in html and "tmerge" in html


def test_table_one_by_resection_and_by_referral(demo: Path) -> None:
    tables = {t["by"]: t for t in _data(demo)["table_one"]}
    assert set(tables) == {"resected", "referral"}
    assert [(g["label"], g["n"]) for g in tables["resected"]["groups"]] == [("Resected", 25), ("Not resected", 126)]
    assert [(g["label"], g["n"]) for g in tables["referral"]["groups"]] == [("In-house", 133), ("Referred", 18)]
    rows = {r["variable"]: r for r in tables["referral"]["rows"] if r["kind"] != "level"}
    assert rows["age_at_cetuximab"]["test"] == "Wilcoxon"
    assert rows["sex"]["test"] in ("chi-square", "Fisher")
    assert all(r["smd"] is None or r["smd"] >= 0 for r in rows.values())
    with (demo / "tables" / "table-1b-referral.csv").open(encoding="utf-8") as fh:
        header = next(csv.reader(fh))
    assert header[:3] == ["Characteristic", "In-house (n = 133)", "Referred (n = 18)"]


def test_table_one_xlsx_and_docx_open(demo: Path) -> None:
    import docx
    import openpyxl

    wb = openpyxl.load_workbook(demo / "tables" / "table-1.xlsx")
    assert wb.sheetnames == ["Table 1a", "Table 1b"]
    assert wb["Table 1a"]["A2"].value == "Characteristic"
    document = docx.Document(str(demo / "tables" / "table-1.docx"))
    assert len(document.tables) == 2
    assert document.tables[0].rows[0].cells[1].text.startswith("Resected")


def test_pdf_has_the_expected_pages(demo: Path) -> None:
    from pypdf import PdfReader

    reader = PdfReader(str(demo / "report.pdf"))
    assert len(reader.pages) >= 6
    text = "\n".join(page.extract_text() for page in reader.pages)
    flat = " ".join(text.split())
    for needle in ("SYNTHETIC DATA", "Hepatic resection after rescue cetuximab", "Results", "Cohort flow",
                   "Figure 1. Cohort flow", "Baseline characteristics", "Table 1a.", "Table 1b.", "Table 2.",
                   "Endpoints", "Survival", "Figure 2.", "Methods", "Notes and warnings", "page 1 of",
                   "9/133 (6.8%)", "Table 3.", "Comparisons", "landmark"):
        assert needle in flat, needle
    assert "Results" in reader.pages[0].extract_text()
    assert [o.title for o in reader.outline if not isinstance(o, list)][:3] == [
        "Hepatic resection after rescue cetuximab for chemo-refractory colorectal liver metastases", "Results",
        "Cohort flow"]


def test_format_option_and_source_errors(demo: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(cli, ["report", "--csv", str(demo / "reference-cohort.csv"), "--format", "docx",
                              "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--format" in bad.output
    both = runner.invoke(cli, ["report", "--csv", "a.csv", "--db", "sqlite://", "--out", str(tmp_path / "y")])
    assert both.exit_code == 2
    html_only = runner.invoke(cli, ["report", "--db", f"sqlite:///{demo / 'oncosurg.db'}", "--format", "html",
                                    "--out", str(tmp_path / "h")])
    assert html_only.exit_code == 0, html_only.output
    assert (tmp_path / "h" / "index.html").is_file() and not (tmp_path / "h" / "report.pdf").exists()
    data = json.loads((tmp_path / "h" / "report-data.json").read_text())
    assert data["last_import"]["rows"] == 151


def test_demo_json_stays_machine_readable(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["endpoints"]["hepatectomy"]["n"] == 25
    assert (tmp_path / "index.html").is_file()
    assert io.BytesIO((tmp_path / "report.pdf").read_bytes()).read(5) == b"%PDF-"


def test_each_cox_model_shows_the_proportional_hazards_test(demo: Path) -> None:
    """cox.zph (KM transform) under every Cox model: in report-data.json, the forest caption and a
    scaled-Schoenfeld-residual figure."""
    models = _data(demo)["cox"]
    assert models
    html = (demo / "index.html").read_text(encoding="utf-8")
    for model in models:
        ph = model["ph"]
        assert ph["transform"] == "km"
        assert [t["name"] for t in ph["terms"]] == [t["name"] for t in model["terms"]]
        assert 0 <= ph["global"]["p"] <= 1 and ph["global"]["df"] == len(model["terms"])
        assert all(len(t["residuals"]) == len(ph["x"]) == model["events"] for t in ph["terms"])
        assert list((demo / "figures").glob(f"figure-*-{model['id']}-ph.png"))
    assert html.count("Proportional hazards (R cox.zph, KM transform)") == len(models)
