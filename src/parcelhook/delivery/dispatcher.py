"""The dispatcher: claim due deliveries in batches, send them through per-endpoint lanes,
write their outcomes back in batches.

Per delivery, the hot path is: sign, POST over a kept-alive connection, classify. Every
database round trip is shared by a batch: one claim for up to `batch_size` deliveries,
one transaction for all outcomes that finished while the previous write was running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

from parcelhook.delivery.headers import delivery_headers
from parcelhook.delivery.observe import DeliveryObserver
from parcelhook.delivery.sender import Sender
from parcelhook.domain.clock import Clock
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import Integration
from parcelhook.domain.outcome import Outcome, decide_outcome
from parcelhook.domain.retry import AttemptResult, RetryPolicy, Verdict
from parcelhook.store.faults import is_unavailable
from parcelhook.store.queue import DeliveryQueue
from parcelhook.supervision import Backoff, Health

log = logging.getLogger("parcelhook.dispatcher")
MAX_OWNER = 48
CLAIM_NUMBERS = 10**9  # a lease token's claim number wraps (after 30 years at one a second)
REFUSED = "the response could not be stored; this attempt is recorded without it"


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    # one claim's size: fewer round trips per delivery under load (512 against 256 showed
    # no consistent difference in the benchmark; docs/performance.md)
    batch_size: int = 512
    # how many requests one endpoint may have in flight; a slow endpoint fills only this
    lane_concurrency: int = 16
    # ...but a lane this process has not seen answer yet starts at this many, doubling on
    # each success: an endpoint that never answers holds few deliveries and connections
    # here, and has few to give back when its first timeouts shrink its lane
    lane_start: int = 4
    # deliveries one lane may hold waiting; beyond it they go back to the queue for later
    lane_backlog: int = 256
    # ...and at most this many per request it may have in flight: a delivery then waits at
    # most ~5 timeouts in its lane, well inside the lease, even on a lane shrunk to one
    lane_backlog_per_slot: int = 4
    max_in_flight: int = 4096
    # a lease must outlive a delivery's wait in its lane plus its send
    lease_ms: int = 120_000
    # the slow fallback when no wake-up arrives (other processes on SQLite, lost NOTIFY)
    poll_ms: int = 1_000
    # how often this dispatcher says it is alive; one silent for `owner_dead_after_ms` is
    # taken for dead and its deliveries are given back then, not when their leases end
    heartbeat_ms: int = 3_000
    owner_dead_after_ms: int = 15_000
    # a delivery is sent only while the last beat the database confirmed is younger than
    # this: another dispatcher takes this one for dead `owner_dead_after_ms` after that
    # beat, so what remains is the time a send has to put its request on the wire
    # (a stalled event loop, or a database this process cannot reach, must not send what
    # another process took over)
    send_fence_ms: int = 7_500
    # at shutdown, once the sends under way have ended, how long the outcome writer has to
    # write what it holds; what it could not write is sent again when its lease ends
    shutdown_write_ms: int = 10_000


async def record_isolating(
    queue: DeliveryQueue, batch: list[Outcome], settled: list[Outcome]
) -> None:
    """Write `batch`, appending to `settled` what is done; a row the database refuses is
    recorded without what the endpoint sent, or dropped, so it never holds up the others.

    Raises only when the database is unavailable (the caller retries what is not settled)."""
    try:
        await queue.record_outcomes(batch)
    except Exception as exc:
        if is_unavailable(exc):
            raise
        if len(batch) > 1:
            # halves until the refused row is alone: a few extra statements, once
            middle = len(batch) // 2
            await record_isolating(queue, batch[:middle], settled)
            await record_isolating(queue, batch[middle:], settled)
            return
        (o,) = batch
        log.exception("the database refused the outcome of delivery %s", o.delivery_id)
        bare = replace(o, decision=replace(o.decision, note=REFUSED))
        if o.result is not None:
            bare = replace(bare, result=replace(o.result, response_excerpt="", error=REFUSED))
        try:
            await queue.record_outcomes([bare])
        except Exception as again:
            if is_unavailable(again):
                raise
            # its lease runs out and it is claimed again; the writer carries on meanwhile
            log.exception("dropped the outcome of delivery %s", o.delivery_id)
    settled.extend(batch)


class _Lane:
    __slots__ = ("asked", "limit", "queue", "workers")

    def __init__(self, limit: int) -> None:
        self.queue: deque[Claimed] = deque()
        self.workers = 0
        # concurrency now: 1 after a timeout or connection failure, doubling on success
        self.limit = limit
        # it woke the claimer for more since its last refill
        self.asked = False


class Dispatcher:
    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        clock: Clock,
        *,
        policy: RetryPolicy | None = None,
        config: DispatcherConfig | None = None,
        owner: str | None = None,
        rng: random.Random | None = None,
        observer: DeliveryObserver | None = None,
        health: Health | None = None,
    ) -> None:
        self.queue = queue
        self.observer = observer or DeliveryObserver()
        self.sender = sender
        self.clock = clock
        self.policy = policy or RetryPolicy()
        self.config = config or DispatcherConfig()
        # a lease token (owner, a new life's "~n", "#" and a claim number) must fit the
        # 64 characters of deliveries.lease_owner: a Kubernetes pod's name alone may take
        # 63, and PostgreSQL refuses a longer token, so every claim would fail
        self._named = owner or (
            f"{socket.gethostname()[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        )
        if len(self._named) > MAX_OWNER:
            raise ValueError(f"a dispatcher's name has at most {MAX_OWNER} characters")
        self.owner = self._named
        self._lives = 1  # a new name for each life after being taken for dead
        # the lease of a claim that raised before its deliveries reached a lane (its answer
        # lost, or the integrations it needs unread): it may have been committed, and then
        # nobody holds what it leased
        self._unanswered: str | None = None
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        # the last next-due answer, and until when it is used instead of asking again
        self._due_hint: int | None = None
        self._due_hint_until = -(2**62)
        self._lanes: dict[int, _Lane] = {}
        self._integrations: dict[int, Integration] = {}
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        # what the writer took from _outcomes and has not written yet (a write under way,
        # or one waiting out its backoff): at shutdown, what it gives up is both lists
        self._unwritten: list[Outcome] = []
        self._in_flight = 0
        # delivery id → the lease token of its latest claim, for every delivery held here
        self._leases: dict[int, str] = {}
        # claims and outcome writes take turns, so the leases above always match the table:
        # a claim never sees a delivery half-settled by a write running at the same time
        self._db_turn = asyncio.Lock()
        self._claims = 0
        self._limits: dict[int, int] = {}  # integration id → lane limit, across lanes
        self._capacity = asyncio.Event()
        # (lease, delivery id) shed by shrunken lanes, given back by one task at a time
        self._to_release: list[tuple[str, int]] = []
        self._releasing = False
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0  # a counter for metrics and benchmarks
        health = health or Health(clock.now_ms)
        # the claimer turns at least once per poll; the writer only when there is work
        self.claimer_health = health.loop("dispatcher", turns_every_ms=self.config.poll_ms)
        self.writer_health = health.loop("outcome writer")
        self.backoff = Backoff()
        self._last_beat_ms = -(2**62)  # the last beat the database confirmed
        self._beaten = False
        self._beat_turn = asyncio.Lock()
        self._beat_failures = 0

    def wake(self) -> None:
        """Something was queued: claim now rather than at the next poll."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def lanes_in_use(self) -> int:
        return len(self._lanes)

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until `stop` is set, then finish what is in flight and give back the rest."""
        writer = asyncio.create_task(self._write_outcomes())
        writer.add_done_callback(self._writer_ended)
        stopper = asyncio.create_task(self._stop_when(stop))
        try:
            while not self._stopping:
                if writer.done():
                    # a bug: without it nothing would be recorded again; the runtime makes
                    # the process exit so that its supervisor starts a whole one
                    raise RuntimeError("the outcome writer ended") from writer.exception()
                if self._in_flight >= self.config.max_in_flight:
                    self._capacity.clear()
                    await self._wait_for_room()
                    continue
                self._wake.clear()
                try:
                    await self._heartbeat()
                    claimed, limit, skipped = await self._claim()
                    if not (claimed and claimed == limit):
                        await self._sleep(skipped)
                except Exception as exc:
                    # the database went away (or anything else): back off and carry on;
                    # what is in flight continues, its outcomes wait in the writer
                    failures = self.claimer_health.failed(exc)
                    await self._pause(self.backoff.delay(failures))
                    continue
                self.claimer_health.ok()
        finally:
            stopper.cancel()
            await self._shutdown(writer)

    def _writer_ended(self, _task: asyncio.Task[None]) -> None:
        self._wake.set()
        self._capacity.set()

    async def _stop_when(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._wake.set()
        self._capacity.set()

    async def _sleep(self, skipped_full_lanes: bool) -> None:
        if self._wake.is_set():
            # woken while claiming (a commit's NOTIFY, a lane with room, a retry): claim
            # again now, without asking when the next delivery is due, since we would not
            # wait for it (deliveries arriving one commit at a time claim in a row, one
            # round trip each)
            return
        now = self.clock.now_ms()
        due = self._due_hint
        if now >= self._due_hint_until or (due is not None and due <= now):
            due = await self.queue.next_due_ms()
            # kept for one poll: deliveries arriving one commit at a time would each cost a
            # next-due query besides their claim. What comes due sooner meanwhile: new
            # deliveries wake the claimer, this process's retries too (the writer), and
            # what other processes schedule is theirs to claim, or the poll's; this process
            # forgets it when it makes something due itself (_forget_due)
            self._due_hint, self._due_hint_until = due, now + self.config.poll_ms
        if due is not None and due <= now and not skipped_full_lanes:
            return  # it came due after the claim looked: claim again
        until = now + self.config.poll_ms
        if due is not None and due > now:
            until = min(until, due)
        # what is due now belongs to a full lane: a lane with room again, or a commit,
        # wakes us before the poll
        if not self._wake.is_set():
            await self.clock.sleep_until(until, self._wake)

    def _forget_due(self) -> None:
        """Ask when the next delivery is due before the next sleep: this process has just
        scheduled a retry, given deliveries back or revived a dead dispatcher's."""
        self._due_hint_until = -(2**62)

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds` of real time (a backoff), or until stopping."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._stopping:
                    self._wake.clear()
                    await self._wake.wait()

    async def _wait_for_room(self) -> None:
        """Wait for a free slot, beating meanwhile: a dispatcher whose every slot waits on
        slow endpoints is alive, and must not have its deliveries taken back and sent twice."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.heartbeat_ms / 1000):
                await self._capacity.wait()
                return
        try:
            await self._heartbeat()
        except Exception as exc:
            # the database is away: the claim that follows a free slot backs off
            self.claimer_health.failed(exc)

    async def _heartbeat(self) -> None:
        now = self.clock.now_ms()
        if now - self._last_beat_ms < self.config.heartbeat_ms:
            return
        async with self._beat_turn:
            await self._beat()

    async def _beat(self) -> None:
        now = self.clock.now_ms()  # before the statement: its confirmation holds from here
        beat = await self.queue.heartbeat(self.owner, now, self.config.owner_dead_after_ms)
        if self._beaten and not beat.known:
            self._taken_for_dead()
            beat = await self.queue.heartbeat(self.owner, now, self.config.owner_dead_after_ms)
        self._beaten = True
        self._last_beat_ms = now
        if beat.revived:
            self._forget_due()
            log.warning(
                "%d deliveries of a dispatcher that stopped beating are due again", beat.revived
            )

    def _may_send(self) -> bool:
        return self.clock.now_ms() - self._last_beat_ms < self.config.send_fence_ms

    async def _confirm_alive(self) -> None:
        """Beat now (one task for all lanes); on a failure wait a backoff first, so a lane
        tries again afterwards. Its deliveries are held unsent meanwhile: if this process
        cannot reach the database, another may have taken them over."""
        async with self._beat_turn:
            if self._may_send():
                return  # another lane's beat just confirmed it
            try:
                await self._beat()
                self._beat_failures = 0
                return
            except Exception as exc:
                self._beat_failures += 1
                log.warning("cannot confirm this dispatcher is alive; not sending: %s", exc)
                delay = self.backoff.delay(self._beat_failures)
            await self._pause(delay)

    def _taken_for_dead(self) -> None:
        """Another dispatcher found this one silent (a blocked event loop, or the database
        out of reach) and gave its deliveries back: whatever is still waiting here belongs
        to someone else now, so it is dropped unsent. Sends already under way finish; their
        outcomes settle nothing (the lease no longer matches)."""
        dropped = 0
        for lane in self._lanes.values():
            for c in lane.queue:
                del self._leases[c.id]
            dropped += len(lane.queue)
            self._in_flight -= len(lane.queue)
            lane.queue.clear()
        self._capacity.set()
        # a new name: a late revival of the old one must not touch what is claimed next
        self._lives += 1
        self.owner = f"{self._named}~{self._lives % 1000}"
        log.error(
            "this dispatcher was taken for dead (no heartbeat for %d ms); %d deliveries it "
            "held were dropped unsent, now dispatching as %s",
            self.config.owner_dead_after_ms,
            dropped,
            self.owner,
        )

    async def _claim(self) -> tuple[int, int, bool]:
        """Claim one batch: how many were claimed, asked for, and whether full lanes were
        left out."""
        async with self._db_turn:
            if self._unanswered is not None:
                # a claim whose answer never came may still have been committed: what it
                # leased nobody holds, and would wait out the whole lease; give it back
                # first (a failure here is the database still away: the loop's backoff)
                await self.queue.release_claim(self._unanswered, self.clock.now_ms())
                self._unanswered = None
            return await self._claim_batch()

    async def _claim_batch(self) -> tuple[int, int, bool]:
        now = self.clock.now_ms()
        # each endpoint is claimed for only as far as its lane has room: the rest of its
        # deliveries wait in the table, where another worker may take them, rather than in
        # this process's memory (and a full lane is not claimed for at all)
        room = {i: self._room_of(limit) for i, limit in self._limits.items()}
        for i, held in self._lanes.items():
            room[i] = max(0, self._room(held) - len(held.queue))
        default_room = self._room_of(self._start_limit)
        limit = min(self.config.batch_size, self.config.max_in_flight - self._in_flight)
        self._claims += 1
        lease = f"{self.owner}#{self._claims % CLAIM_NUMBERS}"
        started = time.perf_counter()
        try:
            claimed = await self.queue.claim_due(
                lease, now, self.config.lease_ms, limit, room, default_room
            )
        except BaseException:
            self._unanswered = lease
            raise
        self.observer.claimed(time.perf_counter() - started, len(claimed))
        if claimed and not lease.startswith(self.owner + "#"):
            # taken for dead while claiming: a lease under the old name may be revived
            # by whoever reaps that name, so none of it is sent
            await self.queue.release([lease], [c.id for c in claimed], now)
            return 0, limit, False
        # an endpoint claimed up to its room may have more due: do not spin on it
        per = Counter(c.integration_id for c in claimed)
        capped = any(r == 0 or per[i] >= r for i, r in room.items()) or any(
            n >= default_room for i, n in per.items() if i not in room
        )
        if not claimed:
            return 0, limit, capped
        try:
            await self._refresh_integrations(claimed)
        except BaseException:
            # leased, and held by no lane yet: given back as a lost answer's would be
            self._unanswered = lease
            raise
        give_back: list[int] = []
        for c in claimed:
            if c.id in self._leases:
                # its lease ran out while we still hold it (a stalled write, a clock jump):
                # never send it twice; the attempt under way settles it with the new lease
                self._leases[c.id] = lease
                continue
            lane = self._lanes.get(c.integration_id)
            if lane is None:
                lane = self._lanes[c.integration_id] = _Lane(
                    self._limits.get(c.integration_id, self._start_limit)
                )
            if len(lane.queue) >= self._room(lane):
                give_back.append(c.id)
                continue
            self._in_flight += 1
            self._leases[c.id] = lease
            lane.queue.append(c)
            lane.asked = False
            if lane.workers < lane.limit:
                lane.workers += 1
                self._spawn(self._lane_worker(c.integration_id, lane))
        if give_back:
            await self.queue.release([lease], give_back, now)
            self._forget_due()
        elif not capped and len(claimed) < limit:
            # everything due was claimed: a lane asking for more would only wake a claim
            # that finds nothing (what is queued later wakes the claimer itself)
            for lane in self._lanes.values():
                lane.asked = True
        return len(claimed), limit, bool(capped or give_back)

    def _shed(self, lane: _Lane) -> None:
        """Give back what a shrunken lane can no longer send within its deliveries' leases."""
        excess = len(lane.queue) - self._room(lane)
        if excess <= 0:
            return
        shed = [lane.queue.pop() for _ in range(excess)]
        leases = [self._leases.pop(c.id) for c in shed]
        self._in_flight -= len(shed)
        self._capacity.set()
        self._to_release.extend(zip(leases, (c.id for c in shed), strict=True))
        lane.asked = False  # what it gave back is due in the table again
        if not self._releasing:
            self._releasing = True
            self._spawn(self._release())

    async def _release(self) -> None:
        """Give back what lanes shed, one statement at a time for everything shed meanwhile
        (lanes shrink together when an endpoint's requests time out together).

        Not in a _db_turn: these deliveries left _leases already and the release is fenced
        by their lease tokens, so it cannot race a claim or an outcome write; and a lane
        shed at a timeout must not hold up the claims of healthy endpoints."""
        try:
            while self._to_release:
                batch, self._to_release = self._to_release, []
                try:
                    await self.queue.release(
                        [lease for lease, _ in batch], [i for _, i in batch], self.clock.now_ms()
                    )
                    self._forget_due()
                except Exception:
                    # nothing is lost: their leases expire and they are claimed again
                    log.exception("could not give back %d deliveries", len(batch))
        finally:
            self._releasing = False

    @property
    def _start_limit(self) -> int:
        return min(self.config.lane_start, self.config.lane_concurrency)

    def _room(self, lane: _Lane) -> int:
        """How many deliveries `lane` may hold waiting."""
        return self._room_of(lane.limit)

    def _room_of(self, limit: int) -> int:
        """How many deliveries a lane of concurrency `limit` may hold waiting."""
        return min(self.config.lane_backlog, self.config.lane_backlog_per_slot * limit)

    async def _refresh_integrations(self, claimed: list[Claimed]) -> None:
        stale = {
            c.integration_id
            for c in claimed
            if (i := self._integrations.get(c.integration_id)) is None
            or i.last_updated_ms != c.integration_version
        }
        if stale:
            self._integrations.update(await self.queue.integrations_by_id(stale))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane_worker(self, integration_id: int, lane: _Lane) -> None:
        try:
            while lane.queue and not self._stopping and lane.workers <= lane.limit:
                if not self._may_send():
                    await self._confirm_alive()
                    continue  # the lane may have been emptied meanwhile
                if not lane.asked and len(lane.queue) <= self._room_of(lane.limit) // 2:
                    lane.asked = True
                    self._wake.set()  # room again: claim for this lane without waiting
                c = lane.queue.popleft()
                outcome = await self._deliver(c)
                result = outcome.result
                if result is not None and result.status_code is None:
                    lane.limit = 1  # timed out or unreachable: probe with one request
                    self._shed(lane)
                elif lane.limit < self.config.lane_concurrency:
                    lane.limit = min(self.config.lane_concurrency, lane.limit * 2)
                    while lane.workers < min(lane.limit, len(lane.queue)):
                        lane.workers += 1
                        self._spawn(self._lane_worker(integration_id, lane))
                if self._limits.get(integration_id) != lane.limit:
                    self._limits[integration_id] = lane.limit
                # append after the await: the writer swaps the list while we send
                self._outcomes.append(outcome)
                self._outcome_ready.set()
        finally:
            lane.workers -= 1
            if not lane.queue and not lane.workers:
                self._lanes.pop(integration_id, None)

    async def _deliver(self, c: Claimed) -> Outcome:
        """Prepare, call, and decide: the decision is domain.outcome's, carried as it is."""
        integration = self._integrations[c.integration_id]
        at = self.clock.now_ms()
        result: AttemptResult | None = None
        with self.observer.attempt_span(c) as span:
            if integration.receives_webhooks:
                assert integration.webhook_url is not None
                headers = delivery_headers(integration, msg_id=c.event_id, body=c.body, at_ms=at)
                try:
                    result = await self.sender.send(integration.webhook_url, c.body, headers)
                except Exception as exc:  # the sender classifies network errors; a bug guard
                    log.exception("sender failed unexpectedly for delivery %s", c.id)
                    result = AttemptResult(None, 0, "", f"internal error: {type(exc).__name__}")
            decision = decide_outcome(
                result,
                attempt_count=c.attempt_count,
                schedule_base=c.schedule_base,
                policy=self.policy,
                at_ms=at,
                rng=self.rng,
            )
            self.observer.attempted(c, decision.verdict, result, self.clock.now_ms(), span)
        if decision.verdict is Verdict.DELIVERED:
            self.delivered += 1
        elif decision.verdict is Verdict.GONE:
            log.warning("integration %s answered 410 Gone; webhook turned off", c.integration_id)
        url = integration.webhook_url if result is not None else None
        return Outcome(c.id, c.integration_id, self._leases[c.id], at, result, decision, url)

    async def _write_outcomes(self) -> None:
        """Group commit: everything that finished while the last write ran goes in the next.
        Ends when stopping, once no lane can add an outcome and nothing is left to write."""
        while True:
            # look before waiting, not only after a wake: the wake a batch was taken on may
            # also have been shutdown's last one, and nothing would wake the writer again
            while not self._outcomes:
                if self._stopping and not self._tasks:
                    return
                self._outcome_ready.clear()
                await self._outcome_ready.wait()
            outcomes, self._outcomes = self._outcomes, []
            pending = self._unwritten = outcomes
            while pending:
                settled: list[Outcome] = []
                try:
                    async with self._db_turn:
                        # a delivery re-claimed while in flight is settled under its new lease
                        batch = [
                            o
                            if o.lease == self._leases[o.delivery_id]
                            else replace(o, lease=self._leases[o.delivery_id])
                            for o in pending
                        ]
                        started = time.perf_counter()
                        try:
                            await record_isolating(self.queue, batch, settled)
                        except BaseException:
                            # what was settled before the failure is written; the rest is
                            # still held (and counted, if shutdown gives up on it)
                            done = {o.delivery_id for o in settled}
                            pending = [o for o in pending if o.delivery_id not in done]
                            self._unwritten = pending
                            raise
                        finally:
                            self.observer.wrote(time.perf_counter() - started)
                            for o in settled:
                                del self._leases[o.delivery_id]
                    pending = self._unwritten = []
                    self.writer_health.ok()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # keep the outcomes not settled: the leases still protect these deliveries
                    failures = self.writer_health.failed(exc)
                    await asyncio.sleep(self.backoff.delay(failures))
            self._in_flight -= len(outcomes)
            self._capacity.set()
            if any(o.verdict is Verdict.RETRY for o in outcomes):
                self._forget_due()
                self._wake.set()  # the claimer may be sleeping past the new due time

    async def _shutdown(self, writer: asyncio.Task[None]) -> None:
        # run() may also end by being cancelled: the lanes and the writer wind down on this
        self._stopping = True
        await self._give_back_unsent()
        if self._tasks:
            # in-flight sends end within the sender's timeout
            await asyncio.wait(list(self._tasks), timeout=self.sender.timeout + 2)
        for task in list(self._tasks):
            # a send still under way keeps its lease: its request may have arrived, so it
            # is sent again only when the lease ends, as after a crash
            task.cancel()
        # let the writer drain the last outcomes, then end
        self._tasks.clear()
        self._outcome_ready.set()
        try:
            await asyncio.wait_for(writer, timeout=self.config.shutdown_write_ms / 1000)
        except TimeoutError:
            # cancelled: what it held is in _unwritten, what it never took in _outcomes
            given_up = len(self._unwritten) + len(self._outcomes)
            if given_up:
                log.error(
                    "gave up writing %d outcomes at shutdown; their deliveries are sent "
                    "again when their leases end",
                    given_up,
                )

    async def _give_back_unsent(self) -> None:
        """Give back, before waiting for the sends under way, what was claimed here and never
        sent: another dispatcher (or this one restarted) sends it now, not when its lease
        ends. What waits in the lanes, and whatever a claim that raised may have leased."""
        unsent = [c.id for lane in self._lanes.values() for c in lane.queue]
        leases = [self._leases.pop(i) for i in unsent]
        for lane in self._lanes.values():
            self._in_flight -= len(lane.queue)
            lane.queue.clear()
        now = self.clock.now_ms()
        # not in a _db_turn: fenced by their lease tokens, as _release is
        try:
            await self.queue.release(leases, unsent, now)
        except Exception:
            log.exception("could not give back %d deliveries at shutdown", len(unsent))
        if self._unanswered is not None:
            try:
                await self.queue.release_claim(self._unanswered, now)
                self._unanswered = None
            except Exception:
                log.exception("could not give back what claim %s leased", self._unanswered)
