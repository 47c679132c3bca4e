"""Time as the domain sees it: integer milliseconds since the Unix epoch, injectable."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until(self, when_ms: int, wake: asyncio.Event) -> None:
        """Return at `when_ms`, or earlier when `wake` is set."""


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, when_ms: int, wake: asyncio.Event) -> None:
        delay = (when_ms - self.now_ms()) / 1000
        if delay <= 0:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), delay)


class FakeClock:
    """A clock that moves only when told to; sleepers wake when it passes their time."""

    def __init__(self, start_ms: int = 1_800_000_000_000) -> None:
        self._now = start_ms
        self._moved = asyncio.Condition()

    def now_ms(self) -> int:
        return self._now

    async def advance(self, seconds: float) -> None:
        self._now += round(seconds * 1000)
        async with self._moved:
            self._moved.notify_all()

    async def sleep_until(self, when_ms: int, wake: asyncio.Event) -> None:
        async def passed() -> None:
            async with self._moved:
                await self._moved.wait_for(lambda: self._now >= when_ms)

        if self._now >= when_ms:
            return
        waiters = [asyncio.ensure_future(passed()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()


def iso_ms(ms: int | None) -> str | None:
    """`2026-11-28T06:42:38.123000Z`, the form Sendcloud's v2 API uses for instants."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(ms: int) -> str:
    """`2026-11-28T06:42:38`, the form of a parcel's `date_created`."""
    return _iso_second(ms // 1000)


# every parcel object has two or three of these, and under load most are of the same few
# seconds: a hit is 0.2 µs against 3–4 µs of datetime and strftime
@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_iso_ms(text: str) -> int:
    """Milliseconds for an ISO 8601 instant; naive times are taken as UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)
