"""Two web details of issue 9 (item 9): stale cetuximab lines are "status unknown", and form errors
sit at their field (the banner links to them and the page opens at the first one)."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncosurg.reference import CENTRE
from web_helpers import CENTRE_A, PASSWORD, Api, LiveServer, add_user, fixed_today, make_app, verify_chain

TODAY = dt.date(2024, 6, 3)


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(TODAY), review_cycles=4, review_weeks=8, followup_overdue_months=6)
    add_user(app, "dm", "data_manager", CENTRE_A, CENTRE)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


# ------------------------------------------------------------------------------- status unknown
def test_an_old_line_without_a_stop_date_is_status_unknown_not_due(app: FastAPI) -> None:
    dm = Api(app, "dm")
    # imported years ago: started 2019, last heard of in 2020, never stopped, never operated
    old = dm.register(patient_id="OLD", cetuximab_start="2019-03-04", cetuximab_cycles="6",
                      last_contact_date="2020-01-06")
    recent = dm.register(patient_id="NOW", cetuximab_start="2024-03-04", cetuximab_cycles="6",
                         last_contact_date="2024-05-27")
    body = dm.get("/worklist.json").json()
    assert [p["patient_id"] for p in body["review_due"]] == ["NOW"]
    assert [p["patient_id"] for p in body["status_unknown"]] == ["OLD"]
    assert body["status_unknown_total"] == 1
    assert "no news since 2020-01-06" in body["status_unknown"][0]["reasons"][0]
    stages = {p["patient_id"]: p["stage"] for p in dm.get("/patients.json").json()["patients"]}
    assert stages == {"OLD": "cetuximab status unknown", "NOW": "on cetuximab"}
    assert dm.patient(old)["stage"] == "cetuximab status unknown"
    assert dm.patient(recent)["stage"] == "on cetuximab"
    on = dm.get("/patients.json?stage=on_cetuximab").json()["patients"]
    assert [p["patient_id"] for p in on] == ["NOW"]
    unknown = dm.get("/patients.json?stage=status_unknown").json()["patients"]
    assert [p["patient_id"] for p in unknown] == ["OLD"]
    # news brings the line back: a contact within the horizon makes the patient on cetuximab (and due) again
    assert dm.save(old, "follow_up", last_contact_date="2024-05-20").status_code == 200
    body = dm.get("/worklist.json").json()
    assert body["status_unknown_total"] == 0
    assert {p["patient_id"] for p in body["review_due"]} == {"NOW", "OLD"}


def test_a_recent_mdt_review_is_news(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="REV", cetuximab_start="2023-01-02", cetuximab_cycles="2",
                     last_contact_date="2023-03-06")
    assert dm.patient(pk)["stage"] == "cetuximab status unknown"
    dm.post(f"/patients/{pk}/reviews", {"review_date": "2024-05-27", "decision": "unresectable_continue"})
    assert dm.patient(pk)["stage"] == "on cetuximab"
    assert dm.get("/worklist.json").json()["status_unknown_total"] == 0


def test_the_worklist_page_lists_the_unknown(app: FastAPI) -> None:
    dm = Api(app, "dm")
    dm.register(patient_id="OLD", cetuximab_start="2019-03-04", last_contact_date="2020-01-06")
    html = dm.get("/worklist", headers={"accept": "text/html"}).text
    section = html.split('id="status-unknown"')[1].split("</section>")[0]
    assert "OLD" in section and "2020-01-06" in section
    assert "OLD" not in html.split('id="review-due"')[1].split("</section>")[0]


# ------------------------------------------------------------------------------- errors at the field
def _html_client(app: FastAPI) -> tuple[TestClient, str]:
    client = TestClient(app)
    token = client.get("/login.json").json()["csrf_token"]
    response = client.post("/login", data={"username": "dm", "password": PASSWORD, "csrf_token": token},
                           headers={"accept": "application/json"})
    return client, response.json()["csrf_token"]


def test_the_banner_links_each_error_to_its_field_and_the_field_takes_the_focus(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register(patient_id="ERR", cetuximab_start="2024-03-04", last_contact_date="2024-05-27")
    client, csrf = _html_client(app)
    patient = dm.patient(pk)
    contact = patient["episodes"]["contact"][0]
    page = client.post(f"/patients/{pk}/episodes/contact/{contact['id']}", headers={"accept": "text/html"},
                       data={"csrf_token": csrf, "version": str(contact["version"]),
                             "patient_version": str(patient["version"]), "contact_date": "2024-13-45"})
    assert page.status_code == 422
    html = page.text
    banner = html.split('id="error-summary"')[1].split("</div>")[0]
    assert "1 problem" in banner
    anchor = f"ep-contact-{contact['id']}"
    assert f'href="#{anchor}-contact_date"' in banner
    field = re.search(rf'<input id="{anchor}-contact_date"[^>]*>', html).group(0)
    assert "autofocus" in field
    assert html.count("autofocus") == 1
    # the error itself is beside the field, in the episode's form, opened
    episode = html.split(f'<details id="{anchor}" class="episode" open>')[1].split("</details>")[0]
    assert 'class="error" data-field="contact_date"' in episode


def test_the_registration_form_links_its_errors_too(app: FastAPI) -> None:
    client, csrf = _html_client(app)
    page = client.post("/patients", headers={"accept": "text/html"},
                       data={"csrf_token": csrf, "centre": CENTRE_A, "patient_id": "X-1", "referral": "in_house",
                             "prior_chemo_lines": "many", "cetuximab_start": "2024-01-08",
                             "cetuximab_partner": "irinotecan", "last_contact_date": "2024-02-05"})
    assert page.status_code == 422
    banner = page.text.split('id="error-summary"')[1].split("</div>")[0]
    assert 'href="#f-prior_chemo_lines"' in banner
    assert "autofocus" in re.search(r'<input id="f-prior_chemo_lines"[^>]*>', page.text).group(0)


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.browser
def test_in_a_browser_the_page_opens_at_the_field_in_error(app: FastAPI) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (under CI=true the browser tests must run)")
        pytest.skip(f"{CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    pk = Api(app, "dm").register(patient_id="FAR", cetuximab_start="2024-03-04", last_contact_date="2024-05-27")
    with LiveServer(app) as live, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_context(base_url=live.url, viewport={"width": 1200, "height": 700}).new_page()
        page.goto("/login")
        page.fill("#username", "dm")
        page.fill("#password", PASSWORD)
        page.click("form[action='/login'] button[type=submit]")
        page.wait_for_load_state()
        page.goto(f"/patients/{pk}")
        contact = Api(app, "dm").patient(pk)["episodes"]["contact"][0]["id"]
        field = f"ep-contact-{contact}-contact_date"
        page.click(f"details#ep-contact-{contact} > summary")  # open the contact, as a user does
        form = page.locator(f"details#ep-contact-{contact} form").first
        form.locator("[name='contact_date']").fill("2024-13-45")  # no month 13
        with page.expect_navigation():
            form.locator("button[type=submit]").click()
        assert page.evaluate("document.activeElement.id") == field
        error = page.locator(f"details#ep-contact-{contact} p.error[data-field='contact_date']").first
        box, height = error.bounding_box(), page.viewport_size["height"]
        assert box is not None and 0 <= box["y"] <= height  # on screen, not far below the banner
        page.click(f"#error-summary a[href='#{field}']")
        assert page.evaluate("document.activeElement.id") == field
        browser.close()
