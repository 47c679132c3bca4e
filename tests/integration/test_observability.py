"""Metrics (prometheus_client), the Grafana dashboard's queries, structured logs and traces."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from parcelhook.config import Settings
from parcelhook.logs import json_formatter
from parcelhook.runtime import Runtime
from support.harness import MASTER_KEY, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"
PARCEL = {
    "name": "Ada",
    "address": "Stationsplein 1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def _delivered(h: Harness, rx: HostileReceiver, ok: int, failing: int) -> None:
    acct = await h.account()
    good = await acct.shop(rx.url("/ok"), name="Good")
    bad = await acct.shop(rx.url("/down"), name="Bad")
    rx.route("/down", Mode.status(500))
    for n in range(ok + failing):
        owner = good if n < ok else bad
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": owner}}
        )
        assert r.status_code == 200, r.text

    async def settled() -> bool:
        found = await h.service.list_deliveries(acct.account_id)
        return len(found) == ok + failing and all(d.attempt_count >= 1 for d in found)

    await eventually(settled, what="every delivery to be attempted")


async def test_metrics_count_deliveries_latencies_and_requests(harness: HarnessFactory) -> None:
    h = await harness()
    async with HostileReceiver() as rx:
        await _delivered(h, rx, ok=3, failing=2)
        async with httpx.AsyncClient(base_url=h.base_url) as client:
            r = await client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)
    assert value(found, "parcelhook_delivery_attempts_total", outcome="delivered") == 3
    assert value(found, "parcelhook_delivery_attempts_total", outcome="retry") == 2
    assert value(found, "parcelhook_attempt_duration_seconds_count") == 5
    assert value(found, "parcelhook_delivery_latency_seconds_count") == 3
    assert value(found, "parcelhook_claim_duration_seconds_count") >= 1
    assert value(found, "parcelhook_claimed_deliveries_total") == 5
    assert value(found, "parcelhook_outcome_write_duration_seconds_count") >= 1
    assert value(found, "parcelhook_queue_pending") == 2  # the failing ones wait to retry
    assert value(found, "parcelhook_queue_due") == 0
    assert ("parcelhook_lanes_in_use", ()) in found
    # routes by template: an id never becomes a label value
    routes = {dict(k[1]).get("route") for k in found if k[0] == "parcelhook_http_requests_total"}
    assert "/api/v2/parcels" in routes
    assert not any(re.search(r"/\d+", r or "") for r in routes), routes
    created = sum(
        v
        for (name, labels), v in found.items()
        if name == "parcelhook_http_requests_total"
        and dict(labels)["route"] == "/api/v2/parcels"
        and dict(labels)["method"] == "POST"
        and dict(labels)["status"].startswith("2")
    )
    assert created == 5
    # the durations by route: every answer of that route observed once, in cumulative buckets
    parcels = {"route": "/api/v2/parcels"}
    assert value(found, "parcelhook_http_request_duration_seconds_count", **parcels) == 5
    assert (
        value(found, "parcelhook_http_request_duration_seconds_bucket", le="+Inf", **parcels) == 5
    )
    assert value(found, "parcelhook_http_request_duration_seconds_sum", **parcels) > 0


async def test_metrics_may_need_a_token(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False, metrics_token="s3cret-metrics-token")
    async with httpx.AsyncClient(base_url=h.base_url) as client:
        assert (await client.get("/metrics")).status_code == 401
        wrong = {"authorization": "Bearer nope"}
        assert (await client.get("/metrics", headers=wrong)).status_code == 401
        right = {"authorization": "Bearer s3cret-metrics-token"}
        r = await client.get("/metrics", headers=right)
    assert r.status_code == 200 and "parcelhook_queue_pending" in r.text


async def test_healthz_shows_error_text_only_to_the_operator(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False, metrics_token="s3cret-metrics-token")
    probe = h.runtime.health.loop("probe")
    # what a loop's error may say: a host, a file, a statement
    probe.failed(OSError("connect to db.internal.example:5432 failed; see /var/lib/ph/ph.db"))
    async with httpx.AsyncClient(base_url=h.base_url) as client:
        anonymous = await client.get("/healthz")
        wrong = await client.get("/healthz", headers={"authorization": "Bearer nope"})
        operator = await client.get(
            "/healthz", headers={"authorization": "Bearer s3cret-metrics-token"}
        )
    for answer in (anonymous, wrong):
        # the load balancer's check still works without a token: status, loops, ages
        assert answer.status_code == 200, answer.text
        loop = answer.json()["loops"]["probe"]
        assert loop["failures"] == 1 and loop["failing_since_ms"] is not None
        assert "last_error" not in loop
        assert "db.internal" not in answer.text and "/var/lib" not in answer.text
    assert operator.status_code == 200
    assert "db.internal.example:5432" in operator.json()["loops"]["probe"]["last_error"]


async def test_healthz_without_a_metrics_token_shows_no_error_text(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    h.runtime.health.loop("probe").failed(RuntimeError("SELECT secret FROM somewhere"))
    async with httpx.AsyncClient(base_url=h.base_url) as client:
        answer = await client.get("/healthz", headers={"authorization": "Bearer anything"})
    assert answer.json()["loops"]["probe"]["failures"] == 1
    assert "SELECT" not in answer.text


def _dashboard_series() -> set[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    assert exprs
    return {m for e in exprs for m in re.findall(r"\bparcelhook_[a-z_]+", e)}


async def test_the_dashboards_queries_name_only_exposed_series(harness: HarnessFactory) -> None:
    h = await harness()
    async with HostileReceiver() as rx:
        await _delivered(h, rx, ok=1, failing=0)
        async with httpx.AsyncClient(base_url=h.base_url) as client:
            text = (await client.get("/metrics")).text
    exposed = {name for name, _ in samples(text)}
    missing = _dashboard_series() - exposed
    assert not missing, f"the dashboard queries series nobody exposes: {sorted(missing)}"


@pytest.fixture
def free_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield port


def test_a_worker_serves_metrics_and_health_on_its_http_port(
    tmp_path: Path, free_port: int
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
    env |= {"PARCELHOOK_MASTER_KEY": Fernet.generate_key().decode(), "PYTHONUNBUFFERED": "1"}
    token = tmp_path / "metrics.token"
    token.write_text("tok\n")
    args = ["worker", "--http-port", str(free_port), "--metrics-token-file", str(token)]
    args += ["--database-url", f"sqlite:///{tmp_path / 'w.db'}"]
    log = tmp_path / "worker.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "parcelhook.cli", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    base = f"http://127.0.0.1:{free_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                health = httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the worker's HTTP port never answered"
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["dispatcher"] is True
        # each loop's state, as serve's /healthz gives it
        loops = health.json()["loops"]
        assert {"dispatcher", "outcome writer", "pruner", "listener"} <= set(loops), loops
        assert all(set(loop) >= {"ok", "last_ok_ms", "failures"} for loop in loops.values())
        assert httpx.get(base + "/metrics").status_code == 401
        metrics = httpx.get(base + "/metrics", headers={"authorization": "Bearer tok"})
        assert metrics.status_code == 200
        assert "parcelhook_claim_duration_seconds_count" in metrics.text
    finally:
        proc.terminate()
        proc.wait(30)


async def test_json_logs_give_one_line_per_attempt_with_its_ids(harness: HarnessFactory) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    logger = logging.getLogger("parcelhook.delivery")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        h = await harness()
        async with HostileReceiver() as rx:
            await _delivered(h, rx, ok=2, failing=1)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 3
    for line in lines:
        assert {"event_id", "integration_id", "attempt", "status", "duration_ms"} <= set(line)
        assert line["event_id"].startswith("evt_") and line["attempt"] == 1
    assert sorted((x["level"], x["status"]) for x in lines) == [
        ("debug", 200),
        ("debug", 200),
        ("info", 500),
    ]


async def test_spans_for_api_requests_and_delivery_attempts(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 't.db'}",
        master_key=MASTER_KEY,  # type: ignore[arg-type]
        allow_private_targets=True,
        allow_http_targets=True,
    )
    h = Harness(Runtime(settings, tracer_provider=provider))
    await h.start()
    try:
        async with HostileReceiver() as rx:
            await _delivered(h, rx, ok=1, failing=1)
    finally:
        await h.close()
    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.kind is SpanKind.SERVER]
    assert "POST /api/v2/parcels" in {s.name for s in requests}
    attempts = [s for s in spans if s.name == "webhook attempt"]
    assert len(attempts) == 2 and all(s.kind is SpanKind.CLIENT for s in attempts)
    codes = sorted(s.attributes["http.response.status_code"] for s in attempts)  # type: ignore[index]
    assert codes == [200, 500]
    assert all(str(s.attributes["parcelhook.event_id"]).startswith("evt_") for s in attempts)  # type: ignore[index]
