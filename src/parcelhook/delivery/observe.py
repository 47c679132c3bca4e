"""What the dispatcher tells the outside about its work: metrics, log lines and spans.

Per attempt: a counter increment, two histogram observations, a log line only when its level
is on, and a span only when tracing is configured. Labels are fixed small sets (the outcome);
nothing is labelled by endpoint or account.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

from parcelhook import tracing
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.events import event_time_ms
from parcelhook.domain.retry import AttemptResult, Verdict
from parcelhook.metrics import Metrics

log = logging.getLogger("parcelhook.delivery")
_NO_SPAN: AbstractContextManager[Any] = contextlib.nullcontext()


def outcome_label(verdict: Verdict, result: AttemptResult | None) -> str:
    # `_value_`, the member's value itself: `.value` is a property, two Python calls
    # per attempt
    label: str = verdict._value_
    return "skipped" if result is None else label


class DeliveryObserver:
    def __init__(self, metrics: Metrics | None = None, tracer: Any | None = None) -> None:
        self.stats = metrics.dispatch if metrics is not None else None
        self.tracer = tracer

    def attempt_span(self, c: Claimed) -> AbstractContextManager[Any]:
        """The span of one attempt, around the send (None when tracing is off)."""
        if self.tracer is None:
            return _NO_SPAN
        return self._span(c)

    @contextlib.contextmanager
    def _span(self, c: Claimed) -> Iterator[Any]:
        assert self.tracer is not None
        with self.tracer.start_as_current_span(
            "webhook attempt", kind=tracing.client_kind()
        ) as span:
            span.set_attribute("parcelhook.event_id", c.event_id)
            span.set_attribute("parcelhook.delivery_id", c.id)
            span.set_attribute("parcelhook.integration_id", c.integration_id)
            span.set_attribute("parcelhook.attempt", c.attempt_count + 1)
            yield span

    def attempted(
        self,
        c: Claimed,
        verdict: Verdict,
        result: AttemptResult | None,
        now_ms: int,
        span: Any | None = None,
    ) -> None:
        label = outcome_label(verdict, result)
        stats = self.stats
        if stats is not None:
            stats.attempts[label] += 1
            if result is not None:
                stats.attempt_seconds.observe(result.duration_ms / 1000)
            if verdict is Verdict.DELIVERED:
                latency = now_ms - event_time_ms(c.event_id)
                stats.latency_seconds.observe(max(latency, 0) / 1000)
        if span is not None:
            span.set_attribute("parcelhook.outcome", label)
            if result is not None:
                if result.status_code is not None:
                    span.set_attribute("http.response.status_code", result.status_code)
                if result.error is not None:
                    tracing.mark_error(span, result.error)
        failed = verdict is not Verdict.DELIVERED
        level = logging.INFO if failed else logging.DEBUG
        if log.isEnabledFor(level):
            # ids, numbers and the error in words: never a URL, a header or a body
            log.log(
                level,
                "delivery attempt failed" if failed else "delivery attempt",
                extra={
                    "event_id": c.event_id,
                    "delivery_id": c.id,
                    "integration_id": c.integration_id,
                    "attempt": c.attempt_count + 1,
                    "outcome": label,
                    "status": None if result is None else result.status_code,
                    "duration_ms": None if result is None else result.duration_ms,
                    "error": None if result is None else result.error,
                },
            )

    def claimed(self, seconds: float, count: int) -> None:
        if self.stats is not None:
            self.stats.claim_seconds.observe(seconds)
            self.stats.claimed += count

    def wrote(self, seconds: float) -> None:
        if self.stats is not None:
            self.stats.write_seconds.observe(seconds)
