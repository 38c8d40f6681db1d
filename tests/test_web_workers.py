"""`oncosurg serve --workers 2` starts reliably even when a worker is slow to start (issue 10, item 9).

uvicorn's supervisor pings each worker and kills one that does not answer within its health-check
timeout (5 s by default), then starts another: on a busy machine a worker still importing the app
was killed again and again.  Here every process of the server is made to take 7 s before it can
answer (``sitecustomize`` runs before uvicorn's answering thread starts), like a starved worker."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from web_helpers import make_app

pytestmark = pytest.mark.slow


def test_two_workers_start_without_being_killed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    make_app(url).state.store.dispose()  # the registry exists (migrated, secret key stored)
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text("import time\ntime.sleep(7)\n", encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(tmp_path / "slow"),
                                                                    os.environ.get("PYTHONPATH")) if p))
    log = (tmp_path / "serve.log").open("w+b")
    server = subprocess.Popen([sys.executable, "-c", "from oncosurg.cli import main; main()", "serve", "--db", url,
                               "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL, stderr=log,
                              env=env, cwd=tmp_path)
    try:
        answered = _first_answer(f"http://127.0.0.1:{port}/login.json", timeout=90)
        time.sleep(3)  # both workers have had time to be checked
        text = (tmp_path / "serve.log").read_text(errors="replace")
        assert answered is not None, f"no answer within 90 s:\n{text[-3000:]}"
        assert not re.findall(r"Child process \[\d+\] died", text), text[-3000:]
        assert len(re.findall(r"Started server process", text)) == 2, text[-3000:]
        assert server.poll() is None
    finally:
        _stop(server)
        log.close()


def _first_answer(url: str, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - start
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_idle_connection_is_kept_longer_than_uvicorns_five_seconds(tmp_path: Path) -> None:
    """A client's next request on a connection idle for 6 s is answered (uvicorn closed it after 5 s:
    a request sent as it closed got no answer)."""
    import socket

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    make_app(url).state.store.dispose()
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", "from oncosurg.cli import main; main()", "serve", "--db", url,
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              cwd=tmp_path)
    try:
        assert _first_answer(f"http://127.0.0.1:{port}/login.json", timeout=90) is not None
        request = f"GET /login.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for _ in range(2):
                sock.sendall(request)
                answer = _read_response(sock)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
                time.sleep(6)
    finally:
        _stop(server)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def _read_response(sock: object) -> bytes:
    """One HTTP/1.1 response with a Content-Length (``b""`` when the server closed the connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)  # type: ignore[attr-defined]
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)  # type: ignore[attr-defined]
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
