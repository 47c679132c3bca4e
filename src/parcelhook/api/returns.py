"""/returns/{parcel_id}: the return portal a parcel's `return_portal_url` leads to.

It needs no sign-in, so it opens only with the parcel's random shipment UUID (the `code` in
the link): ids are sequential and postal codes guessable, and the page names the recipient.
Anything else is the same 404 as a parcel that does not exist.
"""

from __future__ import annotations

import html
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from parcelhook.api import models as m
from parcelhook.domain.errors import NotFound
from parcelhook.domain.parcels import Parcel
from parcelhook.service import Service

router = APIRouter(include_in_schema=False)


def return_code(parcel: Parcel) -> str:
    """The link's secret ("" for a parcel without one, which no link then opens)."""
    code = parcel.details.get("shipment_uuid")
    return code if isinstance(code, str) else ""


@router.get("/returns/{parcel_id}", response_class=HTMLResponse)
async def return_portal(
    request: Request,
    parcel_id: m.ParcelId,
    code: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    service: Service = request.app.state.service
    parcel = await service.find_parcel_for_return(parcel_id)
    expected = "" if parcel is None else return_code(parcel)
    if parcel is None or not expected:
        raise NotFound("No such parcel.")
    if not secrets.compare_digest(expected.encode(), code.encode()):
        raise NotFound("No such parcel.")
    e = html.escape
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Return your parcel</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
<h1>Return your parcel</h1>
<p>Parcel <strong>{e(parcel.tracking_number)}</strong>, sent to {e(parcel.name)},
{e(parcel.postal_code)} {e(parcel.city)}.</p>
<p>To return it, contact the shop you ordered from and quote this tracking number; it
will send you a return label.</p>
</main></body></html>"""
    return HTMLResponse(page)
