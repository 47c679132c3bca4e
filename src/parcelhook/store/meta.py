"""Named facts about the database itself (the `parcelhook_meta` table)."""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from parcelhook.store import schema as s
from parcelhook.store.store import Store


async def get(store: Store, name: str) -> str | None:
    m = s.meta
    async with store.reading() as r:
        row = (await r.conn.execute(select(m.c.value).where(m.c.name == name))).first()
    return None if row is None else str(row[0])


async def put(store: Store, name: str, value: str | None) -> None:
    """Set (or with None, remove) one fact."""
    m = s.meta
    async with store.transaction() as tx:
        await tx.conn.execute(delete(m).where(m.c.name == name))
        if value is not None:
            await tx.conn.execute(insert(m).values(name=name, value=value))
