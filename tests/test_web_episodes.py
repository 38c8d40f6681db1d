"""Adding, editing and deleting each episode type through the JSON twins of the patient page, on SQLite
and PostgreSQL: the rules across episodes on the merged record (E6xx, as an import), one error shape,
episode version locking (409 with what changed), the lock-period reason, centre scoping, CSRF, and
an audit row for every row created, changed or removed (the chain and the patient's state verify)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from oncosurg.store.audit import text
from web_helpers import CENTRE_A, CENTRE_B, Api, add_user, fixed_today, make_app, verify_chain

TODAY = dt.date(2024, 6, 3)
# registration: line 3 (cetuximab + irinotecan) from 2024-01-08, contact alive 2024-02-05

#: Per episode type: (fields to add it, a change to make, a submission that breaks a rule, its code)
CASES: dict[str, tuple[dict[str, str], dict[str, str], dict[str, str], str]] = {
    "therapy_line": ({"line_number": "4", "start_date": "2024-02-03", "agents": "bevacizumab;oxaliplatin",
                      "intent": "palliative", "given_at": "centre"}, {"cycles": "6"},
                     {"line_number": "5", "start_date": "2023-06-01", "agents": "other"}, "E605"),
    "mdt_review": ({"review_date": "2024-01-20", "decision": "potentially_resectable", "line_number": "3"},
                   {"notes": "discussed again"},
                   {"review_date": "2024-01-20", "decision": "resectable", "line_number": "9"}, "E601"),
    "response_assessment": ({"assessment_date": "2024-01-30", "line_number": "3", "baseline_sum_mm": "100",
                             "current_sum_mm": "60"}, {"current_sum_mm": "90"},
                            {"assessment_date": "2024-01-30", "current_sum_mm": "50"}, "W504"),
    "liver_procedure": ({"procedure_date": "2024-02-01", "procedure_type": "hepatectomy", "resected_segments": "5;6",
                         "margin": "R0"}, {"approach": "laparoscopic"},
                        {"procedure_date": "2024-02-02", "procedure_type": "ablation", "margin": "R1"}, "E606"),
    "complication": ({"procedure_no": "1", "grade": "II", "description": "ileus"}, {"grade": "IIIa"},
                     {"procedure_no": "9", "grade": "I"}, "E601"),
    "pathology": ({"procedure_no": "1", "steatosis_pct": "30", "tumour_regression_grade": "2"}, {"margin_mm": "4"},
                  {"procedure_no": "9", "steatosis_pct": "10"}, "E601"),
    "disease_event": ({"event_date": "2024-01-25", "event_kind": "progression", "sites": "lung;liver"},
                      {"sites": "lung"}, {"event_date": "2024-13-01", "event_kind": "progression"}, "V302"),
    "contact": ({"contact_date": "2024-04-01", "vital_status": "alive"}, {"contact_date": "2024-04-02"},
                {"contact_date": "2024-01-01", "vital_status": "dead"}, "E604"),
}
PROCEDURE = CASES["liver_procedure"][0]


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(TODAY))
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "other", "data_manager", CENTRE_B)
    add_user(app, "inv", "investigator", CENTRE_A)
    yield app
    assert verify_chain(app).ok  # every write appended the patient's state; the chain and the states verify
    app.state.store.dispose()


def _trail(api: Api, pk: int, entity: str) -> list[tuple[str, str | None]]:
    entries = api.get(f"/patients/{pk}/audit.json?page=1").json()["entries"]
    return sorted((e["action"], e["field"]) for e in entries if e["entity"] == entity)


def _new_patient(dm: Api, table: str) -> int:
    pk = dm.register()
    if table in ("complication", "pathology"):
        assert dm.add(pk, "liver_procedure", **PROCEDURE).status_code == 200
    return pk


@pytest.mark.parametrize("table", list(CASES))
def test_add_edit_delete_each_episode_type(app: FastAPI, table: str) -> None:
    add, change, bad, code = CASES[table]
    dm = Api(app, "dm")
    pk = _new_patient(dm, table)
    before = {t: len(rows) for t, rows in dm.patient(pk)["episodes"].items()}
    added = dm.add(pk, table, **add)
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["table"] == table and body["version"] == dm.patient(pk)["version"]
    episodes = dm.patient(pk)["episodes"][table]
    assert len(episodes) == before[table] + 1
    episode = next(e for e in episodes if e["id"] == body["id"])
    assert {k: text(v) for k, v in episode["values"].items() if k in add} == {
        k: v.replace("lung;liver", "liver;lung") for k, v in add.items()}  # codes in vocabulary order
    assert ("create", None) in _trail(dm, pk, table)
    if table == "response_assessment":
        assert episode["values"]["category"] == "PR"  # computed from the sums (RECIST 1.1)

    # edit: the value changes, the episode's version moves on, the change is audited field by field
    edited = dm.edit(pk, table, episode, patient_version=str(dm.patient(pk)["version"]), **change)
    assert edited.status_code == 200, edited.text
    now = next(e for e in dm.patient(pk)["episodes"][table] if e["id"] == episode["id"])
    field, value = next(iter(change.items()))
    assert text(now["values"][field]) == value and now["version"] > episode["version"]
    assert ("update", field) in _trail(dm, pk, table)
    if table == "response_assessment":
        assert now["values"]["category"] == "SD"  # recomputed from the new sum

    # a second tab still holding the old version: 409, with what changed since; nothing saved
    version = dm.patient(pk)["version"]
    stale = dm.edit(pk, table, episode, patient_version=str(body["version"]), **change)
    assert stale.status_code == 409
    shape = stale.json()
    assert set(shape) == {"ok", "error", "errors", "status"} and shape["ok"] is False
    assert any(c["entity"] == table and c["field"] == field for c in shape["errors"])
    assert dm.delete(pk, table, episode).status_code == 409
    assert dm.patient(pk)["version"] == version

    # a submission breaking a rule: 422 naming field, value, rule and fix; nothing saved
    refused = dm.add(pk, table, **bad)
    assert refused.status_code == 422, refused.text
    errors = refused.json()["errors"]
    assert code in [e["code"] for e in errors], errors
    error = next(e for e in errors if e["code"] == code)
    assert error["column"] and error["rule"] and error["message"] and error["hint"]
    assert dm.patient(pk)["version"] == version

    # delete with the current version
    deleted = dm.delete(pk, table, now)
    assert deleted.status_code == 200, deleted.text
    assert len(dm.patient(pk)["episodes"][table]) == before[table]
    assert ("delete", None) in _trail(dm, pk, table)


def test_a_procedure_goes_with_its_complications_and_pathology_and_a_line_lets_its_reviews_go(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = _new_patient(dm, "complication")
    dm.add(pk, "complication", **CASES["complication"][0])
    dm.add(pk, "complication", procedure_no="1", grade="I", description="wound infection")
    dm.add(pk, "pathology", **CASES["pathology"][0])
    procedure = dm.episode(pk, "liver_procedure")
    assert procedure["values"]["complications_assessed"] is True  # adding a complication marks it assessed
    assert "worst complication II (CCI" in procedure["label"]
    assert dm.delete(pk, "liver_procedure", procedure).status_code == 200
    episodes = dm.patient(pk)["episodes"]
    assert episodes["liver_procedure"] == episodes["complication"] == episodes["pathology"] == []
    trail = _trail(dm, pk, "complication") + _trail(dm, pk, "pathology")
    assert trail.count(("delete", None)) == 3
    # deleting a line detaches the reviews of it (audited), it does not delete them
    dm.add(pk, "therapy_line", **CASES["therapy_line"][0])
    dm.add(pk, "mdt_review", review_date="2024-02-04", decision="unresectable_continue", line_number="4")
    line4 = next(e for e in dm.patient(pk)["episodes"]["therapy_line"] if e["key"] == [4])
    assert dm.delete(pk, "therapy_line", line4).status_code == 200
    (review,) = dm.patient(pk)["episodes"]["mdt_review"]
    assert review["values"]["line_number"] is None
    assert ("update", "line_number") in _trail(dm, pk, "mdt_review")


def test_renumbering_a_line_takes_its_reviews_along(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register()
    dm.add(pk, "mdt_review", review_date="2024-01-20", decision="potentially_resectable", line_number="3")
    assert dm.edit(pk, "therapy_line", dm.episode(pk, "therapy_line"), line_number="2").status_code == 200
    assert dm.episode(pk, "mdt_review")["values"]["line_number"] == 2
    assert dm.patient(pk)["record"]["prior_chemo_lines"] == 1  # the flat projection follows


def test_patient_fields_are_edited_with_the_patient_version(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register()
    version = dm.patient(pk)["version"]
    ok = dm.post(f"/patients/{pk}/details", {"version": str(version), "birth_year": "1956", "braf_status": "mutant"})
    assert ok.status_code == 200, ok.text
    assert dm.patient(pk)["patient_fields"]["braf_status"] == "mutant"
    assert ("update", "birth_year") in _trail(dm, pk, "patient")
    stale = dm.post(f"/patients/{pk}/details", {"version": str(version), "msi_status": "mss"})
    assert stale.status_code == 409 and any(c["field"] == "braf_status" for c in stale.json()["errors"])
    bad = dm.post(f"/patients/{pk}/details", {"version": str(version + 1), "referral": "referred",
                                              "referral_date": "2024-02-01"})
    assert bad.status_code == 422 and [e["code"] for e in bad.json()["errors"]] == ["E607"]


def test_other_centres_readers_and_forged_posts_are_refused(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register()
    line = dm.episode(pk, "therapy_line")
    other = Api(app, "other")
    assert other.add(pk, "contact", contact_date="2024-04-01", vital_status="alive").status_code == 404
    assert other.edit(pk, "therapy_line", line, cycles="9").status_code == 404
    assert other.delete(pk, "therapy_line", line).status_code == 404
    inv = Api(app, "inv")
    assert inv.add(pk, "contact", contact_date="2024-04-01", vital_status="alive").status_code == 403
    forged = dm.client.post(f"/patients/{pk}/episodes/contact", data={"contact_date": "2024-04-01",
                                                                      "vital_status": "alive"})
    assert forged.status_code == 403
    assert dm.add(pk, "no_such_table", contact_date="2024-04-01").status_code == 422
    assert dm.patient(pk)["version"] == 1 and dm.episode(pk, "therapy_line") == line


def test_records_older_than_the_lock_period_need_a_reason(store_url: str) -> None:
    day = {"today": dt.date.today()}
    app = make_app(store_url, today=lambda: day["today"], lock_days=30)
    add_user(app, "dm", "data_manager", CENTRE_A)
    dm = Api(app, "dm")
    pk = dm.register()
    day["today"] = dt.date.today() + dt.timedelta(days=31)
    line = dm.episode(pk, "therapy_line")
    refused = dm.edit(pk, "therapy_line", line, cycles="5")
    assert refused.status_code == 422 and refused.json()["errors"][0]["code"] == "W505"
    ok = dm.edit(pk, "therapy_line", line, cycles="5", reason="source document corrected")
    assert ok.status_code == 200
    entries = dm.get(f"/patients/{pk}/audit.json").json()["entries"]
    assert any(e["field"] == "cycles" and e["reason"] == "source document corrected" for e in entries)
    # a new contact is new information; a complication changes an operation on record
    assert dm.add(pk, "contact", contact_date="2024-04-01", vital_status="alive").status_code == 200
    dm.add(pk, "liver_procedure", **PROCEDURE)
    assert dm.add(pk, "complication", procedure_no="1", grade="I").json()["errors"][0]["code"] == "W505"
    assert dm.add(pk, "complication", procedure_no="1", grade="I", reason="late report").status_code == 200
    assert dm.delete(pk, "contact", dm.episode(pk, "contact", 1)).status_code == 422
    assert verify_chain(app).ok
    app.state.store.dispose()


def _ids(patient: dict[str, Any]) -> dict[str, list[int]]:
    return {t: [e["id"] for e in rows] for t, rows in patient["episodes"].items()}


def test_the_timeline_lists_every_dated_episode_in_order(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = dm.register()
    for table, (add, _, _, _) in CASES.items():
        assert dm.add(pk, table, **add).status_code == 200, table
    patient = dm.patient(pk)
    kinds = [(e["date"], e["kind"]) for e in patient["timeline"]]
    assert kinds == sorted(kinds, key=lambda k: k[0])
    assert {k for _, k in kinds} >= {"therapy_line", "mdt_review", "response_assessment", "liver_procedure",
                                     "disease_event", "contact"}
    assert all(ids for ids in _ids(patient).values())
    html = dm.client.get(f"/patients/{pk}", headers={"accept": "text/html"}).text
    for table, ids in _ids(patient).items():
        for episode_id in ids:
            assert f'id="ep-{table}-{episode_id}"' in html


def _select(html: str, field_id: str) -> tuple[list[str], list[str]]:
    """The option values of the select ``field_id`` and the selected ones."""
    import re

    body = html.split(f'<select id="{field_id}"', 1)[1].split("</select>", 1)[0]
    options = re.findall(r'<option value="([^"]*)"( selected)?>', body)
    return [v for v, _ in options if v], [v for v, s in options if s]


def test_add_forms_drawn_once_still_follow_each_patient_and_a_refused_form(app: FastAPI) -> None:
    """The add forms are drawn once per form, line numbers and default (a cache): each patient's page
    still offers that patient's lines, the current one chosen, and a refused add shows its values and
    errors without them leaking into the next page drawn."""
    dm = Api(app, "dm")
    two, one = dm.register(patient_id="PB-LINES2"), dm.register(patient_id="PB-LINES1")
    assert dm.add(two, "therapy_line", **CASES["therapy_line"][0]).status_code == 200
    html = {"accept": "text/html"}
    lines = sorted(dm.patient(two)["lines"])
    for _ in range(2):  # the second time from the cache
        for pk, expected in ((two, lines), (one, sorted(dm.patient(one)["lines"]))):
            page = dm.get(f"/patients/{pk}", headers=html).text
            for form in ("mdt_review", "response_assessment"):
                choices, chosen = _select(page, f"add-{form}-0-line_number")
                assert choices == [str(n) for n in expected] and chosen == [str(expected[-1])], (pk, form)
    assert len(lines) == 2
    refused = dm.post(f"/patients/{one}/episodes/mdt_review", {
        "review_date": "2024-01-20", "decision": "resectable", "line_number": "9", "notes": "typed by hand"},
        headers=html)
    assert refused.status_code == 422
    assert "typed by hand" in refused.text and 'class="field has-error"' in refused.text
    again = dm.get(f"/patients/{one}", headers=html).text
    assert "typed by hand" not in again and "has-error" not in again
