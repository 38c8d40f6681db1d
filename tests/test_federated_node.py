"""The algorithm as a vantage6 node runs it, under vantage6-algorithm-tools' own pins (issue 15).

``make test`` builds ``.venv-node`` (Makefile): vantage6-algorithm-tools 4.15.2 with SQLAlchemy 1.4.46 and
psycopg2, the algorithm package and oncosurg installed with ``--no-deps`` (as the Dockerfile does).  The
node's entry point ``wrap_algorithm()`` runs there with the base32-encoded environment a 4.15 node sets,
on a SQLite registry (a file the node copies into the task) and on PostgreSQL (through psycopg2), and
must reply exactly what the partial replies in oncosurg's own environment (SQLAlchemy 2, psycopg 3).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from federated_helpers import round_robin, split_reference, write_registry
from oncosurg.federated.site import run_partial
from oncosurg.protocol.model import resolve_protocol

ROOT = Path(__file__).resolve().parents[1]
NODE_PYTHON = ROOT / ".venv-node" / "bin" / "python"


def _node_python() -> Path:
    if not NODE_PYTHON.exists():
        message = f"{NODE_PYTHON} is missing: `make test` builds it (make .venv-node/.installed-stamp)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return NODE_PYTHON


def _encode(value: str) -> str:  # vantage6.node.docker.task_manager._encode
    return base64.b32encode(value.encode()).decode().replace("=", "!")


def run_on_node(uri: str, method: str, kwargs: dict, tmp: Path) -> dict:
    """``wrap_algorithm()`` in the node venv, with the environment and files a vantage6 4.15 node gives."""
    inp, out = tmp / "input.json", tmp / "output.json"
    inp.write_text(json.dumps({"method": method, "kwargs": kwargs}))
    env = {"PATH": os.environ["PATH"], "PKG_NAME": "v6_oncosurg", "NUMBA_CACHE_DIR": str(tmp / "numba"),
           "INPUT_FILE": _encode(str(inp)), "OUTPUT_FILE": _encode(str(out)),
           "TOKEN_FILE": _encode(str(tmp / "token")), "TEMPORARY_FOLDER": _encode(str(tmp)),
           "USER_REQUESTED_DATABASE_LABELS": _encode("default"), "DEFAULT_DATABASE_URI": _encode(uri),
           "DEFAULT_DATABASE_TYPE": _encode("other"), "DB_LABELS": _encode("default")}
    subprocess.run([str(_node_python()), "-c", "from vantage6.algorithm.tools.wrap import wrap_algorithm; "
                    "wrap_algorithm()"], env=env, check=True, capture_output=True, cwd=tmp, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_partials_under_vantage6_pins_reply_as_in_oncosurg(backend: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    versions = subprocess.run([str(_node_python()), "-c", "import sqlalchemy, psycopg2; print(sqlalchemy.__version__)"],
                              capture_output=True, text=True, check=True).stdout.strip()
    assert versions == "1.4.46"
    records = split_reference(round_robin)["A"]
    if backend == "sqlite":
        url = write_registry(f"sqlite:///{tmp_path / 'site-a.db'}", records)
        node_uri = str(tmp_path / "site-a.db")  # a node gives a file database as a path
    else:
        url = write_registry(request.getfixturevalue("postgres_server").create_database("node_site_a"), records)
        node_uri = url.replace("postgresql+psycopg://", "postgresql://")  # as written in a node configuration
    path = resolve_protocol("rescue-cetuximab-2007")
    kwargs = {"protocol_toml": path.read_text(), "protocol_source": path.name, "session": "s1", "threshold": 1}
    summary = run_on_node(node_uri, "partial_summary", kwargs, tmp_path)
    assert "error" not in summary, summary
    expected = run_partial("partial_summary", url, kwargs)
    summary.pop("sa_version"), expected.pop("sa_version")
    assert summary == expected
    cox = run_on_node(node_uri, "partial_cox", {**kwargs, "model": 0, "beta": [0.1] * 7,
                                               "levels": {"age_at_cetuximab": [], "sex": ["F", "M"],
                                                          "referral": ["in_house", "referred"],
                                                          "liver_mets_count": [], "bilobar": [],
                                                          "extrahepatic_disease": [], "prior_chemo_lines": []}},
                      tmp_path)
    assert "error" not in cox, cox
    assert len(cox["score"]) == 7 and cox["loglik"] < 0
