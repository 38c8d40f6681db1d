"""Helpers of the web-app tests: an app on a fresh store, accounts, and a signed-in JSON client."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from oncosurg.store import audit
from oncosurg.web import Settings, create_app
from oncosurg.web.services import users

PASSWORD = "correct horse battery staple"
CENTRE_A = "Paul Brousse"
CENTRE_B = "Beaujon"


def make_app(url: str, **settings: Any) -> FastAPI:
    return create_app(Settings(db_url=url, **settings))


def add_user(app: FastAPI, username: str, role: str, *centres: str, all_centres: bool = False) -> int:
    with app.state.store.write() as conn:
        return users.create_user(conn, username=username, password=PASSWORD, role=role, centres=centres,
                                 all_centres=all_centres)


def verify_chain(app: FastAPI) -> audit.Verification:
    with app.state.store.read() as conn:
        return audit.verify(conn)


class Clock:
    """A settable clock for ``Settings(now=...)`` (naive UTC)."""

    def __init__(self, start: dt.datetime = dt.datetime(2030, 1, 7, 8, 0)) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


def sign_in(client: TestClient, username: str, password: str = PASSWORD, **headers: str) -> Any:
    """POST /login as an API client (the sign-in form's CSRF token fetched first)."""
    token = client.get("/login.json", headers=headers).json()["csrf_token"]
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                       headers={"accept": "application/json", **headers})


class Api:
    """A signed-in client speaking JSON (``Accept: application/json``), CSRF token included."""

    def __init__(self, app: FastAPI, username: str, password: str = PASSWORD,
                 client: tuple[str, int] = ("testclient", 50000)) -> None:
        self.client = TestClient(app, raise_server_exceptions=True, client=client)
        self.client.headers["accept"] = "application/json"
        token = self.client.get("/login.json").json()["csrf_token"]
        response = self.client.post("/login", data={"username": username, "password": password, "csrf_token": token})
        assert response.status_code == 200, response.text
        self.user = response.json()
        self.csrf = self.user["csrf_token"]

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)

    def register(self, **fields: str) -> int:
        response = self.post("/patients", registration(**fields))
        assert response.status_code == 201, response.text
        return response.json()["pk"]

    def patient(self, pk: int) -> dict[str, Any]:
        response = self.get(f"/patients/{pk}.json")
        assert response.status_code == 200, response.text
        return response.json()

    def save(self, pk: int, stage: str, version: int | None = None, **fields: str) -> Any:
        if version is None:
            version = self.patient(pk)["version"]
        return self.post(f"/patients/{pk}/stages/{stage}", {"version": str(version), **fields})


    def add(self, pk: int, table: str, **fields: str) -> Any:
        """POST a new episode of ``table`` (therapy_line, mdt_review, …)."""
        return self.post(f"/patients/{pk}/episodes/{table}", fields)

    def episode(self, pk: int, table: str, index: int = 0) -> dict[str, Any]:
        """One episode of ``table`` as the patient's JSON twin lists it (date order)."""
        return self.patient(pk)["episodes"][table][index]

    def edit(self, pk: int, table: str, episode: dict[str, Any], **fields: str) -> Any:
        return self.post(f"/patients/{pk}/episodes/{table}/{episode['id']}",
                         {"version": str(episode["version"]), **fields})

    def delete(self, pk: int, table: str, episode: dict[str, Any], **fields: str) -> Any:
        return self.post(f"/patients/{pk}/episodes/{table}/{episode['id']}/delete",
                         {"version": str(episode["version"]), **fields})


def registration(**fields: str) -> dict[str, str]:
    """A valid registration form (override any field)."""
    return {"centre": CENTRE_A, "patient_id": "PB-0001", "referral": "in_house", "sex": "F", "prior_chemo_lines": "2",
            "cetuximab_start": "2024-01-08", "cetuximab_partner": "irinotecan", "cetuximab_cycles": "2",
            "last_contact_date": "2024-02-05", **fields}


def fixed_today(day: dt.date):  # type: ignore[no-untyped-def]
    return lambda: day


class LiveServer:
    """The app served by uvicorn on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI, *, lifespan: str = "off") -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan=lifespan)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=20)


def http_session(base_url: str, username: str, password: str = PASSWORD):  # type: ignore[no-untyped-def]
    """An httpx client signed in to a live server; returns (client, csrf token)."""
    import httpx

    client = httpx.Client(base_url=base_url, headers={"accept": "application/json"}, timeout=60)
    token = client.get("/login.json").json()["csrf_token"]
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    response.raise_for_status()
    return client, response.json()["csrf_token"]
