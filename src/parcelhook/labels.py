"""Shipping labels as PDF: the addresses, the carrier and the tracking number as Code 128.

Rendered with reportlab (its own Code 128 barcode) from the parcel as stored, so a label is
the same every time it is asked for and nothing but the parcel needs keeping.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Literal

from reportlab.graphics.barcode.code128 import Code128
from reportlab.lib.pagesizes import A4, A6
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.parcels import Parcel

# where a label goes: a label printer takes A6; an office printer takes A4 with the
# label in one of its four quarters (Sendcloud's `start_from` 0–3)
Format = Literal["label_printer", "normal_printer"]


@dataclass(frozen=True, slots=True)
class Sender:
    """The return address printed on a label."""

    name: str
    street: str
    postal_code: str
    city: str
    country: str


def render_label(
    parcel: Parcel,
    sender: Sender,
    carrier_name: str,
    printer: Format = "label_printer",
    start_from: int = 0,
) -> bytes:
    """One parcel's label as a PDF document."""
    out = io.BytesIO()
    page = A6 if printer == "label_printer" else A4
    canvas = Canvas(out, pagesize=page, invariant=True)
    canvas.setTitle(f"Label {parcel.tracking_number}")
    canvas.setAuthor("parcelhook")
    width, height = A6
    if printer == "normal_printer":
        # quarters of the A4 sheet, left to right then top to bottom
        col, row = start_from % 2, start_from // 2
        canvas.translate(col * width, page[1] - (row + 1) * height)
    _draw(canvas, parcel, sender, carrier_name, width, height)
    canvas.showPage()
    canvas.save()
    return out.getvalue()


def _draw(
    canvas: Canvas,
    parcel: Parcel,
    sender: Sender,
    carrier_name: str,
    width: float,
    height: float,
) -> None:
    margin = 6 * mm
    canvas.rect(margin / 2, margin / 2, width - margin, height - margin)
    y = height - margin - 4 * mm
    canvas.setFont("Helvetica-Bold", 16)
    canvas.drawString(margin, y, carrier_name)
    canvas.setFont("Helvetica", 8)
    canvas.drawRightString(width - margin, y, f"{parcel.weight} kg")
    y -= 8 * mm
    canvas.setFont("Helvetica", 7)
    canvas.drawString(margin, y, "From:")
    for line in (
        sender.name,
        sender.street,
        f"{sender.postal_code} {sender.city}",
        _country_name(sender.country),
    ):
        y -= 3.2 * mm
        canvas.drawString(margin + 8 * mm, y, line)
    y -= 7 * mm
    canvas.setFont("Helvetica", 8)
    canvas.drawString(margin, y, "To:")
    canvas.setFont("Helvetica-Bold", 11)
    street = f"{parcel.address} {parcel.house_number}".strip()
    recipient = [parcel.name, parcel.company_name, street]
    recipient += [f"{parcel.postal_code} {parcel.city}", _country_name(parcel.country)]
    for line in filter(None, recipient):
        y -= 5 * mm
        canvas.drawString(margin + 8 * mm, y, line)
    if parcel.order_number:
        y -= 6 * mm
        canvas.setFont("Helvetica", 7)
        canvas.drawString(margin, y, f"Order {parcel.order_number}")
    barcode = Code128(parcel.tracking_number, barHeight=18 * mm, barWidth=0.3 * mm, quiet=True)
    x = (width - barcode.width) / 2
    barcode.drawOn(canvas, x, margin + 8 * mm)
    canvas.setFont("Helvetica", 9)
    canvas.drawCentredString(width / 2, margin + 3 * mm, parcel.tracking_number)


def _country_name(iso_2: str) -> str:
    found = COUNTRIES.get(iso_2)
    return found[1] if found else iso_2
