"""The failing-endpoint check's reads and writes (through the partial index on
failing_since_ms: only failing integrations are read)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select, update

from parcelhook.domain import events as ev
from parcelhook.domain.systems import INTEGRATION_UPDATED
from parcelhook.store import schema as s
from parcelhook.store.store import Store


@dataclass(frozen=True, slots=True)
class Failing:
    integration_id: int
    account_id: int
    email: str
    shop_name: str
    failing_since_ms: int
    last_error: str | None


async def count_failing(store: Store) -> int:
    i = s.integrations
    q = select(func.count()).where(i.c.failing_since_ms.is_not(None), i.c.deleted_ms.is_(None))
    async with store.reading() as r:
        return int((await r.conn.execute(q)).scalar_one())


async def _claim(
    store: Store,
    where: list[ColumnElement[bool]],
    values: dict[str, object],
    *,
    announce: bool = False,
) -> list[Failing]:
    """Set `values` on the failing integrations matching `where`, and return those this call
    changed: with several processes checking, each integration is acted on by one.
    `announce`: a change of its settings, so each one changed emits `integration_updated`
    in the same transaction."""
    i, a = s.integrations, s.accounts
    base = [i.c.failing_since_ms.is_not(None), i.c.deleted_ms.is_(None), *where]
    async with store.transaction() as tx:
        found = (
            await tx.conn.execute(
                select(i.c.id, i.c.account_id, a.c.email, i.c.shop_name, i.c.failing_since_ms)
                .join(a, a.c.id == i.c.account_id)
                .where(*base)
                .limit(100)
            )
        ).all()
        out = []
        for row in found:
            done = await tx.conn.execute(update(i).where(i.c.id == row.id, *base).values(**values))
            if done.rowcount:
                if announce:
                    changed = await tx.integration(row.account_id, row.id)
                    now_ms = int(changed.last_updated_ms)
                    event, recipients = ev.integration_event(INTEGRATION_UPDATED, changed, now_ms)
                    await tx.enqueue(event, recipients, now_ms)
                d = s.deliveries
                last_error = (
                    await tx.conn.execute(
                        select(d.c.last_error)
                        .where(d.c.integration_id == row.id)
                        .order_by(d.c.id.desc())
                        .limit(1)
                    )
                ).scalar()
                out.append(
                    Failing(
                        row.id,
                        row.account_id,
                        row.email,
                        row.shop_name,
                        row.failing_since_ms,
                        last_error,
                    )
                )
        return out


async def disable_failing(store: Store, cutoff_ms: int, now_ms: int, reason: str) -> list[Failing]:
    """Turn off the webhooks of integrations failing since before `cutoff_ms`."""
    i = s.integrations
    return await _claim(
        store,
        [i.c.webhook_active.is_(True), i.c.failing_since_ms <= cutoff_ms],
        {
            "webhook_active": False,
            "disabled_reason": reason,
            "disabled_ms": now_ms,
            "last_updated_ms": now_ms,
        },
        # routed like any integration_updated, to the integration itself, which is off now:
        # kept in the events list (GET /api/v2/webhook-events), queued for no one
        announce=True,
    )


async def failing_unannounced(store: Store, cutoff_ms: int, now_ms: int) -> list[Failing]:
    """Integrations failing since before `cutoff_ms` whose account was not told of this run
    of failures yet; marked as told."""
    i = s.integrations
    return await _claim(
        store,
        [
            i.c.webhook_active.is_(True),
            i.c.failing_since_ms <= cutoff_ms,
            or_(
                i.c.failing_alerted_ms.is_(None),
                i.c.failing_alerted_ms < i.c.failing_since_ms,
            ),
        ],
        {"failing_alerted_ms": now_ms},
    )


async def unannounce(store: Store, integration_id: int, alerted_ms: int) -> None:
    """Take back `failing_unannounced`'s mark when its e-mail could not be sent, so a later
    check tells the account after all (unless another check has marked it since)."""
    i = s.integrations
    async with store.transaction() as tx:
        await tx.conn.execute(
            update(i)
            .where(i.c.id == integration_id, i.c.failing_alerted_ms == alerted_ms)
            .values(failing_alerted_ms=None)
        )
