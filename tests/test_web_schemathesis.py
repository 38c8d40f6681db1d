"""Schemathesis against the app's own OpenAPI spec: no generated request may cause a server error.

Every operation gets a bounded number of generated requests (schema-conforming and not), sent with a
signed-in admin's session cookie and CSRF token, on a registry with a few patients, on SQLite and
PostgreSQL.  The audit chain must still verify afterwards.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from oncosurg.web.security import DEVICE_COOKIE, SESSION_COOKIE
from web_helpers import Api, add_user, make_app, verify_chain

MAX_EXAMPLES = 15
SKIP = {"POST /logout"}  # would end the session the other operations use


def _runner(operation: Any, mode: GenerationMode, send: Callable[[schemathesis.Case], int],
            failures: list[str], where: str) -> Callable[[], None]:
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        status = send(case)
        if status >= 500:
            failures.append(f"{where}: {status} {case.as_curl_command()}")

    return run


@pytest.mark.slow
def test_no_server_error_against_the_openapi_spec(store_url: str) -> None:
    app = make_app(store_url)
    add_user(app, "admin", "admin", all_centres=True)
    api = Api(app, "admin")
    for i in range(3):
        pk = api.register(patient_id=f"PB-{i}", last_contact_date="2024-05-01")
    api.save(pk, "surgery", surgery_date="2024-03-01", surgery_type="hepatectomy", clavien_dindo_max="II")
    # the browser's cookies: its session, and the device cookie that keys its own failed password checks
    # (e.g. generated POST /account/password) apart from other clients' sign-ins
    cookies = {name: api.client.cookies.get(name) for name in (SESSION_COOKIE, DEVICE_COOKIE)}
    headers = {"x-csrf-token": api.csrf, "accept": "application/json"}
    statuses: Counter[int] = Counter()

    def send(case: schemathesis.Case) -> int:
        response = case.call(headers=headers, cookies=cookies)
        statuses[response.status_code] += 1
        return response.status_code

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    failures: list[str] = []
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        if label in SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            where = f"{label} {mode.value}"
            try:
                _runner(operation, mode, send, failures, where)()
            except Exception as exc:
                if "unsatisfiable" not in f"{type(exc).__name__} {exc}".lower():
                    failures.append(f"{where}: {type(exc).__name__}: {exc}"[:500])
    assert not failures, "\n".join(failures[:20])
    assert statuses[200] + statuses[201] > 50 and sum(statuses.values()) > 10 * len(operations), statuses
    assert Api(app, "admin").get("/me.json").status_code == 200
    result = verify_chain(app)
    assert result.ok, result
    app.state.store.dispose()
