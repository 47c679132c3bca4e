"""A parcelhook running in the test's event loop, with its HTTP API on loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiohttp.abc import AbstractResolver
from cryptography.fernet import Fernet

from parcelhook.app import create_app
from parcelhook.config import Settings
from parcelhook.delivery.transport import TransportFactory, WireTransport
from parcelhook.domain.clock import Clock
from parcelhook.domain.integrations import Integration
from parcelhook.domain.retry import RetryPolicy
from parcelhook.http_protocol import HttpProtocol
from parcelhook.runtime import Runtime

PG_ADMIN = os.environ.get("PARCELHOOK_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
MASTER_KEY = Fernet.generate_key().decode()


def pg_reachable(required_reason: str) -> None:
    """Skip when PostgreSQL is not there, except under CI, where that is a failure."""
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is unreachable under CI ({exc}); {required_reason}")
        pytest.skip(f"PostgreSQL is unreachable: {exc}")


def _psql(sql: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c", sql],
        check=True,
        capture_output=True,
        timeout=30,
    )


def make_pg_database() -> str:
    name = f"ph_test_{uuid.uuid4().hex[:12]}"
    _psql(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    _psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


async def terminate_backends(database: str) -> int:
    """End every connection to `database` (and only to it), as a failover does."""
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        ended = await admin.fetchval(
            # each backend waited for until it has exited (up to 5 s), so that what the test
            # does next meets connections the server has already ended
            "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return int(ended or 0)


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    within: float = 10.0,
    what: str = "condition",
) -> None:
    """Poll `check` until true (bounded): asserting on what a user would see, not on sleeps."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Account:
    account_id: int
    api: Integration
    client: httpx.AsyncClient

    async def call(self, method: str, path: str, json: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.request(method, path, json=json, **kw)

    async def shop(
        self, url: str, *, system: str = "shopify", name: str = "My shop", **settings: Any
    ) -> int:
        """A shop integration with webhook feedback on, pointed at `url`; its id."""
        integration = {
            "shop_name": name,
            "system": system,
            "webhook_active": True,
            "webhook_url": url,
            **settings,
        }
        r = await self.call("POST", "/api/v2/integrations", integration)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])


class Harness:
    """One running parcelhook: runtime + HTTP API served on 127.0.0.1."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.service = runtime.service
        self.store = runtime.store
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._clients: list[httpx.AsyncClient] = []
        self._accounts = 0

    async def start(self) -> None:
        await self.runtime.start()
        # an explicit IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.runtime, manage_runtime=False),
            http=HttpProtocol,  # as `parcelhook serve` answers
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        self.base_url = f"http://127.0.0.1:{port}"
        while not self._server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)

    async def account(self, email: str | None = None) -> Account:
        self._accounts += 1
        created = await self.service.create_account(
            email or f"merchant{self._accounts}-{uuid.uuid4().hex[:6]}@example.com", "password123"
        )
        api = created.integration
        client = httpx.AsyncClient(
            base_url=self.base_url, auth=(api.public_key, api.secret_key), timeout=30
        )
        self._clients.append(client)
        return Account(created.account_id, api, client)

    async def close(self) -> None:
        for client in self._clients:
            await client.aclose()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        await self.runtime.stop()


class HarnessFactory:
    def __init__(self, database_url: str, tmp_path: Path) -> None:
        self.database_url = database_url
        self.tmp_path = tmp_path
        self.harnesses: list[Harness] = []

    async def __call__(
        self,
        *,
        clock: Clock | None = None,
        dispatcher: bool = True,
        retry: RetryPolicy | None = None,
        timeout: float = 2.0,  # noqa: ASYNC109 (the delivery timeout setting)
        transport: TransportFactory = WireTransport,
        resolver: AbstractResolver | None = None,
        **settings: Any,
    ) -> Harness:
        defaults: dict[str, Any] = {"allow_private_targets": True, "allow_http_targets": True}
        s = Settings(
            database_url=self.database_url,
            master_key=MASTER_KEY,
            key_file=self.tmp_path / "unused.key",
            timeout=timeout,
            retry=retry or RetryPolicy(),
            dispatcher=dispatcher,
            **{**defaults, **settings},
        )
        h = Harness(Runtime(s, clock, transport=transport, resolver=resolver))
        self.harnesses.append(h)
        await h.start()
        return h

    async def close(self) -> None:
        for h in reversed(self.harnesses):
            await h.close()
