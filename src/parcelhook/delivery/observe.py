"""What the dispatcher tells the outside about its work: metrics, log lines and spans.

Per attempt: a counter increment, two histogram observations, a log line only when its level
is on, and a span only when tracing is configured. Labels are fixed small sets (the outcome);
nothing is labelled by endpoint or account.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from parcelhook import tracing
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.events import event_time_ms
from parcelhook.domain.retry import AttemptResult, Verdict
from parcelhook.metrics import Metrics

log = logging.getLogger("parcelhook.delivery")


def outcome_label(verdict: Verdict, result: AttemptResult | None) -> str:
    return "skipped" if result is None else verdict.value


class DeliveryObserver:
    def __init__(self, metrics: Metrics | None = None, tracer: Any | None = None) -> None:
        self.metrics = metrics
        self.tracer = tracer
        if metrics is not None:
            self._counts = {
                label: metrics.deliveries.labels(label)
                for label in ("delivered", "retry", "failed", "gone", "skipped")
            }

    @contextlib.contextmanager
    def attempt_span(self, c: Claimed) -> Iterator[Any]:
        """The span of one attempt, around the send (None when tracing is off)."""
        if self.tracer is None:
            yield None
            return
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
        if self.metrics is not None:
            self._counts[label].inc()
            if result is not None:
                self.metrics.attempt_seconds.observe(result.duration_ms / 1000)
            if verdict is Verdict.DELIVERED:
                latency = now_ms - event_time_ms(c.event_id)
                self.metrics.latency_seconds.observe(max(latency, 0) / 1000)
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
        if self.metrics is not None:
            self.metrics.claim_seconds.observe(seconds)
            self.metrics.claimed.inc(count)

    def wrote(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.write_seconds.observe(seconds)
