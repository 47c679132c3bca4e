"""The webhook log of one integration, its Failed Request log, and redelivery."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response

from parcelhook.domain import deliveries as dl
from parcelhook.domain import systems
from parcelhook.domain.integrations import Integration
from parcelhook.panel import present
from parcelhook.panel.i18n import N_, Ngettext
from parcelhook.panel.web import Panel, panel_of, text_field
from parcelhook.store.webhook_log import Health, LogFilter

router = APIRouter(include_in_schema=False)
PAGE_SIZE: Final = 50
ALL: Final = "/settings/log"
# the filter links, in the order shown; "failed" is the Failed Request log
FILTERS: Final = {
    "": N_("All"),
    dl.FAILED: N_("Failed requests"),
    dl.PENDING: N_("Pending"),
    dl.DELIVERED: N_("Delivered"),
}
_NOTICES: Final = {
    "redelivered": N_("Queued for redelivery."),
    "retrying": N_("Sending it now; should it fail again, its retries start over."),
    "none": N_("There were no failed deliveries to redeliver."),
}


async def health(panel: Panel, account_id: int, integration: Integration) -> Health | None:
    """What the failing banner says, for an integration that is failing (else None)."""
    if integration.failing_since_ms is None:
        return None
    return await panel.service.integration_health(account_id, integration.id)


def waiting_notice(count: str, ngettext: Ngettext) -> str | None:
    """The notice after "Retry all now", from the count it redirected with."""
    # isdigit alone accepts '²', which int() refuses
    if not _digits(count, 9):
        return None
    n = int(count)
    return ngettext(
        "%(num)d waiting delivery is being sent now.",
        "%(num)d waiting deliveries are being sent now.",
        n,
    ) % {"num": n}


def _notice(request: Request) -> str | None:
    """The notice a redirect asked for, in the reader's language."""
    panel = panel_of(request)
    asked, count = request.query_params.get("notice", ""), request.query_params.get("count", "")
    if asked == "sent":
        return waiting_notice(count, panel.ngettext(request))
    if asked == "redelivered" and _digits(count, 9):
        n, ngettext = int(count), panel.ngettext(request)
        return ngettext(
            "%(num)d failed delivery queued for redelivery.",
            "%(num)d failed deliveries queued for redelivery.",
            n,
        ) % {"num": n}
    notice = _NOTICES.get(asked)
    return panel.gettext(request)(notice) if notice else None


def _base(integration_id: int) -> str:
    return f"/settings/integrations/{integration_id}/log"


@dataclass(frozen=True, slots=True)
class Query:
    """The log's filters as the form sent them; anything malformed is ignored, not an error."""

    status: str = ""
    action: str = ""
    since: str = ""
    until: str = ""
    by: str = "event"
    q: str = ""

    @classmethod
    def of(cls, request: Request) -> Query:
        got = request.query_params
        return cls(
            status=got.get("status", "") if got.get("status", "") in FILTERS else "",
            action=got.get("action", "") if got.get("action", "") in systems.ACTIONS else "",
            since=got.get("from", "") if _day_ms(got.get("from", "")) is not None else "",
            until=got.get("to", "") if _day_ms(got.get("to", "")) is not None else "",
            by=got.get("by", "") if got.get("by", "") in SEARCH_BY else "event",
            q=got.get("q", "").strip()[:255],
        )

    def params(self) -> dict[str, str]:
        """The filters as query parameters, for the next page's link."""
        named = {"status": self.status, "action": self.action, "from": self.since}
        named |= {"to": self.until, "by": self.by if self.q else "", "q": self.q}
        return {k: v for k, v in named.items() if v}

    def narrowed(self) -> bool:
        return bool(self.action or self.since or self.until or self.q)

    def filter(self, integration_id: int | None, before: str) -> tuple[LogFilter, str, str]:
        """The store's filter, and the order and tracking number to look parcels up by."""
        since, until = _day_ms(self.since), _day_ms(self.until)
        event_id = self.q if self.q and self.by == "event" else None
        parcel_ids = None
        if self.q and self.by == "parcel":
            parcel_ids = (int(self.q),) if _digits(self.q, 18) else ()
        return (
            LogFilter(
                integration_id=integration_id,
                status=self.status or None,
                action=self.action or None,
                from_ms=since,
                # the "to" day is included: up to its end
                until_ms=None if until is None else until + _DAY_MS,
                event_id=event_id,
                parcel_ids=parcel_ids,
                # a hand-edited query is ignored, not answered with an error
                before_id=int(before) if _digits(before, 18) else None,
            ),
            self.q if self.q and self.by == "order" else "",
            self.q if self.q and self.by == "tracking" else "",
        )


_DAY_MS: Final = 86_400_000
# what the search box looks in, in the order offered
SEARCH_BY: Final = {
    "event": N_("Event id"),
    "parcel": N_("Parcel id"),
    "order": N_("Order number"),
    "tracking": N_("Tracking number"),
}


def _digits(text: str, most: int) -> bool:
    """A decimal number of at most `most` ASCII digits ('²' is a digit to isdigit)."""
    return text.isascii() and text.isdigit() and len(text) <= most


def _day_ms(day: str) -> int | None:
    """The start of a `YYYY-MM-DD` day in UTC, in ms; None for anything else."""
    try:
        return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000)
    except ValueError:
        return None


async def _log_page(request: Request, integration: Integration | None) -> Response:
    panel = panel_of(request)
    account_id = panel.account_id(request)
    query = Query.of(request)
    base = _base(integration.id) if integration else ALL
    found_by, order_number, tracking_number = query.filter(
        integration.id if integration else None, request.query_params.get("before", "")
    )
    found = await panel.service.search_log(
        account_id,
        found_by,
        order_number=order_number,
        tracking_number=tracking_number,
        # one more than a page: a link to older deliveries only when there are some
        limit=PAGE_SIZE + 1,
    )
    older = None
    if len(found) > PAGE_SIZE:
        found = found[:PAGE_SIZE]
        older = f"{base}?{urlencode({**query.params(), 'before': found[-1].id})}"
    notice = _notice(request)
    return panel.page(
        request,
        "log.html",
        integration=integration,
        system_name=present.heading_system(integration, panel.gettext(request))
        if integration
        else "",
        base=base,
        deliveries=found,
        state=present.state,
        current=query.status,
        query=query,
        filters=FILTERS,
        actions=systems.ACTIONS,
        search_by=SEARCH_BY,
        older=older,
        notice=notice,
        health=await health(panel, account_id, integration) if integration else None,
    )


@router.get("/settings/integrations/{integration_id:int}/log")
async def log(request: Request, integration_id: int) -> Response:
    panel = panel_of(request)
    integration = await panel.integration(panel.account_id(request), integration_id)
    return await _log_page(request, integration)


@router.get("/settings/log")
async def account_log(request: Request) -> Response:
    """Every integration's deliveries in one log."""
    return await _log_page(request, None)


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
        system_name=present.heading_system(integration, panel.gettext(request)),
        delivery=found,
        state=present.state(found),
        payload=present.pretty_payload(found),
        headers=present.sent_headers(found),
        sent_headers=present.sent_headers,
        attempt_words=present.attempt_words,
        notice=_notice(request),
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
