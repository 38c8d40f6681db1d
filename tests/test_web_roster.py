"""The patient list's in-memory roster follows every kind of change, from this server or elsewhere.

The roster (:mod:`oncosurg.web.services.roster`) projects the registry once, then only the patients
named by new audit rows; these tests compare it, after each kind of change, with a roster built
from scratch on the same snapshot, and check that it did not simply rebuild.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from oncosurg.ingest.csv import ParsedRecord
from oncosurg.reference import build_reference_rows
from oncosurg.rules import parse_record
from oncosurg.store import tables as t
from oncosurg.store.repository import import_records
from oncosurg.web.services.roster import Roster
from web_helpers import CENTRE_A, Api, add_user, fixed_today, make_app

TODAY = dt.date(2024, 6, 3)


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, today=fixed_today(TODAY))
    add_user(app, "dm", "data_manager", CENTRE_A)
    yield app
    app.state.store.dispose()


def _ids(api: Api, query: str = "") -> list[str]:
    body = api.get(f"/patients.json?{query}").json()
    assert body["total"] == len(body["patients"]) or body["page_size"] == len(body["patients"])
    return [p["patient_id"] for p in body["patients"]]


def _agrees(app: FastAPI) -> None:
    """The app's roster equals one projected from scratch now."""
    with app.state.store.read() as conn:
        assert app.state.roster.patients(conn) == Roster().patients(conn)


def test_the_list_follows_edits_deletions_and_imports_without_reprojecting_the_registry(app: FastAPI) -> None:
    dm = Api(app, "dm")
    first = dm.register(patient_id="P-2")
    dm.register(patient_id="P-1")
    assert _ids(dm) == ["P-1", "P-2"]  # the first list request projects the registry
    roster = app.state.roster
    assert roster.rebuilds == 1
    assert _ids(dm, "stage=operated") == []
    # a web edit: surgery moves P-2 to "operated", and its stage label follows
    assert dm.save(first, "follow_up", last_contact_date="2024-05-06").status_code == 200
    assert dm.save(first, "surgery", surgery_date="2024-04-02", surgery_type="hepatectomy",
                   clavien_dindo_max="none").status_code == 200
    assert _ids(dm, "stage=operated") == ["P-2"] and _ids(dm, "stage=resected") == ["P-2"]
    body = dm.get("/patients.json?q=p-2").json()
    listed = body["patients"][0]
    assert listed["stage"] == "hepatectomy, follow-up" and listed["surgery_date"] == "2024-04-02"
    # an MDT review is news: "status unknown" (no news for 52 weeks) becomes "on cetuximab"
    late = dm.register(patient_id="P-3", cetuximab_start="2023-01-09", last_contact_date="2023-02-06")
    assert "P-3" in _ids(dm, "stage=status_unknown")
    dm.post(f"/patients/{late}/reviews", {"review_date": "2024-05-27", "decision": "unresectable_continue"})
    assert "P-3" in _ids(dm, "stage=on_cetuximab") and "P-3" not in _ids(dm, "stage=status_unknown")
    # a deletion
    version = dm.patient(first)["version"]
    assert dm.post(f"/patients/{first}/delete", {"version": str(version), "reason": "test"}).status_code == 200
    assert _ids(dm) == ["P-1", "P-3"]
    _agrees(app)
    # an import by another process (its own engine: the command line beside the server)
    rows = [dict(r, centre=CENTRE_A, patient_id=f"IMP-{r['patient_id']}") for r in build_reference_rows(7)[:20]]
    records = [ParsedRecord(i + 2, parse_record(r, line=None)[0]) for i, r in enumerate(rows)]
    other = sa.create_engine(app.state.store.engine.url)
    result = import_records(other, records, source="cli", sha256="0" * 64, rows=len(records))
    other.dispose()
    assert result.created == 20
    assert len(_ids(dm, "q=imp-")) == 20
    _agrees(app)
    assert roster.rebuilds == 1 and roster.updates >= 5, "each change re-projected only its patients"


def test_a_change_without_audit_rows_rebuilds_the_roster(app: FastAPI) -> None:
    dm = Api(app, "dm")
    dm.register(patient_id="P-1")
    assert _ids(dm) == ["P-1"]
    with app.state.store.write() as conn:  # a patient added without an audit row (an older release's import)
        from oncosurg.pathway.flat import from_flat
        from oncosurg.store.episodes import insert_records

        centre_ids = dict(conn.execute(sa.select(t.centre.c.name, t.centre.c.id)).all())
        values = parse_record(dict(build_reference_rows(1)[0], centre=CENTRE_A, patient_id="P-9"), line=None)[0]
        insert_records(conn, t.EPISODES, [from_flat(values)], centre_ids=centre_ids)
    assert _ids(dm) == ["P-1", "P-9"]
    assert app.state.roster.rebuilds == 2


def test_the_roster_equals_the_sql_filters_on_a_reference_registry(app: FastAPI) -> None:
    """Every stage filter of the roster against the same filter in SQL over the projection."""
    from oncosurg.store.repository import registry_select

    rows = [dict(r, centre=CENTRE_A) for r in build_reference_rows(3)]
    records = [ParsedRecord(i + 2, parse_record(r, line=None)[0]) for i, r in enumerate(rows)]
    import_records(app.state.store.engine, records, source="ref", sha256="0" * 64, rows=len(records))
    dm = Api(app, "dm")
    with app.state.store.read() as conn:
        flat = {r["patient_id"]: r for r in conn.execute(registry_select()).mappings()}
    expected = {
        "operated": {k for k, r in flat.items() if r["surgery_date"] is not None},
        "resected": {k for k, r in flat.items() if r["surgery_type"] == "hepatectomy"},
        "progressed": {k for k, r in flat.items() if r["progression_date"] is not None},
        "deceased": {k for k, r in flat.items() if r["death_date"] is not None},
        "alive": {k for k, r in flat.items() if r["death_date"] is None},
    }
    for stage, wanted in expected.items():
        got: list[str] = []
        page = 1
        while True:
            body = dm.get(f"/patients.json?stage={stage}&page={page}").json()
            got += [p["patient_id"] for p in body["patients"]]
            if page >= body["pages"]:
                break
            page += 1
        assert set(got) == wanted and len(got) == len(wanted), stage
        assert got == sorted(got), "ordered by patient id within the centre"


def test_a_started_server_builds_the_list_and_worklist_indexes_before_the_first_request(app: FastAPI) -> None:
    """``oncosurg serve`` warms both indexes in the background: the first list and worklist requests
    read only what changed since, instead of projecting the registry while the others wait."""
    from oncosurg.web.app import warm_indexes

    dm = Api(app, "dm")
    dm.register(patient_id="P-1")
    warm_indexes(app).join(timeout=60)
    roster, index = app.state.roster, app.state.worklist_index
    assert (roster.rebuilds, index.rebuilds) == (1, 1)
    dm.register(patient_id="P-2")
    assert _ids(dm) == ["P-1", "P-2"] and dm.get("/worklist.json").status_code == 200
    assert (roster.rebuilds, index.rebuilds) == (1, 1) and roster.updates == 1 and index.updates == 1


def test_the_list_and_worklist_read_outside_a_transaction_and_read_the_marks_once(app: FastAPI) -> None:
    """The list and the worklist read their index's marks (and the centres) outside any transaction:
    no ``BEGIN``/``ROLLBACK`` round trips on PostgreSQL.  When the registry moved, the roster reads
    the changed rows and facts on the request's connection too (one statement each); the worklist's
    index, four statements, opens a read transaction of its own.  Neither reads the marks again."""
    store = app.state.store
    dm = Api(app, "dm")
    pk = dm.register(patient_id="P-1", cetuximab_start="2024-01-08")
    opened: list[str] = []

    def counted(name: str) -> Any:
        def open_snapshot() -> Any:
            opened.append(name)
            return store.read()
        return open_snapshot

    assert app.state.roster._snapshot is None
    app.state.worklist_index._snapshot = counted("worklist")
    statements: list[tuple[str, bool]] = []

    def in_transaction(conn: sa.Connection) -> bool:
        dbapi = conn.connection.dbapi_connection
        return not dbapi.autocommit if store.dialect == "postgresql" else dbapi.in_transaction

    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda conn, _c, statement, *_: statements.append((statement, in_transaction(conn))))
    for path, name in [("/patients.json", "roster"), ("/worklist.json", "worklist")]:
        for round_ in range(3):
            statements.clear()
            before = len(opened)
            assert dm.get(path).status_code == 200
            begins = [s for s, _ in statements if s.strip().upper().startswith("BEGIN")]  # SQLite's snapshot
            outside = [s for s, inside in statements if not inside and s not in begins]
            marks_read = [s for s, _ in statements if "audit_head" in s]
            changed_read = [s for s, _ in statements if "FROM audit_log" in s]
            assert len(marks_read) == 1, statements  # the request's marks serve its refresh
            if round_ == 1:  # nothing changed since: no refresh, every statement outside a transaction
                assert opened[before:] == [] and not begins and len(outside) == len(statements) <= 3, statements
                assert not changed_read, statements
            elif name == "roster":  # first use, or after an edit: the facts read on the request's connection
                assert opened[before:] == [] and not begins and len(outside) == len(statements), statements
                assert len(statements) <= 3 + (round_ == 2), statements  # + the changed rows after an edit
                assert len(changed_read) == (round_ == 2), statements
            else:  # the worklist's index read inside one snapshot
                assert opened[before:] == [name] and len(statements) > len(outside), statements
                assert len(outside) <= 3 + (round_ == 2), outside
            if round_ == 1:
                assert dm.save(pk, "follow_up", last_contact_date=f"2024-05-0{6 if path == '/patients.json' else 7}"
                               ).status_code == 200
    assert dm.get("/patients.json").json()["patients"][0]["last_contact_date"] == "2024-05-07"
    add_user(app, "all", "investigator", all_centres=True)  # every centre: read with the marks
    everyone = Api(app, "all")
    everyone.get("/patients.json")
    statements.clear()
    listed = everyone.get("/patients.json").json()
    read = list(statements)
    centre_reads = [text for text, _ in read if "FROM centre" in text]
    assert len(read) <= 3 and len(centre_reads) == 1 and "audit_head" in centre_reads[0], read
    with store.read() as conn:
        assert listed["centres"] == sorted(conn.execute(sa.select(t.centre.c.name)).scalars())
    _agrees(app)
