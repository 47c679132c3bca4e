"""Versioned schema migrations.

A fresh database gets the current schema in one step and is stamped with the latest
version (the way Alembic recommends); an existing one runs every step it has not seen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import insert, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from parcelhook.store import schema


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    # None for the initial schema, which `create_all` builds
    apply: Callable[[AsyncConnection], Awaitable[None]] | None = None


async def _pending_by_integration(conn: AsyncConnection) -> None:
    # a plain CREATE INDEX inside the migration's transaction: it blocks writes to
    # deliveries while it reads the table once
    index = next(i for i in schema.deliveries.indexes if i.name == "deliveries_pending_integration")
    await conn.run_sync(lambda c: index.create(c, checkfirst=True))
    if conn.dialect.name != "sqlite":
        # the planner would walk it for the per-integration scans, and every claim and
        # outcome paid for keeping it up to date
        await conn.execute(text("DROP INDEX IF EXISTS deliveries_due"))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema"),
    Migration(2, "pending deliveries indexed by integration", _pending_by_integration),
)


async def migrate(conn: AsyncConnection, now_ms: int) -> list[int]:
    """Bring the schema up to date; returns the versions applied."""
    tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    if "schema_migrations" not in tables:
        await conn.run_sync(schema.metadata.create_all)
        rows = [{"version": m.version, "name": m.name, "applied_ms": now_ms} for m in MIGRATIONS]
        await conn.execute(insert(schema.schema_migrations), rows)
        return [m.version for m in MIGRATIONS]
    done = set((await conn.execute(select(schema.schema_migrations.c.version))).scalars())
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        if m.apply is not None:
            await m.apply(conn)
        await conn.execute(
            insert(schema.schema_migrations).values(
                version=m.version, name=m.name, applied_ms=now_ms
            )
        )
        applied.append(m.version)
    return applied
