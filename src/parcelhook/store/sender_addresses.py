"""Each account's sender addresses."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update

from parcelhook.domain.errors import NotFound
from parcelhook.domain.senders import FIELD_NAMES, SenderAddress, SenderAddressFields
from parcelhook.store import schema as s
from parcelhook.store.tx import Tx


def _from_row(row: Row[Any]) -> SenderAddress:
    fields = SenderAddressFields(**{n: getattr(row, n) for n in FIELD_NAMES})
    return SenderAddress(row.id, row.account_id, fields, bool(row.is_default))


async def sender_addresses(tx: Tx, account_id: int) -> list[SenderAddress]:
    a = s.sender_addresses
    q = select(a).where(a.c.account_id == account_id).order_by(a.c.id)
    return [_from_row(r) for r in await tx.conn.execute(q)]


async def sender_address(tx: Tx, account_id: int, address_id: int) -> SenderAddress:
    """The account's sender address, or NotFound (also for another account's id)."""
    a = s.sender_addresses
    q = select(a).where(a.c.id == address_id, a.c.account_id == account_id)
    row = (await tx.conn.execute(q)).first()
    if row is None:
        raise NotFound("No such sender address.", field="id")
    return _from_row(row)


async def add_sender_address(
    tx: Tx, account_id: int, fields: SenderAddressFields, now_ms: int
) -> SenderAddress:
    a = s.sender_addresses
    count = select(func.count()).select_from(a).where(a.c.account_id == account_id)
    first = (await tx.conn.execute(count)).scalar_one() == 0
    values = {n: getattr(fields, n) for n in FIELD_NAMES}
    new_id = (
        await tx.conn.execute(
            insert(a)
            .values(account_id=account_id, is_default=first, created_ms=now_ms, **values)
            .returning(a.c.id)
        )
    ).scalar_one()
    return await sender_address(tx, account_id, int(new_id))


async def change_sender_address(
    tx: Tx, current: SenderAddress, fields: SenderAddressFields
) -> SenderAddress:
    a = s.sender_addresses
    values = {n: getattr(fields, n) for n in FIELD_NAMES}
    await tx.conn.execute(update(a).where(a.c.id == current.id).values(**values))
    return await sender_address(tx, current.account_id, current.id)


async def make_default(tx: Tx, current: SenderAddress) -> None:
    a = s.sender_addresses
    await tx.conn.execute(
        update(a)
        .where(a.c.account_id == current.account_id)
        .values(is_default=a.c.id == current.id)
    )


async def remove_sender_address(tx: Tx, current: SenderAddress) -> None:
    a = s.sender_addresses
    await tx.conn.execute(delete(a).where(a.c.id == current.id))
    if current.is_default:
        first = (
            await tx.conn.execute(
                select(a.c.id).where(a.c.account_id == current.account_id).order_by(a.c.id)
            )
        ).first()
        if first is not None:
            await tx.conn.execute(update(a).where(a.c.id == first.id).values(is_default=True))


async def account_email(tx: Tx, account_id: int) -> str:
    acc = s.accounts
    row = (await tx.conn.execute(select(acc.c.email).where(acc.c.id == account_id))).first()
    if row is None:
        raise NotFound("No such account.")
    return str(row.email)
