"""/api/v2/webhook-events and /api/v2/webhook-deliveries: the log and redelivery."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, Request

from parcelhook.api import models as m
from parcelhook.api import present
from parcelhook.api.integrations import ERRORS, CallerDep, _service

router = APIRouter(prefix="/api/v2", tags=["webhooks"])


@router.get(
    "/webhook-events", response_model=None, responses={200: {"model": m.EventList}, **ERRORS}
)
async def list_events(
    request: Request,
    caller: CallerDep,
    after: Annotated[str, Query(max_length=40, pattern=m.EVENT_ID_PATTERN)] = "",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    found = await _service(request).list_events(caller.account_id, after, limit)
    next_url = None
    if len(found) == limit:
        next_url = str(request.url.include_query_params(after=found[-1].id))
    return {"events": [present.event(e) for e in found], "next": next_url}


@router.get(
    "/webhook-deliveries", response_model=None, responses={200: {"model": m.DeliveryList}, **ERRORS}
)
async def list_deliveries(
    request: Request,
    caller: CallerDep,
    status: Literal["pending", "delivered", "failed"] | None = None,
    integration_id: m.IdFilter = None,
    action: Annotated[str | None, Query(max_length=40, pattern=m.ACTION_PATTERN)] = None,
    before: Annotated[int | None, Query(ge=1, le=m.MAX_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Newest first; `status=failed` is the Failed Request log."""
    found = await _service(request).list_deliveries(
        caller.account_id,
        status=status,
        integration_id=integration_id,
        action=action,
        before_id=before,
        limit=limit,
    )
    next_url = None
    if len(found) == limit:
        next_url = str(request.url.include_query_params(before=found[-1].id))
    return {"deliveries": [present.delivery(d) for d in found], "next": next_url}


@router.get(
    "/webhook-deliveries/{delivery_id}",
    response_model=None,
    responses={200: {"model": m.DeliveryOutEnvelope}, **ERRORS},
)
async def get_delivery(
    request: Request, caller: CallerDep, delivery_id: m.DeliveryId
) -> dict[str, Any]:
    found = await _service(request).get_delivery(caller.account_id, delivery_id)
    return {"delivery": present.delivery(found)}


@router.post(
    "/webhook-deliveries/redeliver",
    response_model=None,
    responses={200: {"model": m.RedeliverCount}, **ERRORS},
)
async def redeliver_many(
    request: Request,
    caller: CallerDep,
    body: Annotated[m.RedeliverFilter | None, Body()] = None,
) -> dict[str, Any]:
    """Queue again every settled delivery matching the filter (default: all failed)."""
    f = body or m.RedeliverFilter()
    count = await _service(request).redeliver_many(
        caller.account_id, status=f.status, integration_id=f.integration_id, action=f.action
    )
    return {"redelivered": count}


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    response_model=None,
    responses={200: {"model": m.DeliveryOutEnvelope}, **ERRORS},
)
async def redeliver(
    request: Request, caller: CallerDep, delivery_id: m.DeliveryId
) -> dict[str, Any]:
    found = await _service(request).redeliver(caller.account_id, delivery_id)
    return {"delivery": present.delivery(found)}
