"""Finding parcels the way Sendcloud's `GET /parcels` filters them, a page at a time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select

from parcelhook.domain.parcels import Parcel
from parcelhook.store import schema as s
from parcelhook.store.tx import Tx, parcel_from_row


@dataclass(frozen=True, slots=True)
class ParcelFilter:
    """Sendcloud's documented filters; None means "any"."""

    status_id: int | None = None
    tracking_number: str | None = None
    order_number: str | None = None
    external_reference: str | None = None
    updated_after_ms: int | None = None
    announced_after_ms: int | None = None
    ids: Sequence[int] | None = None

    @property
    def may_walk(self) -> bool:
        """Whether a page may read many of the account's parcels: a status or an announced
        time narrows nothing by an index, unless an indexed filter comes with it."""
        indexed = (self.tracking_number, self.order_number, self.external_reference, self.ids)
        unindexed = self.status_id is not None or self.announced_after_ms is not None
        return unindexed and all(v is None for v in indexed)


@dataclass(frozen=True, slots=True)
class Position:
    """A place in the (updated, id) order; `backwards` pages towards older changes."""

    updated_ms: int
    parcel_id: int
    backwards: bool = False


async def find_parcels(
    tx: Tx, account_id: int, f: ParcelFilter, at: Position | None, limit: int
) -> tuple[list[Parcel], bool]:
    """Up to `limit` parcels in (updated, id) order from `at`, and whether more lie beyond."""
    p = s.parcels
    q = select(p).where(p.c.account_id == account_id)
    if f.status_id is not None:
        q = q.where(p.c.status_id == f.status_id)
    if f.tracking_number is not None:
        q = q.where(p.c.tracking_number == f.tracking_number)
    if f.order_number is not None:
        q = q.where(p.c.order_number == f.order_number)
    if f.external_reference is not None:
        q = q.where(p.c.external_reference == f.external_reference)
    if f.updated_after_ms is not None:
        q = q.where(p.c.updated_ms > f.updated_after_ms)
    if f.announced_after_ms is not None:
        q = q.where(p.c.announced_ms > f.announced_after_ms)
    if f.ids is not None:
        q = q.where(p.c.id.in_(list(f.ids)))
    key = (p.c.updated_ms, p.c.id)
    if at is not None and not at.backwards:
        q = q.where(
            or_(key[0] > at.updated_ms, and_(key[0] == at.updated_ms, key[1] > at.parcel_id))
        )
    if at is not None and at.backwards:
        q = q.where(
            or_(key[0] < at.updated_ms, and_(key[0] == at.updated_ms, key[1] < at.parcel_id))
        )
    if at is not None and at.backwards:
        q = q.order_by(key[0].desc(), key[1].desc())
    else:
        q = q.order_by(*key)
    rows = [parcel_from_row(r) for r in await tx.conn.execute(q.limit(limit + 1))]
    more = len(rows) > limit
    found = rows[:limit]
    if at is not None and at.backwards:
        found.reverse()
    return found, more
