"""The panel's reads and actions on one integration's deliveries: health and "Retry now"."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select, update

from parcelhook.domain import deliveries as dl
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
    result = await tx.conn.execute(
        q.values(next_attempt_ms=now_ms, schedule_base=d.c.attempt_count, updated_ms=now_ms)
    )
    count = int(result.rowcount or 0)
    if count:
        tx.queued = True
    return count
