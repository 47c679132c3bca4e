"""Failing endpoints: the account is e-mailed after an hour of failures (through a real SMTP
server, aiosmtpd), the webhook is turned off after three days with the reason recorded, and
without SMTP settings nothing is sent but the webhook is still turned off."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from parcelhook.alerts import SmtpMailer
from parcelhook.domain.clock import FakeClock, iso_ms
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
HOUR = 3600.0


class Inbox:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _failing_shop(h: Harness, rx: HostileReceiver) -> tuple[Account, int]:
    rx.route("/down", Mode.status(503, body=b"down for maintenance"))
    acct = await h.account("owner@example.com")
    shop = await acct.shop(rx.url("/down"), name="Flaky shop")
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}})
    assert r.status_code == 200, r.text

    async def failing() -> bool:
        return (await h.service.get_integration(acct.account_id, shop)).failing_since_ms is not None

    await eventually(failing, what="the endpoint to be failing")
    return acct, shop


async def updates_of(acct: Account, integration_id: int) -> list[dict[str, Any]]:
    """The `integration_updated` events about one integration in the account's events list."""
    r = await acct.call("GET", "/api/v2/webhook-events", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [
        e["payload"]["integration"]
        for e in r.json()["events"]
        if e["action"] == "integration_updated"
        and e["payload"]["integration"]["id"] == integration_id
    ]


async def test_the_account_is_told_then_the_webhook_is_turned_off(
    harness: HarnessFactory, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    clock = FakeClock()
    h = await harness(clock=clock, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
    async with HostileReceiver() as rx:
        acct, shop = await _failing_shop(h, rx)
        check = h.runtime.failing.check_once
        await clock.advance(0.5 * HOUR)
        await check(clock.now_ms())
        assert inbox.messages == []  # not an hour yet
        await clock.advance(0.6 * HOUR)
        await check(clock.now_ms())
        await check(clock.now_ms())  # a second check tells no one twice
        assert len(inbox.messages) == 1
        told = inbox.messages[0]
        assert told["To"] == "owner@example.com" and "Flaky shop" in told["Subject"]
        assert "503" in told.get_payload() or "failed" in told.get_payload()
        assert (await h.service.get_integration(acct.account_id, shop)).webhook_active
        await clock.advance(3 * 24 * HOUR)
        await check(clock.now_ms())
        integration = await h.service.get_integration(acct.account_id, shop)
        assert not integration.webhook_active
        assert integration.disabled_reason is not None
        assert "3 days" in integration.disabled_reason
        # a change like any other (SPEC §2): integration_updated, in the events list; queued
        # for no one, as the only integration that hears of it is this one, now off
        (update,) = await updates_of(acct, shop)
        assert update["webhook_active"] is False and update["failing_since"] is not None
        assert len(await h.service.list_deliveries(acct.account_id, integration_id=shop)) == 1
        await clock.advance(60)
        await check(clock.now_ms())  # turned off once, announced once
        assert len(await updates_of(acct, shop)) == 1
        assert len(inbox.messages) == 2 and "turned off" in inbox.messages[1]["Subject"]
        # turned on again by its owner: the reason is history
        r = await acct.call("PATCH", f"/api/v2/integrations/{shop}", {"webhook_active": True})
        assert r.status_code == 200, r.text
        again = await h.service.get_integration(acct.account_id, shop)
        assert again.webhook_active and again.disabled_reason is None
    found = h.runtime.metrics.exposition().decode()
    assert 'parcelhook_endpoint_alerts_total{action="mailed"} 2.0' in found
    assert 'parcelhook_endpoint_alerts_total{action="disabled"} 1.0' in found


async def test_an_alert_that_could_not_be_sent_is_sent_at_the_next_check(
    harness: HarnessFactory, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]  # nothing listens here once it closes
    clock = FakeClock()
    h = await harness(clock=clock, smtp_host="127.0.0.1", smtp_port=dead_port, smtp_tls="none")
    async with HostileReceiver() as rx:
        await _failing_shop(h, rx)
        await clock.advance(1.1 * HOUR)
        await h.runtime.failing.check_once(clock.now_ms())  # the SMTP server is down
        assert inbox.messages == []
        # the SMTP server is back
        settings = h.runtime.settings.model_copy(update={"smtp_port": port})
        h.runtime.failing.mailer = SmtpMailer(settings)
        await clock.advance(60)
        await h.runtime.failing.check_once(clock.now_ms())
        assert len(inbox.messages) == 1 and "failing" in inbox.messages[0]["Subject"]


async def test_without_smtp_nothing_is_sent_and_the_webhook_is_still_turned_off(
    harness: HarnessFactory, smtp: tuple[Inbox, int]
) -> None:
    inbox, _port = smtp
    clock = FakeClock()
    h = await harness(clock=clock)
    async with HostileReceiver() as rx:
        acct, shop = await _failing_shop(h, rx)
        await clock.advance(3 * 24 * HOUR + 60)
        await h.runtime.failing.check_once(clock.now_ms())
    integration = await h.service.get_integration(acct.account_id, shop)
    assert not integration.webhook_active and integration.disabled_reason
    assert inbox.messages == []


async def test_a_healthy_endpoint_is_left_alone(
    harness: HarnessFactory, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    clock = FakeClock()
    h = await harness(clock=clock, smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
    async with HostileReceiver() as rx:
        acct = await h.account()
        shop = await acct.shop(rx.url("/ok"))
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200
        await rx.wait_for_requests(1)
        await clock.advance(4 * 24 * HOUR)
        await h.runtime.failing.check_once(clock.now_ms())
    assert (await h.service.get_integration(acct.account_id, shop)).webhook_active
    assert inbox.messages == []


async def test_a_410_records_why_the_webhook_was_turned_off(harness: HarnessFactory) -> None:
    h = await harness()
    async with HostileReceiver() as rx:
        rx.route("/gone", Mode.status(410))
        acct = await h.account()
        shop = await acct.shop(rx.url("/gone"))
        assert await updates_of(acct, shop) == []
        for _ in range(2):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
            )
            assert r.status_code in (200, 201)

        async def off() -> bool:
            return not (await h.service.get_integration(acct.account_id, shop)).webhook_active

        await eventually(off, what="the webhook to be turned off")
    integration = await h.service.get_integration(acct.account_id, shop)
    assert integration.disabled_reason == "its endpoint answered 410 Gone"
    assert integration.disabled_ms is not None
    # one integration_updated (the second 410 changed nothing), committed with the change
    (update,) = await updates_of(acct, shop)
    assert update["webhook_active"] is False
    assert update["last_updated_at"] == iso_ms(integration.last_updated_ms)
    deliveries = await h.service.list_deliveries(acct.account_id, integration_id=shop)
    assert {d.action for d in deliveries} == {"parcel_status_changed"}
