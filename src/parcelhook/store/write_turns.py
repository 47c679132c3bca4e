"""SQLite's one write turn per process, with the dispatcher served first.

A delivered outcome that waits behind a queue of API transactions is a duplicate when the
process dies meanwhile: the endpoint has the webhook, the database does not know. So the
dispatcher's writes (claims, outcomes, releases) take the next turn before API writers that
were already waiting; API writers still get every turn the dispatcher does not need, and
the dispatcher writes in batches, a few times a second at most.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class WriteTurns:
    """A lock whose `first` waiters go before its other waiters (FIFO within each)."""

    def __init__(self) -> None:
        self._held = False
        self._first: deque[asyncio.Future[None]] = deque()
        self._others: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def turn(self, *, first: bool = False) -> AsyncIterator[None]:
        await self._acquire(first)
        try:
            yield
        finally:
            self._release()

    @property
    def waiting(self) -> int:
        return len(self._first) + len(self._others)

    async def _acquire(self, first: bool) -> None:
        if not self._held and not self._first and not self._others:
            self._held = True
            return
        waiter = asyncio.get_running_loop().create_future()
        (self._first if first else self._others).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed the turn as it was cancelled: pass it on
            else:
                queue = self._first if first else self._others
                if waiter in queue:
                    queue.remove(waiter)
            raise

    def _release(self) -> None:
        for queue in (self._first, self._others):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the turn passes on, still held
                    return
        self._held = False
