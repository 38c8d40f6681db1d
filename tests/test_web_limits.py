"""Request limits (issue 10, item 8): bodies over the configured size are refused before they are
read, and authentication and CSRF are checked before an upload is spooled.

The app is called as ASGI with a ``receive`` that counts the chunks pulled, so "not read" is measured,
not assumed; one test sends a chunked upload to a live server over a socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from oncosurg.web.security import SESSION_COOKIE
from web_helpers import CENTRE_A, Api, LiveServer, add_user, make_app, verify_chain

MB = 1024 * 1024
BOUNDARY = "b0undary"


@pytest.fixture
def app(store_url: str) -> Iterator[FastAPI]:
    app = make_app(store_url)
    add_user(app, "dm", "data_manager", CENTRE_A)
    yield app
    assert verify_chain(app).ok
    app.state.store.dispose()


def _multipart_head(csrf: str | None) -> bytes:
    parts = b""
    if csrf is not None:
        parts += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{csrf}\r\n").encode()
    parts += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"centre\"\r\n\r\n{CENTRE_A}\r\n"
              f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.csv\"\r\n"
              "Content-Type: text/csv\r\n\r\n").encode()
    return parts


def call(app: FastAPI, path: str, *, chunks: int, first: bytes = b"", headers: dict[str, str] | None = None,
         chunk_size: int = MB) -> tuple[int, dict[str, Any] | None, int]:
    """POST ``first`` then ``chunks`` chunks of ``chunk_size`` bytes; returns (status, JSON body, chunks pulled)."""
    pulled = 0
    sent: list[dict[str, Any]] = []
    total = chunks + (1 if first else 0)

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled > total:
            await asyncio.sleep(3600)  # the app waits for a body it should not want
        body = first if first and pulled == 1 else b"x" * chunk_size
        return {"type": "http.request", "body": body, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *raw], "client": ("127.0.0.1", 5555), "server": ("testserver", 80)}
    asyncio.run(asyncio.wait_for(app(scope, receive, send), timeout=60))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return status, parsed, pulled


def _signed_in(app: FastAPI) -> tuple[str, str]:
    api = Api(app, "dm")
    return api.client.cookies.get(SESSION_COOKIE), api.csrf


def test_a_signed_out_300_mb_upload_is_refused_before_its_body_is_read(app: FastAPI) -> None:
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "accept": "application/json"}
    status, body, pulled = call(app, "/upload", first=_multipart_head("forged"), chunks=300, headers=headers)
    assert status == 401 and body is not None and body["status"] == 401
    assert pulled == 0  # not a byte read
    # with its length announced it is refused for its size first, before anything else
    status, _, pulled = call(app, "/upload", first=_multipart_head("forged"), chunks=300,
                             headers=headers | {"content-length": str(300 * MB)})
    assert status == 413 and pulled == 0


def test_a_forged_upload_is_refused_after_its_first_part(app: FastAPI) -> None:
    cookie, _ = _signed_in(app)
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "accept": "application/json",
               "cookie": f"{SESSION_COOKIE}={cookie}"}
    status, body, pulled = call(app, "/upload", first=_multipart_head("0" * 64), chunks=40, headers=headers)
    assert status == 403 and "CSRF" in body["error"] and pulled <= 2
    status, body, pulled = call(app, "/upload", first=_multipart_head(None), chunks=40, headers=headers)
    assert status == 403 and pulled <= 2  # the file came before any token


def test_an_oversized_upload_is_refused_at_the_limit_even_when_chunked(store_url: str) -> None:
    app = make_app(store_url, upload_max_mb=5)
    add_user(app, "dm", "data_manager", CENTRE_A)
    cookie, csrf = _signed_in(app)
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", "accept": "application/json",
               "cookie": f"{SESSION_COOKIE}={cookie}", "x-csrf-token": csrf}
    status, body, pulled = call(app, "/upload", first=_multipart_head(csrf), chunks=40, headers=headers)
    assert status == 413 and "5 MB" in body["error"] and pulled <= 7  # read up to the limit, not the 40 MB
    status, _, pulled = call(app, "/upload", chunks=40, headers=headers | {"content-length": str(40 * MB)})
    assert status == 413 and pulled == 0
    app.state.store.dispose()


def test_forms_are_limited_to_form_max_kb(app: FastAPI) -> None:
    cookie, csrf = _signed_in(app)
    headers = {"content-type": "application/x-www-form-urlencoded", "accept": "application/json",
               "cookie": f"{SESSION_COOKIE}={cookie}"}
    status, body, pulled = call(app, "/patients", chunks=3, headers=headers | {"content-length": str(3 * MB)})
    assert status == 413 and "1 MB" in body["error"] and pulled == 0
    status, _, pulled = call(app, "/patients", first=f"csrf_token={csrf}&notes=".encode(), chunks=3,
                             headers=headers, chunk_size=512 * 1024)
    assert status == 413 and pulled <= 4
    # the sign-in form too (no session needed to send one)
    status, _, pulled = call(app, "/login", chunks=5, headers={"content-type": "application/x-www-form-urlencoded",
                                                                "content-length": str(5 * MB)})
    assert status == 413 and pulled == 0


def test_normal_uploads_and_forms_still_work(app: FastAPI) -> None:
    dm = Api(app, "dm")
    csv = ("patient_id,referral,prior_chemo_lines,cetuximab_start,cetuximab_partner,last_contact_date\n"
           "UP-1,in_house,2,2024-01-08,irinotecan,2024-02-05\n")
    report = dm.client.post("/upload", files={"file": ("u.csv", csv.encode(), "text/csv")},
                            data={"centre": CENTRE_A, "csrf_token": dm.csrf}).json()
    assert report["ok"] and report["create"] == 1
    assert dm.post("/upload/confirm", {"token": report["token"]}).json()["created"] == 1
    # the API may send the token in the header instead of the form
    again = dm.client.post("/upload", files={"file": ("u.csv", csv.encode(), "text/csv")},
                           data={"centre": CENTRE_A}, headers={"x-csrf-token": dm.csrf})
    # already registered: the rules ran
    assert again.status_code == 200 and "patient_id" in {e["column"] for e in again.json()["errors"]}


def test_live_server_answers_before_the_upload_is_sent(app: FastAPI) -> None:
    with LiveServer(app) as server, socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall((f"POST /upload HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                      f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nTransfer-Encoding: chunked\r\n"
                      "Accept: application/json\r\n\r\n").encode())
        head = _multipart_head("forged")
        conn.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
        answer = ""
        while '"status"' not in answer:  # the answer comes while the client still holds the rest of the body
            data = conn.recv(65536)
            if not data:
                break
            answer += data.decode("latin-1")
    assert answer.startswith("HTTP/1.1 401") and '"status":401' in answer
