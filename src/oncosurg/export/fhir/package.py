"""oncosurg's FHIR definitions as an NPM-style FHIR package shipped with oncosurg (``definitions/package``).

The package holds a ``CodeSystem`` for each of oncosurg's code systems and a ``StructureDefinition``
(differential) for each of its extensions, all under the canonical base
:data:`~oncosurg.export.fhir.terminology.CANONICAL`, generated from the episode model by
:func:`definition_resources`.  A FHIR server or validator loads the folder as a package to resolve
oncosurg's canonical URLs offline.  Regenerate after a vocabulary change with
``python -m oncosurg.export.fhir.package`` (a test keeps the shipped files current).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from oncosurg.export.fhir import terminology as tx

#: Where the package is shipped (inside the Python package, so an installed oncosurg has it).
PACKAGE_DIR = Path(__file__).with_name("definitions") / "package"
PACKAGE_NAME = "oncosurg.fhir.definitions"


def extension_definitions() -> list[dict[str, Any]]:
    """One ``StructureDefinition`` (differential) per oncosurg extension."""
    out = []
    for name, (kind, meaning, contexts) in tx.EXTENSIONS.items():
        url = tx.extension(name)
        out.append({
            "resourceType": "StructureDefinition", "id": f"oncosurg-{name}", "url": url,
            "version": tx.DEFINITIONS_VERSION, "name": "Oncosurg" + "".join(p.title() for p in name.split("-")),
            "status": "active", "publisher": "oncosurg", "description": meaning, "fhirVersion": "4.0.1",
            "kind": "complex-type", "abstract": False,
            "context": [{"type": "element", "expression": c} for c in contexts],
            "type": "Extension", "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Extension",
            "derivation": "constraint",
            "differential": {"element": [
                {"id": "Extension", "path": "Extension", "short": meaning.split(" (")[0].rstrip("."),
                 "definition": meaning},
                {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
                {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
                {"id": "Extension.value[x]", "path": "Extension.value[x]", "min": 1, "type": [{"code": kind}]},
            ]},
        })
    return out


def definition_resources() -> list[dict[str, Any]]:
    """Every resource of the package: the code systems, then the extensions."""
    return [*tx.code_system_resources(), *extension_definitions()]


def package_files() -> dict[str, str]:
    """File name → JSON text of the package folder (``package.json`` and one file per resource)."""
    files = {"package.json": {
        "name": PACKAGE_NAME, "version": tx.DEFINITIONS_VERSION, "canonical": tx.CANONICAL,
        "title": "oncosurg FHIR definitions", "description": "Code systems and extensions of oncosurg's FHIR R4 "
        "export (mCODE STU4 profiles)", "fhirVersions": ["4.0.1"], "type": "Conformance",
        "dependencies": {"hl7.fhir.r4.core": "4.0.1"}, "author": "oncosurg", "license": "MIT"}}
    for resource in definition_resources():
        files[f"{resource['resourceType']}-{resource['id']}.json"] = resource
    return {name: json.dumps(body, indent=2, ensure_ascii=False) + "\n" for name, body in files.items()}


def write_package(folder: Path = PACKAGE_DIR) -> list[Path]:
    """Write the package folder (replacing its JSON files); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    written = []
    for name, text in package_files().items():
        (folder / name).write_text(text, encoding="utf-8")
        written.append(folder / name)
    return written


if __name__ == "__main__":
    print("\n".join(str(p) for p in write_package(Path(sys.argv[1]) if len(sys.argv) > 1 else PACKAGE_DIR)))
