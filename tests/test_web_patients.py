"""The pathway pages: registration and stage edits under the registry rules, optimistic locking,
reasons for locked records, complications (CCI), RECIST from sums, MDT reviews, list filters."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from oncosurg.web.services.pathway import comprehensive_complication_index, recist_category
from web_helpers import CENTRE_A, Api, add_user, fixed_today, make_app, registration, verify_chain


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(dt.date(2024, 6, 1)))
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "dm2", "data_manager", CENTRE_A)
    yield app
    result = verify_chain(app)
    assert result.ok, result
    app.state.store.dispose()


@pytest.fixture
def dm(app: FastAPI) -> Api:
    return Api(app, "dm")


def test_registration_uses_the_import_rules_and_reports_every_error(dm: Api) -> None:
    response = dm.post("/patients", registration(referral="inhouse", cetuximab_start="2024-13-01",
                                                 prior_chemo_lines="", patient_id="=HYPERLINK()"))
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"ok", "error", "errors", "status"} and body["ok"] is False
    codes = {(e["column"], e["code"]) for e in body["errors"]}
    assert {("referral", "V306"), ("cetuximab_start", "V302"), ("prior_chemo_lines", "V301"),
            ("patient_id", "V310")} <= codes
    assert dm.get("/patients.json").json()["total"] == 0


def test_errors_are_shown_beside_their_fields(dm: Api) -> None:
    html = dm.client.post("/patients", data={**registration(referral="inhouse"), "csrf_token": dm.csrf},
                          headers={"accept": "text/html"})
    assert html.status_code == 422
    field = re.search(r'<div class="field has-error">\s*<label for="f-referral">.*?</div>', html.text, re.S)
    assert field and "is not an allowed code" in field.group(0) and "V306" in field.group(0)


def test_duplicate_patient_is_refused(dm: Api) -> None:
    dm.register()
    again = dm.post("/patients", registration())
    assert again.status_code == 422 and again.json()["errors"][0]["code"] == "X411"


def test_stage_edit_checks_the_whole_record(dm: Api) -> None:
    pk = dm.register()
    bad = dm.save(pk, "surgery", surgery_date="2023-12-01", surgery_type="hepatectomy", clavien_dindo_max="none")
    assert bad.status_code == 422
    assert [e["code"] for e in bad.json()["errors"]] == ["X401"]
    bad = dm.save(pk, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy", clavien_dindo_max="none")
    assert [e["code"] for e in bad.json()["errors"]] == ["X402"]  # after last contact 2024-02-05
    assert dm.save(pk, "follow_up", last_contact_date="2024-05-01").status_code == 200
    ok = dm.save(pk, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy", clavien_dindo_max="II",
                 resected_segments="6;5;7")
    assert ok.status_code == 200, ok.text
    patient = dm.patient(pk)
    assert patient["record"]["resected_segments"] == "5;6;7" and patient["version"] == 3
    assert [c["grade"] for c in patient["complications"]] == ["II"]
    assert [e["kind"] for e in patient["timeline"]] == ["therapy_line", "contact", "liver_procedure", "contact"]
    future = dm.save(pk, "follow_up", last_contact_date="2024-07-01")
    assert future.json()["errors"][0]["code"] == "V312"


def test_unchanged_save_does_not_bump_the_version(dm: Api) -> None:
    pk = dm.register()
    response = dm.save(pk, "follow_up", last_contact_date="2024-02-05")
    assert response.status_code == 200 and response.json()["version"] == 1


def test_a_json_edit_answers_the_version_its_own_write_made(app: FastAPI, dm: Api) -> None:
    """The version a JSON edit answers is its write's (from the write, or read in its transaction):
    no read transaction of its own after it (3 round trips on PostgreSQL), and a writer committing
    between the end of the edit and its answer does not lend the edit its version (the client's next
    edit must then be refused, not overwrite that change)."""
    from contextlib import contextmanager

    from oncosurg.web.deps import make_context
    from oncosurg.web.services import patients, users

    pk = dm.register()
    store = app.state.store
    other_id = add_user(app, "dm3", "data_manager", CENTRE_A)
    real_write, real_read = store.write, store.read
    reads: list[int] = []
    between: list[int] = []

    @contextmanager
    def write_then_another_writer() -> Iterator[Any]:
        with real_write() as conn:
            yield conn
        if not between:  # once: another user's change commits right after the edit
            between.append(1)
            with real_write() as conn:
                other = users.load_user(conn, user_id=other_id)
                assert other is not None
                patients.save_stage(conn, ctx=make_context(other, app.state.settings), pk=pk, stage="follow_up",
                                    form={"last_contact_date": "2024-04-01"}, version=2)

    def counted_read() -> Any:
        reads.append(1)
        return real_read()

    store.write, store.read = write_then_another_writer, counted_read
    try:
        answer = dm.add(pk, "mdt_review", review_date="2024-03-01", decision="potentially_resectable")
    finally:
        store.write, store.read = real_write, real_read
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2 and between and not reads  # its own version; the other made 3
    assert dm.patient(pk)["version"] == 3
    again = dm.save(pk, "cetuximab", version=answer.json()["version"], cetuximab_cycles="7")
    assert again.status_code == 409 and "dm3" in again.json()["error"]
    saved = dm.save(pk, "cetuximab", version=3, cetuximab_cycles="7")
    assert saved.status_code == 200 and saved.json()["version"] == dm.patient(pk)["version"] == 4, saved.text


def test_a_write_reads_the_chain_head_once_and_a_review_reads_the_patient_in_one_statement(app: FastAPI, dm: Api
                                                                                           ) -> None:
    """Statements a write runs while it holds the writers' lock: the chain's head is read once (the
    lock's read serves the first audit row), a stage edit reads the record's creation time with the
    patient, and on PostgreSQL an MDT review or a response assessment
    reads the patient with one statement, not one per episode table (SQLite reads a patient per table:
    its ``json_object`` takes too few arguments for the patient row); the chain still verifies."""
    import sqlalchemy as sa

    pk = dm.register()
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()))

    writer = app.state.store.writer
    sa.event.listen(writer, "before_cursor_execute", seen)
    try:
        for write in (lambda: dm.save(pk, "cetuximab", cetuximab_cycles="7"),
                      lambda: dm.post(f"/patients/{pk}/reviews", {"review_date": "2024-02-01",
                                                                  "decision": "potentially_resectable"}),
                      lambda: dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-02-02",
                                                                    "category": "PR"})):
            statements.clear()
            answer = write()
            assert answer.status_code == 200, answer.text
            heads = [s for s in statements if re.search(r"\bFROM audit_head\b", s)]
            assert len(heads) == 1, heads
            one_table = [s for s in statements if re.match(
                r"SELECT \w+\.id, \w+\.patient_pk\b.* FROM "
                r"(contact|disease_event|pathology|complication|liver_procedure)"
                r"\b", s)]
            assert not one_table or app.state.store.dialect == "sqlite", one_table
            # the record's creation (for the lock period) is read with the patient, not on its own
            assert not [s for s in statements if s.startswith("SELECT audit_log.patient_pk, max(audit_log.at)")]
    finally:
        sa.event.remove(writer, "before_cursor_execute", seen)
    assert verify_chain(app).ok


def test_stale_edit_is_refused_with_what_changed(app: FastAPI, dm: Api) -> None:
    pk = dm.register()
    other = Api(app, "dm2")
    assert other.save(pk, "follow_up", version=1, last_contact_date="2024-04-01").status_code == 200
    stale = dm.save(pk, "cetuximab", version=1, cetuximab_cycles="6")
    assert stale.status_code == 409
    body = stale.json()
    assert "dm2" in body["error"] and "nothing was saved" in body["error"]
    assert body["errors"] == [{"version": 2, "at": body["errors"][0]["at"], "username": "dm2", "action": "update",
                               "entity": "follow_up", "field": "last_contact_date", "old": "2024-02-05",
                               "new": "2024-04-01"}]
    assert dm.patient(pk)["record"]["cetuximab_cycles"] == 2
    html = dm.client.post(f"/patients/{pk}/stages/cetuximab", headers={"accept": "text/html"},
                          data={"csrf_token": dm.csrf, "version": "1", "cetuximab_cycles": "6"})
    assert html.status_code == 409 and 'id="conflict"' in html.text and "2024-04-01" in html.text
    assert "cetuximab_cycles = 6" in html.text  # the user's unsaved value is shown, not silently applied


def test_reason_required_for_records_older_than_the_lock_period(store_url: str) -> None:
    day = {"today": dt.date(2024, 3, 1)}
    app = make_app(store_url, today=lambda: day["today"], lock_days=30)
    add_user(app, "dm", "data_manager", CENTRE_A)
    dm = Api(app, "dm")
    pk = dm.register()
    assert dm.save(pk, "cetuximab", cetuximab_cycles="3").status_code == 200
    day["today"] = dt.date.today() + dt.timedelta(days=31)  # the record was created (wall clock) 31 days ago
    refused = dm.save(pk, "cetuximab", cetuximab_cycles="4")
    assert refused.status_code == 422 and refused.json()["errors"][0] == {
        "code": "W505", "rule": "reason-required", "column": "reason", "value": None,
        "message": "the record is older than the 30-day lock period: say why it changes",
        "hint": "fill in the reason (e.g. 'source document corrected')"}
    assert dm.patient(pk)["locked"] is True
    ok = dm.save(pk, "cetuximab", cetuximab_cycles="4", reason="source document corrected")
    assert ok.status_code == 200
    trail = [e for e in dm.get(f"/patients/{pk}/audit.json").json()["entries"] if e["action"] != "state"]
    assert trail[0]["field"] == "cetuximab_cycles" and trail[0]["reason"] == "source document corrected"
    assert (trail[0]["old_value"], trail[0]["new_value"]) == ("3", "4")
    # adding a review is new information (no reason); removing one from a locked record needs a reason
    review = {"review_date": "2024-02-01", "decision": "resectable"}
    assert dm.post(f"/patients/{pk}/reviews", review).status_code == 200
    patient = dm.patient(pk)
    path = f"/patients/{pk}/reviews/{patient['reviews'][0]['id']}/delete"
    assert dm.post(path, {"version": str(patient["version"])}).json()["errors"][0]["code"] == "W505"
    assert dm.post(path, {"version": str(patient["version"]), "reason": "entered twice"}).status_code == 200
    html = dm.client.get(f"/patients/{pk}", headers={"accept": "text/html"}).text
    assert 'placeholder="required: why does this change?"' in html
    assert verify_chain(app).ok
    app.state.store.dispose()


def test_regimen_and_dose(dm: Api) -> None:
    pk = dm.register()
    bad = dm.save(pk, "cetuximab", schedule="daily", dose_mg_m2="-1", stop_date="2023-01-01")
    assert {(e["column"], e["code"]) for e in bad.json()["errors"]} == {
        ("schedule", "V306"), ("dose_mg_m2", "V307"), ("stop_date", "W501")}
    ok = dm.save(pk, "cetuximab", schedule="biweekly", dose_mg_m2="500", bsa_m2="1.8")
    assert ok.status_code == 200
    patient = dm.patient(pk)
    assert patient["regimen"]["schedule"] == "biweekly" and patient["dose_per_administration_mg"] == 900.0


def test_complications_and_the_comprehensive_complication_index(dm: Api) -> None:
    pk = dm.register(last_contact_date="2024-05-01")
    early = dm.post(f"/patients/{pk}/complications", {"grade": "II"})
    assert early.status_code == 422 and early.json()["errors"][0]["code"] == "W506"
    assert dm.save(pk, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy",
                   clavien_dindo_max="none").status_code == 200
    assert dm.post(f"/patients/{pk}/complications", {"grade": "II", "description": "ileus"}).status_code == 200
    assert dm.post(f"/patients/{pk}/complications", {"grade": "IIIa", "description": "biloma"}).status_code == 200
    death = dm.post(f"/patients/{pk}/complications", {"grade": "V"})
    assert death.status_code == 422 and death.json()["errors"][0]["code"] == "X408"
    patient = dm.patient(pk)
    assert patient["record"]["clavien_dindo_max"] == "IIIa"
    assert patient["cci"] == comprehensive_complication_index(["II", "IIIa"]) == 33.5
    biloma = next(c for c in patient["complications"] if c["grade"] == "IIIa")
    removed = dm.post(f"/patients/{pk}/complications/{biloma['id']}/delete", {"version": str(patient["version"])})
    assert removed.status_code == 200
    assert dm.patient(pk)["record"]["clavien_dindo_max"] == "II"


def test_recist_from_target_lesion_sums(dm: Api) -> None:
    pk = dm.register(last_contact_date="2024-05-01")
    r = dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-02-20", "baseline_sum_mm": "100",
                                              "current_sum_mm": "65"})
    assert r.status_code == 200, r.text
    mismatch = dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-03-20", "current_sum_mm": "60",
                                                     "category": "SD"})
    assert mismatch.json()["errors"][0]["code"] == "W503"  # 60 mm is 40% below the baseline: PR
    grown = dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-04-20", "current_sum_mm": "80"})
    assert grown.status_code == 200  # the baseline is carried over; the nadir is 65 mm: +23% and +15 mm
    responses = dm.patient(pk)["responses"]
    assert [(x["category"], x["baseline_sum_mm"], x["nadir_sum_mm"]) for x in responses] == [
        ("PR", 100.0, 100.0), ("PD", 100.0, 65.0)]
    assert recist_category(baseline=100, current=80, nadir=65, new_lesions=False)[0] == "PD"
    assert recist_category(baseline=100, current=0, nadir=50, new_lesions=False)[0] == "CR"
    assert recist_category(baseline=100, current=90, nadir=90, new_lesions=True)[0] == "PD"
    assert recist_category(baseline=100, current=75, nadir=75, new_lesions=False)[0] == "SD"
    nothing = dm.post(f"/patients/{pk}/responses", {"assessment_date": "2024-03-20"})
    assert nothing.json()["errors"][0]["code"] == "W504"


def test_mdt_reviews(dm: Api) -> None:
    pk = dm.register()
    before = dm.post(f"/patients/{pk}/reviews", {"review_date": "2023-12-01", "decision": "resectable"})
    assert before.json()["errors"][0]["code"] == "W501"
    ok = dm.post(f"/patients/{pk}/reviews", {"review_date": "2024-02-01", "decision": "potentially_resectable",
                                            "notes": "- re-image after 2 more cycles"})
    assert ok.status_code == 200
    review = dm.patient(pk)["reviews"][0]
    assert review["cycles_at_review"] == 2 and review["notes"].startswith("- re-image")


def test_delete_needs_a_reason_and_keeps_the_trail(dm: Api) -> None:
    pk = dm.register()
    assert dm.post(f"/patients/{pk}/delete", {"version": "1"}).status_code == 422
    assert dm.post(f"/patients/{pk}/delete", {"version": "1", "reason": "duplicate of PB-0002"}).status_code == 200
    assert dm.get(f"/patients/{pk}.json").status_code == 404


def test_list_search_and_stage_filters(dm: Api) -> None:
    dm.register(patient_id="PB-0001")
    pk = dm.register(patient_id="PB-0002", last_contact_date="2024-05-01")
    dm.save(pk, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy", clavien_dindo_max="none")
    dm.register(patient_id="XY-0003")
    assert dm.get("/patients.json?q=pb-").json()["total"] == 2
    assert [p["patient_id"] for p in dm.get("/patients.json?stage=resected").json()["patients"]] == ["PB-0002"]
    assert dm.get("/patients.json?stage=on_cetuximab").json()["total"] == 2
    assert dm.get("/patients.json?q=%25").json()["total"] == 0  # LIKE wildcards are literal
    assert dm.get("/patients.json?stage=bogus").status_code == 422
    page = dm.client.get("/patients?stage=resected", headers={"accept": "text/html"})
    assert "PB-0002" in page.text and "XY-0003" not in page.text


def test_every_page_has_a_json_twin_and_html(dm: Api) -> None:
    pk = dm.register()
    for path in ("/patients", f"/patients/{pk}", "/worklist", "/dashboard", f"/patients/{pk}/audit"):
        html = dm.client.get(path, headers={"accept": "text/html"})
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html"), path
        assert f'href="{path}.json"' in html.text
        twin = dm.get(path + ".json")
        assert twin.status_code == 200 and twin.headers["content-type"] == "application/json", path


def test_error_shape_is_the_same_everywhere(dm: Api) -> None:
    for response in (dm.get("/patients/999999.json"), dm.get("/no/such/page"), dm.get("/patients/abc.json"),
                     dm.get("/patients.json?page=0"), dm.post("/patients/1/stages/nowhere", {"version": "1"})):
        body = response.json()
        assert set(body) == {"ok", "error", "errors", "status"}, body
        assert body["ok"] is False and body["status"] == response.status_code >= 400
