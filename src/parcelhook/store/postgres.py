"""What only PostgreSQL does: wake dispatchers on other hosts with LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from parcelhook.store.store import NOTIFY_CHANNEL

log = logging.getLogger("parcelhook.store")


class DeliveryListener:
    """Calls `on_notify` whenever any process commits new deliveries; reconnects on loss."""

    def __init__(self, database_url: str, on_notify: Callable[[], None]) -> None:
        u = make_url(database_url)
        self._dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: self._on_notify())
                # anything committed while we were not listening is picked up now
                self._on_notify()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying", type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(1)
