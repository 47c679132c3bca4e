"""Whatever an endpoint answers, outcomes are stored and no batch can wedge the writer.

An endpoint answering a binary body once stopped every PostgreSQL delivery: the excerpt
held a NUL byte, PostgreSQL refused the batch, and the writer retried it forever.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator

import pytest
from cryptography.fernet import Fernet

from parcelhook.delivery.dispatcher import REFUSED, record_isolating
from parcelhook.domain import deliveries as dl
from parcelhook.domain import events as ev
from parcelhook.domain.integrations import IntegrationChanges
from parcelhook.domain.outcome import Health, Outcome, OutcomeDecision, unusual_status
from parcelhook.domain.retry import AttemptResult, Verdict
from parcelhook.store import Store
from parcelhook.store.crypto import SecretBox
from support.harness import HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode
from support.panel_client import sign_in

NOW = 1_800_000_000_000
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
BINARY = gzip.compress(b"binary answer") + b"\x00\x01\x1b[31m\xff\xfe"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    st = Store.open(database_url, SecretBox(Fernet.generate_key()))
    await st.migrate(NOW)
    yield st
    await st.close()


def _delivered(delivery_id: int, integration_id: int, result: AttemptResult) -> Outcome:
    # as recorded whatever the policy says, the attempt's error as its note
    decision = OutcomeDecision(Verdict.DELIVERED, dl.DELIVERED, NOW, result.error, Health.OK, True)
    return Outcome(delivery_id, integration_id, "w", NOW, result, decision)


async def _claimed(store: Store, n: int) -> tuple[int, list[int]]:
    async with store.transaction() as tx:
        account = await tx.create_account("x@example.com", "hash", NOW)
        integration = await tx.create_integration(
            account,
            IntegrationChanges(
                shop_name="s", system="api", webhook_active=True, webhook_url="https://e.test/"
            ),
            NOW,
        )
        events = [
            ev.make_event(account, ev.integration_changed("integration_updated", integration, NOW))
            for _ in range(n)
        ]
        await tx.enqueue_many([(e, [integration]) for e in events], NOW)
    claimed = await store.queue.claim_due("w", NOW, 60_000, n)
    return integration.id, [c.id for c in claimed]


async def test_what_an_endpoint_sent_is_stored_safely_on_both_engines(store: Store) -> None:
    integration, (a,) = await _claimed(store, 1)
    answer = AttemptResult(200, 5, "gz\x00\x01\x7f\ud800 ok\n\tend", error="bad \x00 byte")
    await store.queue.record_outcomes([_delivered(a, integration, answer)])
    async with store.reading() as r:
        account = (await r.integration_by_id(integration)).account_id  # type: ignore[union-attr]
        d = await r.delivery(account, a)
    assert d.status == dl.DELIVERED
    (attempt,) = d.attempts
    # controls become U+FFFD, a lone surrogate `?`; line ends and tabs stay
    assert attempt.response_excerpt == "gz\ufffd\ufffd\ufffd? ok\n\tend"
    assert attempt.error == "bad \ufffd byte"


async def test_a_row_the_database_refuses_is_isolated_and_the_rest_recorded(
    store: Store,
) -> None:
    integration, ids = await _claimed(store, 4)
    ok = AttemptResult(200, 5, "fine")
    outcomes = [_delivered(i, integration, ok) for i in ids]
    # an attempt for a delivery that does not exist breaks a foreign key: the whole
    # statement fails, on either engine, as a NUL byte did on PostgreSQL
    refused = _delivered(10**12, integration, ok)
    batch = [*outcomes[:2], refused, *outcomes[2:]]
    settled: list[Outcome] = []
    await record_isolating(store.queue, batch, settled)
    assert sorted(o.delivery_id for o in settled) == sorted(o.delivery_id for o in batch)
    async with store.reading() as r:
        account = (await r.integration_by_id(integration)).account_id  # type: ignore[union-attr]
        for i in ids:
            d = await r.delivery(account, i)
            assert d.status == dl.DELIVERED and len(d.attempts) == 1, d
    assert REFUSED  # the note a refused row is retried with, once


async def test_a_binary_answer_leaves_every_other_tenants_deliveries_flowing(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    hostile, healthy = await h.account(), await h.account()
    async with HostileReceiver() as rx:
        rx.route("/binary", Mode.status(200, body=BINARY))
        rx.route("/healthy", Mode.ok())
        hostile_shop = await hostile.shop(rx.url("/binary"))
        healthy_shop = await healthy.shop(rx.url("/healthy"))
        for _ in range(3):
            for acct, shop in ((hostile, hostile_shop), (healthy, healthy_shop)):
                r = await acct.call(
                    "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
                )
                assert r.status_code == 200, r.text

        async def settled(acct_id: int, shop: int) -> bool:
            found = await h.service.list_deliveries(acct_id, integration_id=shop)
            return len(found) == 3 and all(d.status == dl.DELIVERED for d in found)

        await eventually(lambda: settled(healthy.account_id, healthy_shop), within=10)
        await eventually(lambda: settled(hostile.account_id, hostile_shop), within=10)
        d = (await h.service.list_deliveries(hostile.account_id, integration_id=hostile_shop))[0]
        (attempt,) = (await h.service.get_delivery(hostile.account_id, d.id)).attempts
        assert "\x00" not in attempt.response_excerpt and "\ufffd" in attempt.response_excerpt

        # and later deliveries still flow
        r = await healthy.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": healthy_shop}}
        )
        assert r.status_code == 200
        await eventually(lambda: sum(q.path == "/healthy" for q in rx.requests) >= 4, within=10)


async def _switching_protocols(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An endpoint that switches protocols (a WebSocket server) and never answers HTTP again."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(5)
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.transport.abort()


async def test_redirects_and_switching_protocols_are_explained_in_the_log(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    acct = await h.account("explained@example.com")
    upgrading = await asyncio.start_server(_switching_protocols, "127.0.0.1", 0)
    try:
        async with HostileReceiver() as rx:
            rx.route("/moved", Mode.redirect(301, "/elsewhere"))
            rx.route("/permanent", Mode.redirect(308, "/elsewhere"))
            shops = {
                301: await acct.shop(rx.url("/moved")),
                308: await acct.shop(rx.url("/permanent")),
                101: await acct.shop(
                    f"http://127.0.0.1:{upgrading.sockets[0].getsockname()[1]}/ws"
                ),
            }
            for shop in shops.values():
                r = await acct.call(
                    "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
                )
                assert r.status_code == 200

            async def attempted() -> bool:
                for shop in shops.values():
                    (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop)
                    if d.attempt_count != 1:
                        return False
                return True

            await eventually(attempted, within=10)
    finally:
        upgrading.close()
    words = {
        301: "redirects are not followed",
        308: "redirects are not followed",
        101: "no final answer; only 2xx counts",
    }
    panel = await sign_in(h.base_url, "explained@example.com", "password123")
    try:
        for code, shop in shops.items():
            (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop)
            assert d.last_status_code == code
            # the log's row, and the attempt on the delivery page
            assert words[code] in (d.last_error or ""), (code, d.last_error)
            page = await panel.get(f"/settings/integrations/{shop}/log/{d.id}")
            assert page.status_code == 200
            # beside the attempt's status too, not only as the delivery's last error (an
            # earlier attempt's words would be nowhere)
            attempts = page.text.split('id="attempts-heading"', 1)[1]
            assert f"HTTP {code}" in attempts and words[code] in attempts, code
    finally:
        await panel.aclose()


def test_every_unusual_status_has_words() -> None:
    assert unusual_status(AttemptResult(101, 1)) is not None
    assert unusual_status(AttemptResult(308, 1)) is not None
    assert unusual_status(AttemptResult(500, 1)) is None  # "HTTP 500" says it
    assert unusual_status(AttemptResult(200, 1)) is None
