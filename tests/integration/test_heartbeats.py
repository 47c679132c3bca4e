"""A dispatcher that died is noticed by its silence: its deliveries come back within
seconds, not when their leases end (two minutes by default)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from dataclasses import replace

import pytest

from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.sender import Sender
from parcelhook.domain.clock import SystemClock
from parcelhook.store.crypto import SecretBox
from parcelhook.store.store import Store
from support.harness import MASTER_KEY, HarnessFactory, eventually
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
        assert (await queue.heartbeat(DEAD, clock.now_ms() - 60_000, 3_600_000)).revived == 0
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
    assert (await queue.heartbeat("someone-else:2:1", clock.now_ms(), 3_600_000)).revived == 0


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
                assert (
                    await queue.heartbeat("other-host:2:f00d", clock.now_ms(), 1_000)
                ).revived == 0
            finally:
                stop.set()
                await task


class StalledDispatcher:
    """A dispatcher on its own thread and event loop (as in another process), whose loop
    the test can block, as a long synchronous call or a paused VM does."""

    def __init__(self, database_url: str, config: DispatcherConfig) -> None:
        self._url = database_url
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.dispatcher: Dispatcher | None = None

    async def _main(self) -> None:
        store = Store.open(self._url, SecretBox(MASTER_KEY.encode()))
        try:
            async with Sender(timeout=5.0, allow_private=True, allow_http=True) as sender:
                self.dispatcher = Dispatcher(
                    store.queue, sender, SystemClock(), config=self._config, owner="stalled:1:a"
                )
                self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
                self._ready.set()
                await self.dispatcher.run(self._stop)
        finally:
            await store.close()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10)

    def block(self, seconds: float) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(time.sleep, seconds)

    async def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        await asyncio.to_thread(self._thread.join, 30)
        assert not self._thread.is_alive()


async def test_a_dispatcher_taken_for_dead_does_not_send_what_it_no_longer_holds(
    harness: HarnessFactory,
) -> None:
    """A dispatcher whose event loop stalls past `owner_dead_after_ms` has its deliveries
    given back and sent by another; when it wakes, it must not send them a second time."""
    h = await harness(dispatcher=False)
    acct = await h.account()
    # each answer takes ~0.5 s: the stalled dispatcher's one-request lane holds the rest
    async with HostileReceiver(Mode.trickle(interval=0.25, size=2)) as rx:
        shop = await acct.shop(rx.url("/hook"))
        for _ in range(6):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
            )
            assert r.status_code == 200
        quick = DispatcherConfig(heartbeat_ms=200, owner_dead_after_ms=1_000, send_fence_ms=500)
        stalled = StalledDispatcher(
            h.runtime.settings.database_url, replace(quick, lane_start=1, lane_concurrency=1)
        )
        stalled.start()
        try:
            await rx.wait_for_requests(1)
            stalled.block(3.0)  # three dead-after periods
            async with Sender(timeout=5.0, allow_private=True, allow_http=True) as sender:
                live = Dispatcher(
                    h.store.queue, sender, SystemClock(), config=quick, owner="live:2:b"
                )
                stop = asyncio.Event()
                task = asyncio.create_task(live.run(stop))
                try:
                    await eventually(
                        lambda: len({r.headers["webhook-id"] for r in rx.requests}) == 6,
                        within=10,
                        what="every delivery sent by the live dispatcher",
                    )
                    await asyncio.sleep(5.0)  # the stalled one woke up 2 s ago or more
                finally:
                    stop.set()
                    await task
        finally:
            await stalled.stop()
    sent = Counter(r.headers["webhook-id"] for r in rx.requests)
    # only the one on the wire when the loop stalled may arrive twice
    assert sum(sent.values()) <= 7, sent


async def test_a_dispatcher_on_a_host_with_a_long_name_delivers(
    harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Kubernetes pod's host name may be 63 characters; its lease tokens must still fit
    deliveries.lease_owner (PostgreSQL refused every claim)."""
    monkeypatch.setattr(socket, "gethostname", lambda: "parcelhook-worker-" + "x" * 45)
    h = await harness(dispatcher=False)
    acct = await h.account()
    async with HostileReceiver() as rx:
        shop = await acct.shop(rx.url("/hook"))
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200
        async with Sender(timeout=2.0, allow_private=True, allow_http=True) as sender:
            d = Dispatcher(h.store.queue, sender, SystemClock())
            d._claims = 10**12  # a long-running one
            stop = asyncio.Event()
            task = asyncio.create_task(d.run(stop))
            try:
                await rx.wait_for_requests(1)
                await eventually(lambda: d.delivered == 1, within=10, what="its outcome")
            finally:
                stop.set()
                await task
        assert d.claimer_health.failures == 0
