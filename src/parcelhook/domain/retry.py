"""The retry schedule and the one place that classifies an attempt's outcome."""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one HTTP attempt produced, as the sender saw it."""

    status_code: int | None
    duration_ms: int
    response_excerpt: str = ""
    error: str | None = None
    # seconds the endpoint asked us to wait (Retry-After), when it said so
    retry_after: float | None = None
    # the answer's headers as the transport kept them (wire.HEADERS_KEPT, cut short)
    response_headers: tuple[tuple[str, str], ...] = ()

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


class Verdict(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    # 410 Gone: the endpoint asked us to stop; the integration's webhook is turned off
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    # seconds from now until the next attempt, for RETRY
    retry_in: float | None = None


def _sendcloud_delays() -> tuple[float, ...]:
    # 5 minutes, doubling, at most an hour: 5, 10, 20, 40, 60 × 6 minutes
    return tuple(min(300.0 * 2**i, 3600.0) for i in range(10))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays (seconds) before each retry; `len(delays)` retries after the first attempt."""

    delays: tuple[float, ...] = field(default_factory=_sendcloud_delays)
    jitter: float = 0.1

    @classmethod
    def exponential(
        cls,
        *,
        first: float = 300.0,
        factor: float = 2.0,
        cap: float = 3600.0,
        retries: int = 10,
        jitter: float = 0.1,
    ) -> RetryPolicy:
        return cls(tuple(min(first * factor**i, cap) for i in range(retries)), jitter)

    @property
    def max_attempts(self) -> int:
        return len(self.delays) + 1

    def scheduled_delay(self, attempts_made: int) -> float:
        """The un-jittered delay before the retry that follows attempt number `attempts_made`."""
        return self.delays[attempts_made - 1]

    def decide(
        self, result: AttemptResult, attempts_made: int, rng: random.Random | None = None
    ) -> Decision:
        """What happens after attempt number `attempts_made` (1-based) produced `result`."""
        if result.succeeded:
            return Decision(Verdict.DELIVERED)
        if result.status_code == 410:
            return Decision(Verdict.GONE)
        if attempts_made >= self.max_attempts:
            return Decision(Verdict.FAILED)
        scheduled = self.scheduled_delay(attempts_made)
        if result.retry_after is not None and result.status_code in (429, 503):
            # honour the endpoint's wish, but neither sooner than planned nor later than 2×
            return Decision(Verdict.RETRY, min(max(result.retry_after, scheduled), 2 * scheduled))
        spread = self.jitter * scheduled
        r = rng.uniform(-spread, spread) if rng is not None else random.uniform(-spread, spread)
        return Decision(Verdict.RETRY, scheduled + r)
