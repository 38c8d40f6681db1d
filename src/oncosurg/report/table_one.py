"""Table 1: baseline characteristics by group, from value counts (never from patient rows).

Conventions (as R ``tableone``'s ``CreateTableOne`` + ``print(nonnormal = ..., smd = TRUE)``):

* categorical rows: n (%), the percentage of patients *with a recorded value* in the group; missing
  values are counted in their own column, never in a denominator (tableone#114);
* numeric rows: median (IQR), quartiles as R ``quantile(type = 7)``;
* tests: chi-square (``chisq.test``, Yates' correction for 2 x 2 tables) unless an expected count is
  below 5, then Fisher's exact test (``fisher.test``); Wilcoxon rank-sum (``wilcox.test(exact =
  FALSE, correct = TRUE)``) for two groups and Kruskal-Wallis (``kruskal.test``) for more;
* standardised mean differences: difference of means over the pooled SD for numeric rows, Yang &
  Dalton's multinomial SMD for categorical rows (the binary formula for yes/no rows); with more than
  two groups, the largest pairwise SMD.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from oncosurg.report.text import code_label, fmt_p

#: Fisher's exact test on tables larger than 2 x 2 enumerates tables: above this many patients the
#: chi-square test is used (with a note) even when an expected count is below 5.
FISHER_MAX_N = 2000


@dataclass(frozen=True, slots=True)
class Variable:
    name: str
    label: str
    kind: str  # numeric | binary | categorical
    levels: Sequence[Any] | None = None
    unit: str = ""
    notes: list[str] = field(default_factory=list)


def _pct(k: int, n: int) -> str:
    if not n:
        return "—"
    return f"{math.floor(100 * k / n + 0.5):.0f}"


#: The cell of a group in which no patient has a value (never "0 (—)" or an empty median).
NOT_RECORDED = "not recorded"


def _unrecorded(group_n: int) -> str:
    return NOT_RECORDED if group_n else "—"


def _missing_text(missing: Sequence[int] | None) -> str:
    """The Missing column: the total, then each group's count (``7 (2 / 5)``); empty when none is missing."""
    if not missing or not sum(missing):
        return ""
    total = str(sum(missing))
    return total if len(missing) == 1 else f"{total} ({' / '.join(str(m) for m in missing)})"


def _fmt_value(x: float, integer: bool) -> str:
    if integer and float(x).is_integer():
        return f"{x:.0f}"
    return f"{x:.1f}"


def smd_numeric(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.size < 2 or b.size < 2:
        return None
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    if pooled == 0:
        return 0.0 if a.mean() == b.mean() else None
    return abs(float(a.mean() - b.mean())) / pooled


def smd_categorical(p: np.ndarray, q: np.ndarray) -> float | None:
    """Yang & Dalton (2012) SMD of two level-probability vectors (first level dropped)."""
    if p.size < 2:
        return None
    t, c = p[1:], q[1:]

    def cov(v: np.ndarray) -> np.ndarray:
        return np.diag(v) - np.outer(v, v)

    s = (cov(t) + cov(c)) / 2
    d = t - c
    if not np.any(d):
        return 0.0
    value = float(d @ np.linalg.pinv(s) @ d)
    return math.sqrt(value) if value >= 0 else None


def _max_pairwise(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None and math.isfinite(v)]
    return max(known) if known else None


def categorical_test(table: np.ndarray) -> tuple[float | None, str]:
    """(p, test name) for a levels x groups contingency table."""
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return None, ""
    total = table.sum()
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    if (expected < 5).any() and (table.shape == (2, 2) or total <= FISHER_MAX_N):
        res = stats.fisher_exact(table.astype(np.int64))
        return float(res.pvalue), "Fisher"
    chi2 = stats.chi2_contingency(table, correction=True)
    return float(chi2.pvalue), "chi-square"


def numeric_test(samples: list[np.ndarray]) -> tuple[float | None, str]:
    samples = [s for s in samples if s.size]
    if len(samples) < 2:
        return None, ""
    if np.ptp(np.concatenate(samples)) == 0:
        return 1.0, "Wilcoxon" if len(samples) == 2 else "Kruskal-Wallis"
    if len(samples) == 2:
        res = stats.mannwhitneyu(samples[0], samples[1], use_continuity=True, method="asymptotic")
        return float(res.pvalue), "Wilcoxon"
    return float(stats.kruskal(*samples).pvalue), "Kruskal-Wallis"


def table_one(variables: Sequence[Variable], counts: Mapping[str, Mapping[Any, Mapping[Any, int]]],
              groups: Sequence[tuple[Any, str, int]]) -> dict[str, Any]:
    """Rows of Table 1.

    ``counts[variable][group][value]`` is the number of patients (``value`` None = missing);
    ``groups`` lists ``(key, label, n)`` in column order.
    """
    keys = [g[0] for g in groups]
    sizes = [int(g[2]) for g in groups]
    rows: list[dict[str, Any]] = [{"variable": "n", "label": "Patients, n", "level": None, "kind": "n",
                                   "cells": [str(g[2]) for g in groups], "missing": None, "smd": None, "p": None,
                                   "test": ""}]
    notes: list[str] = []
    tests_used: set[str] = set()
    fisher_skipped = False
    for var in variables:
        per_group = counts.get(var.name, {})
        missing = [int(per_group.get(k, {}).get(None, 0)) for k in keys]
        if var.kind == "numeric":
            samples = []
            for k in keys:
                vc = {v: n for v, n in per_group.get(k, {}).items() if v is not None}
                vals = np.asarray(list(vc), dtype=float)
                samples.append(np.repeat(vals, np.asarray(list(vc.values()), dtype=np.int64)))
            integer = all(float(v).is_integer() for s in samples for v in np.unique(s))
            quartiles = [np.quantile(s, [0.25, 0.5, 0.75]) if s.size else None for s in samples]
            # one number of decimals per row: whole numbers only when every group's quartiles are whole
            whole = integer and all(float(x).is_integer() for q in quartiles if q is not None for x in q)
            cells = [_unrecorded(sizes[j]) if q is None else
                     f"{_fmt_value(q[1], whole)} ({_fmt_value(q[0], whole)}–{_fmt_value(q[2], whole)})"
                     for j, q in enumerate(quartiles)]
            smd = _max_pairwise([smd_numeric(a, b) for i, a in enumerate(samples) for b in samples[i + 1:]]) \
                if len(samples) > 1 else None
            p, test = numeric_test(samples) if len(samples) > 1 else (None, "")
            tests_used.add(test)
            label = f"{var.label}, median (IQR)"
            rows.append({"variable": var.name, "label": label, "level": None, "kind": "numeric", "cells": cells,
                         "missing": missing, "smd": smd, "p": p, "test": test})
            continue
        if var.kind == "binary":
            levels: list[Any] = [True, False]
        else:
            seen = {v for k in keys for v in per_group.get(k, {}) if v is not None}
            levels = [lv for lv in (var.levels or []) if lv in seen] + sorted(
                (v for v in seen if v not in (var.levels or [])), key=str)
        table = np.asarray([[int(per_group.get(k, {}).get(lv, 0)) for k in keys] for lv in levels], dtype=float)
        if table.size == 0:
            table = np.zeros((0, len(keys)))
        known = table.sum(axis=0)
        probs = [table[:, j] / known[j] if known[j] else None for j in range(len(keys))]
        smds = [smd_categorical(probs[i], probs[j]) for i in range(len(keys)) for j in range(i + 1, len(keys))
                if probs[i] is not None and probs[j] is not None]
        smd = _max_pairwise(smds) if len(keys) > 1 else None
        p, test = categorical_test(table) if len(keys) > 1 and table.size else (None, "")
        if test == "chi-square" and table.size and (np.outer(table.sum(axis=1), table.sum(axis=0))
                                                    / max(table.sum(), 1) < 5).any():
            fisher_skipped = True
        tests_used.add(test)
        if var.kind == "binary":
            cells = [f"{int(table[0, j])} ({_pct(int(table[0, j]), int(known[j]))})" if known[j]
                     else _unrecorded(sizes[j]) for j in range(len(keys))]
            rows.append({"variable": var.name, "label": f"{var.label}, n (%)", "level": None, "kind": "binary",
                         "cells": cells, "missing": missing, "smd": smd, "p": p, "test": test})
            continue
        rows.append({"variable": var.name, "label": f"{var.label}, n (%)", "level": None, "kind": "categorical",
                     "cells": ["" if known[j] else _unrecorded(sizes[j]) for j in range(len(keys))],
                     "missing": missing, "smd": smd, "p": p, "test": test})
        for i, lv in enumerate(levels):
            cells = [f"{int(table[i, j])} ({_pct(int(table[i, j]), int(known[j]))})" if known[j] else ""
                     for j in range(len(keys))]
            rows.append({"variable": var.name, "label": code_label(lv), "level": str(lv), "kind": "level",
                         "cells": cells, "missing": None, "smd": None, "p": None, "test": ""})
    for row in rows:
        row["missing_total"] = None if row["missing"] is None else sum(row["missing"])
        row["missing_text"] = _missing_text(row["missing"])
        row["smd_text"] = "" if row["smd"] is None else f"{row['smd']:.2f}"
        row["p_text"] = "" if row["p"] is None else fmt_p(row["p"])
    notes.append("Percentages are of patients with a recorded value; missing values are counted separately"
                 + (" (Missing: the total, then each group in column order)." if len(keys) > 1 else ".")
                 + (" 'not recorded': no patient of the group has a value." if any(
                     c == NOT_RECORDED for r in rows for c in r["cells"]) else ""))
    if len(keys) > 1:
        used = sorted(t for t in tests_used if t)
        names = {"chi-square": "chi-square test (Yates' correction for 2 × 2 tables, as R chisq.test)",
                 "Fisher": "Fisher's exact test when an expected count is below 5 (R fisher.test)",
                 "Wilcoxon": "Wilcoxon rank-sum test (R wilcox.test, exact = FALSE, correct = TRUE)",
                 "Kruskal-Wallis": "Kruskal-Wallis test (R kruskal.test)"}
        if used:
            notes.append("Tests: " + "; ".join(names[t] for t in used) + ".")
        notes.append("SMD: standardised mean difference (numeric: difference of means / pooled SD; categorical: "
                     "Yang & Dalton)" + ("; the largest pairwise SMD." if len(keys) > 2 else "."))
    if fisher_skipped:
        notes.append(f"Some tables with expected counts below 5 use the chi-square test because Fisher's exact "
                     f"test on more than {FISHER_MAX_N} patients and more than 2 × 2 cells is too costly.")
    return {"groups": [{"key": str(k), "label": lbl, "n": n} for k, lbl, n in groups], "rows": rows,
            "notes": notes}
