"""Shared helpers of the interoperability tests: a hypothesis strategy of valid registries that fills
every registry column (with awkward values: long floats, Unicode and quotes in centre names, grade
V deaths, empty optionals), and CSV ↔ typed-record helpers.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from hypothesis import strategies as st

from oncosurg.export import record_texts
from oncosurg.ingest.csv import parse_registry_csv
from oncosurg.schema import CLAVIEN_DINDO, COLUMNS, PARTNERS, RESPONSES, SURGERY_TYPES

CENTRES = ("", "Paul Brousse", 'Hôpital "Nord", Lyon', "Centre 2; test", "東京", "Zürich  (two spaces)")
YES_NO_EMPTY = ("yes", "no", "")


def registry_csv(rows: list[dict[str, str]]) -> bytes:
    """Registry CSV bytes of text rows (every column, registry order)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
    return out.getvalue().encode("utf-8")


def typed_records(rows: list[dict[str, str]], centre: str = "main") -> list[dict[str, Any]]:
    """The validated, typed records of text rows (fails loudly when the rows are invalid)."""
    parsed = parse_registry_csv(registry_csv(rows), source="generated.csv", centre=centre)
    assert parsed.ok, [i.format() for i in parsed.issues[:5]]
    return [r.values for r in parsed.records]


def csv_text(records: list[dict[str, Any]]) -> str:
    """Registry CSV text of typed records (what `oncosurg export` writes)."""
    return registry_csv([record_texts(r) for r in records]).decode("utf-8")


def _opt(draw: st.DrawFn, values: st.SearchStrategy[str]) -> str:
    return draw(st.one_of(st.just(""), values))


def _number(lo: float, hi: float) -> st.SearchStrategy[str]:
    return st.one_of(st.integers(int(lo), int(hi)).map(str),
                     st.floats(lo, hi, allow_nan=False, allow_infinity=False).map(repr))


@st.composite
def registry_row(draw: st.DrawFn, index: int) -> dict[str, str]:
    """One valid registry row (text cells) with every column potentially filled."""
    start = draw(st.dates(dt.date(2001, 1, 1), dt.date(2015, 12, 31)))
    contact = start + dt.timedelta(days=draw(st.integers(0, 2500)))
    tag = draw(st.from_regex(r"[A-Za-z0-9_.]{0,12}", fullmatch=True))
    row = dict.fromkeys(COLUMNS, "")
    row |= {
        "patient_id": f"P{tag}-{index}", "centre": draw(st.sampled_from(CENTRES)),
        "referral": draw(st.sampled_from(("in_house", "referred"))),
        "sex": _opt(draw, st.sampled_from(("F", "M"))), "age_at_cetuximab": _opt(draw, _number(18, 100)),
        "primary_site": _opt(draw, st.sampled_from(("colon", "rectum"))),
        "primary_side": _opt(draw, st.sampled_from(("left", "right"))),
        "ras_status": _opt(draw, st.sampled_from(("wild_type", "mutant", "not_tested"))),
        "liver_mets_count": _opt(draw, st.integers(1, 60).map(str)),
        "largest_met_mm": _opt(draw, _number(1, 250)),
        "bilobar": draw(st.sampled_from(YES_NO_EMPTY)), "extrahepatic_disease": draw(st.sampled_from(YES_NO_EMPTY)),
        "prior_chemo_lines": str(draw(st.integers(1, 6))), "cetuximab_start": start.isoformat(),
        "cetuximab_partner": draw(st.sampled_from(PARTNERS)),
        "cetuximab_cycles": _opt(draw, st.integers(0, 40).map(str)),
        "best_response": _opt(draw, st.sampled_from(RESPONSES)), "last_contact_date": contact.isoformat(),
    }
    dead = draw(st.booleans())
    if draw(st.booleans()):
        surgery = start + dt.timedelta(days=draw(st.integers(0, (contact - start).days)))
        kind = draw(st.sampled_from(SURGERY_TYPES))
        grade = draw(st.sampled_from(CLAVIEN_DINDO))
        if grade == "V":  # death within the postoperative window
            contact = surgery + dt.timedelta(days=draw(st.integers(0, 60)))
            row["last_contact_date"] = contact.isoformat()
            dead = True
        segments = draw(st.lists(st.integers(1, 8), unique=True, max_size=6))
        row |= {"surgery_date": surgery.isoformat(), "surgery_type": kind, "clavien_dindo_max": grade,
                "resected_segments": ";".join(map(str, segments)) if kind == "hepatectomy" else "",
                "two_stage": draw(st.sampled_from(YES_NO_EMPTY)),
                "portal_vein_embolization": draw(st.sampled_from(YES_NO_EMPTY))}
        if kind == "hepatectomy":
            row |= {"margin": _opt(draw, st.sampled_from(("R0", "R1", "R2"))),
                    "steatosis_pct": _opt(draw, _number(0, 100)),
                    "steatohepatitis": draw(st.sampled_from(YES_NO_EMPTY)),
                    "sinusoidal_dilatation_grade": _opt(draw, st.integers(0, 3).map(str)),
                    "fibrosis_stage": _opt(draw, st.integers(0, 4).map(str)),
                    "nodular_regenerative_hyperplasia": draw(st.sampled_from(YES_NO_EMPTY)),
                    "tumour_regression_grade": _opt(draw, st.integers(1, 5).map(str))}
    if draw(st.booleans()):
        row["progression_date"] = (start + dt.timedelta(days=draw(st.integers(0, (contact - start).days)))).isoformat()
    if dead:
        row["death_date"] = contact.isoformat()
        if row["surgery_date"] and (contact - dt.date.fromisoformat(row["surgery_date"])).days <= 60:
            row["clavien_dindo_max"] = "V"  # a postoperative death is grade V (rule X412)
    return row


@st.composite
def registries(draw: st.DrawFn, max_size: int = 8) -> list[dict[str, str]]:
    """A list of valid registry rows with distinct patient ids."""
    n = draw(st.integers(1, max_size))
    return [draw(registry_row(i)) for i in range(n)]
