"""Every row of every table, to prove that a request changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from parcelhook.store import Store, schema

Snapshot = dict[str, list[tuple[Any, ...]]]
# running processes' heartbeats: they change by themselves, not because of any request
LIVENESS = {"dispatchers"}


async def snapshot(store: Store) -> Snapshot:
    """All rows of all tables in primary-key order; two equal snapshots mean no change."""
    tables: Snapshot = {}
    async with store.reading() as r:
        for table in schema.metadata.sorted_tables:
            if table.name in LIVENESS:
                continue
            rows = await r.conn.execute(select(table).order_by(*table.primary_key.columns))
            tables[table.name] = [tuple(row) for row in rows]
    return tables


async def row_counts(store: Store) -> dict[str, int]:
    """How many rows each table holds."""
    counts: dict[str, int] = {}
    async with store.reading() as r:
        for table in schema.metadata.sorted_tables:
            counts[table.name] = int(
                (await r.conn.execute(select(func.count()).select_from(table))).scalar_one()
            )
    return counts


def changed_tables(before: Snapshot, after: Snapshot) -> list[str]:
    """The names of the tables whose rows differ (for a readable assertion message)."""
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
