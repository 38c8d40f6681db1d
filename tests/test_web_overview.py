"""The worklist (MDT reviews due, awaiting surgery, overdue follow-up) and the live dashboard."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from oncosurg.protocol.engine import run_protocol
from oncosurg.protocol.model import load_protocol
from oncosurg.reference import CENTRE
from oncosurg.store import tables as t
from oncosurg.web.services.dashboard import restrict
from oncosurg.web.services.roster import Roster, centres_and_marks, marks
from oncosurg.web.services.users import load_user, visible_centres
from oncosurg.web.services.worklist import WorklistIndex, worklist
from web_helpers import CENTRE_A, CENTRE_B, Api, add_user, fixed_today, make_app, verify_chain

TODAY = dt.date(2024, 6, 3)


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(TODAY), review_cycles=4, review_weeks=8, followup_overdue_months=6)
    add_user(app, "dm", "data_manager", CENTRE_A, CENTRE_B, CENTRE)
    add_user(app, "a", "investigator", CENTRE_A)
    yield app
    assert verify_chain(app).ok
    with app.state.store.read() as conn:  # the indexes kept current edit by edit equal ones built now
        index = app.state.worklist_index
        if index.rebuilds:
            assert index.work(conn, TODAY) == WorklistIndex().work(conn, TODAY)
            for user in (load_user(conn, user_id=uid) for uid in conn.execute(sa.select(t.app_user.c.id)).scalars()):
                rules = {"user": user, "today": TODAY, "review_cycles": 4, "review_weeks": 8,
                         "followup_overdue_months": 6}  # kept section by section = derived now
                assert worklist(conn, **rules, index=index) == worklist(conn, **rules)
        assert app.state.roster.patients(conn) == Roster().patients(conn)
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
    assert due["CYCLES"] == ["4 cycle(s) since the start of line 3"]
    assert due["WEEKS"] == ["13 week(s) since the start of line 3"]
    assert due["PR"] == [f"PR on {recent} not yet reviewed"]
    # a review clears the patient until the next threshold; "resectable" moves them to awaiting surgery
    dm.post(f"/patients/{weeks}/reviews", {"review_date": "2024-05-27", "decision": "unresectable_continue"})
    dm.post(f"/patients/{responded}/reviews", {"review_date": str(TODAY), "decision": "resectable"})
    dm.post(f"/patients/{cycles}/reviews", {"review_date": str(TODAY), "decision": "unresectable_stop"})
    body = dm.get("/worklist.json").json()
    assert body["review_due_total"] == 0
    assert [p["patient_id"] for p in body["awaiting_surgery"]] == ["PR"]
    index = app.state.worklist_index
    assert index.rebuilds == 1 and index.updates == 1, "the second request read only the patients that changed"
    # more cycles after the review make the patient due again
    dm.save(weeks, "cetuximab", cetuximab_cycles="6")
    assert _due(dm)["WEEKS"] == ["4 cycle(s) since the last review"]
    # surgery takes the patient off the review list
    assert dm.save(responded, "follow_up", last_contact_date=str(TODAY)).status_code == 200
    assert dm.save(responded, "surgery", surgery_date=str(TODAY), surgery_type="hepatectomy",
                   clavien_dindo_max="none").status_code == 200
    assert dm.get("/worklist.json").json()["awaiting_surgery_total"] == 0
    assert fresh  # registered but not due


def test_review_due_is_about_the_current_line_whatever_its_agents(app: FastAPI) -> None:
    """Due for an MDT review follows the patient's current line (panitumumab, bevacizumab…), its start,
    its cycles and its reviews, not the cetuximab line of the flat record."""
    dm = Api(app, "dm")
    recent = str(TODAY - dt.timedelta(weeks=3))
    switched = dm.register(patient_id="SWITCHED", cetuximab_start="2023-09-04", cetuximab_cycles="8",
                           last_contact_date=recent)
    line = dm.episode(switched, "therapy_line")
    assert dm.edit(switched, "therapy_line", line, stop_date="2024-01-15", stop_reason="progression").status_code == 200
    assert dm.add(switched, "therapy_line", line_number="4", start_date=recent, agents="panitumumab;fluoropyrimidine",
                  intent="conversion", cycles="4").status_code == 200, "a fourth line, started three weeks ago"
    due = _due(dm)
    assert due["SWITCHED"] == ["4 cycle(s) since the start of line 4"]
    item = next(p for p in dm.get("/worklist.json").json()["review_due"] if p["patient_id"] == "SWITCHED")
    assert (item["line_number"], item["agents"], item["line_start"]) == (4, "panitumumab;fluoropyrimidine", recent)
    # a review of the earlier line does not count for the current one; a review of line 4 does
    dm.add(switched, "mdt_review", review_date="2024-01-10", decision="unresectable_continue", line_number="3")
    assert _due(dm)["SWITCHED"] == ["4 cycle(s) since the start of line 4"]
    dm.add(switched, "mdt_review", review_date=str(TODAY), decision="unresectable_continue", line_number="4",
           cycles_at_review="4")
    assert "SWITCHED" not in _due(dm)
    # a bevacizumab line without cetuximab is followed the same way; an adjuvant line is not reviewed
    bev = dm.register(patient_id="BEV", cetuximab_start="2023-09-04", last_contact_date=recent)
    dm.edit(bev, "therapy_line", dm.episode(bev, "therapy_line"), stop_date="2023-12-04")
    dm.add(bev, "therapy_line", line_number="4", start_date="2024-03-04",
           agents="bevacizumab;oxaliplatin;fluoropyrimidine")
    assert _due(dm)["BEV"] == ["13 week(s) since the start of line 4"]
    dm.edit(bev, "therapy_line", dm.episode(bev, "therapy_line", 1), intent="adjuvant")
    assert "BEV" not in _due(dm)
    board = dm.get("/dashboard.json").json()["pathway"]
    assert board["on_line"] == 1 and board["by_family"]["anti-EGFR"] == 1  # SWITCHED on panitumumab; BEV adjuvant
    assert board["reviews"] == 1 and board["reviews_by_decision"] == {"unresectable_continue": 1}  # last 8 weeks


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


def test_the_worklist_kept_patient_by_patient_equals_one_derived_from_scratch(app: FastAPI) -> None:
    """The index keeps each patient's worklist entries and the sections' order, changing only the
    patients an edit named; after every edit the worklist equals one derived from every patient now."""
    import random

    dm = Api(app, "dm")
    rng = random.Random(11)

    def day(weeks: int) -> str:
        return str(TODAY - dt.timedelta(weeks=weeks))

    starts = [rng.randint(2, 70) for _ in range(14)]
    pks = [dm.register(patient_id=f"W-{i:02d}", centre=rng.choice((CENTRE_A, CENTRE_B, CENTRE)),
                       cetuximab_start=day(start), cetuximab_cycles=str(rng.randint(0, 8)),
                       last_contact_date=day(rng.randint(0, start))) for i, start in enumerate(starts)]
    start_of = dict(zip(pks, starts, strict=True))
    index = app.state.worklist_index

    def agrees() -> None:
        served = dm.get("/worklist.json").json()
        with app.state.store.read() as conn:
            user = load_user(conn, user_id=dm.user["id"])
            fresh = worklist(conn, user=user, today=TODAY, review_cycles=4, review_weeks=8, followup_overdue_months=6,
                             limit=100)
        assert served == fresh

    agrees()
    saved = 0
    for _ in range(24):
        pk, action = rng.choice(pks), rng.randrange(5)
        if action == 0:
            response = dm.save(pk, "cetuximab", cetuximab_cycles=str(rng.randint(0, 12)))
        elif action == 1:
            decision = rng.choice(("unresectable_continue", "potentially_resectable", "resectable",
                                   "unresectable_stop"))
            response = dm.post(f"/patients/{pk}/reviews", {"review_date": day(rng.randint(0, start_of[pk])),
                                                           "decision": decision})
        elif action == 2:
            response = dm.save(pk, "follow_up", last_contact_date=day(rng.randint(0, start_of[pk])))
        elif action == 3:
            response = dm.add(pk, "response_assessment", assessment_date=day(rng.randint(0, start_of[pk])),
                              category=rng.choice(("PR", "SD")), line_number="3")
        else:
            version = dm.patient(pk)["version"]
            response = dm.post(f"/patients/{pk}/delete", {"version": str(version), "reason": "test"})
            pks.remove(pk)
        assert response.status_code in (200, 201, 422), response.text  # 422: a date rule refused it
        saved += response.status_code != 422
        agrees()
    assert saved >= 16 and index.rebuilds == 1 and index.updates >= saved, "each edit re-derived only its patient"


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
    app.state.dashboard.refresh_seconds = 1
    unoperated = dm.save(pk, "surgery", **fields)
    assert unoperated.status_code == 200, unoperated.text
    # the last result is served at once, marked stale with its time; the recomputation follows
    stale = dm.get("/dashboard.json").json()
    assert stale["stale"] is True and stale["computed_at"] == board["computed_at"]
    assert stale["results"]["endpoints"]["operated"]["n"] == before
    html = dm.client.get("/dashboard", headers={"accept": "text/html"})
    assert html.status_code == 200 and 'id="stale"' in html.text and board["computed_at"] in html.text
    after = _fresh_dashboard(dm)
    assert after["results"]["endpoints"]["operated"]["n"] == before - 1
    html = dm.client.get("/dashboard", headers={"accept": "text/html"})
    assert html.status_code == 200 and "<svg" in html.text and "Resectability" in html.text
    assert 'id="stale"' not in html.text


def _fresh_dashboard(api: Api, wait: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        body = api.get("/dashboard.json").json()
        if not body["stale"]:
            return body
        time.sleep(0.2)
    raise AssertionError("the dashboard was not recomputed")


def test_the_dashboard_is_recomputed_at_most_once_per_interval(app: FastAPI, reference_csv: Path) -> None:
    dm = Api(app, "dm")
    staged = dm.client.post("/upload", files={"file": ("reference.csv", reference_csv.read_bytes(), "text/csv")},
                            data={"centre": CENTRE, "mode": "insert", "csrf_token": dm.csrf}).json()
    dm.post("/upload/confirm", {"token": staged["token"]})
    board = app.state.dashboard
    board.refresh_seconds = 3
    first = dm.get("/dashboard.json").json()
    assert first["stale"] is False and board.computations == 1
    pk = dm.get("/patients.json").json()["patients"][0]["pk"]
    start = time.monotonic()
    for cycles in range(5, 15):  # a stream of edits, each followed by a dashboard request
        assert dm.save(pk, "cetuximab", cetuximab_cycles=str(cycles)).status_code == 200
        served = dm.get("/dashboard.json").json()
        assert served["stale"] is True or time.monotonic() - start >= 3
    assert board.computations <= 1 + max(1, int((time.monotonic() - start) // 3) + 1)
    latest = _fresh_dashboard(dm)
    assert latest["computed_at"] >= first["computed_at"] and board.computations >= 2


def test_concurrent_requests_share_one_computation(app: FastAPI, reference_csv: Path) -> None:
    dm = Api(app, "dm")
    staged = dm.client.post("/upload", files={"file": ("reference.csv", reference_csv.read_bytes(), "text/csv")},
                            data={"centre": CENTRE, "mode": "insert", "csrf_token": dm.csrf}).json()
    dm.post("/upload/confirm", {"token": staged["token"]})
    app.state.dashboard.refresh_seconds = 0  # recompute before answering, one request at a time
    bodies: list[dict] = []  # type: ignore[type-arg]
    clients = [Api(app, "dm") for _ in range(6)]
    threads = [threading.Thread(target=lambda c=c: bodies.append(c.get("/dashboard.json").json())) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert app.state.dashboard.computations == 1
    assert {b["computed_at"] for b in bodies} == {bodies[0]["computed_at"]} and len(bodies) == 6
    pk = dm.get("/patients.json").json()["patients"][0]["pk"]
    dm.save(pk, "cetuximab", cetuximab_cycles="9")
    again = dm.get("/dashboard.json").json()  # refresh_seconds = 0: the edit is in the answer
    assert again["stale"] is False and again["cached"] is False and app.state.dashboard.computations == 2


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


def test_the_centres_and_the_registry_marks_are_read_in_one_statement(app: FastAPI) -> None:
    """The list and the dashboard read the user's centres and the registry's marks (the dashboard's
    fingerprint) in one statement (the dashboard: three round trips on two connections before): the
    same centres and marks as the two reads, for an all-centre user and a restricted one, on a
    registry without centres and as patients, centres and edits arrive."""
    add_user(app, "all", "investigator", all_centres=True)
    dm = Api(app, "dm")

    def check() -> tuple[object, ...]:
        with app.state.store.read() as conn:
            names = list(conn.execute(sa.select(t.centre.c.name)).scalars())
            users = [load_user(conn, user_id=uid) for uid in conn.execute(sa.select(t.app_user.c.id)).scalars()]
            assert {u.all_centres for u in users} == {True, False}
            statements: list[str] = []

            def count(*args: object) -> None:
                statements.append(str(args[2]))

            for user in users:
                statements.clear()
                sa.event.listen(conn, "before_cursor_execute", count)
                got = centres_and_marks(conn, user=user)
                sa.event.remove(conn, "before_cursor_execute", count)
                assert got == (visible_centres(conn, user=user), marks(conn)), user.username
                if user.all_centres:
                    assert got[0] == sorted(names)
                    assert len(statements) == (1 if names else 2), statements
            return marks(conn)

    empty = check()
    pk = dm.register(patient_id="FP-1", centre=CENTRE_B)
    registered = check()
    assert dm.post(f"/patients/{pk}/stages/cetuximab", {"version": "1", "cetuximab_cycles": "3"}).status_code == 200
    edited = check()
    assert len({empty, registered, edited}) == 3
    with app.state.store.read() as conn:
        anyone = dataclasses.replace(load_user(conn, user_id=1), all_centres=True)
    bare = sa.create_engine("sqlite://")
    t.metadata.create_all(bare)
    with bare.connect() as conn:  # no centre yet: the marks alone
        assert centres_and_marks(conn, user=anyone) == ([], marks(conn))


def test_restrict_quotes_centre_names() -> None:
    protocol = load_protocol("rescue-cetuximab-2007")
    narrowed = restrict(protocol, ["O'Brien \\ centre"])
    assert narrowed.scope[0].where == "centre in ('O\\'Brien \\\\ centre')"
    assert narrowed.accrual_start == protocol.accrual_start and narrowed.include == protocol.include


def test_a_cached_dashboard_reads_no_episodes(app: FastAPI) -> None:
    """The pathway panel (lines, recent reviews) is computed with the endpoints and served from the
    same snapshot: a dashboard request answered from the cache reads no episode table."""
    import sqlalchemy as sa

    dm = Api(app, "dm")
    dm.register(patient_id="ON-LINE", cetuximab_start=str(TODAY - dt.timedelta(weeks=3)),
                last_contact_date=str(TODAY - dt.timedelta(weeks=1)))
    first = dm.get("/dashboard.json").json()
    assert first["pathway"]["on_line"] == 1 and first["pathway"]["by_family"]["anti-EGFR"] == 1
    statements: list[str] = []
    sa.event.listen(app.state.store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    again = dm.get("/dashboard.json").json()
    assert again["cached"] and not again["stale"] and again["pathway"] == first["pathway"]
    tables = ("therapy_line", "mdt_review", "liver_procedure", "contact")
    assert not [s for s in statements if any(f"FROM {name}" in s for name in tables)], statements


def test_the_server_processes_share_the_dashboard(app: FastAPI, store_url: str, reference_csv: Path) -> None:
    """Each worker process computed the dashboard itself (with 2 workers, a sixth of the server's CPU
    under the web benchmark).  Two apps on one registry (two processes of one server) now compute each
    result once: the second takes the first's when it was computed from the same registry, and when
    both ask at once one waits for the other's."""
    dm = Api(app, "dm")
    staged = dm.client.post("/upload", files={"file": ("reference.csv", reference_csv.read_bytes(), "text/csv")},
                            data={"centre": CENTRE, "mode": "insert", "csrf_token": dm.csrf}).json()
    dm.post("/upload/confirm", {"token": staged["token"]})
    other = make_app(store_url, today=fixed_today(TODAY), review_cycles=4, review_weeks=8, followup_overdue_months=6)
    boards = (app.state.dashboard, other.state.dashboard)
    try:
        dm2 = Api(other, "dm")
        first = dm.get("/dashboard.json").json()
        second = dm2.get("/dashboard.json").json()
        assert [b.computations for b in boards] == [1, 0] and boards[1].adopted == 1
        assert second["results"] == first["results"] and second["computed_at"] == first["computed_at"]
        assert second["curves"] == first["curves"] and second["stale"] is False
        pk = dm.get("/patients.json").json()["patients"][0]["pk"]
        for board in boards:
            board.refresh_seconds = 0  # recompute before answering: only a result of this very registry is taken
        assert dm.save(pk, "cetuximab", cetuximab_cycles="9").status_code == 200
        assert dm.get("/dashboard.json").json()["stale"] is False
        assert dm2.get("/dashboard.json").json()["stale"] is False
        assert [b.computations for b in boards] == [2, 0] and boards[1].adopted == 2
        assert dm.save(pk, "cetuximab", cetuximab_cycles="10").status_code == 200
        bodies: list[dict] = []  # type: ignore[type-arg]
        threads = [threading.Thread(target=lambda a=a: bodies.append(a.get("/dashboard.json").json()))
                   for a in (dm, dm2, dm, dm2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(b.computations for b in boards) == 3 and len({b["computed_at"] for b in bodies}) == 1
        expected = run_protocol(app.state.store.engine, load_protocol("rescue-cetuximab-2007"))
        assert bodies[0]["results"]["endpoints"] == expected["endpoints"]
    finally:
        other.state.store.dispose()


def test_shared_dashboard_files_are_private_and_signed(tmp_path: Path) -> None:
    from oncosurg.web.services.dashboard import SharedResults

    shared = SharedResults(tmp_path / "d", "the database's key", "sqlite:///r.db|p")
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    key = ("p", None)
    shared.save(key, {"n": 1}, (1, 2, 3, "2024-06-03"), 5.0)
    assert shared.load(key) == ({"n": 1}, (1, 2, 3, "2024-06-03"), 5.0)
    assert SharedResults(tmp_path / "d", "another key", "sqlite:///r.db|p").load(key) is None  # other database
    assert SharedResults(tmp_path / "d", "the database's key", "sqlite:///other.db|p").load(key) is None
    import os
    import time as clock

    old = tmp_path / "d" / "gone-registry.json"
    old.write_text("{}")
    os.utime(old, (clock.time() - 8 * 86400,) * 2)
    SharedResults(tmp_path / "d", "the database's key", "sqlite:///r.db|p")  # a server starting
    assert not old.exists() and shared.load(key) is not None  # files of a week ago go, recent ones stay
    path = next((tmp_path / "d").glob("*.json"))
    path.write_bytes(path.read_bytes().replace(b'"n": 1', b'"n": 2'))  # written by someone without the key
    assert shared.load(key) is None
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(PermissionError):
        SharedResults(tmp_path / "open", "k", "i")
    with pytest.raises(PermissionError):  # a private directory inside one others may write (and swap)
        SharedResults(tmp_path / "open" / "dashboard", "k", "i")
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PermissionError):
        SharedResults(tmp_path / "link", "k", "i")
