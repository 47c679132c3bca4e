"""Databases, accounts, integrations and realistic events for one benchmark scenario."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from cryptography.fernet import Fernet

from parcelhook.config import Settings
from parcelhook.domain import events as ev
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import Integration, parse_changes
from parcelhook.domain.retry import RetryPolicy
from parcelhook.runtime import Runtime
from parcelhook.tools.trigger import sample_parcel

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
MASTER_KEY = Fernet.generate_key().decode()
# a realistic status walk of one parcel, over and over
STATUSES = (1000, 1001, 1, 3, 5, 7, 91, 92, 11)


@asynccontextmanager
async def database(engine: str, tmp: Path) -> AsyncIterator[str]:
    """A fresh, empty database URL on `engine` ("sqlite" or "postgres"), dropped afterwards."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    name = f"ph_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        admin = await asyncpg.connect(PG_ADMIN)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


def settings(url: str, *, dispatcher: bool, concurrency: int, timeout: float = 10.0) -> Settings:
    return Settings(
        database_url=url,
        master_key=MASTER_KEY,
        key_file=Path(tempfile.gettempdir()) / "parcelhook-bench-unused.key",
        allow_private_targets=True,
        allow_http_targets=True,
        timeout=timeout,
        retry=RetryPolicy(),
        endpoint_concurrency=concurrency,
        dispatcher=dispatcher,
    )


@asynccontextmanager
async def runtime(
    url: str, *, concurrency: int = 16, send_timeout: float = 10.0
) -> AsyncIterator[Runtime]:
    """A migrated Runtime whose dispatcher is not started (start it with start_dispatcher)."""
    rt = Runtime(settings(url, dispatcher=True, concurrency=concurrency, timeout=send_timeout))
    try:
        await rt.store.migrate(rt.clock.now_ms())
        yield rt
    finally:
        await rt.stop()


async def shop_integrations(rt: Runtime, urls: list[str]) -> tuple[int, list[Integration]]:
    """One account with one Shopify integration per URL, webhook feedback on."""
    created = await rt.service.create_account(
        f"bench-{uuid.uuid4().hex[:8]}@example.com", "bench-password"
    )
    integrations = []
    for n, url in enumerate(urls):
        data = {
            "shop_name": f"Bench shop {n}",
            "system": "shopify",
            "webhook_active": True,
            "webhook_url": url,
        }
        integrations.append(
            await rt.service.create_integration(
                created.account_id, parse_changes(data, creating=True)
            )
        )
    return created.account_id, integrations


class Events:
    """`parcel_status_changed` events with real payloads (the API's own builders)."""

    def __init__(self, account_id: int) -> None:
        self.account_id = account_id
        self._parcel_ids = itertools.count(1)

    def make(self, integration: Integration, now_ms: int) -> Event:
        pid = next(self._parcel_ids)
        parcel = sample_parcel(
            status_id=STATUSES[pid % len(STATUSES)],
            now_ms=now_ms,
            parcel_id=pid,
            account_id=self.account_id,
            integration_id=integration.id,
        )
        return ev.make_event(self.account_id, ev.parcel_status_changed(parcel, now_ms))

    def stream(self, targets: list[Integration], n: int) -> Iterator[tuple[Event, Integration]]:
        """`n` events, round-robin over `targets`."""
        now = int(time.time() * 1000)
        for k in range(n):
            target = targets[k % len(targets)]
            yield self.make(target, now), target


async def enqueue_bulk(
    rt: Runtime, events: Events, targets: list[Integration], n: int, per_tx: int = 2000
) -> tuple[set[str], float]:
    """Queue `n` events (round-robin over `targets`) in transactions of `per_tx`.

    Returns the event ids and the seconds it took, payload building included.
    """
    ids: set[str] = set()
    started = time.perf_counter()
    batch: list[tuple[Event, list[Integration]]] = []
    for event, target in events.stream(targets, n):
        ids.add(event.id)
        batch.append((event, [target]))
        if len(batch) >= per_tx:
            await _commit(rt, batch)
            batch = []
    if batch:
        await _commit(rt, batch)
    return ids, time.perf_counter() - started


async def _commit(rt: Runtime, batch: list[tuple[Event, list[Integration]]]) -> None:
    async with rt.store.transaction() as tx:
        await tx.enqueue_many(batch, int(time.time() * 1000))


async def enqueue_paced(
    rt: Runtime, events: Events, targets: list[Integration], rate: float, seconds: float
) -> dict[str, float]:
    """One transaction per event at `rate` per second; the commit time of each event by id.

    The schedule is fixed in advance, so a slow commit does not lower the offered load.
    """
    commits: dict[str, float] = {}
    n = round(rate * seconds)
    start = time.monotonic()
    for k in range(n):
        delay = start + k / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        target = targets[k % len(targets)]
        event = events.make(target, int(time.time() * 1000))
        async with rt.store.transaction() as tx:
            await tx.enqueue(event, [target], event.timestamp_ms)
        commits[event.id] = time.time()
    return commits
