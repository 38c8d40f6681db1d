"""Kaplan-Meier curves as inline SVG (no JavaScript, no inline CSS: the CSP stays strict)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import numpy as np

W, H = 560, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 78  # BOTTOM leaves room for the axis and the numbers at risk


def _ticks(tmax: float) -> list[float]:
    step = next(s for s in (1, 3, 6, 12, 24, 36, 60, 120, 240) if tmax / s <= 8)
    return [i * step for i in range(math.floor(tmax / step) + 1)]


def km_svg(*, time: Sequence[float], surv: Sequence[float], n_risk: Sequence[float], n_censor: Sequence[float],
           n: int, title: str, unit: str = "months", median: float | None = None) -> str:
    """A step curve with censoring ticks, a dashed median line and the numbers at risk under the axis."""
    t = np.asarray(time, dtype=float)
    s = np.asarray(surv, dtype=float)
    tmax = float(t.max()) if t.size else 1.0
    tmax = tmax if tmax > 0 else 1.0
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(v: float) -> float:
        return round(LEFT + pw * v / tmax, 1)

    def y(v: float) -> float:
        return round(TOP + ph * (1 - v), 1)

    points = [f"M{x(0)},{y(1)}"]
    previous = 1.0
    for ti, si in zip(t, s, strict=True):
        points.append(f"H{x(ti)}")
        if si != previous:
            points.append(f"V{y(si)}")
            previous = si
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
             f'role="img" aria-label="{escape(title)}: Kaplan-Meier curve" class="km">',
             f"<title>{escape(title)}</title>",
             f'<path d="M{LEFT},{TOP} V{TOP + ph} H{LEFT + pw}" fill="none" stroke="#444" stroke-width="1"/>']
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{LEFT - 4}" y1="{y(v)}" x2="{LEFT}" y2="{y(v)}" stroke="#444"/>'
                     f'<text x="{LEFT - 7}" y="{y(v) + 4}" text-anchor="end" font-size="11">{v:g}</text>')
    ticks = _ticks(tmax)
    at_risk_y = TOP + ph + 52
    for v in ticks:
        k = int(np.searchsorted(t, v, side="left"))  # at risk at v: those with time >= v
        risk = round(float(n_risk[k])) if k < len(n_risk) else 0
        parts.append(f'<line x1="{x(v)}" y1="{TOP + ph}" x2="{x(v)}" y2="{TOP + ph + 4}" stroke="#444"/>'
                     f'<text x="{x(v)}" y="{TOP + ph + 17}" text-anchor="middle" font-size="11">{v:g}</text>'
                     f'<text x="{x(v)}" y="{at_risk_y}" text-anchor="middle" font-size="11" '
                     f'class="at-risk">{risk if v > 0 else n}</text>')
    parts.append(f'<text x="{LEFT + pw / 2}" y="{TOP + ph + 33}" text-anchor="middle" font-size="11">'
                 f"{escape(unit)}</text>")
    parts.append(f'<text x="4" y="{at_risk_y}" font-size="10">at risk</text>')
    if median is not None and median <= tmax:
        parts.append(f'<path d="M{LEFT},{y(0.5)} H{x(median)} V{TOP + ph}" fill="none" stroke="#888" '
                     'stroke-dasharray="4 3"/>')
    parts.append(f'<path d="{" ".join(points)}" fill="none" stroke="#1f5fa8" stroke-width="2" class="curve"/>')
    censored = [(ti, si) for ti, si, c in zip(t, s, n_censor, strict=True) if c > 0]
    for ti, si in censored:
        parts.append(f'<line x1="{x(ti)}" y1="{y(si) - 4}" x2="{x(ti)}" y2="{y(si) + 4}" stroke="#1f5fa8"/>')
    parts.append("</svg>")
    return "".join(parts)
