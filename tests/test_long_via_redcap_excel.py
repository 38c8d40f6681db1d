"""Issue 11 "Done when": long → REDCap or Excel → registry → long gives the same long registry, byte for
byte, through the command line (the reference cohort and a random multi-centre, multi-episode registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from oncosurg.cli import cli
from oncosurg.export.long import write_long
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import EPISODE_TABLES
from oncosurg.reference import random_registry, reference_records


def ordered(records: list[PatientRecord]) -> list[PatientRecord]:
    return sorted(records, key=lambda r: (r.centre, r.patient_id))


REGISTRIES = {
    "reference": lambda: ordered(reference_records()),
    "random": lambda: ordered(random_registry(25, 7, centres=("A", 'Hôpital "Nord", Lyon', "東京"), episodes=16)),
}


@pytest.mark.parametrize(("fmt", "name"), [("redcap", "redcap.csv"), ("xlsx", "registry.xlsx")])
@pytest.mark.parametrize("registry", sorted(REGISTRIES))
def test_long_through_the_format_gives_the_same_long_registry(fmt: str, name: str, registry: str,
                                                               tmp_path: Path) -> None:
    records = REGISTRIES[registry]()
    write_long(records, tmp_path / "in")
    write_long(records, tmp_path / "in.zip")
    a, b = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    runner = CliRunner()
    steps = [["import", "--format", "long", str(tmp_path / "in"), "--db", a],
             ["export", "--format", fmt, "--db", a, "--out", str(tmp_path / name)],
             ["import", "--format", fmt, str(tmp_path / name), "--db", b],
             ["export", "--format", "long", "--db", b, "--out", str(tmp_path / "out.zip")]]
    outputs = []
    for args in steps:
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, (args, result.output)
        outputs.append(result.output)
    assert f"imported {len(records)} new patient(s)" in outputs[2]
    assert sum(len(r.rows(spec.table)) for r in records for spec in EPISODE_TABLES) > 10 * len(records) / 2
    assert (tmp_path / "out.zip").read_bytes() == (tmp_path / "in.zip").read_bytes()
