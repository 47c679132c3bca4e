"""Group commit: concurrent single requests applied together, in one transaction.

A status change costs little in itself; its transaction (BEGIN, the statements, COMMIT, and
on PostgreSQL a round trip each) costs most (docs/performance.md, "The API write path"). So
concurrent changes wait here and are applied by one transaction of a few statements, as
`/tracking-updates` applies its items, each caller getting its own answer.

Batches form by themselves: while one is applied, the next collects whatever arrives
meanwhile; no timer, so a lone request waits for nothing. Two items with the same key (the
same parcel) never share a batch: the later one goes into the next, as if sequential.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# A batch's answers, one per item in order: a result, or the error for that item alone.
Apply = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    def __init__(
        self,
        apply: Apply[T, R],
        key: Callable[[T], Hashable] | None,
        *,
        shared_failure: Callable[[BaseException], bool],
        max_batch: int = 256,
    ) -> None:
        """`apply` applies a batch in one transaction; `shared_failure(exc)` tells an error
        that would fail any batch (the database is away), which all of the batch's callers
        get. Any other error fails the batch, which is then applied one item at a time, so
        that only the item that causes it gets it. Items of equal `key` never share a
        batch; with no `key` (reads) any may."""
        self._apply = apply
        self._key = key
        self._shared = shared_failure
        self._max = max_batch
        self._waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Apply `item` with whatever else is waiting; its own result or error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch = self._next_batch()
                if batch:
                    await self._settle(batch)
        finally:
            self._task = None
            # cancelled (the server is stopping): nobody is left waiting forever
            while self._waiting:
                _, future = self._waiting.popleft()
                if not future.done():
                    future.set_exception(RuntimeError("the server is stopping"))

    def _next_batch(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        while self._waiting and len(batch) < self._max:
            item, future = self._waiting.popleft()
            if future.done():
                continue  # its caller went away before it was applied: as if never sent
            if self._key is None:
                batch.append((item, future))
                continue
            key = self._key(item)
            if key in keys:
                later.append((item, future))
            else:
                keys.add(key)
                batch.append((item, future))
        # ahead of everything still waiting, in their order
        self._waiting.extendleft(reversed(later))
        return batch

    async def _settle(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._apply([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not self._shared(exc):
                for one in batch:
                    await self._settle([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the server is stopping"))
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
