"""/api/v2/labels and /api/v2/parcels/{id}/documents: a parcel's label, as PDF.

Authenticated like the rest of the API (HTTP Basic with the API keys), so the label links a
parcel carries work from any client that already talks to the API.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from parcelhook.api import models as m
from parcelhook.api.integrations import SC_ERRORS, CallerDep, _service
from parcelhook.domain import events as ev
from parcelhook.domain.errors import NotFound
from parcelhook.labels import Format

router = APIRouter(prefix="/api/v2", tags=["labels"])
_PDF: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/pdf": {}}, "description": "The label as PDF"}
}


# base URLs by what they are made of: Starlette builds and parses a URL for each request
# (~4 % of a status change). Bounded, since the Host header is the caller's to choose.
_BASE_URLS: dict[tuple[Any, ...], str] = {}


def base_url(request: Request) -> str:
    """The URL the caller reached the API at (links in answers point there)."""
    scope = request.scope
    key = (
        scope.get("scheme"),
        request.headers.get("host"),
        scope.get("server"),
        scope.get("app_root_path", scope.get("root_path", "")),
    )
    found = _BASE_URLS.get(key)
    if found is None:
        found = str(request.base_url).rstrip("/")
        if len(_BASE_URLS) < 64:
            _BASE_URLS[key] = found
    return found


@router.get(
    "/labels/{parcel_id}",
    response_model=None,
    responses={200: {"model": m.LabelOut}, **SC_ERRORS},
)
async def get_label(request: Request, caller: CallerDep, parcel_id: m.ParcelId) -> dict[str, Any]:
    """Where the parcel's label is printed from (404 until it is announced)."""
    parcel = await _service(request).get_parcel(caller.account_id, parcel_id)
    if not parcel.has_label:
        raise NotFound("This parcel has no label yet: request one first.", field="id")
    return {"label": ev.label_links(parcel, base_url(request))}


@router.get(
    "/labels/label_printer/{parcel_id}",
    response_class=Response,
    responses={**_PDF, **SC_ERRORS},
)
async def label_printer(request: Request, caller: CallerDep, parcel_id: m.ParcelId) -> Response:
    """The label as PDF for a label printer (A6)."""
    pdf = await _service(request).label_pdf(caller.account_id, parcel_id, "label_printer", 0)
    return _pdf(pdf, f"label-{parcel_id}.pdf")


@router.get(
    "/labels/normal_printer/{parcel_id}",
    response_class=Response,
    responses={**_PDF, **SC_ERRORS},
)
async def normal_printer(
    request: Request,
    caller: CallerDep,
    parcel_id: m.ParcelId,
    start_from: Annotated[int, Query(ge=0, le=3)] = 0,
) -> Response:
    """The label as PDF for an office printer: an A4 sheet, the label in quarter
    `start_from` (0–3: left to right, top to bottom)."""
    pdf = await _service(request).label_pdf(
        caller.account_id, parcel_id, "normal_printer", start_from
    )
    return _pdf(pdf, f"label-{parcel_id}.pdf")


@router.get(
    "/parcels/{parcel_id}/documents/label",
    response_class=Response,
    responses={**_PDF, **SC_ERRORS},
)
async def label_document(
    request: Request,
    caller: CallerDep,
    parcel_id: m.ParcelId,
    paper_size: Annotated[Literal["a4", "a6"], Query()] = "a6",
) -> Response:
    """The parcel's label document (parcelhook makes no customs forms)."""
    printer: Format = "label_printer" if paper_size == "a6" else "normal_printer"
    pdf = await _service(request).label_pdf(caller.account_id, parcel_id, printer, 0)
    return _pdf(pdf, f"label-{parcel_id}.pdf")


def _pdf(body: bytes, name: str) -> Response:
    return Response(
        body,
        media_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )
