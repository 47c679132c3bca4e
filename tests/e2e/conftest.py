"""Fixtures for the panel's tests: a real `parcelhook serve`, a receiver, and Chromium.

Everything browser-related shares one event loop per module, so the receiver, the
browser and the API client all run side by side without threads.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from support.browsing import AXE, DESKTOP
from support.hostile_receiver import HostileReceiver

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@dataclass(frozen=True)
class Served:
    """A running `parcelhook serve` and what it printed."""

    base_url: str
    database_url: str
    env: dict[str, str]
    email: str
    password: str
    integration_id: int
    public_key: str
    secret_key: str
    log: Path

    def api(self) -> httpx.AsyncClient:
        """An API client acting as the demo account's API integration."""
        return httpx.AsyncClient(
            base_url=self.base_url, auth=(self.public_key, self.secret_key), timeout=10
        )

    def cli(self, *args: str) -> str:
        """Run another `parcelhook` command against the same database; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "parcelhook.cli", *args, "--database-url", self.database_url],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _printed(out: Path, pattern: str) -> str:
    found = re.search(pattern, out.read_text(), re.MULTILINE)
    assert found, f"{pattern!r} not in the output of parcelhook serve"
    return found.group(1)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Served]:
    """`parcelhook serve` on a free loopback port; failures are final at once (--retries 0)
    unless the test module sets `SERVE_RETRIES`, and a send times out after 5 s unless it
    sets `SERVE_TIMEOUT`."""
    retries = str(getattr(request.module, "SERVE_RETRIES", 0))
    # the send timeout in seconds; a module that waits for timeouts may make it shorter
    timeout = str(getattr(request.module, "SERVE_TIMEOUT", 5))
    tmp = tmp_path_factory.mktemp("serve")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
    env |= {"PARCELHOOK_KEY_FILE": str(tmp / "parcelhook.key"), "PYTHONUNBUFFERED": "1"}
    database_url = f"sqlite:///{tmp / 'panel.db'}"
    port = _free_port()
    out, err = tmp / "stdout.txt", tmp / "stderr.txt"
    command = [
        *(sys.executable, "-m", "parcelhook.cli", "serve", "--demo", "--port", str(port)),
        *("--database-url", database_url, "--allow-private-targets", "--allow-http-targets"),
        *("--retries", retries, "--timeout", timeout, "--log-level", "warning"),
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"parcelhook serve exited: {err.read_text()}"
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"parcelhook serve did not start: {err.read_text()}"
            time.sleep(0.05)
        yield Served(
            base_url=base_url,
            database_url=database_url,
            env=env,
            email=_printed(out, r"e-mail:\s+(\S+)"),
            password=_printed(out, r"password:\s+(\S+)"),
            integration_id=int(_printed(out, r"of its integration (\d+)")),
            public_key=_printed(out, r"public_key:\s+(\S+)"),
            secret_key=_printed(out, r"secret_key:\s+(\S+)"),
            log=err,
        )
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def receiver() -> AsyncIterator[HostileReceiver]:
    async with HostileReceiver() as rx:
        yield rx


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's Chromium; its absence skips browser tests, except under CI where it fails."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing under CI: install the chromium package")
        pytest.skip(f"{CHROMIUM} is not installed")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: Path) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A fresh browser context per test at 1280×800; its last screen goes to test-artifacts/."""
    context = await browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(10_000)
    tab = await context.new_page()
    yield tab
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    await context.close()


@pytest.fixture(scope="session")
def axe_source() -> str:
    """axe-core's script (`make browser-deps` installs it; `make test` does so first)."""
    if not AXE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{AXE} is missing under CI: run `make browser-deps`")
        pytest.skip(f"{AXE} is missing: run `make browser-deps`")
    return AXE.read_text()


@pytest_asyncio.fixture(loop_scope="module")
async def open_page(browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Open pages in fresh contexts: `await open_page(PHONE, js=False, locale="it-IT")`."""
    contexts: list[Any] = []

    async def opened(
        viewport: dict[str, int] = DESKTOP, *, js: bool = True, locale: str = "en-US"
    ) -> Any:
        context = await browser.new_context(
            viewport=viewport, java_script_enabled=js, locale=locale
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return await context.new_page()

    yield opened
    ARTIFACTS.mkdir(exist_ok=True)
    for n, context in enumerate(contexts):
        for tab in context.pages:
            name = re.sub(r"[^\w.-]+", "_", request.node.name)
            await tab.screenshot(path=str(ARTIFACTS / f"{name}-{n}.png"), full_page=True)
        await context.close()
