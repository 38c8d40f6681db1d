"""Helpers of the FHIR tests: records ↔ bundles in memory, canonical records, bundle surgery."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from oncosurg.export.fhir import patient_bundle
from oncosurg.export.fhir import terminology as tx
from oncosurg.ingest.fhir import FhirBundles, read_bundle
from oncosurg.pathway.flat import PatientRecord
from oncosurg.pathway.model import TABLES, Table


def canonical(record: PatientRecord) -> tuple[Any, ...]:
    """Centre, patient and episodes with every field present and rows ordered by key (``carried`` and
    ``where`` left out): two records are the same patient when their canonical forms are equal."""
    patient = {f.name: record.patient.get(f.name) for f in TABLES[0].fields}
    episodes = {}
    for spec in TABLES[1:]:
        rows = [{f.name: row.get(f.name) for f in spec.fields} for row in record.rows(spec.table)]
        if rows:
            episodes[spec.table] = sorted(rows, key=lambda r, k=spec.key: tuple(r[c] for c in k))
    return record.centre, patient, episodes


def through_fhir(records: list[PatientRecord], **options: Any) -> tuple[list[PatientRecord], FhirBundles]:
    """Records → bundles (JSON text) → records, without touching the disk."""
    out = FhirBundles(source="memory")
    back = []
    for i, record in enumerate(records, start=1):
        data = json.dumps(patient_bundle(record)).encode()
        got = read_bundle(data, f"{i:05d}.json", out, **options)
        assert got is not None, [issue.format() for issue in out.issues[:5]]
        back.append(got)
    return back, out


def read_one(bundle: dict[str, Any], name: str = "p.json", **options: Any) -> tuple[PatientRecord | None, FhirBundles]:
    out = FhirBundles(source="memory")
    return read_bundle(json.dumps(bundle).encode(), name, out, **options), out


def resources(bundle: dict[str, Any], kind: str, element: str | None = None) -> list[dict[str, Any]]:
    """The resources of a type (and, optionally, of one of oncosurg's element codes)."""
    found = [e["resource"] for e in bundle["entry"] if "resource" in e and e["resource"]["resourceType"] == kind]
    if element is None:
        return found
    code = {"system": tx.code_system("element"), "code": element}
    return [r for r in found if any(c.get("system") == code["system"] and c.get("code") == code["code"]
                                    for c in (r.get("code") or {}).get("coding", []))]


def without(bundle: dict[str, Any], *kinds: str) -> dict[str, Any]:
    """A copy of the bundle without the resources of some types."""
    out = copy.deepcopy(bundle)
    out["entry"] = [e for e in out["entry"] if e.get("resource", {}).get("resourceType") not in kinds]
    return out


def write(folder: Path, name: str, content: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def episode_counts(record: PatientRecord) -> dict[Table, int]:
    return {t: len(record.rows(t)) for t in Table if t is not Table.PATIENT}
