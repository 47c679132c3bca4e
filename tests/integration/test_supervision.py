"""Loops that supervise themselves: capped backoff, health per loop, and a loop that ends
while the process runs is fatal (the command line then exits non-zero)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

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


# the command line with one more supervised loop, which ends a second after the start
ENDING_LOOP = """
import asyncio, sys
from parcelhook import runtime
from parcelhook.cli import main

original = runtime.Runtime.start_dispatcher

async def start_dispatcher(self):
    dispatcher = await original(self)

    async def ends():
        await asyncio.sleep(1.0)

    self.supervise("doomed", ends())
    return dispatcher

runtime.Runtime.start_dispatcher = start_dispatcher
sys.argv[0] = "parcelhook"
main()
"""


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_a_process_whose_loop_ends_exits_non_zero(tmp_path: Path, command: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
    env |= {"PARCELHOOK_MASTER_KEY": Fernet.generate_key().decode(), "PYTHONUNBUFFERED": "1"}
    args = [*command, "--database-url", f"sqlite:///{tmp_path / 'p.db'}"]
    done = subprocess.run(
        [sys.executable, "-c", ENDING_LOOP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert "the doomed loop ended; exiting so that a supervisor restarts" in done.stderr
    assert "doomed ended while the process runs" in done.stderr  # logged at CRITICAL
