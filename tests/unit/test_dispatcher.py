"""The dispatcher's rules on fakes: an in-memory queue, a fake clock, a mock transport.

No sockets and no database: each test runs in milliseconds. The same behaviours on the
real engines and real HTTP are in tests/integration (test_lanes, test_scaleout, e2e).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from parcelhook.delivery.dispatcher import Dispatcher, DispatcherConfig
from parcelhook.delivery.headers import USER_AGENT
from parcelhook.delivery.sender import Sender
from parcelhook.domain import deliveries as dl
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import Integration
from parcelhook.domain.outcome import GONE, WEBHOOK_OFF, Outcome
from parcelhook.domain.retry import RetryPolicy
from parcelhook.domain.signing import sendcloud_signature
from parcelhook.supervision import Backoff
from parcelhook.testing import FakeClock, MemoryQueue, MockTransport, Request, Response

BODY = b'{"action": "parcel_status_changed"}'
POLICY = RetryPolicy(delays=(300.0, 600.0), jitter=0.0)


async def until(condition: Callable[[], bool], within: float = 2.0) -> None:
    """Let the dispatcher run until `condition` holds (bounded, in real time)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.001)


@asynccontextmanager
async def dispatching(
    queue: MemoryQueue,
    clock: FakeClock,
    transport: MockTransport,
    config: DispatcherConfig | None = None,
) -> AsyncIterator[Dispatcher]:
    sender = Sender(timeout=1.0, allow_private=True, transport=transport)
    dispatcher = Dispatcher(queue, sender, clock, policy=POLICY, config=config)
    stop = asyncio.Event()
    run = asyncio.create_task(dispatcher.run(stop))
    try:
        yield dispatcher
    finally:
        stop.set()
        await asyncio.wait_for(run, 5)
        await sender.close()


def statuses(queue: MemoryQueue) -> list[str]:
    return [d.status for d in queue.deliveries.values()]


async def test_delivers_signed_and_records_the_attempt() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    transport = MockTransport(lambda _: Response(200, b"thanks"))
    async with dispatching(queue, clock, transport):
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 3)
    request = transport.requests[0]
    assert (request.url, request.body) == ("https://shop.example/hook", BODY)
    assert request.headers["User-Agent"] == USER_AGENT
    assert request.headers["Sendcloud-Signature"] == sendcloud_signature(BODY, shop.signing_key)
    d = next(iter(queue.deliveries.values()))
    assert (d.attempt_count, d.attempts[0].response_excerpt) == (1, "thanks")


async def test_a_failure_is_retried_on_schedule_and_then_delivered() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    (i,) = queue.enqueue(shop.id, BODY, clock.now_ms())
    answers = iter([Response(500), Response(204)])
    start = clock.now_ms()
    async with dispatching(queue, clock, MockTransport(lambda _: next(answers))):
        await until(lambda: queue.deliveries[i].attempt_count == 1)
        d = queue.deliveries[i]
        assert (d.status, d.next_attempt_ms, d.last_status_code) == (
            dl.PENDING,
            start + 300_000,
            500,
        )
        assert queue.integrations[shop.id].failing_since_ms == start
        await clock.advance(299)
        await asyncio.sleep(0.01)
        assert queue.deliveries[i].attempt_count == 1  # not before its time
        await clock.advance(1)
        await until(lambda: queue.deliveries[i].status == dl.DELIVERED)
    assert queue.deliveries[i].attempt_count == 2
    assert queue.integrations[shop.id].failing_since_ms is None


async def test_retry_after_sets_the_next_attempt() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    (i,) = queue.enqueue(shop.id, BODY, clock.now_ms())
    transport = MockTransport(lambda _: Response(429, retry_after="450"))
    async with dispatching(queue, clock, transport):
        await until(lambda: queue.deliveries[i].attempt_count == 1)
    assert queue.deliveries[i].next_attempt_ms == clock.now_ms() + 450_000


async def test_410_turns_the_webhook_off_and_later_deliveries_fail_unsent() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    (first,) = queue.enqueue(shop.id, BODY, clock.now_ms())
    transport = MockTransport(lambda _: Response(410))
    async with dispatching(queue, clock, transport):
        await until(lambda: queue.deliveries[first].status == dl.FAILED)
        assert queue.deliveries[first].last_error == GONE
        assert queue.integrations[shop.id].webhook_active is False
        (later,) = queue.enqueue(shop.id, BODY, clock.now_ms())
        await clock.advance(1)
        await until(lambda: queue.deliveries[later].status == dl.FAILED)
    assert queue.deliveries[later].last_error == WEBHOOK_OFF
    assert (queue.deliveries[later].attempt_count, queue.deliveries[later].attempts) == (0, [])
    assert len(transport.requests) == 1


async def test_a_slow_endpoint_fills_only_its_own_lane() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    slow = queue.add_integration("https://slow.example/hook")
    fast = queue.add_integration("https://fast.example/hook")
    queue.enqueue(slow.id, BODY, clock.now_ms(), count=20)
    fast_ids = queue.enqueue(fast.id, BODY, clock.now_ms(), count=20)
    gate = asyncio.Event()
    in_flight = {"now": 0, "most": 0}

    async def answer(request: Request) -> Response:
        if "slow" in request.url:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
            await gate.wait()
            in_flight["now"] -= 1
        return Response(200)

    config = DispatcherConfig(lane_concurrency=4, lane_start=4)
    async with dispatching(queue, clock, MockTransport(answer), config):
        await until(lambda: all(queue.deliveries[i].status == dl.DELIVERED for i in fast_ids))
        assert in_flight["most"] == 4  # the slow lane's concurrency, no more
        gate.set()
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 40)


async def test_timeouts_shrink_the_lane_and_shed_what_it_cannot_send() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    hole = queue.add_integration("https://hole.example/hook")
    queue.enqueue(hole.id, BODY, clock.now_ms(), count=40)
    state = {"now": 0, "finished": 0, "most_after_first_wave": 0}

    async def answer(_: Request) -> Response:
        state["now"] += 1
        if state["finished"] >= 4:
            state["most_after_first_wave"] = max(state["most_after_first_wave"], state["now"])
        await asyncio.sleep(0.002)
        state["now"] -= 1
        state["finished"] += 1
        raise TimeoutError

    transport = MockTransport(answer)
    config = DispatcherConfig(lane_concurrency=4, lane_start=4, lane_backlog_per_slot=4)
    async with dispatching(queue, clock, transport, config):
        await until(
            lambda: all(
                d.attempt_count == 1 and d.lease_owner is None for d in queue.deliveries.values()
            )
        )
    # the first wave went out at the lane's concurrency; after its timeouts, one at a time
    assert state["most_after_first_wave"] == 1
    # what the shrunken lane could not hold went back to the queue, and none went twice
    assert queue.released > 0
    assert len(transport.requests) == 40
    retry_at = clock.now_ms() + 300_000
    assert all(
        (d.status, d.next_attempt_ms) == (dl.PENDING, retry_at) for d in queue.deliveries.values()
    )


class CountingQueue(MemoryQueue):
    """Counts the claimer's round trips; `during_claim` runs inside each claim (a commit's
    NOTIFY arriving while it is under way)."""

    def __init__(self) -> None:
        super().__init__()
        self.claims = 0
        self.next_dues = 0
        self.during_claim: Callable[[], None] = lambda: None

    async def claim_due(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        self.claims += 1
        self.during_claim()
        return await super().claim_due(*args, **kwargs)

    async def next_due_ms(self) -> int | None:
        self.next_dues += 1
        return await super().next_due_ms()


async def test_a_claim_that_took_everything_due_is_not_repeated_when_its_lane_empties() -> None:
    # a lane asks for more when half empty; after a claim that found less than it could
    # take, that would be a second claim finding nothing, and a second next-due query
    queue, clock = CountingQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    async with dispatching(queue, clock, MockTransport(lambda _: Response(200))):
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 3)
        await asyncio.sleep(0.05)
        assert (queue.claims, queue.next_dues) == (1, 1)


async def test_a_wake_during_a_claim_claims_again_without_asking_when_the_next_is_due() -> None:
    queue, clock = CountingQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    async with dispatching(queue, clock, MockTransport(lambda _: Response(200))) as d:
        await until(lambda: queue.claims == 1 and queue.next_dues == 1)  # idle now
        arrivals = iter(range(3))

        def commit_arrives() -> None:
            # each claim sees one more commit's NOTIFY arrive while it runs, then no more
            if next(arrivals, None) is not None:
                queue.enqueue(shop.id, BODY, clock.now_ms())
                d.wake()

        queue.during_claim = commit_arrives
        d.wake()
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 3)
        await asyncio.sleep(0.05)
        # four claims in a row (the last finds nothing new), and no next-due query: the
        # first one's answer holds for a poll
        assert (queue.claims, queue.next_dues) == (5, 1)


class LostAnswerQueue(MemoryQueue):
    """Its first claim is committed, then the connection drops before the answer arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def claim_due(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        claimed = await super().claim_due(*args, **kwargs)
        if claimed and not self.lost:
            self.lost = len(claimed)
            raise ConnectionError("connection was closed in the middle of operation")
        return claimed


async def test_what_a_claim_without_an_answer_leased_is_sent_without_waiting_out_the_lease() -> (
    None
):
    # the database committed the claim's leases, the answer was lost: nobody holds those
    # deliveries, and the clock never reaches their lease's end here
    queue, clock = LostAnswerQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    async with dispatching(queue, clock, MockTransport(lambda _: Response(200))):
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 3, within=10)
    assert queue.lost == 3


class UnreadIntegrationsQueue(MemoryQueue):
    """Its first claim is committed, then reading the integrations it needs fails."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        if not self.failed:
            self.failed = True
            raise ConnectionError("connection was closed in the middle of operation")
        return await super().integrations_by_id(ids)


async def test_a_claim_whose_integrations_could_not_be_read_is_sent_without_waiting() -> None:
    # claimed, then the database went away before the claim's deliveries reached a lane
    queue, clock = UnreadIntegrationsQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    async with dispatching(queue, clock, MockTransport(lambda _: Response(200))):
        await until(lambda: statuses(queue) == [dl.DELIVERED] * 3, within=10)
    assert queue.failed


# -- shutdown ---------------------------------------------------------------------------


class GatedWrites(MemoryQueue):
    """Its first outcome write waits for `gate`."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.writes = 0

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self.writes += 1
        if self.writes == 1:
            await self.gate.wait()
        await super().record_outcomes(outcomes)


async def test_shutdown_ends_once_the_last_outcomes_are_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the last outcomes arrive while the writer is writing others: it takes them on the
    # wake shutdown gave it, and must not then wait for another that never comes
    queue, clock = GatedWrites(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    first, *_ = queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    answering = asyncio.Event()

    async def answer(request: Request) -> Response:
        if request.headers["webhook-id"] != f"evt-{first}":
            await answering.wait()
        return Response(200)

    sender = Sender(timeout=5.0, allow_private=True, transport=MockTransport(answer))
    dispatcher = Dispatcher(queue, sender, clock, policy=POLICY)
    stop = asyncio.Event()
    run = asyncio.create_task(dispatcher.run(stop))
    try:
        await until(lambda: queue.writes == 1)  # the first outcome's write, held
        stop.set()
        answering.set()  # the others' outcomes arrive while it is held
        await asyncio.sleep(0.05)  # and shutdown asks the writer to drain
        queue.gate.set()
        started = time.monotonic()
        await asyncio.wait_for(run, 5)
    finally:
        await sender.close()
    assert time.monotonic() - started < 1  # not the 10 s the writer may take
    assert statuses(queue) == [dl.DELIVERED] * 3
    assert "gave up writing" not in caplog.text


class WritesFail(MemoryQueue):
    """Outcome writes never succeed: the database is away, or the write hangs."""

    def __init__(self, hang: bool) -> None:
        super().__init__()
        self.hang = hang
        self.writes = 0

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self.writes += 1
        if self.hang:
            await asyncio.Event().wait()  # cancelled by the end of shutdown's wait
        raise ConnectionRefusedError("the database is away")


@pytest.mark.parametrize("hang", [False, True], ids=["in backoff", "mid-write"])
async def test_outcomes_given_up_at_shutdown_are_counted_and_stay_leased(
    hang: bool, caplog: pytest.LogCaptureFixture
) -> None:
    queue, clock = WritesFail(hang), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    transport = MockTransport(lambda _: Response(200))
    config = DispatcherConfig(shutdown_write_ms=300)
    async with dispatching(queue, clock, transport, config) as dispatcher:
        dispatcher.backoff = Backoff(first_s=0.01, cap_s=0.05)
        await until(lambda: len(transport.requests) == 3 and queue.writes >= 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "gave up writing 3 outcomes at shutdown" in "\n".join(errors)
    # sent, not recorded: they stay leased, and are sent again when their leases end
    assert all(
        (d.status, d.attempt_count, d.lease_owner is not None) == (dl.PENDING, 0, True)
        for d in queue.deliveries.values()
    )


async def test_deliveries_waiting_in_a_lane_are_given_back_at_once_at_shutdown() -> None:
    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    sending, *waiting = queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    answering = asyncio.Event()

    async def answer(_: Request) -> Response:
        await answering.wait()
        return Response(200)

    transport = MockTransport(answer)
    sender = Sender(timeout=5.0, allow_private=True, transport=transport)
    config = DispatcherConfig(lane_concurrency=1, lane_start=1)
    dispatcher = Dispatcher(queue, sender, clock, policy=POLICY, config=config)
    stop = asyncio.Event()
    run = asyncio.create_task(dispatcher.run(stop))
    try:
        await until(lambda: len(transport.requests) == 1)
        stop.set()  # one request under way, two waiting their turn in the lane
        # the two are due again for anyone while the one under way is still being sent
        # (within its 5 s timeout), and that one stays leased to this dispatcher
        await until(lambda: all(queue.deliveries[i].lease_owner is None for i in waiting), 1)
        assert queue.deliveries[sending].lease_owner is not None
        assert all(queue.deliveries[i].next_attempt_ms == clock.now_ms() for i in waiting)
        answering.set()
        await asyncio.wait_for(run, 5)
    finally:
        await sender.close()
    assert len(transport.requests) == 1
    assert queue.deliveries[sending].status == dl.DELIVERED
    assert all(
        (queue.deliveries[i].status, queue.deliveries[i].attempt_count) == (dl.PENDING, 0)
        for i in waiting
    )


async def test_a_claim_without_an_answer_is_given_back_at_shutdown() -> None:
    # the claim failed (its answer lost) and the dispatcher stops during the backoff, so
    # no next claim gives it back: shutdown does
    queue, clock = LostAnswerQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    transport = MockTransport(lambda _: Response(200))
    async with dispatching(queue, clock, transport) as dispatcher:
        dispatcher.backoff = Backoff(first_s=60.0, cap_s=60.0)
        await until(lambda: queue.lost == 3)
    assert transport.requests == []
    assert all(
        (d.status, d.lease_owner, d.next_attempt_ms) == (dl.PENDING, None, clock.now_ms())
        for d in queue.deliveries.values()
    )


class StalledClaimQueue(MemoryQueue):
    """A claim that stalls after the database committed it: before its answer arrives, or
    while the integrations it needs are read."""

    def __init__(self, stall_in: str) -> None:
        super().__init__()
        self.stall_in = stall_in
        self.stalled = asyncio.Event()

    async def _stall(self) -> None:
        self.stalled.set()
        await asyncio.Event().wait()  # until cancelled

    async def claim_due(self, *args: Any, **kwargs: Any) -> list[Claimed]:
        claimed = await super().claim_due(*args, **kwargs)
        if claimed and self.stall_in == "claim":
            await self._stall()
        return claimed

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        if self.stall_in == "integrations":
            await self._stall()
        return await super().integrations_by_id(ids)


@pytest.mark.parametrize("stall_in", ["claim", "integrations"])
async def test_a_claim_cancelled_at_shutdown_is_given_back(stall_in: str) -> None:
    queue, clock = StalledClaimQueue(stall_in), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, BODY, clock.now_ms(), count=3)
    transport = MockTransport(lambda _: Response(200))
    sender = Sender(timeout=1.0, allow_private=True, transport=transport)
    dispatcher = Dispatcher(queue, sender, clock, policy=POLICY)
    run = asyncio.create_task(dispatcher.run(asyncio.Event()))
    try:
        await asyncio.wait_for(queue.stalled.wait(), 2)
        run.cancel()  # as the event loop does to what is left when it closes
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 5)
    finally:
        await sender.close()
    assert transport.requests == []
    assert all(
        (d.status, d.lease_owner, d.next_attempt_ms) == (dl.PENDING, None, clock.now_ms())
        for d in queue.deliveries.values()
    )
