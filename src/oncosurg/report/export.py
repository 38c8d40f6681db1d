"""Table 1 as files a manuscript needs: CSV, Excel (XLSX) and Word (DOCX), from the Table 1 data."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any


def _header(table: dict[str, Any]) -> list[str]:
    groups = [f"{g['label']} (n = {g['n']})" for g in table["groups"]]
    extra = ["Missing", "SMD", "p", "Test"] if len(groups) > 1 else ["Missing"]
    return ["Characteristic", *groups, *extra]


def _row(table: dict[str, Any], row: dict[str, Any]) -> list[str]:
    label = ("    " + row["label"]) if row["kind"] == "level" else row["label"]
    missing = row["missing_text"]  # the total, then each group's count
    extra = [missing, row["smd_text"], row["p_text"], row["test"]] if len(table["groups"]) > 1 else [missing]
    return [label, *row["cells"], *extra]


def table_one_csv(table: dict[str, Any]) -> str:
    """One CSV per Table 1 (UTF-8; the same cells as the report, plus per-group missing counts)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    groups = table["groups"]
    writer.writerow([*_header(table), *[f"Missing: {g['label']}" for g in groups]])
    for row in table["rows"]:
        per_group = [str(m) for m in row["missing"]] if row["missing"] else ["" for _ in groups]
        writer.writerow([*_row(table, row), *per_group])
    for note in table["notes"]:
        writer.writerow([note])
    return buf.getvalue()


def table_one_xlsx(tables: Sequence[dict[str, Any]]) -> bytes:
    """One worksheet per Table 1, bold header, notes under the table, sensible column widths."""
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, Side

    wb = Workbook()
    wb.remove(wb.active)
    rule = Side(style="thin", color="000000")
    for i, table in enumerate(tables):
        name = f"Table 1{chr(ord('a') + i) if len(tables) > 1 else ''}"
        ws = wb.create_sheet(title=name)
        ws.append([f"{name}. Baseline characteristics — {table['title']}"])
        ws["A1"].font = Font(bold=True)
        ws.append(_header(table))
        for cell in ws[2]:
            cell.font = Font(bold=True)
            cell.border = Border(top=rule, bottom=rule)
            cell.alignment = Alignment(horizontal="center" if cell.column > 1 else "left", wrap_text=True)
        for row in table["rows"]:
            ws.append(_row(table, row))
            if row["kind"] in ("numeric", "binary", "categorical", "n"):
                ws.cell(ws.max_row, 1).font = Font(bold=row["kind"] == "categorical")
        for cell in ws[ws.max_row]:
            cell.border = Border(bottom=rule)
        ws.append([])
        for note in table["notes"]:
            ws.append([note])
        ws.column_dimensions["A"].width = 44
        for col in "BCDEFGHIJ":
            ws.column_dimensions[col].width = 18
        ws.freeze_panes = "B3"
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def table_one_docx(tables: Sequence[dict[str, Any]], title: str) -> bytes:
    """Word document with each Table 1 as a real Word table (journals' preferred submission format)."""
    from docx import Document
    from docx.enum.section import WD_ORIENT
    from docx.shared import Pt

    doc = Document()
    section = doc.sections[0]
    section.orientation = WD_ORIENT.PORTRAIT
    normal = doc.styles["Normal"]
    normal.font.name = "Arial"
    normal.font.size = Pt(9)
    doc.add_heading(title, level=1)
    for i, table in enumerate(tables):
        suffix = chr(ord("a") + i) if len(tables) > 1 else ""
        doc.add_paragraph().add_run(f"Table 1{suffix}. Baseline characteristics — {table['title']}").bold = True
        header = _header(table)
        grid = doc.add_table(rows=1, cols=len(header))
        grid.style = "Table Grid" if "Table Grid" in [s.name for s in doc.styles] else None
        for j, text in enumerate(header):
            cell = grid.rows[0].cells[j]
            cell.text = ""
            cell.paragraphs[0].add_run(text).bold = True
        for row in table["rows"]:
            cells = grid.add_row().cells
            for j, text in enumerate(_row(table, row)):
                cells[j].text = text
                if j == 0 and row["kind"] == "categorical":
                    cells[j].paragraphs[0].runs[0].bold = True
        for note in table["notes"]:
            p = doc.add_paragraph(note)
            p.runs[0].font.size = Pt(8)
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()
