"""Fakes for testing code that delivers webhooks, with no database and no sockets.

- `MemoryQueue`: a `DeliveryQueue` in memory, with the engines' claim, lease and outcome
  rules; `add_integration` and `enqueue` fill it, `deliveries` shows what became of them.
- `FakeClock`: time that moves only when told to (`await clock.advance(seconds)`).
- `MockTransport(handler)`: a `Transport` that answers every POST with `handler(request)`.

A dispatcher on all three runs in milliseconds::

    queue, clock = MemoryQueue(), FakeClock()
    shop = queue.add_integration("https://shop.example/hook")
    queue.enqueue(shop.id, b'{"action": "parcel_status_changed"}', clock.now_ms())
    sender = Sender(transport=MockTransport(lambda request: Response(200)))
    dispatcher = Dispatcher(queue, sender, clock)

The integration tests keep running on the real engines and real HTTP; these fakes are for
the rules above them (lanes, retries, shedding, 410, Retry-After).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from parcelhook.delivery.transport import EXCERPT_LIMIT, Answer, Dial, ExchangeError, TimedOut
from parcelhook.delivery.wire import HEADERS_KEPT, kept_header
from parcelhook.domain import deliveries as dl
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.deliveries import Attempt, Claimed
from parcelhook.domain.integrations import Integration
from parcelhook.domain.outcome import Outcome, health_changes
from parcelhook.store.queue import Beat

__all__ = [
    "FakeClock",
    "MemoryQueue",
    "MockTransport",
    "QueuedDelivery",
    "Request",
    "Response",
]


# -- the queue ----------------------------------------------------------------------------


@dataclass(slots=True)
class QueuedDelivery:
    """One delivery in a `MemoryQueue`, as the deliveries table would hold it."""

    id: int
    event_id: str
    integration_id: int
    body: bytes
    status: str = dl.PENDING
    attempt_count: int = 0
    schedule_base: int = 0
    next_attempt_ms: int = 0
    lease_owner: str | None = None
    last_status_code: int | None = None
    last_error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)


class MemoryQueue:
    """A `DeliveryQueue` in memory that follows the same rules as the engines' queues."""

    def __init__(self) -> None:
        self.integrations: dict[int, Integration] = {}
        self.deliveries: dict[int, QueuedDelivery] = {}
        self.released = 0  # deliveries given back untouched, e.g. by shrunken lanes
        self.heartbeats: dict[str, int] = {}  # dispatcher owner → its last heartbeat
        self._ids = itertools.count(1)

    def add_integration(
        self,
        webhook_url: str | None,
        *,
        webhook_active: bool = True,
        signature_key: str = "Str0ng!Signature-Key",
        now_ms: int = 0,
    ) -> Integration:
        """A shop integration with webhook feedback pointed at `webhook_url`."""
        i = next(self._ids)
        integration = Integration(
            id=i,
            account_id=1,
            shop_name=f"shop {i}",
            shop_url=None,
            system="shopify",
            webhook_active=webhook_active,
            webhook_url=webhook_url,
            webhook_signature_key=signature_key,
            public_key=f"public-{i}",
            secret_key=f"secret-{i}",
            webhook_secret="whsec_" + "A" * 43 + "=",
            previous_webhook_secret=None,
            previous_webhook_secret_until_ms=None,
            failing_since_ms=None,
            last_fetch_ms=None,
            last_updated_ms=now_ms,
            created_ms=now_ms,
        )
        self.integrations[i] = integration
        return integration

    def update_integration(self, integration: Integration) -> None:
        """Store a changed integration (bump `last_updated_ms` so dispatchers reload it)."""
        self.integrations[integration.id] = integration

    def enqueue(self, integration_id: int, body: bytes, now_ms: int, count: int = 1) -> list[int]:
        """Queue `count` deliveries of `body` to the integration, due at `now_ms`."""
        ids = []
        for _ in range(count):
            i = next(self._ids)
            self.deliveries[i] = QueuedDelivery(
                i, f"evt-{i}", integration_id, body, next_attempt_ms=now_ms
            )
            ids.append(i)
        return ids

    def with_status(self, status: str) -> list[QueuedDelivery]:
        return [d for d in self.deliveries.values() if d.status == status]

    # -- DeliveryQueue --------------------------------------------------------------------

    async def claim_due(
        self,
        lease: str,
        now_ms: int,
        lease_ms: int,
        limit: int,
        room: Mapping[int, int] | None = None,
        default_room: int | None = None,
    ) -> list[Claimed]:
        room = room or {}
        default = limit if default_room is None else default_room
        due = sorted(
            (
                d
                for d in self.deliveries.values()
                if d.status == dl.PENDING and d.next_attempt_ms <= now_ms
            ),
            key=lambda d: (d.next_attempt_ms, d.id),
        )
        taken: list[QueuedDelivery] = []
        per: dict[int, int] = {}
        for d in due:
            if len(taken) >= limit:
                break
            if per.get(d.integration_id, 0) >= room.get(d.integration_id, default):
                continue
            per[d.integration_id] = per.get(d.integration_id, 0) + 1
            taken.append(d)
        for d in taken:
            d.next_attempt_ms = now_ms + lease_ms
            d.lease_owner = lease
        await asyncio.sleep(0)  # a round trip's worth of letting others run
        return [
            Claimed(
                id=d.id,
                event_id=d.event_id,
                integration_id=d.integration_id,
                integration_version=self.integrations[d.integration_id].last_updated_ms,
                attempt_count=d.attempt_count,
                schedule_base=d.schedule_base,
                body=d.body,
            )
            for d in sorted(taken, key=lambda d: d.id)
        ]

    async def release(self, leases: Sequence[str], ids: Sequence[int], due_ms: int) -> None:
        owners = set(leases)
        for i in ids:
            d = self.deliveries[i]
            if d.status == dl.PENDING and d.lease_owner in owners:
                d.next_attempt_ms = due_ms
                d.lease_owner = None
                self.released += 1
        await asyncio.sleep(0)

    async def release_claim(self, lease: str, due_ms: int) -> None:
        for d in self.deliveries.values():
            if d.status == dl.PENDING and d.lease_owner == lease:
                d.next_attempt_ms = due_ms
                d.lease_owner = None
        await asyncio.sleep(0)

    async def heartbeat(self, owner: str, now_ms: int, dead_after_ms: int) -> Beat:
        known = owner in self.heartbeats
        self.heartbeats[owner] = now_ms
        revived = 0
        for gone in [o for o, at in self.heartbeats.items() if at < now_ms - dead_after_ms]:
            del self.heartbeats[gone]
            for d in self.deliveries.values():
                if d.status == dl.PENDING and (d.lease_owner or "").startswith(gone + "#"):
                    d.next_attempt_ms, d.lease_owner = now_ms, None
                    revived += 1
        await asyncio.sleep(0)
        return Beat(known, revived)

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        for o in outcomes:
            d = self.deliveries[o.delivery_id]
            if o.result is not None and o.decision.attempted:
                r = o.result
                d.attempts.append(
                    Attempt(
                        o.at_ms,
                        r.duration_ms,
                        r.status_code,
                        r.error,
                        r.response_excerpt,
                        # as the engines store them: cookies not kept, controls replaced
                        dl.storable_headers(r.response_headers),
                        o.url,
                    )
                )
            if d.lease_owner != o.lease:
                continue  # fenced: its lease was taken over
            d.status = o.decision.status
            d.attempt_count += 1 if o.decision.attempted else 0
            d.next_attempt_ms = o.decision.next_attempt_ms
            d.lease_owner = None
            d.last_status_code = o.result.status_code if o.result else None
            d.last_error = o.decision.note
        self._apply_health(outcomes)
        await asyncio.sleep(0)

    def _apply_health(self, outcomes: Sequence[Outcome]) -> None:
        now = max(o.at_ms for o in outcomes)
        health = health_changes(outcomes)
        for i in health.ok | health.failing | health.gone:
            integration = self.integrations[i]
            if i in health.ok:
                integration = replace(integration, failing_since_ms=None)
            elif integration.failing_since_ms is None:
                integration = replace(integration, failing_since_ms=now)
            if i in health.gone and integration.webhook_active:
                integration = replace(integration, webhook_active=False, last_updated_ms=now)
            self.integrations[i] = integration

    async def next_due_ms(self) -> int | None:
        due = [d.next_attempt_ms for d in self.deliveries.values() if d.status == dl.PENDING]
        return min(due, default=None)

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        return {i: self.integrations[i] for i in ids if i in self.integrations}


# -- the transport ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One POST as the transport was asked to send it."""

    url: str
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Response:
    """What a `MockTransport` handler answers."""

    status: int = 200
    body: bytes = b""
    retry_after: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response | Awaitable[Response]]


class MockTransport:
    """A `Transport` that hands every request to `handler` and answers with its `Response`.

    The handler may be async (to make an endpoint slow, or hang until the deadline, which
    then fails the exchange as a timeout) and may raise what a transport raises (e.g.
    `ConnectionRefusedError()`, or `transport.ExchangeError(transport.Closed(), None)`).
    An instance is also its own factory: `Sender(transport=MockTransport(handler))`.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.closed = False

    def __call__(self, dial: Dial) -> MockTransport:
        return self

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        request = Request(url, body, dict(headers))
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            try:
                async with asyncio.timeout_at(deadline):
                    answer = await answer
            except TimeoutError:
                raise ExchangeError(TimedOut(), None) from None
        assert isinstance(answer, Response)
        kept = tuple(kept_header(n, v) for n, v in answer.headers[:HEADERS_KEPT])
        return Answer(answer.status, answer.body[:EXCERPT_LIMIT], answer.retry_after, kept)

    async def close(self) -> None:
        self.closed = True
