"""Prometheus metrics (prometheus_client), one registry per runtime.

Nothing here costs a table scan: the queue depth is a bounded count read at most once per
`DEPTH_TTL_S` whatever the scrape rate, and per-delivery work is a few additions
(DispatchStats), with labels from small fixed sets (never an endpoint or account).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from parcelhook.store import Store

__all__ = ["CONTENT_TYPE_LATEST", "DEPTH_CAP", "Metrics", "RequestMetrics"]

# counts above this read as this: a gauge of "more than 100,000" is all an alert needs
DEPTH_CAP = 100_000
DEPTH_TTL_S = 5.0
# seconds; attempts time out at --timeout (10 s by default)
ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# commit to delivery: milliseconds on the happy path, hours through retries
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 1800, 3600, 6 * 3600, 86400)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


OUTCOMES = ("delivered", "retry", "failed", "gone", "skipped")


class LocalHistogram:
    """A histogram updated from one event loop, read at scrape time: an observation is a
    bisect and two additions (prometheus_client's takes a lock and walks every bucket, about
    ten times the cost, which the dispatcher would pay per delivery)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            name, documentation, buckets=self.buckets(), sum_value=self.sum
        )

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound, as the exposition writes them."""
        buckets: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            # the exposition's own spelling of a bound: 0.005, 1.0, +Inf
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return buckets


class DispatchStats(Collector):
    """The dispatcher's counts and timings, as plain numbers it updates and a collector
    that turns them into series when scraped."""

    def __init__(self) -> None:
        self.attempts = dict.fromkeys(OUTCOMES, 0)
        self.attempt_seconds = LocalHistogram(ATTEMPT_BUCKETS)
        self.latency_seconds = LocalHistogram(LATENCY_BUCKETS)
        self.claim_seconds = LocalHistogram(DB_BUCKETS)
        self.write_seconds = LocalHistogram(DB_BUCKETS)
        self.claimed = 0

    def collect(self) -> Iterator[Metric]:
        attempts = CounterMetricFamily(
            "parcelhook_delivery_attempts",
            "Delivery attempts by outcome: delivered, retry, failed (no retries left), gone "
            "(410: webhook turned off), skipped (webhook off, not sent).",
            labels=["outcome"],
        )
        for outcome, n in self.attempts.items():
            attempts.add_metric([outcome], n)
        yield attempts
        yield self.attempt_seconds.family(
            "parcelhook_attempt_duration_seconds",
            "Time one HTTP attempt took, to the endpoint's answer or the timeout.",
        )
        yield self.latency_seconds.family(
            "parcelhook_delivery_latency_seconds",
            "From the commit that made an event to its delivery being accepted.",
        )
        yield self.claim_seconds.family(
            "parcelhook_claim_duration_seconds", "Time one claim of due deliveries took."
        )
        yield CounterMetricFamily(
            "parcelhook_claimed_deliveries", "Deliveries claimed for sending.", self.claimed
        )
        yield self.write_seconds.family(
            "parcelhook_outcome_write_duration_seconds",
            "Time one batched write of attempt outcomes took.",
        )


class RequestStats(Collector):
    """API and panel requests by route template, method and status, and their durations by
    route: plain numbers updated on the event loop, made into series when scraped. Through
    prometheus_client's labelled Counter and Histogram each request took two `labels()`
    lookups and two locks and walked the buckets, 2.8 µs against 0.2 µs here (of a status
    change's ~200 µs)."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.seconds: dict[str, LocalHistogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        histogram = self.seconds.get(route)
        if histogram is None:
            histogram = self.seconds[route] = LocalHistogram(ATTEMPT_BUCKETS)
        histogram.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "parcelhook_http_requests",
            "API and panel requests by route template, method and status code.",
            labels=("route", "method", "status"),
        )
        for (route, method, status), n in list(self.counts.items()):
            requests.add_metric((route, method, str(status)), n)
        yield requests
        seconds = HistogramMetricFamily(
            "parcelhook_http_request_duration_seconds",
            "Time to answer an API or panel request, by route template.",
            labels=("route",),
        )
        for route, histogram in list(self.seconds.items()):
            seconds.add_metric((route,), histogram.buckets(), histogram.sum)
        yield seconds


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.dispatch = DispatchStats()
        r.register(self.dispatch)
        self.lanes = Gauge(
            "parcelhook_lanes_in_use", "Endpoints with deliveries held by this process.", registry=r
        )
        self.in_flight = Gauge(
            "parcelhook_in_flight_deliveries",
            "Deliveries claimed by this process and not yet settled.",
            registry=r,
        )
        self.requests = RequestStats()
        r.register(self.requests)
        self.pending = Gauge(
            "parcelhook_queue_pending",
            f"Deliveries waiting to be delivered or retried (counted up to {DEPTH_CAP}).",
            registry=r,
        )
        self.due = Gauge(
            "parcelhook_queue_due",
            f"Pending deliveries whose time has come (counted up to {DEPTH_CAP}).",
            registry=r,
        )
        self.failing = Gauge(
            "parcelhook_failing_endpoints",
            "Integrations whose deliveries are failing, as the alert check last saw them.",
            registry=r,
        )
        self.alerts = Counter(
            "parcelhook_endpoint_alerts",
            "Failing-endpoint actions: mailed (account told), disabled (webhook turned off).",
            ["action"],
            registry=r,
        )
        # every series exists from the start (a dashboard shows 0, not "no data")
        for action in ("mailed", "disabled"):
            self.alerts.labels(action)
        self._depth_read = -DEPTH_TTL_S

    def watch_dispatcher(self, lanes: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Gauges read from the dispatcher at scrape time (nothing on its hot path)."""
        self.lanes.set_function(lanes)
        self.in_flight.set_function(in_flight)

    async def refresh(self, store: Store, now_ms: int) -> None:
        """Read the queue's depth, at most once per DEPTH_TTL_S."""
        if time.monotonic() - self._depth_read < DEPTH_TTL_S:
            return
        self._depth_read = time.monotonic()
        pending, due = await store.queue_depth(now_ms, DEPTH_CAP)
        self.pending.set(pending)
        self.due.set(due)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: requests by route template (never the raw path), method and status,
    and (when tracing is on) a span per request."""

    def __init__(self, app: Any, metrics: Metrics, tracer: Any = None) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.tracer is None:
            await self._measured(scope, receive, send, None)
            return
        from parcelhook.tracing import server_kind

        with self.tracer.start_as_current_span("http request", kind=server_kind()) as span:
            await self._measured(scope, receive, send, span)

    async def _measured(self, scope: Any, receive: Any, send: Any, span: Any) -> None:
        status = 500
        start = time.perf_counter()

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope["method"]
            self.metrics.requests.observe(route, method, status, time.perf_counter() - start)
            if span is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
