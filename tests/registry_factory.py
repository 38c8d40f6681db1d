"""Random but valid registries (synthetic) for testing the protocol engine against independent computations.

Times are drawn in whole days with deliberate ties; pathology values are sometimes all missing so
proportions exercise the ``missing`` rule; some patients fall outside the accrual window.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

from oncosurg.schema import COLUMNS

GRADES = ("none", "I", "II", "IIIa", "IIIb", "IVa", "IVb")


def random_registry(n: int, seed: int) -> list[dict[str, str]]:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, str]] = []
    base = dt.date(2003, 10, 1)
    for i in range(n):
        start = base + dt.timedelta(days=int(rng.integers(0, 1000)))
        referral = "referred" if rng.random() < 0.2 else "in_house"
        row = {c: "" for c in COLUMNS}
        row |= {
            "patient_id": f"R{seed}-{i:05d}", "centre": "Test centre (synthetic)", "referral": referral,
            "sex": str(rng.choice(["F", "M", ""])), "age_at_cetuximab": f"{rng.uniform(30, 85):.1f}",
            "prior_chemo_lines": str(int(rng.integers(1, 4))), "cetuximab_start": start.isoformat(),
            "cetuximab_partner": str(rng.choice(["irinotecan", "oxaliplatin", "both", "none", "other"])),
            "cetuximab_cycles": str(int(rng.integers(0, 14))) if rng.random() < 0.9 else "",
            "best_response": str(rng.choice(["CR", "PR", "SD", "PD", "NE", ""])),
        }
        # follow-up in days, coarse (multiples of 7) so that ties are frequent
        span = int(rng.integers(2, 120)) * 7
        operated = rng.random() < (0.8 if referral == "referred" else 0.15)
        dies = rng.random() < 0.5
        surgery = None
        if operated:
            surgery = start + dt.timedelta(days=int(rng.integers(30, 200)))
            row["surgery_date"] = surgery.isoformat()
            kind = "hepatectomy" if rng.random() < 0.85 else "exploration_only"
            row["surgery_type"] = kind
            row["clavien_dindo_max"] = str(rng.choice(GRADES))
            span = max(span, (surgery - start).days + int(rng.integers(0, 100)) * 7)
            if kind == "hepatectomy":
                segs = sorted(rng.choice(np.arange(1, 9), size=int(rng.integers(1, 6)), replace=False))
                row["resected_segments"] = ";".join(str(s) for s in segs)
                if rng.random() < 0.8:  # pathology recorded, partially
                    row["steatosis_pct"] = str(int(rng.integers(0, 70))) if rng.random() < 0.8 else ""
                    row["steatohepatitis"] = str(rng.choice(["yes", "no", "no", ""]))
                    row["sinusoidal_dilatation_grade"] = str(int(rng.integers(0, 4))) if rng.random() < 0.7 else ""
                    row["fibrosis_stage"] = str(int(rng.integers(0, 5))) if rng.random() < 0.7 else ""
                    row["nodular_regenerative_hyperplasia"] = str(rng.choice(["yes", "no", "no", "no"]))
                    row["tumour_regression_grade"] = str(int(rng.integers(1, 6))) if rng.random() < 0.8 else ""
        end = start + dt.timedelta(days=span)
        if surgery is not None and dies and rng.random() < 0.15:
            end = surgery + dt.timedelta(days=int(rng.integers(1, 90)))  # early postoperative deaths
        row["last_contact_date"] = end.isoformat()
        if dies:
            row["death_date"] = end.isoformat()
            if surgery is not None and (end - surgery).days <= 60:
                row["clavien_dindo_max"] = "V"  # a postoperative death is grade V (rule X412)
        if rng.random() < 0.6:
            lo = start if surgery is None else surgery
            gap = (end - lo).days
            if gap > 0:
                row["progression_date"] = (lo + dt.timedelta(days=int(rng.integers(0, gap + 1)))).isoformat()
        rows.append(row)
    return rows


def write_registry(rows: list[dict[str, str]], path: Path) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
