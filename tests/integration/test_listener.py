"""PostgreSQL's LISTEN connection heals: it reconnects after losing its connection and then
claims once, so what was committed while it was away is delivered at once and not at the
next poll; a listener that ends, or goes silent, makes the process unhealthy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from parcelhook.domain.clock import FakeClock
from parcelhook.store.postgres import DeliveryListener
from parcelhook.supervision import Health
from support.harness import (
    HarnessFactory,
    drop_pg_database,
    eventually,
    make_pg_database,
    pg_reachable,
)
from support.hostile_receiver import HostileReceiver
from support.tcp_proxy import TcpProxy

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    pg_reachable(required_reason="the LISTEN connection is PostgreSQL's")
    url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


def parcels_received(rx: HostileReceiver) -> set[int]:
    return {
        int(body["parcel"]["id"])
        for body in (json.loads(r.body) for r in rx.requests)
        if body.get("action") == "parcel_status_changed"
    }


async def test_commits_made_while_the_listener_was_away_are_claimed_when_it_is_back(
    pg_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    name = pg_database.rsplit("/", 1)[1]
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    # the dispatching process reaches PostgreSQL through the proxy, and polls only once a
    # minute: within this test only a NOTIFY, or the claim after reconnecting, wakes it
    dispatching = HarnessFactory(f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}", tmp_path)
    # another process (the API's) on a path of its own, and without a dispatcher
    api = HarnessFactory(pg_database, tmp_path)
    try:
        d = await dispatching(poll_seconds=60)
        a = await api(dispatcher=False)
        listener = d.runtime.health.loops["listener"]
        async with HostileReceiver() as rx:
            acct = await a.account()
            shop = await acct.shop(rx.url("/hook"))
            body = {"parcel": {**PARCEL, "integration_id": shop}}
            await eventually(lambda: listener.last_ok_ms is not None, what="the LISTEN")

            first = await acct.call("POST", "/api/v2/parcels", body)
            assert first.status_code == 200, first.text
            # the other process's commit arrives by NOTIFY
            await eventually(lambda: len(parcels_received(rx)) == 1, within=5)
            dispatcher = d.runtime.dispatcher
            assert dispatcher is not None

            async def settled() -> bool:
                (one,) = await a.service.list_deliveries(acct.account_id, integration_id=shop)
                return one.status == "delivered"

            await eventually(settled, within=5)
            await asyncio.sleep(0.5)  # the claim after it found nothing: the claimer sleeps
            claims = dispatcher.claimer_health.last_ok_ms

            await proxy.cut()
            await eventually(lambda: listener.failures > 0, within=10, what="the lost LISTEN")
            # committed while nobody listens: its NOTIFY reaches no one
            meanwhile = await acct.call("POST", "/api/v2/parcels", body)
            assert meanwhile.status_code == 200, meanwhile.text
            await asyncio.sleep(0.5)
            assert len(parcels_received(rx)) == 1
            # the claimer slept through the cut: only the listener can wake it now
            assert dispatcher.claimer_health.last_ok_ms == claims
            assert dispatcher.claimer_health.failures == 0
            await proxy.restore()

            # reconnected (backoff well under 5 s), it claims once: delivered long before
            # the minute's poll
            await eventually(
                lambda: int(meanwhile.json()["parcel"]["id"]) in parcels_received(rx),
                within=15,
                what="the parcel committed meanwhile to be delivered",
            )
            assert listener.failures == 0 and listener.failing_since_ms is None
            # and NOTIFY works again on the new connection
            again = await acct.call("POST", "/api/v2/parcels", body)
            assert again.status_code == 200
            await eventually(lambda: len(parcels_received(rx)) == 3, within=5)
    finally:
        await api.close()
        await dispatching.close()
        await proxy.close()


async def test_a_listener_that_ends_is_fatal(
    pg_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    factory = HarnessFactory(pg_database, tmp_path)
    try:
        h = await factory()
        fatal: list[str] = []
        h.runtime.on_fatal = fatal.append
        assert h.runtime.listener is not None
        listening = h.runtime.health.loops["listener"]
        await eventually(lambda: listening.last_ok_ms is not None, what="the LISTEN")
        h.runtime.listener.cancel()  # as if it had ended (a bug)
        await eventually(lambda: fatal == ["listener"], within=5)
        assert h.runtime.health.fatal == "listener"
        assert not h.runtime.health.healthy
    finally:
        await factory.close()


async def test_a_silent_listener_is_stuck() -> None:
    clock = FakeClock(1_000_000)
    health = Health(clock.now_ms, grace_ms=30_000)
    loop = health.loop("listener")
    DeliveryListener("postgresql://nobody@127.0.0.1:1/none", lambda: None, loop)
    loop.ok()
    await clock.advance(60)  # it turns at each ping, every 30 s
    assert health.healthy
    await clock.advance(11)  # silent for a ping, its timeout and the grace
    assert not health.healthy
