"""Per-endpoint lanes: a black-holed endpoint fills only its own lane."""

from __future__ import annotations

import asyncio
import json
import time

from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.sender import Sender
from parcelhook.domain import deliveries as dl
from parcelhook.domain.clock import FakeClock
from support.harness import HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1", "country": "NL"}


async def test_a_black_hole_does_not_delay_a_healthy_endpoint(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/hole", Mode.hang())
        ids = {path: await acct.shop(rx.url(path), name=path) for path in ("/hole", "/ok")}
        # the black hole's backlog is queued first, so a shared queue would clog
        for _ in range(30):
            await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": ids["/hole"]}}
            )
        for _ in range(10):
            await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": ids["/ok"]}}
            )
        config = DispatcherConfig(lane_concurrency=2, lane_backlog=4, batch_size=8)
        async with Sender(timeout=3, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(h.store.queue, sender, h.runtime.clock, config=config)
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            started = asyncio.get_running_loop().time()
            await eventually(
                lambda: _delivered(h, acct.account_id, ids["/ok"], 10),
                within=5,
                what="all healthy deliveries",
            )
            took = asyncio.get_running_loop().time() - started
            hole = [r for r in rx.requests if r.path == "/hole"]
            # the black hole holds at most its lane's concurrency; its backlog waits in the table
            assert len(hole) == 2
            assert dispatcher.in_flight <= config.lane_concurrency + config.lane_backlog
            assert took < 3
            stop.set()
            rx.mode = Mode.ok()
            await asyncio.wait_for(run, 40)
    bodies = [json.loads(r.body)["action"] for r in rx.requests if r.path == "/ok"]
    assert bodies == ["parcel_status_changed"] * 10


async def _delivered(h: object, account_id: int, integration_id: int, n: int) -> bool:
    service = h.service  # type: ignore[attr-defined]
    done = await service.list_deliveries(
        account_id, integration_id=integration_id, status=dl.DELIVERED
    )
    return len(done) == n


async def test_a_lease_expiring_mid_flight_never_sends_twice(harness: HarnessFactory) -> None:
    clock = FakeClock()
    h = await harness(dispatcher=False, clock=clock)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/slow", Mode.hang())
        shop_id = await acct.shop(rx.url("/slow"), name="slow")
        await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
        )
        config = DispatcherConfig(lease_ms=60_000)
        async with Sender(timeout=1.5, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(h.store.queue, sender, clock, config=config)
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            await rx.wait_for_requests(1)
            await clock.advance(120)  # the lease runs out while the request hangs
            dispatcher.wake()
            (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
            await eventually(
                lambda: _attempts(h, acct.account_id, d.id, 1),
                within=5,
                what="the timed-out attempt",
            )
            stop.set()
            await asyncio.wait_for(run, 10)
        assert len(rx.requests) == 1
        settled = await h.service.get_delivery(acct.account_id, d.id)
        # settled by the newer lease: a retry is scheduled, not a lost outcome
        assert settled.status == dl.PENDING and settled.attempt_count == 1
        assert settled.attempts[0].error and "timed out" in settled.attempts[0].error


async def _attempts(h: object, account_id: int, delivery_id: int, n: int) -> bool:
    service = h.service  # type: ignore[attr-defined]
    return len((await service.get_delivery(account_id, delivery_id)).attempts) == n


async def test_a_timing_out_endpoint_is_probed_one_request_at_a_time(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/hole", Mode.hang())
        ids = {path: await acct.shop(rx.url(path), name=path) for path in ("/hole", "/ok")}
        for _ in range(40):
            await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": ids["/hole"]}}
            )
        config = DispatcherConfig(lane_concurrency=4, lane_backlog=64, batch_size=64)
        async with Sender(timeout=0.4, allow_private=True, allow_http=True) as sender:
            dispatcher = Dispatcher(h.store.queue, sender, h.runtime.clock, config=config)
            stop = asyncio.Event()
            run = asyncio.create_task(dispatcher.run(stop))
            await rx.wait_for_requests(4)  # the lane starts at full concurrency
            began = time.monotonic()
            await asyncio.sleep(2.0)  # ~5 timeouts' worth
            hole = [r for r in rx.requests if r.path == "/hole"]
            # one probe per 0.4 s timeout at most, however late this loop woke up
            probes = (time.monotonic() - began) / 0.4
            for _ in range(5):
                await acct.call(
                    "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": ids["/ok"]}}
                )
            await eventually(
                lambda: _delivered(h, acct.account_id, ids["/ok"], 5),
                within=5,
                what="the healthy endpoint's deliveries",
            )
            stop.set()
            await asyncio.wait_for(run, 10)
        # after the first timeouts one request at a time, not four: 4 + ~5, not ~20
        assert 4 <= len(hole) <= 4 + probes + 2, (len(hole), probes)
        # what the shrunken lane could not send went back to the table, unleased
        async with h.store.reading() as r:
            from sqlalchemy import text

            leased = (
                await r.conn.execute(
                    text("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")
                )
            ).scalar()
        assert leased == 0
