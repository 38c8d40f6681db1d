"""Protocol-engine edge cases on both backends: flat-end medians, missing inputs, warnings, flow."""

from __future__ import annotations

import math

import sqlalchemy as sa

from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol, protocol_from_dict
from oncosurg.schema import COLUMNS
from oncosurg.store.repository import import_records

SEED = load_protocol("rescue-cetuximab-2007")


def load(engine: sa.Engine, *rows: dict[str, str]) -> None:
    text = "\n".join([",".join(COLUMNS)] + [",".join(r.get(c, "") for c in COLUMNS) for r in rows]) + "\n"
    parsed = parse_registry_csv(text.encode(), centre="A")
    assert parsed.ok, [i.format() for i in parsed.issues]
    import_records(engine, parsed.records, source="t", sha256=parsed.sha256, rows=parsed.rows)


def patient(pid: str, **extra: str) -> dict[str, str]:
    return {"patient_id": pid, "referral": "referred", "prior_chemo_lines": "1", "cetuximab_start": "2005-01-01",
            "cetuximab_partner": "irinotecan", "surgery_date": "2005-03-01", "surgery_type": "hepatectomy",
            "clavien_dindo_max": "none", "last_contact_date": "2006-01-01", **extra}


def test_flat_end_at_half_uses_quantile_survfit_rule(store: sa.Engine) -> None:
    # PFS: one progression at day 100, one censored at day 200 -> S = 0.5 flat to the end.
    load(store, patient("A1", progression_date="2005-04-11", last_contact_date="2005-07-20"),
         patient("A2", last_contact_date="2005-07-20"))
    pfs = run_protocol(store, SEED)["endpoints"]["pfs_median"]
    # R: quantile(survfit(Surv(c(100, 200) / 30.4375, c(1, 0)) ~ 1, conf.type = "log-log"), 0.5)
    assert math.isclose(pfs["median"], 4.9281314168377826, rel_tol=1e-12)
    assert math.isclose(pfs["ci_low"], 3.2854209445585214, rel_tol=1e-12)
    assert pfs["ci_high"] is None


def test_all_missing_inputs_leave_the_denominator(store: sa.Engine) -> None:
    load(store, patient("B1", steatosis_pct="40"), patient("B2", steatosis_pct="10", fibrosis_stage="0"),
         patient("B3"), patient("B4", tumour_regression_grade="1"))
    results = run_protocol(store, SEED)
    abn = results["endpoints"]["liver_abnormality"]
    assert (abn["numerator"], abn["denominator"], abn["missing"]) == (1, 2, 2)
    pcr = results["endpoints"]["pathologic_complete_response"]
    assert (pcr["numerator"], pcr["denominator"], pcr["missing"]) == (1, 1, 3)
    assert {"liver_abnormality", "pathologic_complete_response"} <= {
        w["endpoint"] for w in results["warnings"] if w["code"] == "missing-inputs"}


def test_few_at_risk_warning_and_flow(store: sa.Engine) -> None:
    load(store, patient("C1", death_date="2005-05-01", last_contact_date="2005-05-01"),
         patient("C2", death_date="2005-06-01", last_contact_date="2005-06-01"),
         patient("C3", cetuximab_start="2003-01-01", surgery_date="2003-03-01"))
    results = run_protocol(store, SEED)
    # registered, with an index event (the rescue line), index within the accrual window
    assert [s["n"] for s in results["cohort"]["flow"]] == [3, 3, 2]
    assert results["cohort"]["flow"][2]["excluded"] == 1
    assert results["endpoints"]["os_median"]["median"] is not None
    assert any(w["code"] == "few-at-risk" and w["endpoint"] == "os_median" for w in results["warnings"])
    assert results["cohort"]["data_cut"] == "2005-06-01"


def test_populations_may_build_on_populations_and_inclusions_apply(store: sa.Engine) -> None:
    load(store, patient("D1", sex="F"), patient("D2", sex="M"), patient("D3", sex="F", referral="in_house"))
    proto = protocol_from_dict({
        "protocol": {"id": "t", "title": "t"},
        "cohort": {"include": [{"label": "women", "where": "sex = 'F'"}]},
        "populations": {"ref": "referral = 'referred'", "ref_resected": "ref and hepatectomy"},
        "endpoints": [
            {"id": "n", "kind": "count", "label": "n", "definition": "d", "population": "ref_resected"},
            {"id": "w", "kind": "proportion", "label": "w", "definition": "d", "population": "all",
             "numerator": "referral = 'in_house'", "ci": "wilson"},
        ],
    })
    results = run_protocol(store, proto)
    assert results["endpoints"]["n"]["n"] == 1
    w = results["endpoints"]["w"]
    assert (w["numerator"], w["denominator"], w["ci_method"]) == (1, 2, "wilson")
    # R: prop.test(1, 2, correct = FALSE)$conf.int
    assert math.isclose(w["ci_low"], 0.094531205734230, rel_tol=1e-9)
    assert math.isclose(w["ci_high"], 0.905468794265770, rel_tol=1e-9)
