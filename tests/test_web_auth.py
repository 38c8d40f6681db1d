"""Accounts, sessions, CSRF, throttling, headers, roles and centre grants of the web app."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncosurg.cli import cli
from oncosurg.web.security import SECURITY_HEADERS, SESSION_COOKIE
from web_helpers import CENTRE_A, CENTRE_B, PASSWORD, Api, add_user, make_app, registration, verify_chain


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url, login_max_failures=3)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def _login(client: TestClient, username: str, password: str) -> object:
    token = client.get("/login.json").json()["csrf_token"]
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       headers={"accept": "application/json"})


def test_no_default_credentials(app: FastAPI) -> None:
    client = TestClient(app)
    for name, password in (("admin", "admin"), ("admin", "password"), ("oncosurg", "oncosurg")):
        assert _login(client, name, password).status_code == 401


def test_sign_in_sets_a_hardened_session_cookie(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app)
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 200
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    assert client.get("/me.json").json()["username"] == "alice"


def test_secure_cookies_setting_marks_cookie_secure_and_sends_hsts(store_url: str) -> None:
    app = make_app(store_url, secure_cookies=True)
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app, base_url="https://testserver")
    response = _login(client, "alice", PASSWORD)
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v)
    assert "Secure" in cookie
    assert response.headers["strict-transport-security"].startswith("max-age=")
    app.state.store.dispose()


def test_security_headers_on_every_response(app: FastAPI) -> None:
    client = TestClient(app)
    for path in ("/login", "/login.json", "/patients.json", "/nowhere", "/openapi.json"):
        response = client.get(path)
        for header in SECURITY_HEADERS:
            assert header in response.headers, (path, header)
    assert "'unsafe-inline'" not in SECURITY_HEADERS["content-security-policy"]


def test_wrong_password_then_throttled(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app)
    for _ in range(3):
        response = _login(client, "alice", "wrong password!")
        assert response.status_code == 401
        assert response.json() == {"ok": False, "error": "wrong user name or password", "errors": [], "status": 401}
    throttled = _login(client, "alice", PASSWORD)  # even the right password waits now
    assert throttled.status_code == 429
    assert throttled.json()["status"] == 429


def test_login_needs_the_form_csrf_token(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app)
    response = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": "forged"},
                           headers={"accept": "application/json"})
    assert response.status_code == 403


def test_state_changing_requests_need_the_session_csrf_token(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    api = Api(app, "alice")
    form = registration()
    assert api.client.post("/patients", data=form).status_code == 403
    assert api.client.post("/patients", data={**form, "csrf_token": "0" * 64}).status_code == 403
    cross = api.client.post("/patients", data={**form, "csrf_token": api.csrf}, headers={"origin": "https://evil.example"})
    assert cross.status_code == 403
    assert api.client.post("/patients", data={**form, "csrf_token": api.csrf}).status_code == 201


def test_sign_out_ends_the_session(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    api = Api(app, "alice")
    cookie = api.client.cookies.get(SESSION_COOKIE)
    assert api.post("/logout").status_code == 204
    other = TestClient(app, cookies={SESSION_COOKIE: cookie})
    assert other.get("/me.json").status_code == 401


def test_browser_is_sent_to_sign_in(app: FastAPI) -> None:
    client = TestClient(app, follow_redirects=False)
    response = client.get("/worklist?x=1", headers={"accept": "text/html"})
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/worklist%3Fx%3D1"
    assert client.get("/worklist.json").json()["status"] == 401


def test_roles(app: FastAPI) -> None:
    add_user(app, "admin", "admin", all_centres=True)
    add_user(app, "dm", "data_manager", CENTRE_A)
    add_user(app, "inv", "investigator", CENTRE_A)
    add_user(app, "aud", "auditor", CENTRE_A)
    pk = Api(app, "dm").register()
    investigator, auditor = Api(app, "inv"), Api(app, "aud")
    for api in (investigator, auditor):
        assert api.get(f"/patients/{pk}.json").status_code == 200
        refused = api.save(pk, "follow_up", last_contact_date="2024-03-01")
        assert refused.status_code == 403 and "read-only" in refused.json()["error"]
        assert api.post("/patients", registration(patient_id="X-1")).status_code == 403
        assert api.post("/users", {"username": "mallory", "password": PASSWORD, "role": "admin",
                                   "all_centres": "yes"}).status_code == 403
    assert investigator.get("/audit.json").status_code == 403
    assert investigator.get(f"/patients/{pk}/audit.json").status_code == 403
    assert auditor.get("/audit.json").json()["total"] > 0
    assert Api(app, "dm").get("/users.json").status_code == 403
    assert Api(app, "admin").get("/users.json").status_code == 200


def test_centre_grants(app: FastAPI) -> None:
    add_user(app, "a", "data_manager", CENTRE_A)
    add_user(app, "b", "data_manager", CENTRE_B)
    add_user(app, "all", "investigator", all_centres=True)
    a, b = Api(app, "a"), Api(app, "b")
    pk_a = a.register(patient_id="SAME-1")
    pk_b = b.register(centre=CENTRE_B, patient_id="SAME-1")
    refused = a.post("/patients", registration(centre=CENTRE_B, patient_id="X-2"))
    assert refused.status_code == 422 and refused.json()["errors"][0]["column"] == "centre"
    assert [p["pk"] for p in a.get("/patients.json").json()["patients"]] == [pk_a]
    assert a.get(f"/patients/{pk_b}.json").status_code == 404
    assert a.save(pk_b, "follow_up", version=1, last_contact_date="2024-03-01").status_code == 404
    assert a.get(f"/patients.json?centre={CENTRE_B}").status_code == 403
    assert a.get(f"/dashboard.json?centre={CENTRE_B}").status_code == 403
    assert a.get(f"/export.csv?centre={CENTRE_B}").status_code == 403
    assert "SAME-1" in a.get("/export.csv").text and a.get("/export.csv").text.count("\n") == 2
    assert Api(app, "all").get("/patients.json").json()["total"] == 2


def test_user_add_command_creates_the_first_admin(store_url: str) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["user", "add", "root", "--db", store_url, "--role", "admin", "--all-centres"],
                           input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    short = runner.invoke(cli, ["user", "add", "bob", "--db", store_url, "--role", "admin", "--all-centres",
                                "--password-stdin"], input="short\n")
    assert short.exit_code == 2 and "at least 12 characters" in short.output
    again = runner.invoke(cli, ["user", "add", "root", "--db", store_url, "--role", "admin", "--centre", "X",
                                "--password-stdin"], input=PASSWORD + "\n")
    assert again.exit_code == 2 and "already exists" in again.output
    app = make_app(store_url)
    assert Api(app, "root").user["role"] == "admin"
    app.state.store.dispose()


def test_secret_key_is_generated_once_and_kept(store_url: str) -> None:
    first, second = make_app(store_url), make_app(store_url)
    assert first.state.secret == second.state.secret and len(first.state.secret) >= 40
    configured = make_app(store_url, secret_key="k" * 48)
    assert configured.state.secret == "k" * 48
    for app in (first, second, configured):
        app.state.store.dispose()


def test_deactivated_user_loses_access(app: FastAPI) -> None:
    add_user(app, "admin", "admin", all_centres=True)
    victim = add_user(app, "eve", "data_manager", CENTRE_A)
    eve = Api(app, "eve")
    admin = Api(app, "admin")
    assert admin.post(f"/users/{victim}/deactivate").status_code == 204
    assert eve.get("/me.json").status_code == 401
    assert _login(TestClient(app), "eve", PASSWORD).status_code == 401


def test_admin_changes_role_and_grants(app: FastAPI) -> None:
    add_user(app, "admin", "admin", all_centres=True)
    dm_id = add_user(app, "dm", "data_manager", CENTRE_A)
    dm = Api(app, "dm")
    dm.register(patient_id="A-1")
    admin = Api(app, "admin")
    assert admin.post(f"/users/{admin.user['id']}/grants", {"role": "auditor", "centres": CENTRE_A}).status_code == 403
    bad = admin.post(f"/users/{dm_id}/grants", {"role": "boss", "centres": ""})
    assert bad.status_code == 422 and {e["column"] for e in bad.json()["errors"]} == {"role", "centres"}
    assert admin.post(f"/users/{dm_id}/grants", {"role": "investigator", "centres": CENTRE_B}).status_code == 204
    assert dm.get("/me.json").status_code == 401  # the changed account signs in again
    again = Api(app, "dm")
    assert again.user["role"] == "investigator" and again.user["centres"] == [CENTRE_B]
    assert again.get("/patients.json").json()["total"] == 0
    rows = admin.get("/audit.json").json()["entries"]
    changed = {(r["field"], r["old_value"], r["new_value"]) for r in rows if r["entity"] == "app_user"
               and r["action"] == "update"}
    assert changed == {("role", "data_manager", "investigator"), ("centres", CENTRE_A, CENTRE_B)}


def test_sign_in_never_redirects_off_site(app: FastAPI) -> None:
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app, follow_redirects=False)
    for target, expected in (("//evil.example/x", "/patients"), ("https://evil.example", "/patients"),
                             ("/\\evil.example", "/patients"), ("/worklist", "/worklist")):
        client.cookies.clear()
        token = client.get("/login.json").json()["csrf_token"]
        response = client.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token,
                                               "next": target}, headers={"accept": "text/html"})
        assert response.status_code == 303 and response.headers["location"] == expected, target


def test_sessions_expire(store_url: str) -> None:
    app = make_app(store_url, session_hours=0)
    add_user(app, "alice", "admin", all_centres=True)
    client = TestClient(app)
    assert _login(client, "alice", PASSWORD).status_code == 200
    assert client.get("/me.json").status_code == 401
    app.state.store.dispose()
