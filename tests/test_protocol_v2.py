"""Protocol format 2 against format 1, and the report defects it fixes.

* A format-1 file (the seed protocol as released in 0.1.0, ``tests/fixtures/protocols``) still loads,
  says it was converted, and gives every endpoint exactly as the format-2 seed does.
* No p-value on a split decided after time zero: a format-1 figure split by resection is drawn as a
  description without a test, with the caveat inside the figure data; a format-2 protocol is refused.
* The results paragraph takes its dates from the protocol and the data, not from the 2007 paper.
* A Cox model from time zero with referral as a covariate needs delayed entry at the referral date.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import io
import tomllib
from pathlib import Path

import pytest
import sqlalchemy as sa

from oncosurg.ingest.csv import parse_registry_csv, read_registry_csv
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import ProtocolError, load_protocol, protocol_from_dict
from oncosurg.report.data import report_data
from oncosurg.report.text import results_segments
from oncosurg.schema import COLUMNS
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_records
from registry_factory import random_registry

ROOT = Path(__file__).resolve().parents[1]
FORMAT_1 = ROOT / "tests" / "fixtures" / "protocols" / "rescue-cetuximab-2007-format1.toml"
SEED = tomllib.loads((ROOT / "studies" / "rescue-cetuximab-2007.toml").read_text(encoding="utf-8"))


def _store(path: Path) -> sa.Engine:
    engine = open_store("sqlite://")
    parsed = read_registry_csv(path)
    assert parsed.ok
    import_records(engine, parsed.records, source=str(path), sha256=parsed.sha256, rows=parsed.rows)
    return engine


@pytest.mark.parametrize("name", ["reference-cohort.csv", "random-12.csv"])
def test_format_1_files_load_and_give_the_same_endpoints(name: str) -> None:
    engine = _store(ROOT / "tests" / "reference" / "registries" / name)
    old = load_protocol(str(FORMAT_1))
    assert old.format == 1 and "format 1" in old.notices[0]
    new = load_protocol("rescue-cetuximab-2007")
    old_results, new_results = run_protocol(engine, old), run_protocol(engine, new)
    def numbers(results: dict) -> dict:  # the format-2 results also name the outcome of each endpoint
        return {k: {f: v for f, v in ep.items() if f != "outcome"} for k, ep in results["endpoints"].items()}

    assert numbers(old_results) == numbers(new_results)
    assert any(w["code"] == "format-1" for w in old_results["warnings"])
    assert old_results["cohort"]["flow"][-1]["n"] == new_results["cohort"]["flow"][-1]["n"]


def test_format_1_split_by_resection_is_descriptive_without_a_test(reference_csv: Path) -> None:
    engine = _store(reference_csv)
    protocol = load_protocol(str(FORMAT_1))
    results = run_protocol(engine, protocol, provenance={"source": "ref"})
    data = report_data(engine, protocol, results)
    by_resection = next(f for f in data["km"] if f["by"] == "resected")
    assert by_resection["logrank"] is None  # 0.1.0 printed p < 0.001 on this biased split
    assert by_resection["caveat"].startswith("Descriptive only")
    by_referral = next(f for f in data["km"] if f["by"] == "referral")
    assert by_referral["logrank"] is None and "referral" in by_referral["caveat"]


def test_format_2_refuses_a_report_split_decided_later() -> None:
    data = copy.deepcopy(SEED)
    data["report"]["km"].append({"endpoint": "os_median", "population": "all", "by": "resected"})
    protocol = protocol_from_dict(data, source="p.toml")
    with pytest.raises(ProtocolError) as info:
        report_data(open_store("sqlite://"), protocol, run_protocol(open_store("sqlite://"), protocol))
    assert any("report.km[3].by" in p and "decided after time zero" in p and "[[comparisons]]" in p
               for p in info.value.problems)


def test_format_2_cox_with_referral_needs_delayed_entry() -> None:
    data = copy.deepcopy(SEED)
    del data["report"]["cox"][0]["entry"]
    protocol = protocol_from_dict(data, source="p.toml")
    engine = open_store("sqlite://")
    with pytest.raises(ProtocolError) as info:
        report_data(engine, protocol, run_protocol(engine, protocol))
    assert any("report.cox[0].covariates" in p and "referral_date" in p for p in info.value.problems)


def _shifted_registry(years: int) -> bytes:
    rows = random_registry(120, 31)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        for key, value in row.items():
            if (key.endswith("_date") or key == "cetuximab_start") and value:
                d = dt.date.fromisoformat(value)
                row[key] = d.replace(year=d.year + years, day=min(d.day, 28)).isoformat()
        writer.writerow(row)
    return out.getvalue().encode()


def test_results_paragraph_dates_come_from_the_protocol_and_the_data() -> None:
    parsed = parse_registry_csv(_shifted_registry(15), centre="Later centre (synthetic)")
    assert parsed.ok, [i.format() for i in parsed.issues[:3]]
    engine = open_store("sqlite://")
    import_records(engine, parsed.records, source="later", sha256=parsed.sha256, rows=parsed.rows)
    data = copy.deepcopy(SEED)
    data["cohort"]["accrual_start"], data["cohort"]["accrual_end"] = dt.date(2018, 1, 1), dt.date(2022, 12, 31)
    protocol = protocol_from_dict(data, source="p.toml")
    results = run_protocol(engine, protocol)
    assert results["cohort"]["n"] > 50
    text = " ".join("".join(seg[-1] for seg in para) for para in results_segments(results, protocol.report["results"]))
    assert "Between January 2018 and December 2022," in text
    assert "2004" not in text and "2006" not in text
    assert f"{results['endpoints']['evaluated']['n']} patients" in text
    cut = dt.date.fromisoformat(results["cohort"]["data_cut"])
    assert f"{cut.day} {cut:%B %Y}" in text  # "Records were analysed up to {cohort.data_cut}"


def _merge(base: dict, block: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in block.items():
        if isinstance(value, list):
            out[key] = value  # the example's list replaces the study's
        elif isinstance(value, dict) and key != "index":
            out[key] = {**out.get(key, {}), **value}
        else:
            out[key] = value
    return out


def test_the_language_reference_examples_compile() -> None:
    import re

    from oncosurg.protocol.engine import compile_protocol

    second = tomllib.loads((ROOT / "studies" / "crlm-first-hepatectomy.toml").read_text(encoding="utf-8"))
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 6
    for block in blocks:
        errors = []
        for base in (SEED, second):
            try:
                compile_protocol(protocol_from_dict(_merge(base, tomllib.loads(block)), source="docs/protocol.md"))
                break
            except ProtocolError as exc:
                errors.append(exc.problems)
        else:
            raise AssertionError(f"docs/protocol.md example does not compile: {errors}\n{block}")


def test_seed_reproduces_every_published_figure_from_the_episodes(store: sa.Engine) -> None:
    """The reference cohort with all its episodes (the long registry the demo imports), through the declared
    index and outcomes, on SQLite and PostgreSQL: every published figure of the seed study."""
    from oncosurg.ingest.long import read_long
    from oncosurg.store.repository import import_patients
    from test_demo import PUBLISHED_COUNTS, PUBLISHED_FRACTIONS

    with read_long(ROOT / "tests" / "reference" / "episodes" / "reference-cohort") as registry:
        assert registry.ok
        assert not import_patients(store, registry.records(), source="ref", sha256=registry.sha256,
                                   rows=registry.patients).issues
    ep = run_protocol(store, load_protocol("rescue-cetuximab-2007"))["endpoints"]
    assert {eid: ep[eid]["n"] for eid in PUBLISHED_COUNTS} == PUBLISHED_COUNTS
    assert {eid: (ep[eid]["numerator"], ep[eid]["denominator"]) for eid in PUBLISHED_FRACTIONS} == PUBLISHED_FRACTIONS
    assert ep["cycles_before_surgery"]["median"] == 6
    assert ep["os_median"]["median"] is None and ep["os_median"]["events"] == 2  # not reached: 2 deaths among 25
    assert round(ep["os_observed_median"]["median"]) == 20
    assert round(ep["pfs_median"]["median"]) == 13
    assert round(ep["followup_median"]["median"]) == 16
