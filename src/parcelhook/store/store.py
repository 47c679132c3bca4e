"""The Store: every database operation parcelhook needs, on SQLite or PostgreSQL.

Writes happen inside `Store.transaction()`, which yields a `Tx`: the change and the events
it causes commit together (transactional outbox). After a commit that queued deliveries the
store wakes the dispatchers: in-process at once, and on PostgreSQL through NOTIFY.
The dispatcher's own statements are `Store.queue`, a `DeliveryQueue` for the engine at hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine

from parcelhook.domain.integrations import ApiKey
from parcelhook.store import migrations
from parcelhook.store.crypto import SecretBox
from parcelhook.store.engine import open_engine
from parcelhook.store.postgres import PostgresQueue
from parcelhook.store.queue import DeliveryQueue, EngineQueue
from parcelhook.store.sqlite import SqliteQueue
from parcelhook.store.tx import Tx
from parcelhook.supervision import LoopHealth


class Store:
    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box
        # the engine is chosen here, once: nothing else asks which one it is
        self._queue: EngineQueue = (
            SqliteQueue(engine, box)
            if engine.dialect.name == "sqlite"
            else PostgresQueue(engine, box)
        )
        self._on_enqueue: list[Callable[[], None]] = []

    @classmethod
    def open(cls, url: str, box: SecretBox, *, pool_size: int = 10) -> Store:
        return cls(open_engine(url, pool_size=pool_size), box)

    @property
    def queue(self) -> DeliveryQueue:
        """The dispatcher's statements on this store's engine."""
        return self._queue

    async def close(self) -> None:
        await self._queue.close()
        await self.engine.dispose()

    async def migrate(self, now_ms: int | None = None) -> list[str]:
        """Bring the schema up to date (Alembic); concurrent starters wait for each other.
        Returns the revisions applied."""
        async with self._queue.write_turn():
            return await migrations.upgrade(self.engine)

    def on_enqueue(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every commit that queued deliveries (in this process)."""
        self._on_enqueue.append(callback)

    def listen(
        self, wake: Callable[[], None], health: LoopHealth | None = None
    ) -> asyncio.Task[None] | None:
        """Also call `wake` when another process commits deliveries, until `close`
        (PostgreSQL's NOTIFY, by the task returned; on SQLite the dispatcher's poll
        notices them, and there is no task)."""
        return self._queue.listen(wake, health)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One write transaction; deliveries queued in it are announced after commit."""
        async with self._queue.transaction() as tx:
            yield tx
        if tx.queued:
            for callback in self._on_enqueue:
                callback()

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        """A connection for reads; on SQLite each statement sees the latest commit."""
        async with self._queue.reading() as tx:
            yield tx

    @asynccontextmanager
    async def browsing(self) -> AsyncIterator[Tx]:
        """A connection for reads that may walk many rows (the webhook log, the lists),
        off the event loop's thread (SQLite's API statements otherwise run on it)."""
        async with self._queue.browsing() as tx:
            yield tx

    async def api_key(self, public_key: str) -> ApiKey | None:
        """The live integration with this public key (for authenticating an API call)."""
        return await self._queue.api_key(public_key)

    async def ping(self) -> None:
        """Raises when the database cannot be reached."""
        async with self.reading() as r:
            await r.ping()

    async def queue_depth(self, now_ms: int, cap: int) -> tuple[int, int]:
        """Pending deliveries and those due now, each counted up to `cap` (cheap)."""
        async with self.reading() as r:
            return await r.queue_depth(now_ms, cap)

    async def prune(self, older_than_ms: int, batch: int = 500) -> int:
        """Drop attempts and payloads of settled deliveries older than the cut-off, one batch."""
        async with self.transaction() as tx:
            return await tx.prune(older_than_ms, batch)
