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
import logging
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from parcelhook.domain.retry import RetryPolicy
from parcelhook.store import engine as store_engine
from parcelhook.store import sqlite as store_sqlite
from support.harness import (
    Account,
    Harness,
    HarnessFactory,
    drop_pg_database,
    eventually,
    make_pg_database,
    pg_reachable,
    terminate_backends,
)
from support.hostile_receiver import HostileReceiver, Mode
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


async def test_a_connection_ended_while_idle_in_a_pool_is_no_500(
    pg_database: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's "terminating connection" reaches the pooled connections, but their end of
    stream does not yet (the proxy withholds it, as a busy event loop or network delays it):
    asyncpg then refuses any statement on them ("another operation is in progress"). The key
    lookup goes on on a fresh connection; any other request may be a 503, never a 500."""
    name = pg_database.rsplit("/", 1)[1]
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    factory = HarnessFactory(f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}", tmp_path)
    try:
        h = await factory(dispatcher=False)
        acct = await h.account()
        public = acct.api.public_key
        body = {"parcel": {**PARCEL, "integration_id": acct.api.id}}
        assert (await acct.call("POST", "/api/v2/parcels", body)).status_code == 200
        assert await h.store.api_key(public) is not None

        proxy.hold_ends()
        assert await terminate_backends(name) > 0
        await asyncio.sleep(0.5)  # the server's last words are read, its end is withheld
        assert await h.store.api_key(public) is not None
        answers = [await acct.call("POST", "/api/v2/parcels", body) for _ in range(3)]
        assert {r.status_code for r in answers} <= {200, 503}, [r.text for r in answers]
        assert all(r.headers.get("retry-after") for r in answers if r.status_code == 503)
        proxy.pass_ends()

        async def created() -> bool:
            return (await acct.call("POST", "/api/v2/parcels", body)).status_code == 200

        await eventually(created, within=10, what="a parcel created again")
    finally:
        proxy.pass_ends()
        await factory.close()
        await proxy.close()
    assert "unhandled" not in caplog.text


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


# the most pages parcelhook's connections may give the database file (4 KiB each): SQLite's
# max_page_count makes a size-limited file, a full disk without mounting one
PAGE_LIMIT = 4_000


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def fill(db: Path, pages: int) -> None:
    """Grow the file (from a connection of the test's, without the limit) to `pages`."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS ballast (b BLOB)")
        # to exactly `pages` (a connection opened later cannot be limited below the file's
        # size), a row (a page) at a time at the end, holding the write lock throughout
        conn.execute("BEGIN IMMEDIATE")
        while (count := conn.execute("PRAGMA page_count").fetchone()[0]) < pages:
            rows = max(1, (pages - count) // 2)
            conn.executemany("INSERT INTO ballast VALUES (zeroblob(3500))", [()] * rows)
        conn.execute("COMMIT")
        assert count == pages, count
    finally:
        conn.close()


def free(db: Path) -> None:
    """Free the room the ballast took, as an operator freeing disk space does."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    try:
        conn.execute("DELETE FROM ballast")
    finally:
        conn.close()


def parcels_in(db: Path) -> tuple[set[int], set[int]]:
    """The parcels committed, and those with a status-change delivery queued."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        parcels = {r[0] for r in conn.execute("SELECT id FROM parcels")}
        queued = {
            r[0]
            for r in conn.execute(
                "SELECT parcel_id FROM deliveries WHERE action = 'parcel_status_changed'"
            )
        }
    finally:
        conn.close()
    return parcels, queued


def pending_in(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return int(
            conn.execute("SELECT count(*) FROM deliveries WHERE status != 'delivered'").fetchone()[
                0
            ]
        )
    finally:
        conn.close()


async def test_a_full_sqlite_disk_loses_nothing_and_half_commits_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    limit = f"PRAGMA max_page_count={PAGE_LIMIT}"
    monkeypatch.setattr(store_engine, "SQLITE_PRAGMAS", (*store_engine.SQLITE_PRAGMAS, limit))
    monkeypatch.setattr(store_sqlite, "PRAGMAS", (*store_sqlite.PRAGMAS, limit))
    db = tmp_path / "full.db"
    factory = HarnessFactory(f"sqlite:///{db}", tmp_path)
    server_errors = Recorded()
    try:
        h = await factory(timeout=5.0, poll_seconds=0.5, retry=RetryPolicy((0.3,) * 500, 0))
        # after the server's start, which configures this logger (it does not propagate)
        logging.getLogger("uvicorn.error").addHandler(server_errors)
        d = h.runtime.dispatcher
        assert d is not None
        async with HostileReceiver() as rx:
            acct = await h.account()
            load = Load(acct, await acct.shop(rx.url("/hook")))
            load.start()
            await eventually(lambda: len(load.committed) >= 30, within=20, what="some load")
            # failures with a long answer: retried every 0.3 s, each attempt a row to write
            rx.mode = Mode.status(500, body=b"x" * 1000)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(fill, db, PAGE_LIMIT)
            await eventually(lambda: load.answers[503] >= 20, within=20, what="503s")
            during = len(load.committed)
            await eventually(
                lambda: d.writer_health.failures > 0, within=20, what="a failed outcome write"
            )
            # the disk stays full: nothing more commits (a request under way may still)
            assert len(load.committed) - during <= CLIENTS, load.answers
            await asyncio.to_thread(free, db)
            rx.mode = Mode.ok()
            await eventually(lambda: len(load.committed) > during + 20, within=20)
            await load.stop()
            await eventually(
                lambda: pending_in(db) == 0, within=30, what="every delivery to be delivered"
            )
            assert load.committed <= delivered_parcels(rx)
            await eventually(healthy(h), within=10, what="/healthz to say ok")
    finally:
        await factory.close()
        logging.getLogger("uvicorn.error").removeHandler(server_errors)
    assert load.answers[500] == 0, load.answers
    assert load.no_retry_after == 0
    assert set(load.answers) <= {200, 503}, load.answers
    parcels, queued = parcels_in(db)
    # what answered 200 is there with its event, and what answered 503 left nothing behind
    assert parcels == load.committed
    assert queued == parcels
    # an outage is logged in one line per request, not as a server error with a traceback,
    # and says why (not a failed ROLLBACK of what SQLite had rolled back itself)
    assert not [r.getMessage() for r in server_errors.records], server_errors.records[:1]
    assert "disk is full" in caplog.text
    assert "cannot rollback" not in caplog.text
