"""Loops that supervise themselves: capped backoff, health per loop, and a loop that ends
while the process runs is fatal (the command line then exits non-zero)."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from parcelhook.domain.clock import FakeClock
from parcelhook.supervision import Backoff, Health
from support.harness import HarnessFactory, eventually


def test_backoff_doubles_up_to_its_cap() -> None:
    b = Backoff(first_s=0.1, cap_s=1.0)
    assert [b.delay(n) for n in (1, 2, 3, 4, 5, 100)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


async def test_a_loop_is_unhealthy_when_failing_or_silent_too_long(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(1_000_000)
    health = Health(clock.now_ms, grace_ms=30_000)
    polled = health.loop("poller", turns_every_ms=1_000)
    writer = health.loop("writer")
    assert health.healthy
    for _ in range(50):
        writer.failed(ConnectionRefusedError("down"))
    # the first failure with its traceback, then one line each
    assert sum(r.exc_info is not None for r in caplog.records) == 1
    assert health.healthy  # failing, but not for long yet
    await clock.advance(30.001)
    assert not health.healthy
    assert health.report()["writer"] == {
        "ok": False,
        "last_ok_ms": None,
        "failing_since_ms": 1_000_000,
        "failures": 50,
        "last_error": "ConnectionRefusedError: down",
    }
    writer.ok()
    polled.ok()
    assert health.healthy
    await clock.advance(31.001)  # the poller has not turned since
    assert not health.healthy and health.report()["writer"]["ok"]


async def test_a_loop_that_ends_is_fatal_and_healthz_says_so(
    harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)
    h = await harness()
    fatal: list[str] = []
    h.runtime.on_fatal = fatal.append

    async def ends() -> None:
        await asyncio.sleep(0)

    async with httpx.AsyncClient(base_url=h.base_url) as client:
        ok = await client.get("/healthz")
        assert ok.status_code == 200, ok.text
        assert {"dispatcher", "outcome writer", "pruner"} <= set(ok.json()["loops"])
        h.runtime.supervise("doomed", ends())
        await eventually(lambda: fatal == ["doomed"], within=5)
        answer = await client.get("/healthz")
    assert answer.status_code == 503
    assert answer.json()["fatal"] == "doomed"
    assert "doomed ended while the process runs" in caplog.text
