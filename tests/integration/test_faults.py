"""The database going away under load, on real PostgreSQL and SQLite: nothing committed is
lost, nobody restarts anything, and the API says 503 with Retry-After meanwhile, never 500.

PostgreSQL: every backend of the test's own database is terminated several times
(`pg_terminate_backend`, as a failover or a restart does), then the network path is cut
and restored through a TCP proxy written here (the server itself is never touched).
SQLite: another process holds the database's write lock longer than the busy timeout.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import httpx
import pytest

from support.harness import (
    PG_ADMIN,
    Account,
    Harness,
    HarnessFactory,
    drop_pg_database,
    eventually,
    make_pg_database,
    pg_reachable,
)
from support.hostile_receiver import HostileReceiver
from support.tcp_proxy import TcpProxy

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
CLIENTS = 4


class Load:
    """API clients creating parcels until stopped; what each answer was, and which parcels
    were committed (answered 200)."""

    def __init__(self, acct: Account, shop: int) -> None:
        self.acct = acct
        self.shop = shop
        self.answers: Counter[int] = Counter()
        self.no_retry_after = 0
        self.committed: set[int] = set()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(CLIENTS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _client(self) -> None:
        body = {"parcel": {**PARCEL, "integration_id": self.shop}}
        while not self._stop.is_set():
            try:
                r = await self.acct.call("POST", "/api/v2/parcels", body)
            except httpx.HTTPError:
                self.answers[0] += 1  # no answer at all
                continue
            self.answers[r.status_code] += 1
            if r.status_code == 200:
                self.committed.add(int(r.json()["parcel"]["id"]))
            elif r.status_code == 503 and not r.headers.get("retry-after"):
                self.no_retry_after += 1
            await asyncio.sleep(0.01)


def delivered_parcels(rx: HostileReceiver) -> set[int]:
    found = set()
    for request in rx.requests:
        body = json.loads(request.body)
        if body.get("action") == "parcel_status_changed":
            found.add(int(body["parcel"]["id"]))
    return found


async def healthz(h: Harness) -> int:
    async with httpx.AsyncClient(base_url=h.base_url, timeout=10) as client:
        return (await client.get("/healthz")).status_code


def healthy(h: Harness) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await healthz(h) == 200

    return check


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    pg_reachable(required_reason="the fault suite terminates PostgreSQL backends")
    url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


async def terminate_backends(database: str) -> int:
    """End every connection to `database` (and only to it), as a failover does."""
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        ended = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return int(ended or 0)


async def test_postgresql_going_away_under_load_loses_nothing(
    pg_database: str, tmp_path: Path
) -> None:
    name = pg_database.rsplit("/", 1)[1]
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    factory = HarnessFactory(f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}", tmp_path)
    try:
        h = await factory(timeout=2.0, poll_seconds=0.5)
        async with HostileReceiver() as rx:
            acct = await h.account()
            load = Load(acct, await acct.shop(rx.url("/hook")))
            load.start()
            await eventually(lambda: len(load.committed) >= 20, within=20, what="some load")

            for _ in range(3):
                assert await terminate_backends(name) > 0
                await asyncio.sleep(1.0)

            await proxy.cut()
            await eventually(lambda: load.answers[503] > 0, within=10, what="503s")
            assert await healthz(h) == 503
            await asyncio.sleep(2.0)
            await proxy.restore()

            await eventually(lambda: len(load.committed) >= 20 + 40, within=30, what="recovery")
            await load.stop()
            await eventually(
                lambda: load.committed <= delivered_parcels(rx),
                within=15,
                what="every committed event to be delivered",
            )
            await eventually(healthy(h), within=10, what="/healthz to say ok")
    finally:
        await factory.close()
        await proxy.close()
    assert load.answers[500] == 0, load.answers
    assert load.no_retry_after == 0
    assert set(load.answers) <= {200, 503}, load.answers


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


async def test_a_locked_sqlite_database_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "faults.db"
    factory = HarnessFactory(f"sqlite:///{db}", tmp_path)
    try:
        h = await factory(timeout=2.0, poll_seconds=0.5)
        async with HostileReceiver() as rx:
            acct = await h.account()
            load = Load(acct, await acct.shop(rx.url("/hook")))
            load.start()
            await eventually(lambda: len(load.committed) >= 10, within=20, what="some load")
            # twice the time a write waits for the lock (10 s; the dispatcher's turn can come
            # first): writers give up and say so
            holder = await asyncio.create_subprocess_exec(
                sys.executable, "-c", HOLD_LOCK, str(db), "22", stdout=asyncio.subprocess.PIPE
            )
            try:
                assert holder.stdout is not None
                assert (await holder.stdout.readline()).strip() == b"locked"
                await eventually(lambda: load.answers[503] > 0, within=25, what="503s")
                await asyncio.wait_for(holder.wait(), 30)
            finally:
                if holder.returncode is None:
                    holder.kill()
                    await holder.wait()
            before = len(load.committed)
            await eventually(lambda: len(load.committed) > before + 10, within=20)
            await load.stop()
            await eventually(
                lambda: load.committed <= delivered_parcels(rx),
                within=15,
                what="every committed event to be delivered",
            )
            await eventually(healthy(h), within=10, what="/healthz to say ok")
    finally:
        await factory.close()
    assert load.answers[500] == 0, load.answers
    assert load.no_retry_after == 0
    assert set(load.answers) <= {200, 503}, load.answers
    sqlite3.connect(db).close()
