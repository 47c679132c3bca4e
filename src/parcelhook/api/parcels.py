"""/api/v2/parcels: parcels, their tracking updates, cancellations and refunds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from parcelhook.api import models as m
from parcelhook.api.integrations import ERRORS, SC_ERRORS, CallerDep, _service
from parcelhook.domain import events as ev
from parcelhook.domain.clock import parse_iso_ms
from parcelhook.domain.errors import InvalidInput

router = APIRouter(prefix="/api/v2/parcels", tags=["parcels"])


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.ParcelOutEnvelope}, **SC_ERRORS},
)
async def create_parcel(
    request: Request, caller: CallerDep, body: m.ParcelEnvelope
) -> JSONResponse:
    data = body.parcel.model_dump(exclude_none=True)
    parcel = await _service(request).create_parcel(caller.account_id, caller.integration, data)
    # JSON-native already: FastAPI's jsonable_encoder walk of it cost ~10 % of the call
    return JSONResponse({"parcel": ev.parcel_object(parcel)}, status_code=201)


@router.get("", response_model=None, responses={200: {"model": m.ParcelList}, **SC_ERRORS})
async def list_parcels(
    request: Request,
    caller: CallerDep,
    updated_after: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=64, pattern=r"^\d{1,15}\.\d{1,18}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Parcels changed after `updated_after` (ISO 8601), oldest change first: polling."""
    after_ms, after_id = -1, 0
    if updated_after:
        try:
            after_ms = parse_iso_ms(updated_after)
        except (ValueError, OverflowError, OSError):
            raise InvalidInput(
                "updated_after must be an ISO 8601 date-time.", field="updated_after"
            ) from None
    if cursor:
        ms, _, pid = cursor.partition(".")
        after_ms, after_id = int(ms), int(pid)
    parcels = await _service(request).parcels_updated_after(
        caller.account_id, after_ms, after_id, limit
    )
    next_url = None
    if len(parcels) == limit:
        last = parcels[-1]
        next_url = str(
            request.url.remove_query_params("updated_after").include_query_params(
                cursor=f"{last.updated_ms}.{last.id}"
            )
        )
    return {"parcels": [ev.parcel_object(p) for p in parcels], "next": next_url}


@router.get(
    "/{parcel_id}",
    response_model=None,
    responses={200: {"model": m.ParcelOutEnvelope}, **SC_ERRORS},
)
async def get_parcel(request: Request, caller: CallerDep, parcel_id: m.ParcelId) -> dict[str, Any]:
    parcel = await _service(request).get_parcel(caller.account_id, parcel_id)
    return {"parcel": ev.parcel_object(parcel)}


@router.post(
    "/{parcel_id}/status",
    response_model=None,
    responses={200: {"model": m.ParcelOutEnvelope}, **ERRORS},
)
async def change_status(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId, body: m.StatusIn
) -> JSONResponse:
    """A carrier tracking update; a real change sends `parcel_status_changed`."""
    parcel = await _service(request).change_status(
        caller.account_id, parcel_id, body.status_id, body.carrier_status_change_timestamp
    )
    return JSONResponse({"parcel": ev.parcel_object(parcel)})


@router.post(
    "/{parcel_id}/cancel",
    response_model=None,
    responses={200: {"model": m.ParcelOutEnvelope}, **SC_ERRORS},
)
async def cancel_parcel(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId
) -> dict[str, Any]:
    parcel = await _service(request).cancel_parcel(caller.account_id, parcel_id)
    return {"parcel": ev.parcel_object(parcel)}


@router.post(
    "/{parcel_id}/refund",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.RefundOutEnvelope}, **ERRORS},
)
async def request_refund(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId, body: m.RefundEnvelope
) -> dict[str, Any]:
    refund = await _service(request).request_refund(
        caller.account_id, parcel_id, {"refund": body.refund.model_dump()}
    )
    return {"refund": ev.refund_object(refund)}
