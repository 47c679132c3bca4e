"""A dispatcher that stops, on both engines and real HTTP: it writes the last outcomes and
ends, and what it claimed and never sent is due again for anyone at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from sqlalchemy import text

from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.sender import Sender
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import Integration
from parcelhook.domain.outcome import Outcome
from parcelhook.store.queue import Beat, DeliveryQueue
from parcelhook.supervision import Backoff
from support.harness import Harness, HarnessFactory, eventually
from support.loopback_http import serving

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1", "country": "NL"}


class Receiver:
    """Answers 200 at once to the first request, and to the others once `answering` is set."""

    def __init__(self) -> None:
        self.answering = asyncio.Event()
        self.received = 0
        self.port = 0

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        if self.received > 1:
            await asyncio.wait_for(self.answering.wait(), 30)
        return web.Response(text="ok")

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    rx = Receiver()
    async with serving(rx.hook, "/hook") as rx.port:
        try:
            yield rx
        finally:
            rx.answering.set()


class Hooked:
    """The engine's queue, with a hook in the way of two of its calls."""

    def __init__(self, queue: DeliveryQueue) -> None:
        self.queue = queue
        self.writes = 0
        self.write_gate = asyncio.Event()
        self.write_gate.set()
        self.lose_next_answer = False
        self.lost = 0

    async def claim_due(
        self,
        lease: str,
        now_ms: int,
        lease_ms: int,
        limit: int,
        room: Mapping[int, int] | None = None,
        default_room: int | None = None,
    ) -> list[Claimed]:
        claimed = await self.queue.claim_due(lease, now_ms, lease_ms, limit, room, default_room)
        if claimed and self.lose_next_answer:
            # committed, and the connection drops before the answer arrives
            self.lose_next_answer, self.lost = False, len(claimed)
            raise ConnectionResetError("connection was closed in the middle of operation")
        return claimed

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self.writes += 1
        await self.write_gate.wait()
        await self.queue.record_outcomes(outcomes)

    async def release(self, leases: Sequence[str], ids: Sequence[int], due_ms: int) -> None:
        await self.queue.release(leases, ids, due_ms)

    async def release_claim(self, lease: str, due_ms: int) -> None:
        await self.queue.release_claim(lease, due_ms)

    async def next_due_ms(self) -> int | None:
        return await self.queue.next_due_ms()

    async def heartbeat(self, owner: str, now_ms: int, dead_after_ms: int) -> Beat:
        return await self.queue.heartbeat(owner, now_ms, dead_after_ms)

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        return await self.queue.integrations_by_id(ids)


async def shop_with_parcels(h: Harness, url: str, n: int) -> None:
    acct = await h.account()
    shop = await acct.shop(url)
    for _ in range(n):
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200, r.text


async def deliveries(h: Harness) -> list[tuple[str, int, int, str | None]]:
    """(status, attempt_count, next_attempt_ms, lease_owner) of each delivery, by id."""
    async with h.store.engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status, attempt_count, next_attempt_ms, lease_owner FROM deliveries "
                "ORDER BY id"
            )
        )
        return [(str(s), int(a), int(n), o) for s, a, n, o in rows]


async def test_a_stopping_dispatcher_writes_its_last_outcomes_and_ends(
    harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # the last outcomes arrive while the writer is writing the first: the wake it takes
    # them on is shutdown's last one (the worker used to wait 10 s here, then log an ERROR
    # that it gave up writing 0 outcomes)
    h = await harness(dispatcher=False)
    async with receiving() as rx:
        await shop_with_parcels(h, rx.url(), 3)
        queue = Hooked(h.store.queue)
        queue.write_gate.clear()
        async with Sender(timeout=5, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(queue, sender, h.runtime.clock)
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            await eventually(lambda: queue.writes == 1 and rx.received == 3, within=10)
            stop.set()
            rx.answering.set()
            await asyncio.sleep(0.2)  # the last two outcomes arrive; shutdown asks for them
            queue.write_gate.set()
            started = time.monotonic()
            await asyncio.wait_for(run, 8)
    assert time.monotonic() - started < 3
    assert [d[:2] for d in await deliveries(h)] == [("delivered", 1)] * 3
    assert "gave up writing" not in caplog.text


async def test_what_a_stopping_dispatcher_never_sent_is_due_again_at_once(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    clock = FakeClock()  # never reaches a lease's end
    async with receiving() as rx:
        await shop_with_parcels(h, rx.url(), 4)
        config = DispatcherConfig(lane_concurrency=1, lane_start=1)
        async with Sender(timeout=5, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(h.store.queue, sender, clock, config=config)
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            await eventually(lambda: rx.received == 2, within=10)
            # one delivered, one on the wire, two waiting in the lane: stop
            stop.set()

            async def given_back() -> bool:
                return [d[3] is None for d in await deliveries(h)] == [True, False, True, True]

            # while the one on the wire is still being sent, and it alone stays leased
            await eventually(given_back, within=2, what="the unsent to be given back")
            rx.answering.set()
            await asyncio.wait_for(run, 8)
    now = clock.now_ms()
    assert await deliveries(h) == [
        ("delivered", 1, now, None),
        ("delivered", 1, now, None),
        ("pending", 0, now, None),
        ("pending", 0, now, None),
    ]


async def test_a_claim_without_an_answer_is_given_back_when_stopping(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    clock = FakeClock()
    async with receiving() as rx:
        await shop_with_parcels(h, rx.url(), 3)
        queue = Hooked(h.store.queue)
        queue.lose_next_answer = True
        async with Sender(timeout=5, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(queue, sender, clock)
            dispatcher.backoff = Backoff(first_s=60, cap_s=60)  # stopped before a next claim
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            await eventually(lambda: queue.lost == 3, within=10)
            stop.set()
            await asyncio.wait_for(run, 8)
    assert rx.received == 0
    assert await deliveries(h) == [("pending", 0, clock.now_ms(), None)] * 3
