"""The worklist (MDT reviews due, awaiting surgery, overdue follow-up) and the live dashboard."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol
from oncosurg.reference import CENTRE
from oncosurg.web.services.dashboard import restrict
from web_helpers import CENTRE_A, CENTRE_B, Api, add_user, fixed_today, make_app, verify_chain

TODAY = dt.date(2024, 6, 3)


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(TODAY), review_cycles=4, review_weeks=8, followup_overdue_months=6)
    add_user(app, "dm", "data_manager", CENTRE_A, CENTRE_B, CENTRE)
    add_user(app, "a", "investigator", CENTRE_A)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def _due(api: Api) -> dict[str, list[str]]:
    body = api.get("/worklist.json").json()
    return {p["patient_id"]: p["reasons"] for p in body["review_due"]}


def test_review_due_by_cycles_weeks_and_response(app: FastAPI) -> None:
    dm = Api(app, "dm")
    recent = str(TODAY - dt.timedelta(weeks=3))
    fresh = dm.register(patient_id="FRESH", cetuximab_start=recent, cetuximab_cycles="1", last_contact_date=recent)
    cycles = dm.register(patient_id="CYCLES", cetuximab_start=recent, cetuximab_cycles="4", last_contact_date=recent)
    weeks = dm.register(patient_id="WEEKS", cetuximab_start="2024-03-01", cetuximab_cycles="2",
                        last_contact_date="2024-05-20")
    responded = dm.register(patient_id="PR", cetuximab_start=recent, cetuximab_cycles="1", last_contact_date=recent)
    dm.post(f"/patients/{responded}/responses", {"assessment_date": recent, "category": "PR"})
    due = _due(dm)
    assert "FRESH" not in due
    assert due["CYCLES"] == ["4 cycle(s) since the start of cetuximab"]
    assert due["WEEKS"] == ["13 week(s) since the start of cetuximab"]
    assert due["PR"] == [f"PR on {recent} not yet reviewed"]
    # a review clears the patient until the next threshold; "resectable" moves them to awaiting surgery
    dm.post(f"/patients/{weeks}/reviews", {"review_date": "2024-05-27", "decision": "unresectable_continue"})
    dm.post(f"/patients/{responded}/reviews", {"review_date": str(TODAY), "decision": "resectable"})
    dm.post(f"/patients/{cycles}/reviews", {"review_date": str(TODAY), "decision": "unresectable_stop"})
    body = dm.get("/worklist.json").json()
    assert body["review_due_total"] == 0
    assert [p["patient_id"] for p in body["awaiting_surgery"]] == ["PR"]
    # more cycles after the review make the patient due again
    dm.save(weeks, "cetuximab", cetuximab_cycles="6")
    assert _due(dm)["WEEKS"] == ["4 cycle(s) since the last review"]
    # surgery takes the patient off the review list
    assert dm.save(responded, "follow_up", last_contact_date=str(TODAY)).status_code == 200
    assert dm.save(responded, "surgery", surgery_date=str(TODAY), surgery_type="hepatectomy",
                   clavien_dindo_max="none").status_code == 200
    assert dm.get("/worklist.json").json()["awaiting_surgery_total"] == 0
    assert fresh  # registered but not due


def test_overdue_follow_up(app: FastAPI) -> None:
    dm = Api(app, "dm")
    old = dm.register(patient_id="OLD", cetuximab_start="2023-01-02", last_contact_date="2023-11-01")
    dm.register(patient_id="DEAD", cetuximab_start="2023-01-02", last_contact_date="2023-06-01")
    dm.save(dm.get("/patients.json?q=DEAD").json()["patients"][0]["pk"], "follow_up", death_date="2023-06-01")
    dm.register(patient_id="RECENT", cetuximab_start="2024-01-02", last_contact_date="2024-05-01")
    body = dm.get("/worklist.json").json()
    assert [p["patient_id"] for p in body["followup_overdue"]] == ["OLD"]
    assert body["followup_overdue"][0]["months_since"] == 7.1
    dm.save(old, "follow_up", last_contact_date="2024-06-01")
    assert dm.get("/worklist.json").json()["followup_overdue_total"] == 0


def test_worklist_respects_centre_grants(app: FastAPI) -> None:
    dm = Api(app, "dm")
    dm.register(patient_id="B-1", centre=CENTRE_B, cetuximab_start="2023-10-02", last_contact_date="2023-10-02")
    mine = dm.get("/worklist.json").json()
    assert mine["followup_overdue_total"] == 1 and mine["review_due_total"] == 1
    a = Api(app, "a")
    body = a.get("/worklist.json").json()
    assert body["followup_overdue_total"] == 0 and body["review_due_total"] == 0


def test_dashboard_is_the_protocol_on_live_data(app: FastAPI, reference_csv: Path) -> None:
    dm = Api(app, "dm")
    staged = dm.client.post("/upload", files={"file": ("reference.csv", reference_csv.read_bytes(), "text/csv")},
                            data={"centre": CENTRE, "mode": "insert", "csrf_token": dm.csrf})
    assert staged.status_code == 200 and staged.json()["create"] == 151, staged.text
    assert dm.post("/upload/confirm", {"token": staged.json()["token"]}).json()["created"] == 151
    board = dm.get("/dashboard.json").json()
    expected = run_protocol(app.state.store.engine, load_protocol("rescue-cetuximab-2007"))
    assert board["results"]["endpoints"] == expected["endpoints"]
    assert board["results"]["endpoints"]["evaluated"]["n"] == 151
    assert [c["endpoint"] for c in board["curves"]] == ["os_median", "pfs_median", "followup_median"]
    assert all(c["svg"].startswith("<svg") and 'class="curve"' in c["svg"] for c in board["curves"])
    again = dm.get("/dashboard.json").json()
    assert again["cached"] is True
    # an edit changes the dashboard at once
    pk = dm.get("/patients.json?stage=operated").json()["patients"][0]["pk"]
    before = board["results"]["endpoints"]["operated"]["n"]
    patient = dm.patient(pk)
    for item in patient["complications"]:
        dm.post(f"/patients/{pk}/complications/{item['id']}/delete", {"version": str(dm.patient(pk)["version"])})
    fields = {k: "" for k in ("surgery_date", "surgery_type", "resected_segments", "two_stage",
                              "portal_vein_embolization", "margin", "clavien_dindo_max")}
    cleared = dm.post(f"/patients/{pk}/stages/pathology", {"version": str(dm.patient(pk)["version"]), **{
        k: "" for k in ("steatosis_pct", "steatohepatitis", "sinusoidal_dilatation_grade", "fibrosis_stage",
                        "nodular_regenerative_hyperplasia", "tumour_regression_grade")}})
    assert cleared.status_code == 200, cleared.text
    unoperated = dm.save(pk, "surgery", **fields)
    assert unoperated.status_code == 200, unoperated.text
    after = dm.get("/dashboard.json").json()
    assert after["cached"] is False and after["results"]["endpoints"]["operated"]["n"] == before - 1
    html = dm.client.get("/dashboard", headers={"accept": "text/html"})
    assert html.status_code == 200 and "<svg" in html.text and "Resectability" in html.text


def test_dashboard_for_a_restricted_user_counts_only_their_centres(app: FastAPI, reference_csv: Path) -> None:
    dm = Api(app, "dm")
    staged = dm.client.post("/upload", files={"file": ("reference.csv", reference_csv.read_bytes(), "text/csv")},
                            data={"centre": CENTRE, "mode": "insert", "csrf_token": dm.csrf}).json()
    dm.post("/upload/confirm", {"token": staged["token"]})
    dm.register(patient_id="A-1", cetuximab_start="2005-01-03", last_contact_date="2005-06-01")
    a = Api(app, "a")
    board = a.get("/dashboard.json").json()
    assert board["centres"] == [CENTRE_A] and board["all_centres"] is False
    assert board["results"]["endpoints"]["evaluated"]["n"] == 1
    assert all(step["n"] <= 1 for step in board["results"]["cohort"]["flow"])
    mine = dm.get(f"/dashboard.json?centre={CENTRE}").json()
    assert mine["results"]["endpoints"]["evaluated"]["n"] == 151


def test_restrict_quotes_centre_names() -> None:
    protocol = load_protocol("rescue-cetuximab-2007")
    narrowed = restrict(protocol, ["O'Brien \\ centre"])
    assert narrowed.scope[0].where == "centre in ('O\\'Brien \\\\ centre')"
    assert narrowed.accrual_start == protocol.accrual_start and narrowed.include == protocol.include
