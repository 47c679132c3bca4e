"""Long-running loops that outlive any database or network error, and say how they are.

Each loop (the dispatcher's claimer and outcome writer, the pruner, the PostgreSQL
listener) reports every turn to its `LoopHealth`: `/healthz` shows the last successful turn
and goes unhealthy when a loop has been failing, or has not turned, for too long. A failed
turn is logged and retried after a capped exponential backoff; a loop that ends anyway is a
bug, and `watch` makes the process exit non-zero so its supervisor restarts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("parcelhook.supervision")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Seconds to wait after the n-th failure in a row: doubling from `first_s` to `cap_s`."""

    first_s: float = 0.1
    cap_s: float = 5.0

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.first_s * float(2 ** max(0, min(failures - 1, 30))))


class LoopHealth:
    """One loop's turns: when it last succeeded, and since when it has been failing."""

    def __init__(self, name: str, now_ms: Callable[[], int], *, turns_every_ms: int | None) -> None:
        self.name = name
        self._now_ms = now_ms
        # a loop that turns on its own (a poll) is stuck when it has not for this long
        self.turns_every_ms = turns_every_ms
        self.started_ms = now_ms()
        self.last_ok_ms: int | None = None
        self.failing_since_ms: int | None = None
        self.failures = 0
        self.last_error: str | None = None

    def ok(self) -> None:
        if self.failures:
            log.warning("%s recovered after %d failed turns", self.name, self.failures)
        self.last_ok_ms = self._now_ms()
        self.failing_since_ms = None
        self.failures = 0

    def failed(self, exc: BaseException) -> int:
        """Record a failed turn (logged); how many failed in a row."""
        if self.failing_since_ms is None:
            self.failing_since_ms = self._now_ms()
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[
            :300
        ]
        # the first failure with its traceback, then one line each: an outage is not a flood
        if self.failures == 1:
            log.error("%s failed; retrying with backoff", self.name, exc_info=exc)
        else:
            log.error("%s failed %d times in a row: %s", self.name, self.failures, self.last_error)
        return self.failures

    def stuck(self, grace_ms: int) -> bool:
        now = self._now_ms()
        if self.failing_since_ms is not None and now - self.failing_since_ms > grace_ms:
            return True
        if self.turns_every_ms is None:
            return False
        last = self.last_ok_ms if self.last_ok_ms is not None else self.started_ms
        return now - last > self.turns_every_ms + grace_ms

    def report(self, grace_ms: int, *, errors: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "ok": not self.stuck(grace_ms),
            "last_ok_ms": self.last_ok_ms,
            "failing_since_ms": self.failing_since_ms,
            "failures": self.failures,
        }
        if errors:
            out["last_error"] = self.last_error
        return out


class Health:
    """Every loop of this process, for `/healthz`."""

    def __init__(self, now_ms: Callable[[], int], *, grace_ms: int = 30_000) -> None:
        self._now_ms = now_ms
        self.grace_ms = grace_ms
        self.loops: dict[str, LoopHealth] = {}
        self.fatal: str | None = None  # the loop whose end made the process give up

    def loop(self, name: str, *, turns_every_ms: int | None = None) -> LoopHealth:
        health = self.loops[name] = LoopHealth(name, self._now_ms, turns_every_ms=turns_every_ms)
        return health

    @property
    def healthy(self) -> bool:
        return self.fatal is None and not any(h.stuck(self.grace_ms) for h in self.loops.values())

    def report(self, *, errors: bool = True) -> dict[str, object]:
        """Each loop's state; `errors=False` leaves out the last errors' text (they may
        name hosts, files or statements: /healthz shows them to the operator only)."""
        return {name: h.report(self.grace_ms, errors=errors) for name, h in self.loops.items()}


def watch(
    task: asyncio.Task[None],
    name: str,
    *,
    stopping: Callable[[], bool],
    on_fatal: Callable[[str], None],
) -> None:
    """Call `on_fatal(name)` if `task` ends while the process is not stopping."""

    def ended(t: asyncio.Task[None]) -> None:
        if stopping():
            return
        exc = None if t.cancelled() else t.exception()
        log.critical("%s ended while the process runs (%r); exiting", name, exc, exc_info=exc)
        on_fatal(name)

    task.add_done_callback(ended)
