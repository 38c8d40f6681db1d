"""The report as an A4 PDF, made with ReportLab (pure pip: no browser, no system libraries).

Same model and order as the HTML: title, protocol and provenance, results paragraph (each number an
internal link to its endpoint row), cohort flow, Table 1, endpoint table, survival figures (300 dpi
PNG), methods, notes.  Fonts are the DejaVu TrueType files shipped with matplotlib, so every glyph
(≥, –, →, χ²) prints on any machine.  Pages carry a running header (with "SYNTHETIC DATA" when it
applies), a footer with "page n of N", and the PDF has an outline (bookmarks) of the sections.
"""

from __future__ import annotations

import io
import re
from html import escape
from pathlib import Path
from typing import Any

import matplotlib
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT, TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as rl_canvas
from reportlab.platypus import (
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from oncosurg.report.html import accrual_text, cohort_text
from oncosurg.report.text import fmt_date

INK = colors.HexColor("#1b1f24")
MUTED = colors.HexColor("#5b6470")
RULE = colors.HexColor("#c9ced4")
FAINT = colors.HexColor("#eef1f4")
ACCENT = colors.HexColor("#0072B2")
WARN_BG = colors.HexColor("#fff4e0")
WARN_INK = colors.HexColor("#8a4b00")
SYNTH = colors.HexColor("#E69F00")

PAGE_W, PAGE_H = A4
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 18 * mm, 20 * mm, 18 * mm
FRAME_PAD = 6  # ReportLab's default frame padding, points
TEXT_W = PAGE_W - 2 * MARGIN_X - 2 * FRAME_PAD

_FONTS_READY = False


def _register_fonts() -> None:
    global _FONTS_READY
    if _FONTS_READY:
        return
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    for name, file in (("Sans", "DejaVuSans.ttf"), ("Sans-Bold", "DejaVuSans-Bold.ttf"),
                       ("Sans-Italic", "DejaVuSans-Oblique.ttf"), ("Sans-BoldItalic", "DejaVuSans-BoldOblique.ttf"),
                       ("Serif", "DejaVuSerif.ttf"), ("Serif-Bold", "DejaVuSerif-Bold.ttf"),
                       ("Serif-Italic", "DejaVuSerif-Italic.ttf"), ("Serif-BoldItalic", "DejaVuSerif-BoldItalic.ttf"),
                       ("Mono", "DejaVuSansMono.ttf")):
        pdfmetrics.registerFont(TTFont(name, str(ttf / file)))
    pdfmetrics.registerFontFamily("Sans", normal="Sans", bold="Sans-Bold", italic="Sans-Italic",
                                  boldItalic="Sans-BoldItalic")
    pdfmetrics.registerFontFamily("Serif", normal="Serif", bold="Serif-Bold", italic="Serif-Italic",
                                  boldItalic="Serif-BoldItalic")
    _FONTS_READY = True


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("base", fontName="Sans", fontSize=8.8, leading=12.4, textColor=INK)
    return {
        "base": base,
        "kicker": ParagraphStyle("kicker", parent=base, fontName="Sans-Bold", fontSize=7.5, textColor=MUTED,
                                 spaceAfter=3),
        "title": ParagraphStyle("title", parent=base, fontName="Serif-Bold", fontSize=19, leading=23, spaceAfter=5),
        "byline": ParagraphStyle("byline", parent=base, textColor=MUTED, fontSize=8.5, spaceAfter=10),
        "h2": ParagraphStyle("h2", parent=base, fontName="Serif-Bold", fontSize=13, leading=16, spaceBefore=12,
                             spaceAfter=6, keepWithNext=1),
        "h3": ParagraphStyle("h3", parent=base, fontName="Sans-Bold", fontSize=7.6, textColor=MUTED, spaceAfter=3),
        "results": ParagraphStyle("results", parent=base, fontName="Serif", fontSize=9.8, leading=14.6,
                                  spaceAfter=6),
        "small": ParagraphStyle("small", parent=base, fontSize=7.6, leading=10),
        "muted": ParagraphStyle("muted", parent=base, fontSize=7.4, leading=9.6, textColor=MUTED),
        "caption": ParagraphStyle("caption", parent=base, fontSize=8, leading=11, spaceBefore=3),
        "cell": ParagraphStyle("cell", parent=base, fontSize=7.6, leading=9.6),
        "cell_r": ParagraphStyle("cell_r", parent=base, fontSize=7.6, leading=9.6, alignment=TA_RIGHT),
        "cell_head": ParagraphStyle("cell_head", parent=base, fontName="Sans-Bold", fontSize=7.6, leading=9.6,
                                    alignment=TA_RIGHT),
        "cell_head_l": ParagraphStyle("cell_head_l", parent=base, fontName="Sans-Bold", fontSize=7.6, leading=9.6,
                                      alignment=TA_LEFT),
        "warn": ParagraphStyle("warn", parent=base, fontSize=7.8, leading=10.4, textColor=WARN_INK,
                               backColor=WARN_BG, borderPadding=(3, 4, 3, 4), spaceBefore=4, spaceAfter=3,
                               leftIndent=4, rightIndent=4),
        "banner": ParagraphStyle("banner", parent=base, fontName="Sans-Bold", fontSize=9, textColor=colors.HexColor(
            "#5c3b00"), leading=12),
    }


KEY_W = 22 * mm  # the key column of the provenance tables


def path_markup(path: Any, width: float, *, font: str = "Mono", size: float = 6.8) -> str:
    """A path or URL as paragraph markup whose lines break after a ``/`` (never inside a name).

    ReportLab breaks a word with no space anywhere; the lines are laid out here instead, greedily,
    at separators, measured in ``font`` at ``size`` points to fit ``width``.  Only a single name
    wider than the whole line is cut.
    """
    text = str(path or "")
    parts = [p for p in re.split(r"(?<=[/\\])", text) if p]
    lines: list[str] = []
    for part in parts:
        if lines and pdfmetrics.stringWidth(lines[-1] + part, font, size) <= width:
            lines[-1] += part
            continue
        while pdfmetrics.stringWidth(part, font, size) > width:  # a name longer than the line
            cut = max(1, next(i for i in range(len(part), 0, -1)
                              if pdfmetrics.stringWidth(part[:i], font, size) <= width))
            lines.append(part[:cut])
            part = part[cut:]
        lines.append(part)
    return f"<font name='{font}' size='{size}'>" + "<br/>".join(_e(line) for line in lines) + "</font>"


def _p(text: str, style: ParagraphStyle) -> Paragraph:
    return Paragraph(text, style)


def _e(text: Any) -> str:
    return escape(str(text), quote=False)


class _Bookmark(Flowable):
    """An outline entry (PDF bookmark) at this point of the story."""

    def __init__(self, key: str, title: str, level: int = 0):
        super().__init__()
        self.key, self.title, self.level = key, title, level
        self.width = self.height = 0

    def wrap(self, aw: float, ah: float) -> tuple[float, float]:
        return 0, 0

    def draw(self) -> None:
        self.canv.bookmarkPage(self.key)
        self.canv.addOutlineEntry(self.title, self.key, level=self.level)


def _heading(title: str, key: str, st: dict[str, ParagraphStyle]) -> list[Flowable]:
    return [_Bookmark(key, title), _p(f'<a name="{key}"/>{_e(title)}', st["h2"])]


def _image(png: bytes, width: float) -> Image:
    w, h = ImageReader(io.BytesIO(png)).getSize()
    return Image(io.BytesIO(png), width=width, height=width * h / w)


def _figure(fig: dict[str, Any], st: dict[str, ParagraphStyle], width: float = TEXT_W,
            lead: list[Flowable] | None = None) -> KeepTogether:
    """The figure, its caption and warnings, kept on one page together with ``lead`` (a heading)."""
    parts: list[Flowable] = [*(lead or []), _image(fig["png"], width),
                             _p(f"<b>Figure {fig['number']}. {_e(fig['title'])}.</b> {_e(fig['caption'])}",
                                st["caption"])]
    parts += [_p(_e(w), st["warn"]) for w in fig.get("warnings") or []]
    parts.append(Spacer(1, 8))
    return KeepTogether(parts)


_BOOKTABS = [
    ("LINEABOVE", (0, 0), (-1, 0), 1.1, INK),
    ("LINEBELOW", (0, 0), (-1, 0), 0.6, INK),
    ("LINEBELOW", (0, -1), (-1, -1), 1.1, INK),
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("TOPPADDING", (0, 0), (-1, -1), 2.2),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 2.2),
    ("LEFTPADDING", (0, 0), (-1, -1), 3),
    ("RIGHTPADDING", (0, 0), (-1, -1), 3),
]


def _table_one(t: dict[str, Any], suffix: str, st: dict[str, ParagraphStyle]) -> list[Flowable]:
    groups = t["groups"]
    many = len(groups) > 1
    head = [_p("Characteristic", st["cell_head_l"])]
    head += [_p(f"{_e(g['label'])}<br/><font name='Sans' color='#5b6470'>n = {g['n']}</font>", st["cell_head"])
             for g in groups]
    head += [_p("Missing", st["cell_head"])] + ([_p("SMD", st["cell_head"]), _p("p", st["cell_head"]),
                                                   _p("Test", st["cell_head"])] if many else [])
    rows = [head]
    styles = list(_BOOKTABS)
    for r in t["rows"]:
        if r["kind"] == "n":
            continue
        if r["kind"] == "level":
            label = _p(f"&nbsp;&nbsp;&nbsp;&nbsp;{_e(r['label'])}", st["cell"])
        elif r["kind"] == "categorical":
            label = _p(f"<b>{_e(r['label'])}</b>", st["cell"])
        else:
            label = _p(_e(r["label"]), st["cell"])
        row = [label] + [_p(_e(c), st["cell_r"]) for c in r["cells"]]
        row.append(_p(_e(r["missing_text"]), st["cell_r"]))
        if many:
            row += [_p(_e(r["smd_text"]), st["cell_r"]), _p(_e(r["p_text"]), st["cell_r"]),
                    _p(f"<font color='#5b6470'>{_e(r['test'])}</font>", st["cell_r"])]
        rows.append(row)
    n_groups = len(groups)
    first = 62 * mm if many else 90 * mm
    rest = [15 * mm] + ([13 * mm, 14 * mm, 18 * mm] if many else [])
    gw = (TEXT_W - first - sum(rest)) / max(n_groups, 1)
    table = Table(rows, colWidths=[first] + [gw] * n_groups + rest, repeatRows=1)
    for i in range(1, len(rows)):
        if i % 2 == 0:
            styles.append(("LINEBELOW", (0, i), (-1, i), 0.25, FAINT))
    table.setStyle(TableStyle(styles))
    caption = f"<b>Table 1{suffix}. Baseline characteristics — {_e(t['title'])}</b>"
    if t.get("group_missing"):
        caption += f" <font color='#5b6470'>({t['group_missing']} patient(s) without a group are not shown)</font>"
    notes = [_p("• " + _e(n), st["muted"]) for n in t["notes"]]
    return [_p(f'<a name="{t["id"]}"/>' + caption, st["caption"]), Spacer(1, 3), table, Spacer(1, 3), *notes,
            Spacer(1, 10)]


def _endpoint_table(model: dict[str, Any], st: dict[str, ParagraphStyle]) -> list[Flowable]:
    show_pub = any(r["published"] for r in model["endpoint_rows"])
    head = [_p("Endpoint and definition", st["cell_head_l"]), _p("Estimate", st["cell_head"]),
            _p("95% CI / IQR", st["cell_head"]), _p("n", st["cell_head"])]
    if show_pub:
        head.append(_p("Published", st["cell_head"]))
    rows = [head]
    for r in model["endpoint_rows"]:
        label = (f'<a name="ep-{r["id"]}"/><b>{_e(r["label"])}</b><br/>'
                 f"<font size='6.8' color='#5b6470'>{_e(r['definition'])} "
                 f"[{_e(r['id'])}; {_e(r['population'])}]</font>")
        row = [_p(label, st["cell"]), _p(f"<b>{_e(r['estimate'])}</b>", st["cell_r"]), _p(_e(r["ci"]), st["cell_r"]),
               _p(_e(r["n"]), st["cell_r"])]
        if show_pub:
            row.append(_p(_e(r["published"]), st["cell_r"]))
        rows.append(row)
    widths = [76 * mm, 25 * mm, 27 * mm, 20 * mm] + ([26 * mm] if show_pub else [])
    widths[0] += TEXT_W - sum(widths)
    table = Table(rows, colWidths=widths, repeatRows=1)
    styles = list(_BOOKTABS) + [("LINEBELOW", (0, i), (-1, i), 0.25, RULE) for i in range(1, len(rows) - 1)]
    table.setStyle(TableStyle(styles))
    caption = ("<b>Table 2. Every endpoint of the protocol, computed from the records"
               + (", beside the published value" if show_pub else "") + ".</b>")
    return [_p(caption, st["caption"]), Spacer(1, 3), table, Spacer(1, 8)]


def _comparison_table(model: dict[str, Any], st: dict[str, ParagraphStyle]) -> list[Flowable]:
    head = [_p("Comparison and method", st["cell_head_l"]), _p("Hazard ratio (95% CI)", st["cell_head"]),
            _p("p", st["cell_head"]), _p("n", st["cell_head"])]
    rows = [head]
    for r in model["comparison_rows"]:
        label = (f'<a name="cmp-{r["id"]}"/><b>{_e(r["label"])}</b><br/>'
                 f"<font size='6.8' color='#5b6470'>{_e(r['method'])}; {_e(r['contrast'])}"
                 + (f"; {_e(r['test'])}" if r["test"] else "") + f" [{_e(r['id'])}; {_e(r['population'])}]</font>")
        rows.append([_p(label, st["cell"]), _p(f"<b>{_e(r['hr'])}</b>", st["cell_r"]), _p(_e(r["p"]), st["cell_r"]),
                     _p(_e(r["n"]), st["cell_r"])])
    widths = [90 * mm, 36 * mm, 18 * mm, 14 * mm]
    widths[0] += TEXT_W - sum(widths)
    table = Table(rows, colWidths=widths, repeatRows=1)
    styles = list(_BOOKTABS) + [("LINEBELOW", (0, i), (-1, i), 0.25, RULE) for i in range(1, len(rows) - 1)]
    table.setStyle(TableStyle(styles))
    caption = "<b>Table 3. Comparisons, each with a method that respects when its groups are decided.</b>"
    return [_p(caption, st["caption"]), Spacer(1, 3), table, Spacer(1, 8)]


class _Pages(rl_canvas.Canvas):
    """Canvas that knows the page count, for 'page n of N' (drawn after the last page)."""

    header_left = ""
    footer_left = ""
    synthetic = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self._decorate(total)
            super().showPage()
        super().save()

    def _decorate(self, total: int) -> None:
        x0, x1 = MARGIN_X + FRAME_PAD, PAGE_W - MARGIN_X - FRAME_PAD
        self.saveState()
        self.setFont("Sans", 7)
        self.setFillColor(MUTED)
        top = PAGE_H - 11 * mm
        if self._pageNumber > 1:
            room = x1 - x0 - (55 * mm if self.synthetic else 0)
            text = self.header_left
            while text and pdfmetrics.stringWidth(text, "Sans", 7) > room:
                text = text[:-2].rstrip() + "…"
            self.drawString(x0, top, text)
        if self.synthetic:
            self.setFillColor(colors.HexColor("#8a5a00"))
            self.setFont("Sans-Bold", 7)
            self.drawRightString(x1, top, "SYNTHETIC DATA — not real patients")
        self.setStrokeColor(RULE)
        self.setLineWidth(0.5)
        self.line(x0, 12 * mm, x1, 12 * mm)
        self.setFont("Sans", 7)
        self.setFillColor(MUTED)
        self.drawString(x0, 8.5 * mm, self.footer_left)
        self.drawRightString(x1, 8.5 * mm, f"page {self._pageNumber} of {total}")
        self.restoreState()


def render_pdf(model: dict[str, Any]) -> bytes:
    """The report as PDF bytes."""
    _register_fonts()
    st = _styles()
    results, meta, data = model["results"], model["meta"], model["data"]
    proto, prov = results["protocol"], results["provenance"]
    story: list[Flowable] = []
    if meta["synthetic"]:
        note = ("The records are computer-generated (a synthetic registry); the numbers illustrate the method and are "
                "evidence about no patient or treatment.")
        banner = Table([[_p("SYNTHETIC DATA — not real patients<br/><font name='Sans' size='7.6'>"
                            f"{_e(note)}</font>", st["banner"])]], colWidths=[TEXT_W])
        banner.setStyle(TableStyle([("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#fff1d6")),
                                    ("BOX", (0, 0), (-1, -1), 0.8, SYNTH), ("LEFTPADDING", (0, 0), (-1, -1), 7),
                                    ("TOPPADDING", (0, 0), (-1, -1), 5), ("BOTTOMPADDING", (0, 0), (-1, -1), 6)]))
        story += [banner, Spacer(1, 10)]
    story += [_Bookmark("top", proto["title"]), _p(f"STUDY REPORT · {_e(proto['id'])}", st["kicker"]),
              _p(_e(proto["title"]), st["title"])]
    by = (f"Protocol after {_e(proto['reference'])} · " if proto.get("reference") else "") + \
        f"generated {_e(meta['generated_at'])} by oncosurg {_e(meta['oncosurg_version'])}"
    story.append(_p(by, st["byline"]))
    # protocol and provenance, side by side

    def kv(items: list[tuple[str, str]], width: float) -> list[Flowable]:
        grid = Table([[_p(f"<font color='#5b6470'>{_e(k)}</font>", st["small"]), _p(v, st["small"])]
                      for k, v in items], colWidths=[KEY_W, width - KEY_W])
        grid.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 0),
                                  ("RIGHTPADDING", (0, 0), (-1, -1), 4), ("TOPPADDING", (0, 0), (-1, -1), 0.6),
                                  ("BOTTOMPADDING", (0, 0), (-1, -1), 0.6)]))
        return [grid]

    description = " ".join((meta.get("description") or "").split())
    col_w = TEXT_W / 2 - 4 * mm
    left = [_p("PROTOCOL", st["h3"])] + ([_p(_e(description), st["small"]), Spacer(1, 3)] if description else [])
    left += kv([("Cohort", _e(cohort_text(results))), ("Accrual window", _e(accrual_text(results))),
                ("Data cut", f"{_e(fmt_date(results['cohort'].get('data_cut')))}"
                             + ("" if results["cohort"].get("data_cut_declared") else " (latest last contact)")),
                ("Cohort size", f"{results['cohort']['n']} patients")], col_w)
    sha = prov.get("sha256")
    value_w = col_w - KEY_W - 4  # the value column of kv(), less its right padding
    items = [("Source", path_markup(meta["source"], value_w)),
             ("Records", _e(prov.get("records")))]
    if sha:
        items.append(("SHA-256", f"<font name='Mono' size='6.4'>{_e(sha)}</font>"))
    if data.get("last_import"):
        li = data["last_import"]
        items.append(("Last import", f"{path_markup(li['source'], value_w, size=7.6, font='Sans')}<br/>"
                                     f"{li['rows']} rows, sha256 "
                                     f"<font name='Mono' size='6.4'>{_e(li['sha256'][:16])}…</font>"))
    items.append(("Protocol file", path_markup(meta["protocol_path"], value_w)))
    items.append(("Software", _e(f"oncosurg {meta['oncosurg_version']}; "
                                 + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))))
    if prov.get("note"):
        items.append(("About", f"<font size='6.6' color='#3c444d'>{_e(prov['note'])}</font>"))
    right = [_p("DATA PROVENANCE", st["h3"]), *kv(items, col_w)]
    summary = Table([[left, right]], colWidths=[TEXT_W / 2, TEXT_W / 2])
    summary.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEABOVE", (0, 0), (-1, 0), 0.5, RULE),
                                 ("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (0, 0), 10),
                                 ("TOPPADDING", (0, 0), (-1, -1), 5)]))
    story += [summary, Spacer(1, 4)]
    # results paragraph: each number links to its endpoint row
    story += _heading("Results", "results", st)
    for para in model["paragraphs"]:
        text = "".join(f'<link href="#ep-{seg[1]}" color="#0b4f7c">{_e(seg[2])}</link>' if seg[0] == "ref"
                       else f'<link href="#cmp-{seg[1]}" color="#0b4f7c">{_e(seg[2])}</link>' if seg[0] == "cref"
                       else _e(seg[1]) for seg in para)
        story.append(_p(text, st["results"]))
    figures = model["figures"]
    story.append(_figure(figures[0], st, width=TEXT_W * 0.74, lead=_heading("Cohort flow", "flow", st)))
    if data["table_one"]:
        story += _heading("Baseline characteristics", "table-1", st)
        many = len(data["table_one"]) > 1
        for i, t in enumerate(data["table_one"]):
            story += _table_one(t, chr(ord("a") + i) if many else "", st)
    story += _heading("Endpoints", "endpoints", st)
    story += _endpoint_table(model, st)
    if model.get("comparison_rows"):
        story += _heading("Comparisons", "comparisons", st)
        story += _comparison_table(model, st)
    for i, fig in enumerate(figures[1:]):
        lead = _heading("Survival", "survival", st) if i == 0 else None
        story.append(_figure(fig, st, width=TEXT_W * (0.8 if fig["kind"] == "km" else 0.92), lead=lead))
    story += _heading("Methods", "methods", st)
    for head, rest in model["methods"]:
        story.append(_p(f"<b>{_e(head)}.</b> {_e(rest)}", st["base"]))
        story.append(Spacer(1, 4))
    story += _heading("Notes and warnings", "notes", st)
    if model["notes"]:
        for i, n in enumerate(model["notes"], start=1):
            story.append(_p(f"{i}. <font name='Mono' size='6.8' color='#5b6470'>{_e(n['code'])}</font> "
                            f"{_e(n['message'])}", st["base"]))
            story.append(Spacer(1, 2.5))
    else:
        story.append(_p("No warnings.", st["base"]))
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=MARGIN_X, rightMargin=MARGIN_X, topMargin=MARGIN_TOP,
                            bottomMargin=MARGIN_BOTTOM, title=proto["title"], author="oncosurg",
                            subject=f"Study report, protocol {proto['id']}",
                            creator=f"oncosurg {meta['oncosurg_version']}")

    class Pages(_Pages):
        header_left = f"{proto['id']} · {proto['title']}"
        footer_left = (f"oncosurg {meta['oncosurg_version']} · data cut {fmt_date(results['cohort'].get('data_cut'))}"
                       f" · generated {meta['generated_at']}")
        synthetic = bool(meta["synthetic"])

    doc.build(story, canvasmaker=Pages)
    return buf.getvalue()
