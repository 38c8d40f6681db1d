"""De-identified registry records: keyed pseudonyms, one date shift per patient, coarsened quasi-identifiers.

* ``patient_id`` → ``DI-`` + the first 20 hex digits of HMAC-SHA256(key, centre ␟ patient_id): the
  same key gives the same pseudonym in every export (records can be linked by whoever holds the key
  and the original ids, by no one else);
* ``centre`` → ``centre-`` + 8 hex digits of an HMAC of its name (multi-centre comparisons keep
  working, names are gone);
* every date of a patient moves by the same number of days, drawn from the keyed HMAC in
  [-``max_shift_days``, +``max_shift_days``], so every interval (OS, PFS, follow-up, postoperative
  deaths) is unchanged; the draw excludes 0 and every interval between two of the patient's dates (no
  shifted date equals one of its original dates), and is restricted so that no date lands in the
  future and the protocol's anchor date (the index date of a format-2 protocol, computed by the
  protocol engine; ``cetuximab_start`` for format 1) stays on the same side of its accrual window
  (the cohort is unchanged);
* ``age_at_cetuximab`` → whole years, 90 and above reported as 90 (HIPAA Safe Harbor).

Everything else is clinical data the protocol needs and is kept.  :func:`deidentify` also returns a
manifest of what was removed or changed (no secret and no original value in it).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oncosurg.schema import FIELDS, Kind

DATE_COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS if f.kind is Kind.DATE)
AGE_CAP = 90
MIN_KEY_BYTES = 16


class KeyFileError(ValueError):
    """The key file is missing, unreadable or too short."""


def load_key(path: str | Path) -> bytes:
    """The secret key: the bytes of the key file, surrounding whitespace removed (at least 16 bytes)."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key file ({exc.strerror})") from None
    if len(key) < MIN_KEY_BYTES:
        raise KeyFileError(f"{path}: the key has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed "
                        "(e.g. `python -c 'import secrets; print(secrets.token_hex(32))' > KEY`)")
    return key


@dataclass(frozen=True, slots=True)
class Window:
    """An accrual window the date shift must respect (either end may be open)."""

    column: str = "cetuximab_start"
    start: dt.date | None = None
    end: dt.date | None = None


def _mac(key: bytes, *parts: str) -> bytes:
    return hmac.new(key, "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()


def pseudonym(key: bytes, centre: str, patient_id: str) -> str:
    """The keyed pseudonym of a patient."""
    return "DI-" + _mac(key, "patient", centre, patient_id).hex()[:20]


def centre_pseudonym(key: bytes, centre: str) -> str:
    return "centre-" + _mac(key, "centre", centre).hex()[:8]


def _allowed_shifts(record: Mapping[str, Any], max_shift: int, today: dt.date, window: Window | None
                    ) -> tuple[int, int]:
    lo, hi = -max_shift, max_shift
    dates = [record[c] for c in DATE_COLUMNS if record.get(c) is not None]
    if dates:
        hi = min(hi, (today - max(dates)).days)
    anchor = record.get(window.column) if window else None
    if window is not None and isinstance(anchor, dt.date):
        inside_start = window.start is None or anchor >= window.start
        inside_end = window.end is None or anchor <= window.end
        if inside_start and inside_end:
            if window.start is not None:
                lo = max(lo, (window.start - anchor).days)
            if window.end is not None:
                hi = min(hi, (window.end - anchor).days)
        elif not inside_start and window.start is not None:
            hi = min(hi, (window.start - anchor).days - 1)
        elif window.end is not None:
            lo = max(lo, (window.end - anchor).days + 1)
    return lo, hi


def date_shift(key: bytes, record: Mapping[str, Any], *, max_shift_days: int = 365, today: dt.date | None = None,
               window: Window | None = None) -> int:
    """The patient's shift in days: keyed, within the allowed range, and such that no shifted date
    equals any of the patient's original dates (so 0 and every interval between two of them are excluded)."""
    lo, hi = _allowed_shifts(record, max_shift_days, today or dt.date.today(), window)
    dates = [record[c] for c in DATE_COLUMNS if record.get(c) is not None]
    forbidden = {(b - a).days for a in dates for b in dates} | {0}
    candidates = [d for d in range(lo, hi + 1) if d not in forbidden]
    if not candidates:
        raise ValueError(f"no date shift keeps patient {record.get('patient_id')!r} in its accrual window and "
                         "before today; check its dates")
    draw = int.from_bytes(_mac(key, "shift", str(record.get("centre") or ""), str(record["patient_id"])), "big")
    return candidates[draw % len(candidates)]


def _age(value: Any) -> tuple[Any, bool]:
    if value is None:
        return None, False
    years = math.floor(float(value))
    return (AGE_CAP, True) if years >= AGE_CAP else (years, False)


def deidentify(
    records: Iterable[Mapping[str, Any]],
    key: bytes,
    *,
    max_shift_days: int = 365,
    window: Window | None = None,
    today: dt.date | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The de-identified records and the manifest of what was removed or changed."""
    today = today or dt.date.today()
    out: list[dict[str, Any]] = []
    capped = 0
    for record in records:
        centre = str(record.get("centre") or "")
        shift = dt.timedelta(days=date_shift(key, record, max_shift_days=max_shift_days, today=today, window=window))
        new = dict(record)
        new["patient_id"] = pseudonym(key, centre, str(record["patient_id"]))
        new["centre"] = centre_pseudonym(key, centre)
        for column in DATE_COLUMNS:
            if new.get(column) is not None:
                new[column] = new[column] + shift
        new["age_at_cetuximab"], was_capped = _age(record.get("age_at_cetuximab"))
        capped += was_capped
        out.append(new)
    manifest = {
        "records": len(out),
        "method": "oncosurg de-identification (keyed HMAC-SHA256 pseudonyms, per-patient date shift)",
        "key_fingerprint": hashlib.sha256(_mac(key, "fingerprint")).hexdigest()[:16],
        "removed": [
            {"column": "patient_id", "action": "replaced",
             "detail": "keyed HMAC-SHA256 pseudonym 'DI-' + 20 hex digits; the key re-derives it, nothing else does"},
            {"column": "centre", "action": "replaced", "detail": "keyed HMAC pseudonym 'centre-' + 8 hex digits"},
            {"column": "age_at_cetuximab", "action": "coarsened",
             "detail": f"whole years; {AGE_CAP} and above reported as {AGE_CAP}", "capped": capped},
            *({"column": c, "action": "shifted",
               "detail": f"one keyed shift per patient, 1 to {max_shift_days} days either way; intervals preserved"}
              for c in DATE_COLUMNS),
        ],
        "kept": [f.name for f in FIELDS if f.name not in ("patient_id", "centre", "age_at_cetuximab")
                 and f.name not in DATE_COLUMNS],
        "accrual_window": None if window is None else {
            "column": window.column, "start": window.start.isoformat() if window.start else None,
            "end": window.end.isoformat() if window.end else None,
            "note": "shifts keep each patient on the same side of the window, so the cohort is unchanged"},
        "not_in_the_export": "original identifiers, original dates, the key, and the mapping between them",
    }
    return out, manifest
