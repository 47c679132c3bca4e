"""/api/v2/integrations: the integrations and their webhook settings.

Reads, `PUT`, `PATCH` and `DELETE` are Sendcloud's (bare objects, a bare array, its error
body); adding an integration, testing its webhook and rotating its secret are parcelhook's.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response

from parcelhook.api import models as m
from parcelhook.api import present
from parcelhook.api.auth import Caller, api_caller
from parcelhook.domain.integrations import parse_changes
from parcelhook.service import Service

router = APIRouter(prefix="/api/v2/integrations", tags=["integrations"])
CallerDep = Annotated[Caller, Depends(api_caller)]
# parcelhook's own endpoints: a slug in `code`, 422 for invalid input
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.ErrorOut} for code in (400, 401, 404, 409, 413, 422)
}
# endpoints Sendcloud publishes: its error body, 400 for invalid input
SC_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": m.SendcloudErrorOut} for code in (400, 401, 404, 409, 413)
}


def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


@router.get(
    "", response_model=None, responses={200: {"model": list[m.IntegrationOut]}, **SC_ERRORS}
)
async def list_integrations(
    request: Request,
    caller: CallerDep,
    after: Annotated[int, Query(ge=0, le=m.MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[dict[str, Any]]:
    """The account's integrations, as a bare array (`after`/`limit` page through many)."""
    found = await _service(request).list_integrations(caller.account_id, after, limit)
    return [present.integration(i) for i in found]


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.IntegrationOut}, **ERRORS},
)
async def create_integration(
    request: Request, caller: CallerDep, body: m.IntegrationCreate
) -> dict[str, Any]:
    changes = parse_changes(body.model_dump(exclude_unset=True), creating=True)
    created = await _service(request).create_integration(caller.account_id, changes)
    return present.integration(created)


@router.get(
    "/{integration_id}",
    response_model=None,
    responses={200: {"model": m.IntegrationOut}, **SC_ERRORS},
)
async def get_integration(
    request: Request, caller: CallerDep, integration_id: m.IntegrationId
) -> dict[str, Any]:
    found = await _service(request).get_integration(caller.account_id, integration_id)
    return present.integration(found)


@router.put(
    "/{integration_id}",
    response_model=None,
    responses={200: {"model": m.IntegrationOut}, **SC_ERRORS},
)
async def replace_integration(
    request: Request,
    caller: CallerDep,
    integration_id: m.IntegrationId,
    body: m.IntegrationReplace,
) -> dict[str, Any]:
    """Update with every field (`shop_name` required); read-only fields sent back are ignored."""
    changes = parse_changes(body.model_dump(exclude_unset=True), creating=False, replacing=True)
    updated = await _service(request).update_integration(caller.account_id, integration_id, changes)
    return present.integration(updated)


@router.patch(
    "/{integration_id}",
    response_model=None,
    responses={200: {"model": m.IntegrationOut}, **SC_ERRORS},
)
async def patch_integration(
    request: Request,
    caller: CallerDep,
    integration_id: m.IntegrationId,
    body: m.IntegrationPatch,
) -> dict[str, Any]:
    """Update only the fields sent."""
    changes = parse_changes(body.model_dump(exclude_unset=True), creating=False)
    updated = await _service(request).update_integration(caller.account_id, integration_id, changes)
    return present.integration(updated)


@router.delete(
    "/{integration_id}",
    status_code=204,
    response_model=None,
    responses={204: {"description": "Deleted"}, **SC_ERRORS},
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
    """Send one signed `test_webhook`: to the values given, else (`{}`) to the saved ones."""
    typed = body.integration if body is not None else None
    result = await _service(request).test_webhook(
        caller.account_id,
        integration_id,
        url=typed.webhook_url if typed else None,
        key=typed.webhook_signature_key if typed else None,
    )
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
