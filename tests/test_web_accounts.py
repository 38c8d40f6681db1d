"""Privileges and sessions (issue 10, item 5): an admin grants only what they hold; strong passwords;
password change; one-time reset links; TOTP; idle timeout; listing and ending sessions."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pyotp
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncosurg.cli import cli
from oncosurg.store import tables as t
from oncosurg.web.security import SESSION_COOKIE
from web_helpers import CENTRE_A, CENTRE_B, PASSWORD, Api, Clock, add_user, make_app, sign_in, verify_chain

NEW_PASSWORD = "lantern otter marble quietly"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(store_url: str, clock: Clock) -> Iterator[FastAPI]:
    app = make_app(store_url, now=clock)
    add_user(app, "root", "admin", all_centres=True)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def _code(secret: str, clock: Clock, steps: int = 0) -> str:
    return pyotp.TOTP(secret).at(clock.now.replace(tzinfo=dt.UTC) + dt.timedelta(seconds=30 * steps))


# ------------------------------------------------------------------------------------- privileges

def test_a_centre_admin_grants_only_what_they_hold(app: FastAPI) -> None:
    add_user(app, "pbadmin", "admin", CENTRE_A)
    b_user = add_user(app, "bdm", "data_manager", CENTRE_B)
    a_user = add_user(app, "adm", "data_manager", CENTRE_A)
    root_id = Api(app, "root").user["id"]
    limited = Api(app, "pbadmin")
    new = {"password": PASSWORD, "role": "admin"}
    everything = limited.post("/users", {**new, "username": "evil", "all_centres": "yes"})
    assert everything.status_code == 403 and "all centres" in everything.json()["error"]
    other = limited.post("/users", {**new, "username": "evil", "centres": f"{CENTRE_A}, {CENTRE_B}"})
    assert other.status_code == 403 and CENTRE_B in other.json()["error"]
    assert limited.post(f"/users/{root_id}/deactivate").status_code == 403
    assert limited.post(f"/users/{root_id}/grants", {"role": "auditor", "centres": CENTRE_A}).status_code == 403
    assert limited.post(f"/users/{b_user}/grants", {"role": "auditor", "centres": CENTRE_A}).status_code == 403
    assert limited.post(f"/users/{a_user}/grants", {"role": "admin", "all_centres": "yes"}).status_code == 403
    assert limited.post(f"/users/{root_id}/reset").status_code == 403
    assert limited.post(f"/users/{root_id}/sessions/end", {"session": "all"}).status_code == 403
    # within their own grants they manage accounts as before
    assert limited.post("/users", {**new, "username": "pb2", "centres": CENTRE_A}).status_code == 201
    assert limited.post(f"/users/{a_user}/grants", {"role": "investigator", "centres": CENTRE_A}).status_code == 204
    listed = {u["username"]: u for u in limited.get("/users.json").json()["users"]}
    assert "bdm" not in listed and not listed["root"]["manageable"] and listed["adm"]["manageable"]
    assert Api(app, "root").get("/me.json").status_code == 200  # still active
    assert [u["username"] for u in Api(app, "root").get("/users.json").json()["users"] if u["username"] == "evil"] == []


@pytest.mark.parametrize("weak", ["aaaaaaaaaaaa", "password1234", " " * 12, "qwertyuiop12", "1q2w3e4r5t6y",
                                  "abcdefghijkl"])
def test_trivial_passwords_are_refused(app: FastAPI, weak: str) -> None:
    refused = Api(app, "root").post("/users", {"username": "weak", "password": weak, "role": "investigator",
                                               "centres": CENTRE_A})
    assert refused.status_code == 422, weak
    assert [e["column"] for e in refused.json()["errors"]] == ["password"]
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    cli_refused = CliRunner().invoke(cli, ["user", "add", "weak", "--db", url, "--role", "auditor", "--centre", "X",
                                           "--password-stdin"], input=weak + "\n")
    assert cli_refused.exit_code == 2 and "password" in cli_refused.output


def test_breached_list_and_strength_messages() -> None:
    from oncosurg.web.passwords import breached, problem

    assert len(breached()) > 40_000 and "password1234" in breached()
    assert "breached" in (problem("Password1234") or "")  # case-insensitive
    assert "too weak" in (problem("alice alice alice", user_inputs=["alice"]) or "")
    assert problem("lantern otter marble quietly") is None


# ------------------------------------------------------------------------------- password change

def test_password_change(app: FastAPI) -> None:
    add_user(app, "alice", "data_manager", CENTRE_A)
    here, elsewhere = Api(app, "alice"), Api(app, "alice", client=("198.51.100.9", 1))
    wrong = here.post("/account/password", {"current_password": "wrong wrong wrong",
                                            "new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD})
    assert wrong.status_code == 422 and wrong.json()["errors"][0]["column"] == "current_password"
    weak = here.post("/account/password", {"current_password": PASSWORD, "new_password": "password1234"})
    assert weak.status_code == 422 and weak.json()["errors"][0]["column"] == "new_password"
    differ = here.post("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                             "confirm_password": NEW_PASSWORD + "!"})
    assert differ.status_code == 422 and differ.json()["errors"][0]["column"] == "confirm_password"
    done = here.post("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                                           "confirm_password": NEW_PASSWORD})
    assert done.status_code == 200 and done.json()["sessions_ended"] == 1
    assert here.get("/me.json").status_code == 200  # this session goes on
    assert elsewhere.get("/me.json").status_code == 401  # the others end
    assert sign_in(TestClient(app, client=("192.0.2.1", 1)), "alice", PASSWORD).status_code == 401
    assert sign_in(TestClient(app, client=("192.0.2.2", 1)), "alice", NEW_PASSWORD).status_code == 200
    rows = Api(app, "root").get("/audit.json").json()["entries"]
    change = next(r for r in rows if r["field"] == "password")
    assert change["username"] == "alice" and "argon2" not in str(change)


# ----------------------------------------------------------------------------------- reset links

def test_one_time_reset_link(app: FastAPI, clock: Clock) -> None:
    alice_id = add_user(app, "alice", "data_manager", CENTRE_A)
    alice = Api(app, "alice")
    issued = Api(app, "root").post(f"/users/{alice_id}/reset")
    assert issued.status_code == 200
    path = issued.json()["path"]
    token = path.rsplit("/", 1)[1]
    with app.state.store.read() as conn:  # only the SHA-256 is stored
        stored = conn.execute(sa.select(t.password_reset.c.token_hash)).scalars().all()
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64
    visitor = TestClient(app, client=("192.0.2.3", 1))
    form = visitor.get(path + ".json").json()
    assert form["username"] == "alice"
    weak = visitor.post(path, data={"new_password": "aaaaaaaaaaaa", "csrf_token": form["csrf_token"]},
                        headers={"accept": "application/json"})
    assert weak.status_code == 422
    forged = visitor.post(path, data={"new_password": NEW_PASSWORD, "csrf_token": "0" * 64},
                          headers={"accept": "application/json"})
    assert forged.status_code == 403
    done = visitor.post(path, data={"new_password": NEW_PASSWORD, "confirm_password": NEW_PASSWORD,
                                    "csrf_token": form["csrf_token"]}, headers={"accept": "application/json"})
    assert done.status_code == 200 and done.json()["username"] == "alice"
    assert alice.get("/me.json").status_code == 401  # every session of the account ended
    again = visitor.post(path, data={"new_password": "another fine long passphrase", "csrf_token": form["csrf_token"]},
                         headers={"accept": "application/json"})
    assert again.status_code == 404  # used once
    assert sign_in(visitor, "alice", NEW_PASSWORD).status_code == 200
    # a link expires
    late = Api(app, "root").post(f"/users/{alice_id}/reset").json()["path"]
    clock.advance(hours=24, minutes=1)
    assert visitor.get(late + ".json").status_code == 404


def test_reset_link_from_the_command_line(app: FastAPI) -> None:
    add_user(app, "alice", "data_manager", CENTRE_A)
    url = app.state.store.engine.url.render_as_string(hide_password=False)
    result = CliRunner().invoke(cli, ["user", "reset-link", "alice", "--db", url, "--base-url", "https://reg.example"])
    assert result.exit_code == 0, result.output
    link = result.output.splitlines()[0]
    assert link.startswith("https://reg.example/reset/")
    # the link's token works (the clock of the CLI is the real one: check it is stored, unused)
    with app.state.store.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t.password_reset)
                            .where(t.password_reset.c.used_at.is_(None))).scalar_one() == 1
    missing = CliRunner().invoke(cli, ["user", "reset-link", "nobody", "--db", url])
    assert missing.exit_code == 2 and "no account" in missing.output


# ------------------------------------------------------------------------------------------ TOTP

def test_totp_second_factor(app: FastAPI, clock: Clock) -> None:
    alice_id = add_user(app, "alice", "data_manager", CENTRE_A)
    alice = Api(app, "alice")
    setup = alice.get("/account/totp.json").json()
    assert setup["uri"].startswith("otpauth://totp/")
    bad = alice.post("/account/totp", {"secret": setup["secret"], "code": "000000"})
    assert bad.status_code == 422
    assert alice.post("/account/totp", {"secret": setup["secret"], "code": _code(setup["secret"], clock)}
                      ).status_code == 200
    assert alice.get("/me.json").json()["totp"] is True
    clock.advance(seconds=60)

    browser = TestClient(app, client=("192.0.2.4", 1))
    first = sign_in(browser, "alice", PASSWORD)
    assert first.status_code == 200 and first.json()["second_factor"] == "totp"
    assert browser.get("/me.json").status_code == 401  # the password alone does not sign in
    csrf = first.json()["csrf_token"]
    wrong = browser.post("/login/totp", data={"code": "123456", "csrf_token": csrf},
                         headers={"accept": "application/json"})
    assert wrong.status_code == 401
    code = _code(setup["secret"], clock)
    ok = browser.post("/login/totp", data={"code": code, "csrf_token": csrf}, headers={"accept": "application/json"})
    assert ok.status_code == 200 and ok.json()["username"] == "alice"
    assert browser.get("/me.json").status_code == 200
    # the same code cannot be used twice
    replay = TestClient(app, client=("192.0.2.5", 1))
    step = sign_in(replay, "alice", PASSWORD).json()
    assert replay.post("/login/totp", data={"code": code, "csrf_token": step["csrf_token"]},
                       headers={"accept": "application/json"}).status_code == 401
    # an admin removes a lost second factor; the account signs in with its password again
    assert Api(app, "root").post(f"/users/{alice_id}/totp/reset").status_code == 204
    assert browser.get("/me.json").status_code == 401
    assert "second_factor" not in sign_in(TestClient(app, client=("192.0.2.6", 1)), "alice", PASSWORD).json()


def test_admins_must_enrol_when_the_setting_says_so(store_url: str, clock: Clock) -> None:
    app = make_app(store_url, now=clock, admin_totp_required=True)
    add_user(app, "root", "admin", all_centres=True)
    add_user(app, "alice", "data_manager", CENTRE_A)
    assert "second_factor" not in sign_in(TestClient(app), "alice", PASSWORD).json()  # others: optional
    browser = TestClient(app)
    first = sign_in(browser, "root", PASSWORD).json()
    assert first["second_factor"] == "enrol"
    assert browser.get("/users.json").status_code == 401
    setup = browser.get("/login/enrol.json").json()
    done = browser.post("/login/enrol", data={"secret": setup["secret"], "code": _code(setup["secret"], clock),
                                              "csrf_token": setup["csrf_token"]},
                        headers={"accept": "application/json"})
    assert done.status_code == 200 and done.json()["totp"] is True
    assert browser.get("/users.json").status_code == 200
    refused = browser.post("/account/totp/disable", data={"password": PASSWORD,
                                                          "csrf_token": done.json()["csrf_token"]},
                           headers={"accept": "application/json"})
    assert refused.status_code == 403
    clock.advance(seconds=90)
    again = TestClient(app)
    assert sign_in(again, "root", PASSWORD).json()["second_factor"] == "totp"
    app.state.store.dispose()


# -------------------------------------------------------------------------------------- sessions

def test_idle_timeout_besides_the_absolute_one(store_url: str, clock: Clock) -> None:
    app = make_app(store_url, now=clock, session_hours=2)  # session_idle_minutes: default 30
    add_user(app, "alice", "data_manager", CENTRE_A)
    alice = Api(app, "alice")
    for _ in range(4):  # active every 25 minutes: the idle timeout moves on
        clock.advance(minutes=25)
        assert alice.get("/me.json").status_code == 200
    clock.advance(minutes=25)  # 2 h 05 after sign-in: past the absolute end
    assert alice.get("/me.json").status_code == 401
    idle = Api(app, "alice")
    clock.advance(minutes=31)
    assert idle.get("/me.json").status_code == 401
    refused = idle.post("/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert refused.status_code == 401
    app.state.store.dispose()


def test_pages_that_look_their_session_up_on_the_reading_thread_keep_every_session_rule(store_url: str,
                                                                                        clock: Clock) -> None:
    """The patient page, its JSON twin, the list, the worklist and the dashboard look the session up on
    the thread and the connection that read the page (one connection per request, two before; the
    dashboard three): the same rules hold there: the idle timeout moves on, the absolute end, an
    ended session, no cookie, a made-up one, a browser sent to sign in."""
    import sqlalchemy as sa

    app = make_app(store_url, now=clock, session_hours=2)
    add_user(app, "alice", "data_manager", CENTRE_A)
    alice = Api(app, "alice")
    pk = alice.register(patient_id="P-1")
    paths = [f"/patients/{pk}.json", f"/patients/{pk}", "/patients.json", "/patients", "/worklist.json", "/worklist",
             "/dashboard.json", "/dashboard"]
    checkouts: list[int] = []
    sa.event.listen(app.state.store.engine, "checkout", lambda *args: checkouts.append(1))
    for _ in range(4):  # active every 25 minutes: the idle timeout moves on (each path in turn)
        clock.advance(minutes=25)
        for path in paths:
            assert alice.get(path).status_code == 200, path
        for path in paths:  # again (the idle timeout moved on, the list's index is current): one connection
            checkouts.clear()
            assert alice.get(path).status_code == 200, path
            assert len(checkouts) == 1, (path, len(checkouts))
    assert alice.get("/patients.json").json()["total"] == 1
    clock.advance(minutes=25)  # past the absolute end
    for path in paths:
        assert alice.get(path).status_code == 401, path
    browser = TestClient(app, cookies=dict(alice.client.cookies), follow_redirects=False)
    assert browser.get(f"/patients/{pk}", headers={"accept": "text/html"}).headers["location"].startswith("/login")
    idle = Api(app, "alice")
    clock.advance(minutes=31)
    for path in paths:
        assert idle.get(path).status_code == 401, path
    malformed = ["/patients/abc.json", "/patients/abc", "/patients.json?page=x", "/dashboard.json?centre=" + "x" * 300]
    for cookies in ({}, {SESSION_COOKIE: "made-up"}, {SESSION_COOKIE: "x" * 500}, dict(idle.client.cookies)):
        for path in paths + malformed:  # not signed in: 401 before any parameter is judged
            answer = TestClient(app, cookies=cookies).get(path, headers={"accept": "application/json"})
            assert answer.status_code == 401 and answer.json()["error"], (path, cookies, answer.status_code)
    assert all(Api(app, "alice").get(path).status_code == 422 for path in malformed)
    ended = Api(app, "alice")
    assert ended.get(paths[0]).status_code == 200
    assert ended.post("/account/sessions/end", {"session": "others"}).status_code == 200
    assert ended.get(paths[2]).status_code == 200 and alice.get(paths[2]).status_code == 401
    app.state.store.dispose()


def test_sessions_are_listed_and_ended(app: FastAPI) -> None:
    alice_id = add_user(app, "alice", "data_manager", CENTRE_A)
    laptop = Api(app, "alice", client=("192.0.2.10", 1))
    phone = Api(app, "alice", client=("192.0.2.11", 1))
    mine = laptop.get("/account.json").json()["sessions"]
    assert len(mine) == 2 and {s["client"] for s in mine} == {"192.0.2.10", "192.0.2.11"}
    other = next(s for s in mine if not s["current"])
    assert laptop.post("/account/sessions/end", {"session": other["id"]}).json()["ended"] == 1
    assert phone.get("/me.json").status_code == 401 and laptop.get("/me.json").status_code == 200
    root = Api(app, "root")
    listed = root.get(f"/users/{alice_id}/sessions.json").json()["sessions"]
    assert [s["client"] for s in listed] == ["192.0.2.10"]
    assert root.post(f"/users/{alice_id}/sessions/end", {"session": "all"}).json()["ended"] == 1
    assert laptop.get("/me.json").status_code == 401
    assert root.post(f"/users/{root.user['id']}/sessions/end", {"session": "all"}).status_code == 403


def test_session_cookie_alone_never_names_a_session(app: FastAPI) -> None:
    alice = Api(app, "root")
    sid = alice.get("/account.json").json()["sessions"][0]["id"]
    stolen = TestClient(app, cookies={SESSION_COOKIE: sid})
    assert stolen.get("/me.json").status_code == 401


def test_a_session_and_its_users_grants_are_read_in_one_statement(app: FastAPI, clock: Clock) -> None:
    """Every request looks its session up: the session, its user and the user's centre grants are one
    statement (a centre-limited user's grants were a second: a round trip of every request on
    PostgreSQL).  The user is the one :func:`load_user` reads, whatever the grants; the session of a
    deactivated account, or one idle too long, still gives no user."""
    from oncosurg.web.services.users import live_session, load_user

    settings, store = app.state.settings, app.state.store
    add_user(app, "one", "data_manager", CENTRE_A)
    add_user(app, "two", "investigator", CENTRE_A, CENTRE_B)
    add_user(app, "every", "auditor", all_centres=True)
    signed = {name: Api(app, name) for name in ("one", "two", "every")}

    def looked_up(api: Api) -> tuple[object, int]:
        token = api.client.cookies[SESSION_COOKIE]
        statements: list[str] = []
        with store.read_one() as conn:
            def count(*args: object) -> None:
                statements.append(str(args[2]))

            sa.event.listen(conn, "before_cursor_execute", count)
            found = live_session(conn, token=token, now=settings.now(), idle_minutes=settings.session_idle_minutes)
            sa.event.remove(conn, "before_cursor_execute", count)
        return (None if found is None else found[1]), len(statements)

    for name, api in signed.items():
        user, statements = looked_up(api)
        with store.read_one() as conn:
            assert user == load_user(conn, user_id=user.id) and user.username == name, name
        assert statements == 1, name
    assert looked_up(signed["two"])[0].centres == {CENTRE_A, CENTRE_B}
    assert looked_up(signed["every"])[0].all_centres and looked_up(signed["one"])[0].centres == {CENTRE_A}
    two = looked_up(signed["two"])[0].id
    assert Api(app, "root").post(f"/users/{two}/deactivate").status_code == 204
    assert looked_up(signed["two"]) == (None, 1)
    clock.advance(minutes=31)  # idle too long
    assert looked_up(signed["one"]) == (None, 1)
