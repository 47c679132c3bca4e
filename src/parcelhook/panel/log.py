"""The webhook log of one integration, its Failed Request log, and redelivery."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, Request
from fastapi.responses import Response

from parcelhook.domain import deliveries as dl
from parcelhook.domain.integrations import Integration
from parcelhook.panel import present
from parcelhook.panel.web import Panel, panel_of, text_field
from parcelhook.store.webhook_log import Health

router = APIRouter(include_in_schema=False)
PAGE_SIZE: Final = 50
# the filter links, in the order shown; "failed" is the Failed Request log
FILTERS: Final = {
    "": "All",
    dl.FAILED: "Failed requests",
    dl.PENDING: "Pending",
    dl.DELIVERED: "Delivered",
}
_NOTICES: Final = {
    "redelivered": "Queued for redelivery.",
    "retrying": "Sending it now; should it fail again, its retries start over.",
    "none": "There were no failed deliveries to redeliver.",
}


async def health(panel: Panel, account_id: int, integration: Integration) -> Health | None:
    """What the failing banner says, for an integration that is failing (else None)."""
    if integration.failing_since_ms is None:
        return None
    return await panel.service.integration_health(account_id, integration.id)


def waiting_notice(count: str) -> str | None:
    """The notice after "Retry all now", from the count it redirected with."""
    if not (count.isascii() and count.isdigit()):
        return None
    noun = "delivery is" if count == "1" else "deliveries are"
    return f"{count} waiting {noun} being sent now."


def _base(integration_id: int) -> str:
    return f"/settings/integrations/{integration_id}/log"


@router.get("/settings/integrations/{integration_id:int}/log")
async def log(
    request: Request, integration_id: int, status: str = "", before: str = ""
) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    integration = await panel.integration(account_id, integration_id)
    status = status if status in FILTERS else ""
    found = await panel.service.list_deliveries(
        account_id,
        integration_id=integration.id,
        status=status or None,
        # a hand-edited query is ignored, not answered with an error
        # (isdigit alone accepts '²', which int() refuses)
        before_id=int(before)
        if before.isascii() and before.isdigit() and len(before) < 19
        else None,
        limit=PAGE_SIZE,
    )
    older = None
    if len(found) == PAGE_SIZE:
        older = f"{_base(integration.id)}?status={status}&before={found[-1].id}"
    count = request.query_params.get("count", "")
    notice = _NOTICES.get(request.query_params.get("notice", ""))
    if request.query_params.get("notice") == "sent":
        notice = waiting_notice(count)
    elif notice and count.isascii() and count.isdigit():
        noun = "delivery" if count == "1" else "deliveries"
        notice = f"{count} failed {noun} queued for redelivery."
    return panel.page(
        request,
        "log.html",
        integration=integration,
        system_name=present.system_name(integration.system),
        deliveries=found,
        state=present.state,
        current=status,
        filters=FILTERS,
        older=older,
        notice=notice,
        health=await health(panel, account_id, integration),
    )


@router.get("/settings/integrations/{integration_id:int}/log/{delivery_id:int}")
async def delivery(request: Request, integration_id: int, delivery_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    integration = await panel.integration(account_id, integration_id)
    found = await panel.delivery(account_id, integration, delivery_id)
    return panel.page(
        request,
        "delivery.html",
        integration=integration,
        system_name=present.system_name(integration.system),
        delivery=found,
        state=present.state(found),
        payload=present.pretty_payload(found),
        headers=present.sent_headers(found),
        notice=_NOTICES.get(request.query_params.get("notice", "")),
        health=await health(panel, account_id, integration),
    )


@router.post("/settings/integrations/{integration_id:int}/log/{delivery_id:int}/redeliver")
async def redeliver(request: Request, integration_id: int, delivery_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    await panel.checked_form(request)
    integration = await panel.integration(account_id, integration_id)
    found = await panel.delivery(account_id, integration, delivery_id)
    await panel.service.redeliver(account_id, found.id)
    notice = "retrying" if found.status == dl.PENDING else "redelivered"
    return panel.redirect(request, f"{_base(integration.id)}/{found.id}?notice={notice}")


@router.post("/settings/integrations/{integration_id:int}/log/redeliver-failed")
async def redeliver_failed(request: Request, integration_id: int) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    await panel.checked_form(request)
    integration = await panel.integration(account_id, integration_id)
    count = await panel.service.redeliver_many(
        account_id, status=dl.FAILED, integration_id=integration.id
    )
    if count == 0:
        return panel.redirect(request, f"{_base(integration.id)}?status=failed&notice=none")
    return panel.redirect(request, f"{_base(integration.id)}?notice=redelivered&count={count}")


@router.post("/settings/integrations/{integration_id:int}/retry-now")
async def retry_all_now(request: Request, integration_id: int) -> Response:
    """The failing banner's "Retry all now": every waiting delivery is due at once."""
    panel = panel_of(request)
    account_id = panel.account_id(request)
    form = await panel.checked_form(request)
    integration = await panel.integration(account_id, integration_id)
    count = await panel.service.retry_all_now(account_id, integration.id)
    back = _base(integration.id) if text_field(form, "back", 20) == "log" else ""
    target = back or f"/settings/integrations/{integration.id}"
    return panel.redirect(request, f"{target}?notice=sent&count={count}")
