"""/returns/{parcel_id}: the return portal a parcel's `return_portal_url` leads to.

Like a carrier's return portal, it opens for whoever has the parcel's postal code (the
`code` in the link); anything else is the same 404 as a parcel that does not exist.
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
    return parcel.postal_code.replace(" ", "").upper()


@router.get("/returns/{parcel_id}", response_class=HTMLResponse)
async def return_portal(
    request: Request,
    parcel_id: m.ParcelId,
    code: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    service: Service = request.app.state.service
    parcel = await service.find_parcel_for_return(parcel_id)
    if parcel is None or not secrets.compare_digest(
        return_code(parcel).encode(), code.replace(" ", "").upper().encode()
    ):
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
