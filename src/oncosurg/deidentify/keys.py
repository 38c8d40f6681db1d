"""De-identification keys: made by ``oncosurg key new``, checked before every keyed release.

A key file holds one line ``oncosurg-key-v1:<hex>`` with at least :data:`MIN_KEY_BYTES` (32) random
bytes from the operating system's generator (:func:`secrets.token_bytes`); bare hex and raw bytes are
read too.  Refused: a passphrase, a short key, a hex-encoded text (every byte printable) or a key with
too few distinct bytes.  The checks cannot prove randomness (a key derived from a guessable word by a hash passes);
what protects the key is that nothing released can test a guess cheaply: no fingerprint of the key is
written, and pseudonyms are HMAC-SHA256 of the key (docs/interop.md).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PREFIX = "oncosurg-key-v1:"
MIN_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 4096
_PRINTABLE = range(0x20, 0x7F)


class KeyFileError(ValueError):
    """The key file is missing, unreadable, malformed or not a random key."""


def weakness(key: bytes) -> str | None:
    """Why ``key`` is not an acceptable random key, or ``None``."""
    if len(key) < MIN_KEY_BYTES:
        return f"the key has {len(key)} bytes; at least {MIN_KEY_BYTES} random bytes are needed"
    if all(b in _PRINTABLE for b in key):
        # 32 random bytes are all printable ASCII with probability (95/256)**32 ≈ 2e-14: this is text.
        return "the key is printable text (a passphrase or an encoded word), not random bytes"
    # 32 random bytes have about 30 distinct values; fewer than half of the length (or 128) means a pattern.
    if len(set(key)) < min(len(key) // 2, 128):
        return f"the key has only {len(set(key))} distinct byte values: it repeats a pattern"
    return None


def new_key(nbytes: int = MIN_KEY_BYTES) -> bytes:
    """Fresh random key bytes (``secrets.token_bytes``), redrawn in the ~1e-10 case the checks refuse it."""
    while True:
        key = secrets.token_bytes(max(nbytes, MIN_KEY_BYTES))
        if weakness(key) is None:
            return key


def key_text(key: bytes) -> str:
    """The key file's content."""
    return f"{PREFIX}{key.hex()}\n"


def write_new_key(path: str | Path, nbytes: int = MIN_KEY_BYTES) -> None:
    """Create ``path`` (owner read/write only) holding a new key; never overwrites a file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key_text(new_key(nbytes)))


def parse_key(text: str, source: str = "the key") -> bytes:
    """The key bytes of a key file's text, checked (raises :class:`KeyFileError` naming the fix).

    Besides ``oncosurg-key-v1:<hex>`` a bare hex string is read (``secrets.token_hex(32)``, which the
    documentation suggested before ``oncosurg key new``): it is held to the same checks.
    """
    fix = "make one with `oncosurg key new --out K` and keep it apart from the exports"
    body = text.strip()
    digits = body[len(PREFIX):] if body.startswith(PREFIX) else body
    try:
        key = bytes.fromhex(digits)
    except ValueError:
        if body.startswith(PREFIX):
            raise KeyFileError(f"{source}: the key is not hexadecimal after '{PREFIX}'; {fix}") from None
        raise KeyFileError(f"{source}: not an oncosurg key (a passphrase or other text; expected one line "
                           f"'{PREFIX}<hex digits>'); {fix}") from None
    problem = weakness(key)
    if problem is not None:
        raise KeyFileError(f"{source}: {problem}; {fix}")
    return key


def load_key(path: str | Path) -> bytes:
    """The checked key of the key file at ``path`` (its text, or raw random bytes)."""
    try:
        with Path(path).open("rb") as handle:
            raw = handle.read(MAX_KEY_FILE_BYTES + 1)  # never more: a wrong path may be /dev/zero or a large file
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: more than {MAX_KEY_FILE_BYTES} bytes, not a key file; make one with "
                           "`oncosurg key new --out K`")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:  # raw bytes (e.g. `head -c 32 /dev/urandom`): checked as they are
        problem = weakness(raw)
        if problem is not None:
            raise KeyFileError(f"{path}: {problem}; make one with `oncosurg key new --out K`") from None
        return raw
    return parse_key(text, str(path))
