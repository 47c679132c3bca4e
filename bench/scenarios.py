"""The benchmark's scenarios; each returns plain numbers (rates per second, ms, MB)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg

from bench import fixtures
from bench.fixtures import Events
from bench.procs import CpuMeter, Receiver, Worker
from parcelhook.delivery.headers import USER_AGENT
from parcelhook.domain import signing
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import Integration
from parcelhook.runtime import Runtime

# one `time.time()` clock on one host: commit → receipt latency needs no clock sync
LATENCY_RATE = 200.0


@dataclass
class Throughput:
    delivered: int
    seconds: float
    # µs of CPU per delivery, by process role, while the deliveries arrived
    cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.delivered - 1) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Latency:
    samples_ms: list[float]
    offered: int
    lost: int

    def pct(self, q: float) -> float:
        if not self.samples_ms:
            return float("nan")
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Bare:
    best: Throughput
    concurrency: int
    by_concurrency: dict[int, float] = field(default_factory=dict)


async def throughput_of(
    receiver: Receiver, ids: set[str], within: float, what: str, meter: CpuMeter | None = None
) -> Throughput:
    """Wait for every id to arrive; the rate from first to last receipt of them."""
    at_start = 0
    if meter is not None:
        # measure CPU from the first delivery on, not the worker's start-up
        at_start = await receiver.wait_for(1, within, what)
        meter.start()
    count = await receiver.wait_for(len(ids), within, what)
    cpu = meter.per_delivery_us(count - at_start) if meter is not None else {}
    got = await receiver.receipts()
    times = sorted(t for wid, t in got.items() if wid in ids)
    if len(times) < 2:
        return Throughput(len(times), 0.0)
    return Throughput(len(times), times[-1] - times[0], cpu)


async def first_slice_rate(
    receiver: Receiver, n: int, within: float, what: str, meter: CpuMeter
) -> Throughput:
    """The rate of the first `n` arrivals, while more keep coming."""
    at_start = await receiver.wait_for(1, within, what)
    meter.start()
    count = await receiver.wait_for(n, within, what)
    cpu = meter.per_delivery_us(count - at_start)
    got = await receiver.receipts()
    times = sorted(got.values())[:n]
    if len(times) < 2:
        return Throughput(len(times), 0.0)
    return Throughput(len(times), times[-1] - times[0], cpu)


async def latency_of(
    rt: Runtime, receiver: Receiver, events: Events, targets: list[Integration], seconds: float
) -> Latency:
    """Commit → receipt at a fixed offered load of LATENCY_RATE events per second."""
    await receiver.reset()
    commits = await fixtures.enqueue_paced(rt, events, targets, LATENCY_RATE, seconds)
    await receiver.wait_for(len(commits), 15.0, "latency run")
    got = await receiver.receipts()
    samples = [(got[wid] - t) * 1000 for wid, t in commits.items() if wid in got]
    return Latency(samples, len(commits), len(commits) - len(samples))


# -- (a) the bare limit ------------------------------------------------------------------


async def bare(receiver: Receiver, n: int, concurrencies: tuple[int, ...]) -> Bare:
    """A plain keep-alive aiohttp client posting the same signed bodies; the best concurrency."""
    target = Integration(
        id=1,
        account_id=1,
        shop_name="bare",
        shop_url=None,
        system="shopify",
        webhook_active=True,
        webhook_url=receiver.url(),
        webhook_signature_key=None,
        public_key="bare",
        secret_key="0123456789abcdef0123456789abcdef",
        webhook_secret=signing.new_webhook_secret(),
        previous_webhook_secret=None,
        previous_webhook_secret_until_ms=None,
        failing_since_ms=None,
        last_fetch_ms=None,
        last_updated_ms=0,
        created_ms=0,
        service_point_enabled=False,
        deleted_ms=None,
    )
    events = Events(account_id=1)
    result: Bare | None = None
    by: dict[int, float] = {}
    for c in concurrencies:
        batch = [e for e, _ in events.stream([target], n)]
        await receiver.reset()
        meter = CpuMeter({"client": [os.getpid()], "receiver": [receiver.proc.pid]})
        meter.start()
        await _post_all(target, batch, c)
        got = await throughput_of(receiver, {e.id for e in batch}, 30.0, f"bare c={c}")
        got.cpu_us = meter.per_delivery_us(n)
        by[c] = got.rate
        if result is None or got.rate > result.best.rate:
            result = Bare(got, c)
    assert result is not None
    result.by_concurrency = by
    return result


async def _post_all(target: Integration, batch: list[Event], concurrency: int) -> None:
    assert target.webhook_url is not None
    url = target.webhook_url
    todo = iter(batch)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post_loop() -> None:
            for event in todo:
                now = int(time.time())
                headers = signing.webhook_headers(
                    body=event.body,
                    msg_id=event.id,
                    timestamp=now,
                    signature_key=target.signing_key,
                    webhook_secrets=target.webhook_secrets(now * 1000),
                    user_agent=USER_AGENT,
                )
                async with session.post(url, data=event.body, headers=headers) as r:
                    await r.read()

        await asyncio.gather(*(post_loop() for _ in range(concurrency)))


# -- (b) SQLite, one process --------------------------------------------------------------


async def sqlite_one_process(
    receiver: Receiver, tmp: Path, n: int, latency_s: float, concurrency: int
) -> tuple[Throughput, Latency]:
    """The dispatcher in this process, as `parcelhook serve` runs it on SQLite."""
    async with (
        fixtures.database("sqlite", tmp) as url,
        fixtures.runtime(url, concurrency=concurrency) as rt,
    ):
        account_id, targets = await fixtures.shop_integrations(rt, [receiver.url()])
        events = Events(account_id)
        ids, _ = await fixtures.enqueue_bulk(rt, events, targets, n)
        await receiver.reset()
        meter = CpuMeter({"parcelhook": [os.getpid()], "receiver": [receiver.proc.pid]})
        await rt.start_dispatcher()
        tp = await throughput_of(receiver, ids, 120.0, "sqlite throughput", meter)
        lat = await latency_of(rt, receiver, events, targets, latency_s)
        return tp, lat


# -- (c), (d) PostgreSQL, worker processes -----------------------------------------------


@dataclass
class PgRun:
    throughput: Throughput
    latency: Latency
    peak_rss_mb: float
    worker_cpu_s: float = 0.0


async def pg_workers(
    receiver: Receiver,
    n: int,
    workers: int,
    latency_s: float,
    concurrency: int,
    profile_dir: Path | None = None,
) -> PgRun:
    """`workers` × `parcelhook worker`; this process enqueues (as `serve --no-dispatcher`)."""
    async with (
        fixtures.database("postgres", Path()) as url,
        fixtures.runtime(url, concurrency=concurrency) as rt,
    ):
        account_id, targets = await fixtures.shop_integrations(rt, [receiver.url()])
        events = Events(account_id)
        ids, _ = await fixtures.enqueue_bulk(rt, events, targets, n)
        await receiver.reset()
        procs = [
            Worker(
                url,
                fixtures.MASTER_KEY,
                concurrency=concurrency,
                profile=None if profile_dir is None else profile_dir / f"pg{workers}-w{k}.txt",
            )
            for k in range(workers)
        ]
        # under py-spy the workers start late and sampling costs CPU: no CPU figures then
        meter = None
        if profile_dir is None:
            meter = CpuMeter(
                {
                    "worker": [w.pid for w in procs],
                    "receiver": [receiver.proc.pid],
                    "bench": [os.getpid()],
                }
            )
        try:
            tp = await throughput_of(receiver, ids, 180.0, f"pg {workers}-worker throughput", meter)
            lat = await latency_of(rt, receiver, events, targets, latency_s)
            rss = max(w.peak_rss_mb() for w in procs)
        finally:
            for w in procs:
                w.stop()
        return PgRun(tp, lat, rss)


# -- (e) a backlog --------------------------------------------------------------------------


@dataclass
class Backlog:
    size: int
    enqueue_rate: float
    # right after the bulk load, and once it is vacuumed and checkpointed (as autovacuum and
    # the checkpointer would have done while a real backlog built up)
    drain_fresh: Throughput
    drain_settled: Throughput
    peak_rss_mb: float


async def backlog(receiver: Receiver, size: int, drain_n: int, concurrency: int) -> Backlog:
    """Queue `size` deliveries; one worker drains `drain_n` of them, then `drain_n` more
    after VACUUM and CHECKPOINT."""
    async with (
        fixtures.database("postgres", Path()) as url,
        fixtures.runtime(url, concurrency=concurrency) as rt,
    ):
        account_id, targets = await fixtures.shop_integrations(rt, [receiver.url()])
        events = Events(account_id)
        enqueued = 0
        started = time.perf_counter()
        step = 50_000
        while enqueued < size:
            k = min(step, size - enqueued)
            await fixtures.enqueue_bulk(rt, events, targets, k, per_tx=5000)
            enqueued += k
            if size > step:
                print(f"  backlog: {enqueued:,}/{size:,} queued", file=sys.stderr, flush=True)
        seconds = time.perf_counter() - started
        drains: list[Throughput] = []
        rss = 0.0
        for settled in (False, True):
            if settled:
                admin = await asyncpg.connect(url)
                try:
                    await admin.execute("VACUUM (ANALYZE) deliveries, events")
                    await admin.execute("CHECKPOINT")
                finally:
                    await admin.close()
            else:
                async with rt.store.engine.connect() as conn:
                    await conn.exec_driver_sql("ANALYZE")
            await receiver.reset()
            worker = Worker(url, fixtures.MASTER_KEY, concurrency=concurrency)
            meter = CpuMeter(
                {"worker": [worker.pid], "receiver": [receiver.proc.pid], "bench": [os.getpid()]}
            )
            try:
                what = "settled backlog drain" if settled else "backlog drain"
                drains.append(await first_slice_rate(receiver, drain_n, 300.0, what, meter))
                rss = max(rss, worker.peak_rss_mb())
            finally:
                # its leases stay behind; there is plenty of other due work
                worker.proc.kill()
        return Backlog(size, size / seconds, drains[0], drains[1], rss)


# -- (f) isolation --------------------------------------------------------------------------


@dataclass
class Isolation:
    # one per round, in order; each arm's best round is compared
    alone_rounds: list[Throughput]
    with_blackholes_rounds: list[Throughput]
    p99_alone_ms: float
    p99_with_blackholes_ms: float

    @property
    def healthy_alone(self) -> Throughput:
        return max(self.alone_rounds, key=lambda t: t.rate)

    @property
    def healthy_with_blackholes(self) -> Throughput:
        return max(self.with_blackholes_rounds, key=lambda t: t.rate)


async def isolation(
    receiver: Receiver,
    blackhole: Receiver,
    n_healthy: int,
    latency_s: float,
    concurrency: int,
    endpoints: int = 20,
    send_timeout: float = 2.0,
    rounds: int = 1,
) -> Isolation:
    """Half of `endpoints` black-holed vs. the healthy half alone, one PostgreSQL worker.

    `rounds` × `n_healthy` healthy deliveries are queued up front and the rate of each
    consecutive `n_healthy` of them is a round (the later ones see black-holed lanes already
    shrunk, the steady state); each arm's best round counts: one round of 10,000 lasts about
    a second, and on a shared machine one second's rate swings by ±30 %.
    """
    half = endpoints // 2
    runs: list[tuple[list[Throughput], Latency]] = []
    for with_blackholes in (False, True):
        async with (
            fixtures.database("postgres", Path()) as url,
            fixtures.runtime(url, concurrency=concurrency) as rt,
        ):
            urls = [receiver.url(f"/shop{k}") for k in range(half)]
            if with_blackholes:
                urls += [blackhole.url(f"/shop{k}") for k in range(half)]
            account_id, targets = await fixtures.shop_integrations(rt, urls)
            healthy = targets[:half]
            events = Events(account_id)
            # healthy and black-holed deliveries interleaved, twice as many black-holed
            mix = healthy + 2 * targets[half:]
            await fixtures.enqueue_bulk(rt, events, mix, rounds * n_healthy * len(mix) // half)
            await receiver.reset()
            worker = Worker(url, fixtures.MASTER_KEY, concurrency=concurrency, timeout=send_timeout)
            try:
                tps = await _healthy_throughput(receiver, n_healthy, rounds, 120.0)
                await receiver.reset()
                lat = await latency_of(rt, receiver, events, healthy, latency_s)
            finally:
                worker.proc.kill()
            runs.append((tps, lat))
    (alone, lat_alone), (mixed, lat_mixed) = runs
    return Isolation(alone, mixed, lat_alone.pct(99), lat_mixed.pct(99))


async def _healthy_throughput(
    receiver: Receiver, n: int, rounds: int, within: float
) -> list[Throughput]:
    await receiver.wait_for(n * rounds, within, "isolation throughput")
    got = await receiver.receipts()
    times = sorted(got.values())
    out = []
    for k in range(rounds):
        part = times[k * n : (k + 1) * n]
        out.append(Throughput(len(part), part[-1] - part[0] if len(part) > 1 else 0.0))
    return out
