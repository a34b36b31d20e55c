"""The one PDF renderer (ReportLab): a ``PdfContent`` in, the same bytes out for the same content.

Builders (``documents.content``) describe a document as data; this module lays it out. The
output is deterministic: ReportLab's invariant mode (no random document id, no wall-clock
timestamp), the creation and modification dates taken from the record (``PdfContent.dated``),
fonts embedded (subsets) from the DejaVu Sans files committed beside this module
(``documents/fonts/``, their licence beside them; no system fonts: every server renders the same
glyphs, Latin, Greek and Cyrillic alike), and every text escaped before it reaches ReportLab's paragraph
markup. Never hand-built PDF syntax.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import Flowable, KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

FONT = "HcDejaVuSans"
FONT_BOLD = "HcDejaVuSans-Bold"
# Part of the project, never looked up on the system: a missing file is an error, not a fallback.
FONT_DIR = Path(__file__).resolve().parent / "fonts"
FONT_FILES = {FONT: "DejaVuSans.ttf", FONT_BOLD: "DejaVuSans-Bold.ttf"}
PRODUCER = "healthchat (ReportLab)"


@dataclass(frozen=True)
class Section:
    """A heading with label/value rows, paragraphs and/or a table (first row: its header)."""

    heading: str
    rows: Sequence[tuple[str, str]] = ()
    paragraphs: Sequence[str] = ()
    table: Sequence[Sequence[str]] = ()


@dataclass(frozen=True)
class PdfContent:
    title: str
    # Creation date written into the file: from the record, never the clock.
    dated: dt.datetime
    # Top of the first page, left: who issues it (platform name, address, tax id).
    issuer: Sequence[str] = ()
    # Under the title: the document's number, dates.
    header_rows: Sequence[tuple[str, str]] = ()
    sections: Sequence[Section] = ()
    # A QR code of this text (a URL), with a caption, after the sections.
    qr: str | None = None
    qr_caption: str = ""
    footer: str = ""
    subject: str = ""
    keywords: Sequence[str] = field(default_factory=tuple)


def _register_fonts() -> None:
    if FONT in pdfmetrics.getRegisteredFontNames():
        return
    for name, filename in FONT_FILES.items():
        pdfmetrics.registerFont(TTFont(name, str(FONT_DIR / filename)))


def _styles() -> dict[str, ParagraphStyle]:
    base = ParagraphStyle("hc-body", fontName=FONT, fontSize=9.5, leading=12.5)
    return {
        "body": base,
        "small": ParagraphStyle(
            "hc-small", parent=base, fontSize=8, leading=10, textColor=colors.HexColor("#444444")
        ),
        "title": ParagraphStyle(
            "hc-title", parent=base, fontName=FONT_BOLD, fontSize=17, leading=21, spaceAfter=4
        ),
        "heading": ParagraphStyle(
            "hc-heading",
            parent=base,
            fontName=FONT_BOLD,
            fontSize=11,
            leading=14,
            spaceBefore=8,
            spaceAfter=3,
        ),
        "label": ParagraphStyle("hc-label", parent=base, fontName=FONT_BOLD),
        "cell": ParagraphStyle("hc-cell", parent=base, fontSize=8.5, leading=11),
        "cell_head": ParagraphStyle(
            "hc-cell-head", parent=base, fontName=FONT_BOLD, fontSize=8.5, leading=11
        ),
    }


def text(value: str) -> str:
    """Plain text as paragraph markup: escaped, line breaks kept."""
    return escape(value).replace("\r\n", "\n").replace("\n", "<br/>")


def _rows(rows: Sequence[tuple[str, str]], styles: dict[str, ParagraphStyle], width: float) -> Table:
    data = [
        [Paragraph(text(label), styles["label"]), Paragraph(text(value), styles["body"])]
        for label, value in rows
    ]
    table = Table(data, colWidths=[width * 0.32, width * 0.68], hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                # The cell's own font (ReportLab's default is Helvetica, never embedded).
                ("FONTNAME", (0, 0), (-1, -1), FONT),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _grid(table: Sequence[Sequence[str]], styles: dict[str, ParagraphStyle], width: float) -> Table:
    header, *body = table
    columns = len(header)
    data = [[Paragraph(text(cell), styles["cell_head"]) for cell in header]]
    data += [[Paragraph(text(cell), styles["cell"]) for cell in row] for row in body]
    grid = Table(data, colWidths=[width / columns] * columns, repeatRows=1, hAlign="LEFT")
    grid.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                # The cell's own font (ReportLab's default is Helvetica, never embedded).
                ("FONTNAME", (0, 0), (-1, -1), FONT),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef4")),
                ("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#b0bac4")),
                ("LEFTPADDING", (0, 0), (-1, -1), 3),
                ("RIGHTPADDING", (0, 0), (-1, -1), 3),
            ]
        )
    )
    return grid


def _qr(value: str, size: float) -> Drawing:
    widget = QrCodeWidget(value, barLevel="M")
    x1, y1, x2, y2 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x2 - x1), 0, 0, size / (y2 - y1), 0, 0])
    # The drawing's starting font: ours (ReportLab's default is Helvetica, never embedded).
    drawing.initialFontName = FONT
    drawing.add(widget)
    return drawing


def _pdf_date(moment: dt.datetime) -> str:
    utc = moment.astimezone(dt.UTC)
    return utc.strftime("D:%Y%m%d%H%M%S+00'00'")


def render(content: PdfContent) -> bytes:
    """The PDF of ``content`` (A4)."""
    _register_fonts()
    styles = _styles()
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=18 * mm,
        title=content.title,
        author="healthchat",
        subject=content.subject or content.title,
        creator="healthchat",
        producer=PRODUCER,
        keywords=list(content.keywords),
        invariant=1,
        # The canvas's starting font: ours, so that no unembedded standard font (Helvetica) is
        # named in the file.
        initialFontName=FONT,
    )
    width = doc.width
    story: list[Flowable] = []
    if content.issuer:
        story.append(Paragraph("<br/>".join(text(line) for line in content.issuer), styles["small"]))
        story.append(Spacer(1, 4 * mm))
    story.append(Paragraph(text(content.title), styles["title"]))
    if content.header_rows:
        story.append(_rows(content.header_rows, styles, width))
    for section in content.sections:
        block: list[Flowable] = [Paragraph(text(section.heading), styles["heading"])]
        if section.rows:
            block.append(_rows(section.rows, styles, width))
        block.extend(Paragraph(text(p), styles["body"]) for p in section.paragraphs)
        if section.table:
            block.append(_grid(section.table, styles, width))
        # A short section stays on one page; a long one (the chat) flows.
        story.append(KeepTogether(block) if len(section.table) < 20 else block[0])
        if len(section.table) >= 20:
            story.extend(block[1:])
    if content.qr:
        story.append(Spacer(1, 5 * mm))
        story.append(
            KeepTogether(
                [_qr(content.qr, 34 * mm), Paragraph(text(content.qr_caption or content.qr), styles["small"])]
            )
        )

    dated = _pdf_date(content.dated)
    footer = content.footer

    def decorate(canvas: Any, document: Any) -> None:
        # The file's CreationDate/ModDate: the record's date (public API; invariant mode would
        # otherwise write 2000-01-01).
        canvas.setDateFormatter(lambda *_: dated)
        canvas.saveState()
        canvas.setFont(FONT, 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        if footer:
            canvas.drawString(doc.leftMargin, 10 * mm, footer[:150])
        canvas.drawRightString(A4[0] - doc.rightMargin, 10 * mm, f"Page {document.page}")
        canvas.restoreState()

    doc.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return out.getvalue()
