"""The dispatcher's view of the database: the `DeliveryQueue` protocol.

Each engine implements it with its own hot statements (`sqlite.SqliteQueue`,
`postgres.PostgresQueue`); `Store.open` picks one, and `parcelhook.testing.MemoryQueue`
is the in-memory one for tests. `EngineQueue` adds what only the store itself asks of an
engine: its write transactions, the migration lock, cross-process wake-ups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol, cast

from sqlalchemy import Row, select
from sqlalchemy.ext.asyncio import AsyncEngine

from parcelhook.domain import events as ev
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import ApiKey, Integration
from parcelhook.domain.outcome import Outcome
from parcelhook.domain.systems import INTEGRATION_UPDATED
from parcelhook.domain.text import is_storable, storable
from parcelhook.store import answer_headers
from parcelhook.store import schema as s
from parcelhook.store.crypto import SecretBox
from parcelhook.store.tx import Tx, integration_from_row
from parcelhook.supervision import LoopHealth


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat found."""

    # the owner's row was there: nobody took it for dead since its last beat (False on a
    # first beat too). After False, a dispatcher owns none of the deliveries it held
    known: bool
    # deliveries of owners found silent that are due again now
    revived: int


class DeliveryQueue(Protocol):
    """Due deliveries out under a lease, their outcomes back in; every call one batch."""

    async def claim_due(
        self,
        lease: str,
        now_ms: int,
        lease_ms: int,
        limit: int,
        room: Mapping[int, int] | None = None,
        default_room: int | None = None,
    ) -> list[Claimed]:
        """Lease up to `limit` due deliveries, oldest first, but at most `room[i]` of
        integration i (`default_room` for one not in `room`; 0 leaves it out), in id order.
        The lease is the pushed-back `next_attempt_ms`."""
        ...

    async def release(self, leases: Sequence[str], ids: Sequence[int], due_ms: int) -> None:
        """Give leased deliveries back untouched (e.g. their endpoint's lane is full)."""
        ...

    async def release_claim(self, lease: str, due_ms: int) -> None:
        """Give back whatever a claim under `lease` took, when its answer never arrived
        (the connection dropped after the database committed it): nobody holds those."""
        ...

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of outcomes at once: attempts, delivery states, endpoint health.

        A delivery changes only if its lease is still the outcome's: a holder whose lease
        expired and was taken over settles nothing (its attempt is still recorded).
        """
        ...

    async def next_due_ms(self) -> int | None:
        """The earliest `next_attempt_ms` of a pending delivery (leased ones included)."""
        ...

    async def heartbeat(self, owner: str, now_ms: int, dead_after_ms: int) -> Beat:
        """Record that `owner` is alive; give back the deliveries leased (`owner#n`) by
        owners silent for `dead_after_ms`, due at once, and forget those owners.

        Whether `owner` was still known is decided atomically with the beat: once a beat
        found it known, no one can take it for dead until `dead_after_ms` after `now_ms`."""
        ...

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        """Integrations by id, deleted ones included (their own events still go out)."""
        ...


class EngineQueue(DeliveryQueue, Protocol):
    """A `DeliveryQueue` on a real engine, with what the store needs of that engine."""

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One write transaction; on commit, other processes hear of deliveries it queued."""
        ...

    def write_turn(self) -> AbstractAsyncContextManager[None]:
        """This process's turn to write outside `transaction` (SQLite has one writer)."""
        ...

    def reading(self) -> AbstractAsyncContextManager[Tx]:
        """A connection for reads; each statement sees the latest commit."""
        ...

    def browsing(self) -> AbstractAsyncContextManager[Tx]:
        """As `reading`, for reads that may walk many rows: never on the event loop's
        thread, so a long one does not hold up the process."""
        ...

    def listen(
        self, wake: Callable[[], None], health: LoopHealth | None = None
    ) -> asyncio.Task[None] | None:
        """Call `wake` whenever another process commits deliveries (until `close`), and
        report the listening connection's turns to `health`; the task that listens, if
        any (it never ends before `close`: its caller watches it)."""
        ...

    async def api_key(self, public_key: str) -> ApiKey | None:
        """The live integration with this public key, as an API call authenticates."""
        ...

    async def close(self) -> None: ...


def claimed_from_row(r: Any) -> Claimed:
    """A claimed row, from asyncpg (`Record`) or sqlite3 (`Row`) alike."""
    return Claimed(
        id=r["id"],
        event_id=r["event_id"],
        integration_id=r["integration_id"],
        integration_version=r["last_updated_ms"],
        attempt_count=r["attempt_count"],
        schedule_base=r["schedule_base"],
        body=(r["body"] or "").encode("ascii"),
    )


def outcome_rows(
    outcomes: Sequence[Outcome],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(attempt rows, delivery state rows), one tuple per row in the column order both
    engines' statements take: rows for SQLite's executemany, columns for PostgreSQL."""
    attempts = []
    states = []
    for o in outcomes:
        r, d = o.result, o.decision
        note = d.note
        if r is None:
            if note is not None and not is_storable(note):
                note = storable(note)
        else:
            error, excerpt, url = r.error, r.response_excerpt, o.url
            # what an endpoint sent back (an excerpt, an error naming its bytes) may hold
            # anything; mostly it is all clean, and one scan of it all says so
            if not is_storable(f"{error or ''}{excerpt}{url or ''}{note or ''}"):
                error, url, note = _storable(error), _storable(url), _storable(note)
                excerpt = storable(excerpt)
            if d.attempted:
                headers = answer_headers.to_text(r.response_headers)
                attempts.append(
                    (
                        o.delivery_id,
                        o.at_ms,
                        r.duration_ms,
                        r.status_code,
                        error,
                        excerpt,
                        headers,
                        url,
                    )
                )
        states.append(
            (
                o.delivery_id,
                o.lease,
                d.status,
                1 if d.attempted else 0,
                d.next_attempt_ms,
                None if r is None else r.status_code,
                note,
                o.at_ms,
            )
        )
    return attempts, states


def _storable(value: str | None) -> str | None:
    return None if value is None else storable(value)


def turned_off_events(rows: Iterable[Any], box: SecretBox, now_ms: int) -> list[tuple[Any, ...]]:
    """The events rows (id, account_id, action, timestamp_ms, body) of the
    `integration_updated` each integration a 410 has just turned off emits (SPEC §2: any
    change to an integration does), from its rows as read after the change. Routed like any
    integration event, to the integration itself, which is off now: queued for no one."""
    out = []
    for row in rows:
        # sqlite3.Row and asyncpg's Record alike, read by attribute as SQLAlchemy's rows are
        integration = integration_from_row(cast("Row[Any]", SimpleNamespace(**dict(row))), box)
        e, recipients = ev.integration_event(INTEGRATION_UPDATED, integration, now_ms)
        assert not recipients, "a webhook turned off has no one to deliver to"
        out.append((e.id, e.account_id, e.action, e.timestamp_ms, e.body.decode("ascii")))
    return out


async def integrations_by_id(
    engine: AsyncEngine, box: SecretBox, ids: Iterable[int]
) -> dict[int, Integration]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(s.integrations).where(s.integrations.c.id.in_(list(ids))))
        return {row.id: integration_from_row(row, box) for row in rows}
