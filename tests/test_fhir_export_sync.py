"""Issue 14 item 3: a FHIR export that a server keeps in step, validated whole before anything is written.

A re-export given the previous export (``--previous``) deletes every resource the registry no longer
holds, so a FHIR server that applied both transactions holds exactly the registry's current
resources; a value FHIR cannot carry (an integer beyond 32 bits) refuses the whole export and
leaves nothing behind.  The server here is a small in-memory model of FHIR's transaction rules
(DELETEs before PUTs, no resource both deleted and written in one transaction).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.export import fhir as fx
from oncosurg.reference import random_registry
from oncosurg.schema import COLUMNS
from oncosurg.store import tables as t
from oncosurg.store.engine import open_store
from oncosurg.store.repository import import_patients
from registry_factory import random_registry as random_flat_registry


class Server:
    """Resources by ``Type/id``, changed by transaction bundles as a FHIR R4 server would."""

    def __init__(self) -> None:
        self.resources: dict[str, dict[str, Any]] = {}

    def transaction(self, bundle: dict[str, Any]) -> None:
        assert bundle["type"] == "transaction"
        deletes = [e["request"]["url"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"]
        puts = [e for e in bundle["entry"] if e["request"]["method"] == "PUT"]
        assert not set(deletes) & {e["request"]["url"] for e in puts}, "a resource deleted and written at once"
        for url in deletes:
            self.resources.pop(url, None)
        for e in puts:
            self.resources[e["request"]["url"]] = e["resource"]

    def apply(self, folder: Path) -> None:
        for path in sorted(folder.glob("*.json")):
            self.transaction(json.loads(path.read_text(encoding="utf-8")))


def export(db: str, out: Path, *more: str) -> Any:
    return CliRunner().invoke(cli, ["export", "--db", db, "--format", "fhir", "--out", str(out), *more])


@pytest.fixture
def registry(tmp_path: Path) -> tuple[str, sa.Engine]:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    engine = open_store(db)
    records = random_registry(12, 7, centres=2, episodes=16)
    assert import_patients(engine, records, source="mem", sha256="", rows=12).created == 12
    return db, engine


def current(db: str, tmp_path: Path, name: str) -> dict[str, dict[str, Any]]:
    """The resources a fresh export of the registry holds now."""
    server = Server()
    assert export(db, tmp_path / name).exit_code == 0
    server.apply(tmp_path / name)
    return server.resources


def test_a_re_export_deletes_what_the_registry_no_longer_holds(registry: tuple[str, sa.Engine],
                                                               tmp_path: Path) -> None:
    db, engine = registry
    first = tmp_path / "first"
    assert export(db, first).exit_code == 0
    server = Server()
    server.apply(first)
    with engine.begin() as conn:  # what users do in the web app: remove episodes, agents, values, a patient
        pk = conn.execute(sa.select(t.complication.c.patient_pk).limit(1)).scalar_one()
        conn.execute(sa.delete(t.complication).where(t.complication.c.patient_pk == pk))
        line = conn.execute(sa.select(t.therapy_line.c.id, t.therapy_line.c.agents)
                            .where(t.therapy_line.c.agents.like("%;%")).limit(1)).one()
        conn.execute(sa.update(t.therapy_line).where(t.therapy_line.c.id == line.id)
                     .values(agents=line.agents.split(";")[0]))
        conn.execute(sa.update(t.patient).where(t.patient.c.id == pk).values(ras_status=None))
        gone = conn.execute(sa.select(t.patient.c.id).where(t.patient.c.id != pk).limit(1)).scalar_one()
        for table in reversed(list(t.EPISODES.values())[1:]):
            conn.execute(sa.delete(table).where(table.c.patient_pk == gone))
        conn.execute(sa.delete(t.patient).where(t.patient.c.id == gone))
    second = tmp_path / "second"
    result = export(db, second, "--previous", str(first))
    assert result.exit_code == 0, result.output
    assert "(1 patient(s) no longer registered)" in result.output
    server.apply(second)
    assert server.resources == current(db, tmp_path, "fresh")  # exactly the registry's resources, no stale ones
    deleted = sorted(second.glob("deleted-*.json"))
    assert len(deleted) == 1 and all(e["request"]["method"] == "DELETE"
                                     for e in json.loads(deleted[0].read_text())["entry"])


def test_without_the_previous_export_a_server_keeps_removed_resources(registry: tuple[str, sa.Engine],
                                                                      tmp_path: Path) -> None:
    db, engine = registry
    server = Server()
    assert export(db, tmp_path / "first").exit_code == 0
    server.apply(tmp_path / "first")
    with engine.begin() as conn:
        conn.execute(sa.delete(t.complication))
    server.apply(tmp_path / "first")  # idempotent: ids are stable
    assert export(db, tmp_path / "second").exit_code == 0
    server.apply(tmp_path / "second")
    stale = set(server.resources) - set(current(db, tmp_path, "fresh"))
    assert stale and all(url.startswith("Condition/") for url in stale)  # why --previous exists


def test_previous_exports_of_one_centre_delete_no_other_centre(registry: tuple[str, sa.Engine],
                                                               tmp_path: Path) -> None:
    db, _ = registry
    assert export(db, tmp_path / "all").exit_code == 0
    result = export(db, tmp_path / "one", "--centre", "Centre 1 (synthetic)", "--previous", str(tmp_path / "all"))
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "one").glob("deleted-*.json"))
    bundles = [json.loads(p.read_text()) for p in (tmp_path / "one").glob("*.json")]
    assert bundles and not any(e["request"]["method"] == "DELETE" for b in bundles for e in b["entry"])


def test_the_previous_export_must_be_a_folder_and_fhir(registry: tuple[str, sa.Engine], tmp_path: Path) -> None:
    db, _ = registry
    missing = export(db, tmp_path / "x", "--previous", str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "no such directory" in missing.output
    wrong = CliRunner().invoke(cli, ["export", "--db", db, "--out", str(tmp_path / "x.csv"),
                                     "--previous", str(tmp_path)])
    assert wrong.exit_code == 2 and "--previous is for --format fhir" in wrong.output


# ------------------------------------------------------------------ validate everything, then write atomically

def test_an_integer_beyond_32_bits_refuses_the_export_and_writes_nothing(tmp_path: Path) -> None:
    rows = random_flat_registry(152, 5)
    rows[50]["liver_mets_count"] = "3000000000"  # valid for the registry, not a FHIR integer
    csv_path = tmp_path / "r.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    assert CliRunner().invoke(cli, ["import", str(csv_path), "--db", db]).exit_code == 0
    out = tmp_path / "exports" / "fhir"
    result = export(db, out)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "nothing was written; 1 value(s) cannot be written as FHIR R4" in result.output
    assert rows[50]["patient_id"] in result.output and "component[0].valueInteger" in result.output
    assert "3000000000" in result.output and "less than or equal to 2147483647" in result.output
    assert not out.exists() and list(out.parent.iterdir()) == []  # no half-written folder, no temporary one


def test_an_interrupted_export_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fail_third(path: Path, bundle: Any) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        path.write_text(json.dumps(bundle), encoding="utf-8")

    monkeypatch.setattr(fx, "_write_json", fail_third)
    with pytest.raises(OSError):
        fx.write_bundles(random_registry(5, 1), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_bundles_never_delete_and_write_one_resource() -> None:
    record = random_registry(1, 2)[0]
    patient = f"Patient/{fx.resource_id(record.centre, record.patient_id, 'patient')}"
    bundle = fx.patient_bundle(record, previous=["Observation/stale", patient])
    assert [e["request"] for e in bundle["entry"] if e["request"]["method"] == "DELETE"] == [
        {"method": "DELETE", "url": "Observation/stale"}]
