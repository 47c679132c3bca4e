"""/api/v2/integrations: the integrations and their webhook settings."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from parcelhook.api import models as m
from parcelhook.api import present
from parcelhook.api.auth import Caller, api_caller
from parcelhook.service import Service

router = APIRouter(prefix="/api/v2/integrations", tags=["integrations"])
CallerDep = Annotated[Caller, Depends(api_caller)]
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorOut} for code in (400, 401, 404, 409, 413, 422)
}


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get("", response_model=None, responses={200: {"model": m.IntegrationList}, **ERRORS})
async def list_integrations(
    request: Request,
    caller: CallerDep,
    after: Annotated[int, Query(ge=0, le=m.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    found = await _service(request).list_integrations(caller.account_id, after, limit)
    next_url = None
    if len(found) == limit:
        next_url = str(request.url.include_query_params(after=found[-1].id))
    return {"integrations": [present.integration(i) for i in found], "next": next_url}


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.IntegrationOutEnvelope}, **ERRORS},
)
async def create_integration(
    request: Request, caller: CallerDep, body: m.IntegrationCreateEnvelope
) -> dict[str, Any]:
    data = body.integration.model_dump(exclude_unset=True)
    created = await _service(request).create_integration(caller.account_id, data)
    return {"integration": present.integration(created)}


@router.get(
    "/{integration_id}",
    response_model=None,
    responses={200: {"model": m.IntegrationOutEnvelope}, **ERRORS},
)
async def get_integration(
    request: Request, caller: CallerDep, integration_id: m.IntegrationId
) -> dict[str, Any]:
    found = await _service(request).get_integration(caller.account_id, integration_id)
    return {"integration": present.integration(found)}


@router.put(
    "/{integration_id}",
    response_model=None,
    responses={200: {"model": m.IntegrationOutEnvelope}, **ERRORS},
)
async def update_integration(
    request: Request,
    caller: CallerDep,
    integration_id: m.IntegrationId,
    body: m.IntegrationEnvelope,
) -> dict[str, Any]:
    data = body.integration.model_dump(exclude_unset=True)
    updated = await _service(request).update_integration(caller.account_id, integration_id, data)
    return {"integration": present.integration(updated)}


@router.delete(
    "/{integration_id}",
    status_code=204,
    response_model=None,
    responses={204: {"description": "Deleted"}, **ERRORS},
)
async def delete_integration(
    request: Request, caller: CallerDep, integration_id: m.IntegrationId
) -> Response:
    await _service(request).delete_integration(caller.account_id, integration_id)
    return Response(status_code=204)


@router.post(
    "/{integration_id}/webhook-test",
    response_model=None,
    responses={200: {"model": m.WebhookTestOut}, **ERRORS},
)
async def webhook_test(
    request: Request,
    caller: CallerDep,
    integration_id: m.IntegrationId,
    body: Annotated[m.WebhookTestEnvelope | None, Body()] = None,
) -> dict[str, Any]:
    data = None if body is None else {"integration": body.integration.model_dump(exclude_none=True)}
    result = await _service(request).test_webhook(caller.account_id, integration_id, data)
    return {
        "delivered": result.delivered,
        "status_code": result.status_code,
        "duration_ms": result.duration_ms,
        "response_excerpt": result.response_excerpt,
        "error": result.error,
    }


@router.post(
    "/{integration_id}/rotate-webhook-secret",
    response_model=None,
    responses={200: {"model": m.IntegrationOutEnvelope}, **ERRORS},
)
async def rotate_webhook_secret(
    request: Request, caller: CallerDep, integration_id: m.IntegrationId
) -> dict[str, Any]:
    """A new `whsec_` secret; the old one keeps signing too during the grace period."""
    rotated = await _service(request).rotate_webhook_secret(caller.account_id, integration_id)
    return {"integration": present.integration(rotated)}
