"""Publication figures from report data: Kaplan-Meier curves with numbers at risk, Cox forest plots.

Renderers only: every function takes the dictionaries built by :mod:`oncosurg.report.data` and
draws them; the numbers at risk are *data* computed with ``KaplanMeier.at(times)`` and drawn as
text centred on the same x positions as the axis ticks, so they cannot drift off the ticks
(lifelines#1184, #748).  Colours are Okabe & Ito's colour-blind-safe palette.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MultipleLocator
from matplotlib.transforms import blended_transform_factory

from oncosurg.report.text import fmt_p

#: Okabe & Ito (2008): blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442")
INK = "#1b1f24"
MUTED = "#5b6470"
GRID = "#e3e6ea"

STYLE: dict[str, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "xtick.labelcolor": INK,
    "ytick.labelcolor": INK,
    "xtick.major.size": 3.5,
    "ytick.major.size": 3.5,
    "text.color": INK,
    "svg.fonttype": "path",
    "svg.hashsalt": "oncosurg",
    "pdf.fonttype": 42,
    "legend.frameon": False,
}

FIG_WIDTH = 6.6  # inches: the text width of an A4 page with 2 cm margins
MAX_CENSOR_TICKS = 300


@contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(STYLE):
        yield


def save(fig: Figure) -> dict[str, bytes]:
    """The figure as PNG (300 dpi) and SVG bytes, without timestamps (reproducible files)."""
    out = {}
    for fmt, kwargs in (("png", {"dpi": 300, "metadata": {"Software": None}}),
                        ("svg", {"metadata": {"Date": None, "Creator": None}})):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, facecolor="white", **kwargs)
        out[fmt] = buf.getvalue()
    plt.close(fig)
    return out


def _int(n: int) -> str:
    return f"{n:,}".replace(",", "\u2009")


def _num(x: float | None) -> str:
    return "NR" if x is None else f"{x:.1f}"


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _median_text(g: dict[str, Any], unit: str) -> str:
    if g["median"] is None:
        return "median not reached"
    return f"median {g['median']:.1f} {unit} (95% CI {_num(g['ci_low'])}–{_num(g['ci_high'])})"


# ----------------------------------------------------------------------------------- Kaplan-Meier
def km_figure(fig_data: dict[str, Any]) -> Figure:
    """Step curves, CI bands, censoring ticks, median lines and a numbers-at-risk table."""
    groups = fig_data["groups"]
    times = fig_data["times"]
    single = len(groups) == 1
    reverse = fig_data["reverse"]
    unit = fig_data.get("unit") or "months"
    if single:
        row_names = (["Under follow-up", "Died", "Follow-up ended"] if reverse
                     else ["At risk", "Censored", "Events"])
        rows: list[tuple[str, str, str]] = [(name, key, PALETTE[0])
                                            for name, key in zip(row_names, ("n_risk", "censored", "events"),
                                                                 strict=True)]
        if reverse:  # reverse KM: its "events" are the ends of follow-up, its censorings the deaths
            rows = [(row_names[0], "n_risk", INK), (row_names[1], "censored", INK), (row_names[2], "events", INK)]
        else:
            rows = [(name, key, INK) for name, key, _ in rows]
    else:
        rows = [(g["label"], f"group:{i}", PALETTE[i % len(PALETTE)]) for i, g in enumerate(groups)]
    row_h = 0.2
    header = not single
    table_h = (0.26 if header else 0.08) + row_h * len(rows)
    curve_h = 3.0
    extra_lines = ([fig_data["method_line"]] if fig_data.get("method_line") else []) + \
        list(fig_data.get("stats_lines") or [])
    caveat = fig_data.get("caveat")
    legend_lines = len(groups) + (1 if fig_data.get("logrank") else 0) + len(extra_lines) + (2 if caveat else 0)
    bottom_pad, label_pad, top_pad = 0.1, 0.52, 0.16 + 0.19 * legend_lines
    height = bottom_pad + table_h + label_pad + curve_h + top_pad
    left, right = 1.3, 0.2
    with style():
        fig = plt.figure(figsize=(FIG_WIDTH, height))
        ax = fig.add_axes((left / FIG_WIDTH, (bottom_pad + table_h + label_pad) / height,
                           (FIG_WIDTH - left - right) / FIG_WIDTH, curve_h / height))
        rax = fig.add_axes((left / FIG_WIDTH, bottom_pad / height, (FIG_WIDTH - left - right) / FIG_WIDTH,
                            table_h / height), sharex=ax)
        tmax = times[-1] if times else 1.0
        data_max = max((max(t for t in g["curve"]["time"] if t is not None) for g in groups), default=tmax)
        xmax = max(tmax, data_max)
        handles, labels = [], []
        ticks_omitted = False
        if not groups:  # an empty population: said on the figure, not an empty frame
            ax.text(0.5, 0.5, "No patient: not estimable (n = 0)", transform=ax.transAxes, ha="center",
                    va="center", color=INK)
        for i, g in enumerate(groups):
            color = PALETTE[i % len(PALETTE)]
            c = g["curve"]
            t = c["time"]
            s = [100 * v for v in c["surv"]]
            lo = [math.nan if v is None else 100 * v for v in c["lower"]]
            up = [math.nan if v is None else 100 * v for v in c["upper"]]
            ax.fill_between(t, lo, up, step="post", color=color, alpha=0.14 if single else 0.12, lw=0)
            (line,) = ax.step(t, s, where="post", color=color, lw=1.6, solid_joinstyle="miter")
            ct = c["censored"]["time"]
            cs = [100 * v for v in c["censored"]["surv"]]
            if len(ct) <= MAX_CENSOR_TICKS:  # beyond that the ticks merge into a smear
                ax.plot(ct, cs, ls="", marker="|", ms=6.5, mew=1.1, color=color)
            else:
                ticks_omitted = True
            if g["median"] is not None:
                ax.plot([0, g["median"]], [50, 50], ls=(0, (3, 2)), lw=0.8, color=MUTED)
                ax.plot([g["median"], g["median"]], [0, 50], ls=(0, (3, 2)), lw=0.8, color=color)
            if reverse:
                what = f"{_int(g['events'])} alive at last contact"
                med = ("median follow-up not reached" if g["median"] is None else
                       f"median follow-up {g['median']:.1f} {unit} (95% CI {_num(g['ci_low'])}–{_num(g['ci_high'])})")
            else:
                noun = fig_data.get("event_noun") or "events"
                what = f"{_int(g['events'])} {noun[:-1] if g['events'] == 1 else noun}"
                med = _median_text(g, unit)
            name = "" if single else f"{g['label']}: "
            handles.append(line)
            labels.append(f"{name}{_int(g['n'])} patients, {what}; {med}")
        if fig_data.get("logrank"):
            p = fmt_p(fig_data["logrank"]["p"])
            handles.append(Line2D([], [], color="none"))
            labels.append(f"Log-rank test: p {'= ' + p if not p.startswith('<') else '< ' + p[1:]}")
        for line in extra_lines:  # the method and only the statistics valid for it, inside the image
            handles.append(Line2D([], [], color="none"))
            labels.append(line)
        if caveat:  # a biased split: the caveat travels with the PNG/SVG
            handles.append(Line2D([], [], color="none"))
            labels.append(_wrap(caveat, 105))
        ax.legend(handles, labels, loc="lower left", bbox_to_anchor=(-0.01, 1.0), fontsize=8.2, handlelength=1.8,
                  borderaxespad=0.25, labelspacing=0.35)
        ax.set_ylim(0, 102)
        ax.set_xlim(0, max(xmax, 1.0) * 1.02)
        ax.yaxis.set_major_locator(MultipleLocator(25))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:.0f}"))
        ax.set_xticks(times)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.grid(axis="y", color=GRID, lw=0.7)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_ylabel(fig_data["y_label"])
        if ticks_omitted:
            ax.text(0.995, 0.99, f"censoring ticks omitted (more than {MAX_CENSOR_TICKS} censoring times)",
                    transform=ax.transAxes, ha="right", va="top", fontsize=7, color=MUTED)
        ax.set_xlabel(fig_data["time_label"], labelpad=4)
        # numbers-at-risk table, aligned on the x ticks
        head_units = (0.26 if header else 0.08) / row_h  # rows are one data unit = row_h inches tall
        rax.set_ylim(len(rows) - 0.5, -0.5 - head_units)
        rax.axis("off")
        labels_tr = blended_transform_factory(fig.transFigure, rax.transData)
        if header:
            rax.text(0.12 / FIG_WIDTH, -0.5 - head_units * 0.6, "Number at risk", transform=labels_tr,
                     ha="left", va="center", fontsize=8.5, fontweight="bold")
        label_x = (left - 0.3) / FIG_WIDTH
        for r, (name, key, color) in enumerate(rows):
            if key.startswith("group:"):
                g = groups[int(key.split(":")[1])]
                values = [p["n_risk"] for p in g["risk"]]
            else:
                values = [p[key] for p in groups[0]["risk"]]
            rax.text(label_x, r, name, transform=labels_tr, ha="right", va="center", color=color, fontsize=8.2,
                     fontweight="normal" if single else "bold")
            for t, v in zip(times, values, strict=False):
                rax.text(t, r, f"{v:,}".replace(",", "\u2009"), ha="center", va="center", fontsize=8.2, color=INK)
    return fig


# -------------------------------------------------------------------------------------- forest plot
def forest_figure(model: dict[str, Any]) -> Figure:
    """Hazard ratios with 95% CIs on a log axis; HR (95% CI) and p as columns on the right."""
    terms = [t for t in model["terms"] if t.get("hr") is not None and math.isfinite(t["hr"])]
    n = len(terms)
    row_h = 0.32
    height = 0.9 + row_h * max(n, 1)
    with style():
        fig = plt.figure(figsize=(FIG_WIDTH, height))
        left, plot_w = 2.35, 2.35
        ax = fig.add_axes((left / FIG_WIDTH, 0.55 / height, plot_w / FIG_WIDTH, (row_h * n) / height))
        ys = list(range(n))
        finite = [v for t in terms for v in (t["lower"], t["upper"]) if v and math.isfinite(v) and v > 0]
        lo = min([*finite, 0.5]) / 1.15
        hi = max([*finite, 2.0]) * 1.15
        for y, t in zip(ys, terms, strict=True):
            color = PALETTE[0]
            tl = max(t["lower"], lo) if t["lower"] else lo
            th = min(t["upper"], hi) if t["upper"] and math.isfinite(t["upper"]) else hi
            ax.plot([tl, th], [y, y], color=color, lw=1.4, solid_capstyle="butt")
            ax.plot([t["hr"]], [y], marker="s", ms=5.5, color=color)
            ax.text(-0.04, y, t["label"], transform=ax.get_yaxis_transform(), ha="right", va="center",
                    fontsize=8.3)
            ax.text(1.04, y, f"{t['hr']:.2f} ({t['lower']:.2f}–{t['upper']:.2f})", transform=ax.get_yaxis_transform(),
                    ha="left", va="center", fontsize=8.3)
            ax.text(1.52, y, fmt_p(t["p"]), transform=ax.get_yaxis_transform(), ha="left", va="center",
                    fontsize=8.3)
        ax.axvline(1.0, color=MUTED, lw=0.8, ls=(0, (3, 2)))
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(n - 0.5, -0.7)
        ax.set_yticks([])
        ticks = [v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if lo <= v <= hi]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _p: ""))
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.set_xlabel("Hazard ratio (log scale)")
        ax.text(-0.04, -0.75, "Covariate", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                fontweight="bold")
        ax.text(1.04, -0.75, "HR (95% CI)", transform=ax.get_yaxis_transform(), ha="left", va="bottom",
                fontweight="bold")
        ax.text(1.52, -0.75, "p", transform=ax.get_yaxis_transform(), ha="left", va="bottom", fontweight="bold")
    return fig


# ------------------------------------------------------------------------- proportional hazards
def schoenfeld_figure(ph: dict[str, Any]) -> Figure:
    """Scaled Schoenfeld residuals against the KM-transformed time, one panel per coefficient (as R's
    ``plot(cox.zph(fit))``, with a least-squares line instead of a spline smooth)."""
    import numpy as np

    terms = ph["terms"]
    ncol = min(3, max(1, len(terms)))
    nrow = math.ceil(len(terms) / ncol)
    x_all = np.asarray(ph["x"], dtype=float)
    with style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(FIG_WIDTH, 2.3 * nrow), squeeze=False)
        for k, ax in enumerate(axes.ravel()):
            if k >= len(terms):
                ax.set_visible(False)
                continue
            t = terms[k]
            y = np.asarray([np.nan if v is None else v for v in t["residuals"]], dtype=float)
            ok = np.isfinite(y)
            x, y = x_all[ok], y[ok]
            ax.scatter(x, y, s=6, color=PALETTE[0], alpha=0.45, linewidths=0)
            if x.size > 1 and np.ptp(x) > 0:
                slope, icpt = np.polyfit(x, y, 1)
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, icpt + slope * xs, color=PALETTE[1], lw=1.4)
            ax.axhline(t["coef"], color=MUTED, lw=0.8, ls=(0, (3, 2)))
            ax.set_title(f"{t['label']}\np = {fmt_p(t['p'])}", fontsize=7.6)
            ax.set_xlabel("1 - KM(t)", fontsize=8)
            if k % ncol == 0:
                ax.set_ylabel("Beta(t)", fontsize=8)
            for side in ("top", "right"):
                ax.spines[side].set_visible(False)
        fig.tight_layout()
    return fig
