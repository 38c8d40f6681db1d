"""The cohort flow diagram (CONSORT style), drawn from the ``flow`` dictionary of the report data.

registry → (exclusions: no index event, outside the accrual window, eligibility) → evaluated →
in-house | referred, then — for a study whose time zero is a treatment before surgery — (not
operated, per arm) → operated → (explored only, ablation only) → hepatectomy.  Coordinates are in
inches on a fixed page-width canvas, so text sizes are true.
"""

from __future__ import annotations

import textwrap
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from oncosurg.report.plots import FIG_WIDTH, INK, MUTED, PALETTE, style

MAIN_FILL = "#eef4fa"
MAIN_EDGE = PALETTE[0]
SIDE_FILL = "#f6f6f4"
SIDE_EDGE = "#9aa1a9"


def _box(ax: Any, cx: float, cy: float, w: float, h: float, title: str, *details: str, side: bool = False,
         wrap: int = 40) -> tuple[float, float, float, float]:
    """A rounded box with a bold title and wrapped detail lines; returns (left, right, bottom, top)."""
    ax.add_patch(FancyBboxPatch((cx - w / 2, cy - h / 2), w, h, boxstyle="round,pad=0,rounding_size=0.06",
                                fc=SIDE_FILL if side else MAIN_FILL, ec=SIDE_EDGE if side else MAIN_EDGE,
                                lw=0.9 if side else 1.1))
    lines = [title] + [line for d in details if d for line in textwrap.wrap(d, wrap)]
    step = 0.175
    top = cy + step * (len(lines) - 1) / 2
    for i, line in enumerate(lines):
        ax.text(cx, top - i * step, line, ha="center", va="center", fontsize=8.3 if i else 8.8,
                fontweight="bold" if i == 0 else "normal", color=INK if i == 0 else "#2f3740")
    return cx - w / 2, cx + w / 2, cy - h / 2, cy + h / 2


def _arrow(ax: Any, xy0: tuple[float, float], xy1: tuple[float, float], *, color: str = MUTED) -> None:
    ax.add_patch(FancyArrowPatch(xy0, xy1, arrowstyle="-|>,head_length=5,head_width=3", mutation_scale=1,
                                 color=color, lw=1.0, shrinkA=0, shrinkB=0))


def _line(ax: Any, xs: list[float], ys: list[float]) -> None:
    ax.plot(xs, ys, color=MUTED, lw=1.0, solid_capstyle="butt")


def _int(n: int) -> str:
    """Thousands separated by a thin space (SI style): 100 000."""
    return f"{n:,}".replace(",", "\u2009")


def _n(n: int) -> str:
    return f"n = {_int(n)}"


def flow_figure(flow: dict[str, Any]) -> Figure:
    """The flow diagram for ``flow`` (:func:`oncosurg.report.data.cohort_flow`)."""
    pathway = flow.get("pathway", True)
    W, H = FIG_WIDTH, 6.9 if pathway else 3.6
    arms = flow["arms"][:2]
    col = {0: 1.5, 1: 5.1} if len(arms) > 1 else {0: W / 2 - 0.3}
    mid = (col[0] + col[len(arms) - 1]) / 2
    arm_text = {"in_house": ("In-house", flow.get("in_house_text", "treated at the centre from the start")),
                "referred": ("Referred", flow.get("referred_text", "referred by another hospital"))}
    with style():
        fig = plt.figure(figsize=(W, H))
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_xlim(0, W)
        ax.set_ylim(6.9 - H, 6.9)
        ax.axis("off")
        # registry and the exclusions of the cohort definition
        _, _, reg_bottom, _ = _box(ax, mid, 6.5, 2.6, 0.52, "Patients in the registry", _n(flow["registered"]))
        excluded = sum(e["n"] for e in flow["exclusions"])
        shown = [e for e in flow["exclusions"] if e["n"]] or flow["exclusions"][:1]
        if len(shown) == 1:
            reasons = shown[0]["reason"]
        else:
            reasons = "; ".join(f"{e['reason']}: {e['n']}" for e in shown) or "no exclusion criteria"
        ex_y = 5.78
        x0, _, _, _ = _box(ax, 5.25, ex_y, 2.45, 0.8, f"Excluded: {_n(excluded)}", reasons, side=True, wrap=36)
        _, _, ev_bottom, ev_top = _box(ax, mid, 5.05, 3.3, 0.52, flow.get("evaluated_label", "Evaluated"),
                                       _n(flow["evaluated"]))
        _arrow(ax, (mid, reg_bottom), (mid, ev_top))
        _line(ax, [mid, x0], [ex_y, ex_y])
        _arrow(ax, (x0 - 0.001, ex_y), (x0, ex_y))
        # the two arms
        arm_y, split_y = 3.95, 4.5
        _line(ax, [mid, mid], [ev_bottom, split_y])
        if len(arms) > 1:
            _line(ax, [col[0], col[1]], [split_y, split_y])
        for i, arm in enumerate(arms):
            title, detail = arm_text.get(arm["key"], (arm["label"], ""))
            _arrow(ax, (col[i], split_y), (col[i], arm_y + 0.35))
            _box(ax, col[i], arm_y, 2.5, 0.7, title, detail, _n(arm["n"]))
        if not pathway:
            return fig
        # not operated, per arm, hanging off each arm's arrow towards the middle
        op_y, excl_y = 2.2, 3.0
        for i, arm in enumerate(arms):
            x = col[i]
            _arrow(ax, (x, arm_y - 0.35), (x, op_y + 0.3))
            bx = x + 1.0 if i == 0 else x - 1.0
            left, right, _, _ = _box(ax, bx, excl_y, 1.3, 0.5, "Not operated", _n(arm["not_operated"]), side=True)
            edge = left if i == 0 else right
            _line(ax, [x, edge], [excl_y, excl_y])
            _arrow(ax, (edge + (-0.001 if i == 0 else 0.001), excl_y), (edge, excl_y))
        names = {"in_house": "in-house", "referred": "referred"}
        detail = ", ".join(f"{names.get(a['key'], a['label'])} {_int(a['operated'])}" for a in arms)
        _, _, op_bottom, _ = _box(ax, mid, op_y, col[len(arms) - 1] - col[0] + 0.6 if len(arms) > 1 else 3.0, 0.6,
                                  f"Operated: {_n(flow['operated'])}", detail, wrap=70)
        # operated → hepatectomy, with explored-only and ablation-only on the side
        hep_y, side_y = 0.5, 1.35
        _arrow(ax, (mid, op_bottom), (mid, hep_y + 0.3))
        parts = [f"explored only {_int(flow['exploration_only'])}"]
        if flow.get("ablation_only"):
            parts.append(f"ablation only {_int(flow['ablation_only'])}")
        not_resected = flow["operated"] - flow["hepatectomy"]
        left, _, _, _ = _box(ax, mid + 1.85, side_y, 2.1, 0.52, f"Not resected: {_n(not_resected)}",
                             ", ".join(parts), side=True, wrap=34)
        _line(ax, [mid, left], [side_y, side_y])
        _arrow(ax, (left - 0.001, side_y), (left, side_y))
        hdetail = ", ".join(f"{names.get(a['key'], a['label'])} {_int(a['hepatectomy'])}" for a in arms)
        _box(ax, mid, hep_y, 3.0, 0.6, f"Hepatectomy: {_n(flow['hepatectomy'])}", hdetail, wrap=60)
    return fig
