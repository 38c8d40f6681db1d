"""Registry records → HL7 FHIR R4 transaction Bundles, one per patient, profiled on mCODE STU4.

:func:`patient_bundle` writes one patient's record (:class:`~oncosurg.pathway.flat.PatientRecord`)
as a ``transaction`` Bundle: one resource per episode (:mod:`oncosurg.export.fhir.resources`),
each ``PUT Type/<id>`` with an id that depends only on the centre, the patient and the episode key,
so a re-export updates the same resources on a FHIR server.  A re-export that knows the previous
export (``previous``: the resources each patient had then, :func:`previous_resources`) also
``DELETE``\\ s every resource of the patient that the registry no longer holds — an episode removed,
an agent taken off a line, a value cleared — and writes a deletion bundle for each patient of the
previous export that is no longer registered, so the server keeps in step with the registry.

:func:`write_bundles` builds and validates every bundle before anything appears at the target:
the bundles are written into a temporary folder beside it, which is renamed into place only when
every bundle passed; otherwise :class:`FhirExportError` lists every problem (patient, resource,
element, value) and nothing is left behind.  Validation uses the ``fhir.resources`` R4B models
(identical to R4 for the resources written here), which include FHIR's 32-bit integer range.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from oncosurg.export.fhir import terminology as tx
from oncosurg.export.fhir.resources import PatientResources, resource_id
from oncosurg.pathway.flat import PatientRecord, from_flat
from oncosurg.rules import F_FHIR, Issue

__all__ = ["FhirExportError", "PatientResources", "bundle_filename", "patient_bundle", "previous_resources",
           "record_bundle", "resource_id", "validate_bundle", "write_bundles"]

#: Files of an export folder that are not bundles (the reader skips them).
SKIPPED = ("deidentification-manifest.json",)


class FhirExportError(Exception):
    """The registry holds values that are not valid FHIR; nothing was written."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__(f"{len(issues)} value(s) cannot be written as FHIR R4")
        self.issues = issues


def _entry(resource: dict[str, Any]) -> dict[str, Any]:
    kind, rid = resource["resourceType"], resource["id"]
    return {"fullUrl": f"urn:uuid:{rid}", "resource": resource, "request": {"method": "PUT", "url": f"{kind}/{rid}"}}


def _delete(url: str) -> dict[str, Any]:
    return {"request": {"method": "DELETE", "url": url}}


def patient_bundle(record: PatientRecord, previous: Iterable[str] = ()) -> dict[str, Any]:
    """One patient as a FHIR transaction Bundle (a JSON-ready dict).

    ``previous``: the ``Type/id`` of the resources the patient had in an earlier export; those the
    record no longer produces are deleted (``DELETE Type/id`` entries, processed before the PUTs).
    """
    resources = [r for _, r in PatientResources(record).build()]
    current = {f"{r['resourceType']}/{r['id']}" for r in resources}
    removed = sorted(set(previous) - current)
    return {"resourceType": "Bundle", "type": "transaction",
            "entry": [*(_delete(url) for url in removed), *(_entry(r) for r in resources)]}


def record_bundle(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A flat registry record (the 33 columns) as a Bundle: its episodes (:func:`from_flat`) written out."""
    return patient_bundle(from_flat(flat))


def validate_bundle(bundle: Mapping[str, Any]) -> Bundle:
    """Validate a bundle and every resource in it with the ``fhir.resources`` R4B models."""
    return Bundle.model_validate(bundle)


def element_path(loc: Iterable[Any]) -> str:
    """A FHIR element path of a validation error location (``component[0].valueInteger``)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def bundle_problems(bundle: Mapping[str, Any], who: str) -> list[Issue]:
    """Every validation error of one bundle, naming the patient, the resource and the element."""
    try:
        validate_bundle(bundle)
    except ValidationError as exc:
        entries = bundle.get("entry", [])
        issues = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            where = ".".join(loc)
            if len(loc) >= 3 and loc[0] == "entry" and loc[1].isdigit() and loc[2] == "resource":
                resource = entries[int(loc[1])].get("resource") or {}
                where = f"{resource.get('resourceType')}/{resource.get('id')}." + element_path(err["loc"][3:])
            shown = err.get("input")
            value = None if isinstance(shown, dict | list) else str(shown)
            issues.append(Issue(F_FHIR.code, f"patient {who}: {err['msg']} (FHIR R4)",
                                "correct the value in the registry (FHIR integers are 32-bit: -2147483648 to "
                                "2147483647), then export again", None, where, value))
        return issues
    return []


def bundle_filename(index: int, record: PatientRecord | Mapping[str, Any]) -> str:
    """``00001-PB-0001.json``: unique in the folder, sorted in export order."""
    patient_id = record.patient_id if isinstance(record, PatientRecord) else record["patient_id"]
    return f"{index:05d}-{patient_id}.json"


@dataclass(slots=True)
class PreviousPatient:
    """A patient of an earlier export: its centre, pseudonym and resources (``Type/id``)."""

    centre: str | None
    patient_id: str
    resources: set[str] = field(default_factory=set)


def previous_resources(folder: str | Path) -> dict[str, PreviousPatient]:
    """The resources each patient had in an earlier export (its bundles), by Patient resource id.

    Reads the ``PUT``/``POST`` entries of every bundle of ``folder``; bundles of earlier releases
    (flat layout, ``urn:oncosurg:`` systems) have the same Patient ids and are read alike.
    """
    out: dict[str, PreviousPatient] = {}
    for path in sorted(Path(folder).glob("*.json")):
        if path.name in SKIPPED:
            continue
        try:
            bundle = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable FHIR bundle ({exc})") from None
        entries = bundle.get("entry", []) if isinstance(bundle, dict) else []
        kept = [e for e in entries if isinstance(e, dict) and (e.get("request") or {}).get("method") in ("PUT", "POST")
                and isinstance(e.get("resource"), dict)]
        patient = next((e["resource"] for e in kept if e["resource"].get("resourceType") == "Patient"), None)
        if patient is None:
            continue
        centre, pid = _identity(patient)
        entry = out.setdefault(str(patient.get("id")), PreviousPatient(centre, pid))
        entry.resources |= {f"{e['resource'].get('resourceType')}/{e['resource'].get('id')}" for e in kept}
    return out


def _identity(patient: Mapping[str, Any]) -> tuple[str | None, str]:
    for ident in patient.get("identifier", []):
        system = str(ident.get("system", ""))
        centre = tx.centre_of_system(system)
        if centre is None and system.startswith(tx.LEGACY + ":NamingSystem:patient-id"):
            rest = system[len(tx.LEGACY + ":NamingSystem:patient-id"):]
            centre = unquote(rest[1:]) if rest.startswith(":") else ""
        if centre is not None:
            return centre, str(ident.get("value", ""))
    return None, str(patient.get("id", ""))


@dataclass(slots=True)
class Written:
    """What :func:`write_bundles` wrote."""

    bundles: int = 0
    patients: int = 0
    deleted_resources: int = 0
    deleted_patients: int = 0


def write_bundles(records: Iterable[PatientRecord], folder: str | Path, *,
                  previous: Mapping[str, PreviousPatient] | None = None, centre: str | None = None,
                  extra_files: Mapping[str, str] | None = None) -> Written:
    """Write one ``*.json`` transaction Bundle per patient into the new folder ``folder``, atomically.

    Every bundle is validated; on any problem nothing is written and :class:`FhirExportError` lists
    them all.  ``previous`` (from :func:`previous_resources`) adds the DELETE entries that keep a
    server in step; patients of the previous export that ``records`` no longer hold get a deletion
    bundle (``deleted-<n>-<patient_id>.json``) when they belong to the exported ``centre`` (every
    centre when ``None``).  ``extra_files`` (name → text) are written beside the bundles.
    """
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: exists and is not an empty directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    issues: list[Issue] = []
    written = Written()
    seen: set[str] = set()
    try:
        for index, record in enumerate(records, start=1):
            rid = resource_id(record.centre or "", record.patient_id, "patient")
            seen.add(rid)
            before = previous.get(rid) if previous else None
            bundle = patient_bundle(record, before.resources if before else ())
            who = f"{record.centre}/{record.patient_id}" if record.centre else record.patient_id
            problems = bundle_problems(bundle, who)
            issues += problems
            written.patients += 1
            written.deleted_resources += sum(1 for e in bundle["entry"] if e["request"]["method"] == "DELETE")
            if not issues:
                _write_json(temp / bundle_filename(index, record), bundle)
                written.bundles += 1
        gone = [(rid, p) for rid, p in (previous or {}).items()
                if rid not in seen and (centre is None or p.centre == centre)]
        for n, (_, patient) in enumerate(sorted(gone, key=lambda g: (g[1].centre or "", g[1].patient_id)), start=1):
            bundle = {"resourceType": "Bundle", "type": "transaction",
                      "entry": [_delete(url) for url in sorted(patient.resources)]}
            written.deleted_patients += 1
            written.deleted_resources += len(patient.resources)
            if not issues:
                _write_json(temp / f"deleted-{n:05d}-{patient.patient_id}.json", bundle)
                written.bundles += 1
        if issues:
            raise FhirExportError(issues)
        for name, text in (extra_files or {}).items():
            (temp / name).write_text(text, encoding="utf-8")
        if target.exists():
            target.rmdir()  # empty (checked above)
        os.replace(temp, target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return written


def _write_json(path: Path, bundle: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

