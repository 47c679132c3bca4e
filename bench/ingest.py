"""The ingest side: `parcelhook serve` under API load, against the bare FastAPI app.

`python -m bench.ingest [--engine sqlite|postgres] [-n N] [--profile FILE]` runs one
parcel-creation and one status-change phase against a fresh database and prints the rate
and the service's CPU per request; with `--profile` the server runs under
`py-spy record --native` (summarise with `python -m bench.profile FILE`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from bench import fixtures
from bench.procs import (
    PARCELHOOK,
    ROOT,
    CpuMeter,
    Proc,
    Receiver,
    Worker,
    pids_named,
    proc_cpu_seconds,
)
from parcelhook.domain.integrations import parse_changes

CLIENTS = 32
# a realistic walk of statuses; consecutive ones differ, so every call is a real change
STATUSES = (1001, 1, 3, 5, 7, 91, 92, 11, 1000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """`pid` and all its children, grandchildren…"""
    out = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                out += descendants(int(child))
    return out


class Server:
    """`parcelhook serve` (or the bare app) in a subprocess, optionally under py-spy."""

    def __init__(
        self,
        database_url: str | None,
        *,
        dispatcher: bool = False,
        concurrency: int = 32,
        workers: int = 1,
        profile: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        if database_url is None:
            cmd = [sys.executable, "-m", "bench.bare_api", "--port", str(self.port)]
        else:
            cmd = [
                str(PARCELHOOK),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database-url",
                database_url,
                "--no-demo",
                "--allow-private-targets",
                "--allow-http-targets",
                "--endpoint-concurrency",
                str(concurrency),
                "--log-level",
                "warning",
            ]
            if not dispatcher:
                cmd.append("--no-dispatcher")
            if workers != 1:
                cmd += ["--workers", str(workers)]
        if profile is not None:
            py_spy = Path(sys.executable).parent / "py-spy"
            spy = [str(py_spy), "record", "--native", "-r", "100", "-f", "raw", "-o", str(profile)]
            cmd = [*spy, "--subprocesses", "--", *cmd]
        self.profiled = profile is not None
        env = {**os.environ, "PARCELHOOK_MASTER_KEY": fixtures.MASTER_KEY}
        popen = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )
        self.proc = Proc(popen, "serve")

    async def ready(self, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as s:
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with s.get(self.base + "/healthz") as r:
                        if r.status == 200:
                            return
                if self.proc.popen.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.05)

    def pids(self) -> list[int]:
        return descendants(self.proc.pid)

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(p) for p in self.pids())

    def stop(self) -> None:
        if self.profiled:
            # py-spy writes its profile when its target exits
            for pid in self.pids()[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)
            try:
                self.proc.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            Proc.live.discard(self.proc)
            return
        self.proc.stop(grace=15.0)


@dataclass
class Tenant:
    """An account's API credentials and a shop integration whose webhooks go to `hook_url`."""

    auth: str
    shop_id: int
    account_id: int
    parcel_ids: list[int] = field(default_factory=list)


async def tenant(database_url: str, hook_url: str) -> Tenant:
    """An account and a shop integration, made before the server starts (migrates too)."""
    async with fixtures.runtime(database_url) as rt:
        created = await rt.service.create_account(
            f"ingest-{uuid.uuid4().hex[:8]}@example.com", "bench-password"
        )
        shop = await rt.service.create_integration(
            created.account_id,
            parse_changes(
                {
                    "shop_name": "Ingest shop",
                    "system": "shopify",
                    "webhook_active": True,
                    "webhook_url": hook_url,
                },
                creating=True,
            ),
        )
    api = created.integration
    token = base64.b64encode(f"{api.public_key}:{api.secret_key}".encode()).decode()
    return Tenant(f"Basic {token}", shop.id, created.account_id)


def parcel_body(shop_id: int, k: int) -> bytes:
    """A realistic `POST /api/v2/parcels` body (Sendcloud's field names)."""
    return json.dumps(
        {
            "parcel": {
                "name": "Jan Jansen",
                "company_name": "Jansen Bakkerij",
                "address": "Stadhuisplein",
                "house_number": "10",
                "city": "Eindhoven",
                "postal_code": "5611 EM",
                "country": "NL",
                "telephone": "+31612345678",
                "email": "jan@example.com",
                "weight": "2.500",
                "order_number": f"ORDER-{k}",
                "shipment": {"id": 1343},
                "integration_id": shop_id,
            }
        }
    ).encode()


@dataclass
class Load:
    requests: int
    seconds: float
    # CPU µs per request of the server's processes while the load ran
    cpu_us: float
    started: float = 0.0  # time.time() of the first call
    # and of PostgreSQL's processes (the server is shared: any other client's too) and of
    # the load generator (this process), which share the two cores with the server
    postgres_us: float = 0.0
    client_us: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


async def hammer(
    server: Server,
    calls: Iterable[tuple[str, bytes]],
    auth: str | None,
    clients: int = CLIENTS,
    answers: list[bytes] | None = None,
) -> Load:
    """POST every (path, body) with `clients` keep-alive connections; all must be 2xx."""
    headers = {"content-type": "application/json"}
    if auth:
        headers["authorization"] = auth
    todo: Iterator[tuple[str, bytes]] = iter(calls)
    count = 0
    bad: list[str] = []
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def loop() -> None:
            nonlocal count
            for path, body in todo:
                async with session.post(server.base + path, data=body) as r:
                    text = await r.read()
                    if r.status >= 300 and len(bad) < 3:
                        bad.append(f"{r.status} {text[:200]!r}")
                    if answers is not None:
                        answers.append(text)
                    count += 1

        pg0 = {p: proc_cpu_seconds(p) for p in pids_named("postgres")}
        cpu0 = server.cpu_seconds()
        client0 = time.process_time()
        wall0, started = time.perf_counter(), time.time()
        await asyncio.gather(*(loop() for _ in range(clients)))
        seconds = time.perf_counter() - wall0
        cpu = server.cpu_seconds() - cpu0
        # a backend that ended meanwhile (its client closed) reads 0: left out
        pg = sum(max(proc_cpu_seconds(p) - used, 0.0) for p, used in pg0.items())
        client = time.process_time() - client0
    if bad:
        raise RuntimeError(f"the server refused calls: {bad}")
    per = 1e6 / max(count, 1)
    return Load(count, seconds, cpu * per, started, pg * per, client * per)


async def create_parcels(server: Server, t: Tenant, n: int) -> Load:
    answers: list[bytes] = []
    load = await hammer(
        server,
        (("/api/v2/parcels", parcel_body(t.shop_id, k)) for k in range(n)),
        t.auth,
        answers=answers,
    )
    t.parcel_ids = [json.loads(a)["parcel"]["id"] for a in answers]
    return load


def status_calls(t: Tenant, n: int, first_round: int = 0) -> Iterator[tuple[str, bytes]]:
    """`n` status changes, round-robin over the tenant's parcels, each a real change.

    Round r gives every parcel STATUSES[r]; `carrier_status_change_timestamp` numbers the
    calls, so a webhook can be matched to the call that caused it.
    """
    ids = t.parcel_ids
    for k in range(n):
        status = STATUSES[(first_round + k // len(ids)) % len(STATUSES)]
        body = json.dumps({"status_id": status, "carrier_status_change_timestamp": k})
        yield f"/api/v2/parcels/{ids[k % len(ids)]}/status", body.encode()


async def bare_status(n: int, clients: int = CLIENTS) -> Load:
    """The bare FastAPI app under the same status-change calls."""
    server = Server(None)
    try:
        await server.ready()
        fake = Tenant("", 0, 0, list(range(1, 1001)))
        # warm-up, then the measured run
        await hammer(server, status_calls(fake, 500), None, clients)
        return await hammer(server, status_calls(fake, n), None, clients)
    finally:
        server.stop()


async def carrier_stamps(database_url: str, since_ms: int) -> dict[str, int]:
    """The event id of every status change since `since_ms`, by its carrier timestamp."""
    sql = (
        "SELECT id, body FROM events WHERE action = 'parcel_status_changed' AND timestamp_ms >= {}"
    )
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        with contextlib.closing(sqlite3.connect(path)) as db:
            rows = db.execute(sql.format("?"), (since_ms,)).fetchall()
    else:
        conn = await asyncpg.connect(database_url)
        try:
            rows = [tuple(r) for r in await conn.fetch(sql.format("$1"), since_ms)]
        finally:
            await conn.close()
    out = {}
    for event_id, body in rows:
        stamp = json.loads(body).get("carrier_status_change_timestamp")
        if isinstance(stamp, int):
            out[event_id] = stamp
    return out


# -- the benchmark's ingest scenarios (python -m bench, g and h) ---------------------------


async def ingest_rate(
    engine: str, tmp: Path, parcels: int, n: int, workers: int = 1
) -> tuple[Load, Load]:
    """`serve --no-dispatcher` on a fresh database: (parcel creations, status changes)."""
    async with fixtures.database(engine, tmp) as url:
        t = await tenant(url, "http://127.0.0.1:9/hook")
        server = Server(url, workers=workers)
        try:
            await server.ready()
            created = await create_parcels(server, t, parcels)
            # one round to warm up (every process compiles and caches), then the measured one
            warm = min(n, len(t.parcel_ids))
            await hammer(server, status_calls(t, warm), t.auth)
            rounds = -(-warm // len(t.parcel_ids))
            changed = await hammer(server, status_calls(t, n, first_round=rounds), t.auth)
            return created, changed
        finally:
            server.stop()


@dataclass
class EndToEnd:
    rate: float  # webhooks received per second, first call to last receipt
    cpu_us: dict[str, float]
    latencies_ms: list[float]
    lost: int
    bulk_rate: float | None = None

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def end_to_end(
    engine: str,
    tmp: Path,
    receiver: Receiver,
    parcels: int,
    n: int,
    latency_s: float,
    concurrency: int,
    bulk: bool = False,
) -> EndToEnd:
    """Status changes through the API, received as webhooks: throughput, then latency at
    LATENCY_RATE calls per second (call start → receipt), then (with `bulk`) the same
    changes through `/tracking-updates` in batches of BULK.

    SQLite: one `serve` with its dispatcher; PostgreSQL: `serve --no-dispatcher` and one
    `parcelhook worker`, as the issue's first measurements were made.
    """
    async with fixtures.database(engine, tmp) as url:
        t = await tenant(url, receiver.url())
        in_process = engine == "sqlite"
        server = Server(url, dispatcher=in_process, concurrency=concurrency)
        worker = None
        try:
            await server.ready()
            if not in_process:
                worker = Worker(url, fixtures.MASTER_KEY, concurrency=concurrency)
            await create_parcels(server, t, parcels)
            await receiver.wait_for(parcels, 120.0, "webhooks of the new parcels")
            await receiver.reset()
            roles = {"serve": server.pids(), "receiver": [receiver.proc.pid]}
            if worker is not None:
                roles["worker"] = [worker.pid]
            meter = CpuMeter(roles)
            meter.start()
            started = time.time()
            await hammer(server, status_calls(t, n), t.auth)
            got = await receiver.wait_for(n, 120.0, "end-to-end webhooks")
            cpu = meter.per_delivery_us(got)
            last = max((await receiver.receipts()).values(), default=started)
            rate = got / (last - started) if last > started else 0.0
            rounds = -(-n // len(t.parcel_ids))
            await receiver.reset()
            since_ms = int(time.time() * 1000) - 1
            calls = await paced(server, t, LATENCY_RATE, latency_s, rounds)
            stamps = await carrier_stamps(url, since_ms)
            # each of these events by its id: a count of arrivals would also count a late
            # retry of an earlier phase's delivery and stop waiting too soon
            received = await receiver.wait_for_ids(set(stamps), 30.0, "latency run")
            latencies = [
                (received[wid] - calls[k]) * 1000
                for wid, k in stamps.items()
                if wid in received and k in calls
            ]
            result = EndToEnd(rate, cpu, latencies, len(calls) - len(latencies))
            if bulk:
                rounds += -(-len(calls) // len(t.parcel_ids))
                await receiver.reset()
                started = time.time()
                await hammer(server, bulk_calls(t, n, rounds), t.auth, clients=2)
                got = await receiver.wait_for(n, 120.0, "bulk end-to-end webhooks")
                last = max((await receiver.receipts()).values(), default=started)
                result.bulk_rate = got / (last - started) if last > started else 0.0
            return result
        finally:
            if worker is not None:
                worker.stop()
            server.stop()


BULK = 500
LATENCY_RATE = 200.0


def bulk_calls(t: Tenant, n: int, first_round: int) -> Iterator[tuple[str, bytes]]:
    """The same changes as `status_calls`, BULK to a `POST /api/v2/tracking-updates`."""
    items = []
    for path, body in status_calls(t, n, first_round):
        item = json.loads(body)
        item["parcel_id"] = int(path.split("/")[4])
        items.append(item)
        if len(items) == BULK:
            yield "/api/v2/tracking-updates", json.dumps({"tracking_updates": items}).encode()
            items = []
    if items:
        yield "/api/v2/tracking-updates", json.dumps({"tracking_updates": items}).encode()


async def paced(
    server: Server, t: Tenant, rate: float, seconds: float, first_round: int
) -> dict[int, float]:
    """Status changes at a fixed schedule of `rate` per second; call k's start time by k.

    Calls are not awaited one by one, so a slow answer does not lower the offered load.
    """
    n = round(rate * seconds)
    starts: dict[int, float] = {}
    calls = list(status_calls(t, n, first_round))
    connector = aiohttp.TCPConnector(limit=64)
    headers = {"content-type": "application/json", "authorization": t.auth}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(k: int) -> None:
            path, body = calls[k]
            starts[k] = time.time()
            async with session.post(server.base + path, data=body) as r:
                await r.read()
                if r.status >= 300:
                    starts.pop(k, None)

        tasks = []
        begin = time.monotonic()
        for k in range(n):
            delay = begin + k / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(call(k)))
        await asyncio.gather(*tasks)
    return starts


async def _main(args: argparse.Namespace) -> None:
    scratch = tempfile.TemporaryDirectory(prefix="parcelhook-ingest-")
    tmp = Path(scratch.name)
    try:
        async with fixtures.database(args.engine, tmp) as url:
            t = await tenant(url, "http://127.0.0.1:9/hook")
            server = Server(url, profile=args.profile)
            try:
                await server.ready()
                created = await create_parcels(server, t, args.parcels)
                print(
                    f"POST /api/v2/parcels: {created.rate:,.0f}/s, "
                    f"{created.cpu_us:,.0f} µs CPU per request"
                )
                changed = await hammer(server, status_calls(t, args.n), t.auth)
                print(
                    f"POST /api/v2/parcels/{{id}}/status: {changed.rate:,.0f}/s, "
                    f"{changed.cpu_us:,.0f} µs CPU per request"
                )
            finally:
                server.stop()
        if args.bare:
            bare = await bare_status(args.n)
            print(f"bare FastAPI: {bare.rate:,.0f}/s, {bare.cpu_us:,.0f} µs CPU per request")
    finally:
        Proc.stop_all()
        scratch.cleanup()  # the SQLite database and its WAL, whatever happened


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("-n", type=int, default=5000, help="status changes")
    parser.add_argument("--parcels", type=int, default=1000)
    parser.add_argument("--bare", action="store_true", help="the bare FastAPI app too")
    parser.add_argument("--profile", type=Path, help="py-spy raw profile of the server")
    args = parser.parse_args()
    import uvloop

    uvloop.run(_main(args))


if __name__ == "__main__":
    main()
