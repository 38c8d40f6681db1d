"""The worst Clavien-Dindo grade is derived from the complications and never deletes one recorded one by
one; every complication row added, changed or removed is an audit row (issue 10, item 3)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi import FastAPI

from web_helpers import CENTRE_A, Api, add_user, fixed_today, make_app, verify_chain

SURGERY = {"surgery_date": "2024-03-01", "surgery_type": "hepatectomy"}


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(dt.date(2024, 6, 1)))
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "aud", "auditor", CENTRE_A)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def _operated(dm: Api, **fields: str) -> int:
    pk = dm.register(last_contact_date="2024-05-01", **fields)
    assert dm.save(pk, "surgery", **SURGERY, clavien_dindo_max="none").status_code == 200
    return pk


def _trail(app: FastAPI, pk: int) -> list[dict]:  # type: ignore[type-arg]
    rows = Api(app, "aud").get(f"/patients/{pk}/audit.json").json()["entries"]
    return [r for r in reversed(rows) if r["entity"] == "complication" and r["field"] in ("grade", "description")]


def test_lowering_the_worst_grade_never_deletes_itemised_complications(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = _operated(dm)
    for grade, text in (("IIIb", "re-laparotomy for bleeding"), ("II", "transfusion")):
        assert dm.post(f"/patients/{pk}/complications", {"grade": grade, "description": text}).status_code == 200
    before = dm.patient(pk)
    assert before["record"]["clavien_dindo_max"] == "IIIb"
    for fields in ({**SURGERY, "clavien_dindo_max": "II"}, {**SURGERY, "clavien_dindo_max": "none"},
                   {"surgery_date": "", "surgery_type": "", "clavien_dindo_max": ""}):
        refused = dm.save(pk, "surgery", **fields)
        assert refused.status_code == 422, refused.text
        errors = refused.json()["errors"]
        assert [(e["code"], e["column"]) for e in errors] == [("X418", "clavien_dindo_max")]
        assert "re-laparotomy for bleeding" in errors[0]["message"] and "patient page" in errors[0]["hint"]
    after = dm.patient(pk)
    assert after["complications"] == before["complications"] and after["version"] == before["version"]
    html = dm.client.post(f"/patients/{pk}/stages/surgery", headers={"accept": "text/html"},
                          data={"csrf_token": dm.csrf, "version": str(after["version"]), **SURGERY,
                                "clavien_dindo_max": "II"})
    assert html.status_code == 422 and "X418" in html.text and "re-laparotomy for bleeding" in html.text
    # raising it adds a row standing for the new worst grade, audited; the itemised rows stay
    assert dm.save(pk, "surgery", **SURGERY, clavien_dindo_max="IVa").status_code == 200
    rows = dm.patient(pk)["complications"]
    assert [(c["grade"], c["description"], c["from_worst_grade"]) for c in rows] == [
        ("IVa", "worst complication (surgery card)", True), ("IIIb", "re-laparotomy for bleeding", False),
        ("II", "transfusion", False)]
    created = [(r["action"], r["entity_id"], r["field"], r["new_value"]) for r in _trail(app, pk)][-2:]
    assert created == [("create", rows[0]["id"], "grade", "IVa"),
                       ("create", rows[0]["id"], "description", "worst complication (surgery card)")]


def test_a_csv_update_cannot_lower_the_grade_below_itemised_complications(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = _operated(dm, patient_id="PB-0009")
    dm.post(f"/patients/{pk}/complications", {"grade": "IIIb", "description": "re-laparotomy for bleeding"})
    exported = dm.get("/export.csv").text
    lowered = exported.replace(",IIIb,", ",I,")
    assert lowered != exported
    report = dm.client.post("/upload", data={"centre": CENTRE_A, "mode": "update", "csrf_token": dm.csrf},
                            files={"file": ("lower.csv", lowered.encode(), "text/csv")}).json()
    assert report["ok"] is False and "token" not in report
    assert [(e["code"], e["line"], e["column"], e["value"]) for e in report["errors"]] == [
        ("X418", 2, "clavien_dindo_max", "I")]
    assert [c["description"] for c in dm.patient(pk)["complications"]] == ["re-laparotomy for bleeding"]


def test_a_stand_in_follows_the_card_and_gives_way_to_an_itemised_complication(app: FastAPI) -> None:
    dm = Api(app, "dm")
    pk = _operated(dm)
    assert dm.save(pk, "surgery", **SURGERY, clavien_dindo_max="IIIa").status_code == 200
    assert dm.save(pk, "surgery", **SURGERY, clavien_dindo_max="II").status_code == 200  # a stand-in only: lowered
    (stand_in,) = dm.patient(pk)["complications"]
    assert (stand_in["grade"], stand_in["from_worst_grade"]) == ("II", True)
    assert dm.post(f"/patients/{pk}/complications", {"grade": "II", "description": "ileus"}).status_code == 200
    (itemised,) = dm.patient(pk)["complications"]
    assert (itemised["grade"], itemised["description"]) == ("II", "ileus")
    trail = [(r["action"], r["entity_id"], r["field"], r["old_value"], r["new_value"]) for r in _trail(app, pk)]
    assert trail == [
        ("create", stand_in["id"], "grade", None, "IIIa"),
        ("create", stand_in["id"], "description", None, "worst complication (surgery card)"),
        ("update", stand_in["id"], "grade", "IIIa", "II"),
        ("create", itemised["id"], "grade", None, "II"), ("create", itemised["id"], "description", None, "ileus"),
        ("delete", stand_in["id"], "grade", "II", None),
        ("delete", stand_in["id"], "description", "worst complication (surgery card)", None)]
    assert dm.save(pk, "surgery", **SURGERY, clavien_dindo_max="none").status_code == 422  # now itemised


@pytest.mark.parametrize(("items", "grade", "expected"), [
    ([], "II", "add II"),
    ([("II", False)], "II", "nothing"),
    ([("II", False)], "IIIa", "add IIIa"),
    ([("IIIa", True)], "II", "regrade IIIa→II"),
    ([("II", True)], "IVa", "regrade II→IVa"),
    ([("II", False), ("IIIa", True)], "II", "remove IIIa"),
    ([("IIIa", True)], None, "remove IIIa"),
    ([("IIIa", True)], "none", "remove IIIa"),
    ([("IIIa", False)], "II", "refuse IIIa"),
    ([("IIIa", False), ("IVa", True)], "none", "refuse IIIa"),
])
def test_plan(items: list[tuple[str, bool]], grade: str | None, expected: str) -> None:
    from oncosurg.store.complications import Complication, plan

    rows = [Complication(i, g, None, stand_in) for i, (g, stand_in) in enumerate(items, 1)]
    todo = plan(rows, grade)
    shown = ([f"refuse {c.grade}" for c in todo.blocking] + ([f"add {todo.add}"] if todo.add else [])
             + [f"regrade {c.grade}→{g}" for c, g in todo.regrade] + [f"remove {c.grade}" for c in todo.remove])
    assert (" ".join(shown) or "nothing") == expected
