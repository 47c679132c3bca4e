"""How records look on the panel's pages: times, delivery states, the headers a delivery sent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from parcelhook.delivery.headers import USER_AGENT
from parcelhook.domain import deliveries as dl
from parcelhook.domain import signing, systems
from parcelhook.domain.deliveries import Delivery
from parcelhook.service import TestResult

ELIDED: Final = "…"
_SIGNATURE_HEADERS: Final = frozenset({"sendcloud-signature", "webhook-signature"})


def when(ms: int | None) -> str:
    """`2026-11-28 06:42:38 UTC`, or an em dash for never."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def system_name(system: str) -> str:
    return systems.SYSTEMS.get(system, system)


# what each event means to a merchant, in the order Configure lists them
EVENT_WORDS: Final = {
    systems.PARCEL_STATUS_CHANGED: "A parcel's status changed",
    systems.INTEGRATION_CONNECTED: "An integration was connected",
    systems.INTEGRATION_UPDATED: "An integration's settings changed",
    systems.INTEGRATION_DELETED: "An integration was deleted",
    systems.REFUND_REQUESTED: "A refund was requested",
}


def events_for(system: str) -> list[tuple[str, str]]:
    """The events an integration of `system` receives, by the dispatcher's own rule."""
    return [
        (action, words)
        for action, words in EVENT_WORDS.items()
        if systems.can_receive(system, action)
    ]


def state(d: Delivery) -> str:
    """delivered, failed, retrying (pending after a failed attempt) or pending."""
    if d.status == dl.PENDING and d.attempt_count > 0:
        return "retrying"
    return d.status


def pretty_payload(d: Delivery) -> str:
    if not d.body:
        return "(the payload has been pruned)"
    try:
        return json.dumps(json.loads(d.body), indent=2, ensure_ascii=False)
    except ValueError:
        return d.body.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    value: str


def sent_headers(d: Delivery) -> list[Header]:
    """The headers of the delivery's last attempt, signatures elided.

    Signed with throwaway keys: the values are replaced anyway, and this way no real
    key is ever touched by a page.
    """
    last = d.attempts[-1].at_ms if d.attempts else d.created_ms
    headers = signing.webhook_headers(
        body=d.body or b"",
        msg_id=d.event_id,
        timestamp=last // 1000,
        signature_key="-",
        webhook_secrets=(),
        user_agent=USER_AGENT,
    )
    return [
        Header(name, ELIDED if name.lower() in _SIGNATURE_HEADERS else value)
        for name, value in headers.items()
    ]


def test_summary(result: TestResult) -> str:
    """The test's result in one sentence of plain words (the page and the script both show it)."""
    took = f"in {result.duration_ms} ms"
    if result.delivered:
        return f"Delivered: the endpoint answered HTTP {result.status_code} {took}."
    if result.status_code is None:
        return f"Not delivered: {result.error or 'no answer'} (after {result.duration_ms} ms)."
    if 300 <= result.status_code < 400:
        why = "Redirects are not followed: use the final URL."
    else:
        why = "Only an answer in the 2xx range counts as delivered."
    # an error beside a status is a failure while reading the answer, worth naming
    if result.error and not result.error.startswith("The endpoint answered"):
        why = f"{result.error[:1].upper()}{result.error[1:]}."
    return f"Not delivered: the endpoint answered HTTP {result.status_code} {took}. {why}"
