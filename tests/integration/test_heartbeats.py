"""A dispatcher that died is noticed by its silence: its deliveries come back within
seconds, not when their leases end (two minutes by default)."""

from __future__ import annotations

import asyncio
import time

from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.sender import Sender
from parcelhook.domain.clock import SystemClock
from support.harness import HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
LEASE_MS = 120_000
DEAD = "crashed-host:4242:feed"


async def test_a_silent_dispatchers_deliveries_come_back_long_before_their_lease(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    queue, clock = h.store.queue, SystemClock()
    acct = await h.account()
    async with HostileReceiver() as rx:
        shop = await acct.shop(rx.url("/hook"))
        for _ in range(3):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
            )
            assert r.status_code == 200
        # a dispatcher that beat once, claimed everything, and was killed
        assert await queue.heartbeat(DEAD, clock.now_ms() - 60_000, 3_600_000) == 0
        held = await queue.claim_due(f"{DEAD}#1", clock.now_ms(), LEASE_MS, 100)
        assert len(held) == 3  # the three parcels
        assert await queue.next_due_ms() is not None

        config = DispatcherConfig(heartbeat_ms=200, owner_dead_after_ms=1_000)
        async with Sender(timeout=2.0, allow_private=True, allow_http=True) as sender:
            live = Dispatcher(queue, sender, clock, config=config, owner="live-host:1:beef")
            stop = asyncio.Event()
            task = asyncio.create_task(live.run(stop))
            started = time.monotonic()
            try:
                await eventually(lambda: len(rx.requests) >= 3, within=10, what="redelivery")
            finally:
                stop.set()
                await task
    # within a few heartbeats, where the lease would have kept them for two minutes
    assert time.monotonic() - started < 5
    # the live dispatcher's own heartbeat is kept; the dead one's is gone
    assert await queue.heartbeat("someone-else:2:1", clock.now_ms(), 3_600_000) == 0


async def test_a_dispatcher_full_of_slow_deliveries_keeps_beating(
    harness: HarnessFactory,
) -> None:
    """Waiting for room (every slot held by a slow endpoint) is no silence: another
    dispatcher must not take back, and send again, deliveries still being sent."""
    h = await harness(dispatcher=False)
    queue, clock = h.store.queue, SystemClock()
    acct = await h.account()
    async with HostileReceiver(Mode.hang()) as rx:
        shop = await acct.shop(rx.url("/hook"))
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200
        config = DispatcherConfig(heartbeat_ms=200, owner_dead_after_ms=1_000, max_in_flight=1)
        async with Sender(timeout=4.0, allow_private=True, allow_http=True) as sender:
            busy = Dispatcher(queue, sender, clock, config=config, owner="busy-host:1:cafe")
            stop = asyncio.Event()
            task = asyncio.create_task(busy.run(stop))
            try:
                await rx.wait_for_requests(1)
                await asyncio.sleep(2.0)  # two dead-after periods into the hanging attempt
                assert await queue.heartbeat("other-host:2:f00d", clock.now_ms(), 1_000) == 0
            finally:
                stop.set()
                await task
