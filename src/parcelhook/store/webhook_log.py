"""The panel's webhook log: searching deliveries newest first, a failing integration's
health, and "Retry now"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Select, func, insert, select, update

from parcelhook.domain import deliveries as dl
from parcelhook.domain.events import Event
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.systems import TEST_WEBHOOK
from parcelhook.domain.text import storable
from parcelhook.store import answer_headers
from parcelhook.store import schema as s
from parcelhook.store.tx import Tx


@dataclass(frozen=True, slots=True)
class Health:
    """What a failing integration's banner says: how much waits, and the last thing that failed."""

    waiting: int
    last_status_code: int | None
    last_error: str | None


async def health(tx: Tx, account_id: int, integration_id: int) -> Health:
    d = s.deliveries
    # both read the integration's own indexes: the pending partial one, and (integration, id)
    waiting = await tx.conn.scalar(
        select(func.count())
        .select_from(d)
        .where(
            d.c.integration_id == integration_id,
            d.c.account_id == account_id,
            d.c.status == dl.PENDING,
        )
    )
    last = (
        await tx.conn.execute(
            select(d.c.last_status_code, d.c.last_error)
            .where(
                d.c.integration_id == integration_id,
                d.c.account_id == account_id,
                d.c.status != dl.DELIVERED,
                d.c.attempt_count > 0,
                # a failed test went to a typed URL, not this endpoint
                d.c.action != TEST_WEBHOOK,
            )
            .order_by(d.c.id.desc())
            .limit(1)
        )
    ).first()
    return Health(
        waiting=int(waiting or 0),
        last_status_code=last.last_status_code if last else None,
        last_error=last.last_error if last else None,
    )


async def retry_now(
    tx: Tx,
    account_id: int,
    now_ms: int,
    *,
    delivery_id: int | None = None,
    integration_id: int | None = None,
    ids: Sequence[int] | None = None,
) -> int:
    """Make waiting deliveries due now; returns how many.

    The `webhook-id` stays the event's; the schedule restarts from its first step should
    the attempt fail. A delivery that is being sent (leased) is left to its sender.
    """
    d = s.deliveries
    q = update(d).where(
        d.c.account_id == account_id, d.c.status == dl.PENDING, d.c.lease_owner.is_(None)
    )
    if delivery_id is not None:
        q = q.where(d.c.id == delivery_id)
    if integration_id is not None:
        q = q.where(d.c.integration_id == integration_id)
    if ids is not None:
        q = q.where(d.c.id.in_(ids))
    result = await tx.conn.execute(
        q.values(next_attempt_ms=now_ms, schedule_base=d.c.attempt_count, updated_ms=now_ms)
    )
    count = int(result.rowcount or 0)
    if count:
        tx.queued = True
    return count


async def retry_now_page(
    tx: Tx,
    account_id: int,
    integration_id: int,
    now_ms: int,
    *,
    after_id: int,
    up_to_id: int,
    limit: int,
) -> tuple[int, int | None]:
    """`retry_now` for the integration's first `limit` waiting deliveries with ids in
    (after_id, up_to_id]: how many, and the last id looked at (None: none left)."""
    d = s.deliveries
    page = (
        select(d.c.id)
        .where(
            d.c.integration_id == integration_id,
            d.c.account_id == account_id,
            d.c.status == dl.PENDING,
            d.c.id > after_id,
            d.c.id <= up_to_id,
        )
        .order_by(d.c.id)
        .limit(limit)
    )
    found = [r[0] for r in await tx.conn.execute(page)]
    if not found:
        return 0, None
    count = await retry_now(tx, account_id, now_ms, integration_id=integration_id, ids=found)
    return count, found[-1]


# ids grow with creation time, give or take writers that raced: a date's id bound is
# looked up this much wider, and the exact times are checked on the rows themselves
_RACE_MS: Final = 60_000
MAX_PARCELS: Final = 100


@dataclass(frozen=True, slots=True)
class LogFilter:
    """What the log shows; every part narrows it. `parcel_ids=()` matches nothing."""

    integration_id: int | None = None
    status: str | None = None
    action: str | None = None
    from_ms: int | None = None
    until_ms: int | None = None
    event_id: str | None = None
    parcel_ids: tuple[int, ...] | None = None
    before_id: int | None = None


@dataclass(frozen=True, slots=True)
class LogRow:
    """One line of the log."""

    id: int
    integration_id: int
    shop_name: str
    event_id: str
    action: str
    parcel_id: int | None
    status: str
    attempt_count: int
    next_attempt_ms: int | None
    created_ms: int
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: int | None


async def parcels_matching(
    tx: Tx, account_id: int, *, order_number: str = "", tracking_number: str = ""
) -> tuple[int, ...]:
    """The account's parcels with this order or tracking number (a few at most)."""
    p = s.parcels
    q = select(p.c.id).where(p.c.account_id == account_id).limit(MAX_PARCELS)
    if order_number:
        q = q.where(p.c.order_number == order_number)
    if tracking_number:
        q = q.where(p.c.tracking_number == tracking_number)
    return tuple(r[0] for r in await tx.conn.execute(q))


async def first_id_since(tx: Tx, ms: int) -> int | None:
    """The lowest delivery id created at or after `ms` (None: none yet), by bisecting ids.

    Each step is one primary-key probe: no index on the creation time is needed.
    """
    d = s.deliveries
    top = await tx.conn.scalar(select(func.max(d.c.id)))
    if top is None:
        return None
    lo, hi = 1, int(top) + 1
    while lo < hi:
        mid = (lo + hi) // 2
        created = await tx.conn.scalar(
            select(d.c.created_ms).where(d.c.id >= mid).order_by(d.c.id).limit(1)
        )
        if created is None or created >= ms:
            hi = mid
        else:
            lo = mid + 1
    return lo if lo <= top else None


def search_query(
    account_id: int, f: LogFilter, limit: int, id_bounds: tuple[Any, Any]
) -> Select[Any]:
    """The log's one statement, newest first; `id_bounds` narrow a date range to ids."""
    d, i, a = s.deliveries, s.integrations, s.attempts
    last_duration = (
        select(a.c.duration_ms)
        .where(a.c.delivery_id == d.c.id)
        .order_by(a.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )
    q = (
        select(d, i.c.shop_name, last_duration.label("last_duration_ms"))
        .join(i, i.c.id == d.c.integration_id)
        .where(d.c.account_id == account_id)
        .order_by(d.c.id.desc())
        .limit(limit)
    )
    if f.integration_id is not None:
        q = q.where(d.c.integration_id == f.integration_id)
    if f.status is not None:
        q = q.where(d.c.status == f.status)
    if f.action is not None:
        q = q.where(d.c.action == f.action)
    if f.event_id is not None:
        q = q.where(d.c.event_id == f.event_id)
    if f.parcel_ids is not None:
        q = q.where(d.c.parcel_id.in_(f.parcel_ids))
    if f.before_id is not None:
        q = q.where(d.c.id < f.before_id)
    if f.from_ms is not None:
        q = q.where(d.c.created_ms >= f.from_ms)
    if f.until_ms is not None:
        q = q.where(d.c.created_ms < f.until_ms)
    low, high = id_bounds
    if low is not None:
        q = q.where(d.c.id >= low)
    if high is not None:
        q = q.where(d.c.id < high)
    return q


async def search(tx: Tx, account_id: int, f: LogFilter, limit: int = 50) -> list[LogRow]:
    """The log's page: newest first, `limit` rows older than `f.before_id`."""
    if f.parcel_ids == ():
        return []
    low = high = None
    if f.from_ms is not None:
        low = await first_id_since(tx, f.from_ms - _RACE_MS)
        if low is None:
            return []
    if f.until_ms is not None:
        high = await first_id_since(tx, f.until_ms + _RACE_MS)
    rows = await tx.conn.execute(search_query(account_id, f, limit, (low, high)))
    return [
        LogRow(
            id=r.id,
            integration_id=r.integration_id,
            shop_name=r.shop_name,
            event_id=r.event_id,
            action=r.action,
            parcel_id=r.parcel_id,
            status=r.status,
            attempt_count=r.attempt_count,
            next_attempt_ms=r.next_attempt_ms if r.status == dl.PENDING else None,
            created_ms=r.created_ms,
            last_status_code=r.last_status_code,
            last_error=r.last_error,
            last_duration_ms=r.last_duration_ms,
        )
        for r in rows
    ]


async def record_test(
    tx: Tx, event: Event, integration_id: int, result: AttemptResult, now_ms: int, url: str
) -> int:
    """Log a test send as a settled delivery with its one attempt (never queued); its id."""
    d = s.deliveries
    # what an endpoint answered may hold bytes no engine stores (NUL, lone surrogates)
    error = storable(result.error) if result.error else None
    await tx.conn.execute(
        insert(s.events).values(
            id=event.id,
            account_id=event.account_id,
            action=event.action,
            timestamp_ms=event.timestamp_ms,
            body=event.body.decode("ascii"),
        )
    )
    delivery_id = await tx.conn.scalar(
        insert(d)
        .values(
            event_id=event.id,
            integration_id=integration_id,
            account_id=event.account_id,
            action=event.action,
            status=dl.DELIVERED if result.succeeded else dl.FAILED,
            attempt_count=1,
            schedule_base=0,
            next_attempt_ms=now_ms,
            last_status_code=result.status_code,
            last_error=error,
            created_ms=now_ms,
            updated_ms=now_ms,
        )
        .returning(d.c.id)
    )
    assert delivery_id is not None
    await tx.conn.execute(
        insert(s.attempts).values(
            delivery_id=delivery_id,
            at_ms=now_ms,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=error,
            response_excerpt=storable(result.response_excerpt),
            response_headers=answer_headers.to_text(result.response_headers),
            url=storable(url),
        )
    )
    return int(delivery_id)
