"""How long the panel's and the API's reads take over a large log.

SQLite statements of the API and the panel run on the event loop's own thread
(store/sqlite_loop.py), so a slow read there stalls every request and the dispatcher of the
process. On PostgreSQL every session prices out sequential scans (store/engine.py), so a
read with no good index would show here as a slow one. This fills one integration with N
deliveries (events, attempts; mostly delivered, some failed, a few pending, over 30 days)
and times every read the log, the banner, the API's lists and /metrics make, each the
worst of a few runs.

    python -m bench.panel_reads [--deliveries 200000] [--engine sqlite|postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench import fixtures
from parcelhook.domain import deliveries as dl
from parcelhook.domain import events as ev
from parcelhook.domain.integrations import parse_changes
from parcelhook.domain.parcels import NewParcel
from parcelhook.store.parcel_queries import ParcelFilter
from parcelhook.store.webhook_log import LogFilter

DAY_MS = 86_400_000
PARCEL = {"name": "Anna", "address": "Stationsplein 1", "city": "Eindhoven"}
PARCEL |= {"postal_code": "5611 AB", "country": "NL"}


class Raw:
    """Statements straight to the database, around the service (`?` placeholders)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")

    def _pg_sql(self, sql: str) -> str:
        parts = sql.split("?")
        return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]

    async def run(self, sql: str, rows: Sequence[tuple[Any, ...]] | None = None) -> None:
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            with conn:
                if rows is None:
                    conn.execute(sql)
                else:
                    conn.executemany(sql, rows)
            conn.close()
            return
        pg = await asyncpg.connect(self.url)
        try:
            if rows is None:
                await pg.execute(sql)
            else:
                await pg.executemany(self._pg_sql(sql), rows)
        finally:
            await pg.close()

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            try:
                return [tuple(r) for r in conn.execute(sql)]
            finally:
                conn.close()
        pg = await asyncpg.connect(self.url)
        try:
            return [tuple(r) for r in await pg.fetch(sql)]
        finally:
            await pg.close()

    async def columns(self, table: str) -> list[str]:
        if self.sqlite:
            return [r[1] for r in await self.rows(f"PRAGMA table_info({table})")]
        return [
            r[0]
            for r in await self.rows(
                "SELECT column_name FROM information_schema.columns"
                f" WHERE table_name = '{table}' ORDER BY ordinal_position"
            )
        ]


async def fill(raw: Raw, account_id: int, integration_id: int, n: int, now_ms: int) -> None:
    """N events and deliveries for one integration, with an attempt each, written directly."""
    start = now_ms - 30 * DAY_MS
    step = 30 * DAY_MS // n
    events, deliveries, attempts = [], [], []
    # the id the first delivery will get, for its attempt
    [(first,)] = await raw.rows("SELECT COALESCE(max(id), 0) + 1 FROM deliveries")
    for k in range(n):
        at = start + k * step
        eid = ev.new_event_id(at)
        status = dl.PENDING if k % 1000 == 0 else dl.FAILED if k % 50 == 0 else dl.DELIVERED
        events.append((eid, account_id, "parcel_status_changed", at, '{"action": "x"}'))
        deliveries.append(
            (
                eid,
                integration_id,
                account_id,
                "parcel_status_changed",
                k + 1,
                status,
                1,
                0,
                at + 300_000,
                200 if status == dl.DELIVERED else 500,
                None,
                at,
                at,
            )
        )
        attempts.append((first + k, at, 12, 200 if status == dl.DELIVERED else 500, None, "ok"))
    await raw.run(
        "INSERT INTO events (id, account_id, action, timestamp_ms, body) VALUES (?,?,?,?,?)",
        events,
    )
    await raw.run(
        "INSERT INTO deliveries (event_id, integration_id, account_id, action, parcel_id,"
        " status, attempt_count, schedule_base, next_attempt_ms, last_status_code,"
        " last_error, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        deliveries,
    )
    await raw.run(
        "INSERT INTO attempts (delivery_id, at_ms, duration_ms, status_code, error,"
        " response_excerpt) VALUES (?,?,?,?,?,?)",
        attempts,
    )
    await raw.run("ANALYZE")


async def copy_parcels(raw: Raw, n: int, now_ms: int) -> None:
    """N copies of the one parcel, each with its own tracking number and change time."""
    columns = [c for c in await raw.columns("parcels") if c != "id"]
    changed = {
        "tracking_number": "'T' || k",
        # CAST: PostgreSQL's k is a 32-bit integer, and the product overflows it
        "updated_ms": f"{now_ms - 30 * DAY_MS} + CAST(k AS BIGINT) * {30 * DAY_MS // n}",
        "created_ms": f"{now_ms - 30 * DAY_MS} + CAST(k AS BIGINT) * {30 * DAY_MS // n}",
        "announced_ms": "NULL",
    }
    values = ", ".join(changed.get(c, f"p.{c}") for c in columns)
    await raw.run(
        f"WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < {n}) "
        f"INSERT INTO parcels ({', '.join(columns)}) "
        f"SELECT {values} FROM n, (SELECT * FROM parcels LIMIT 1) AS p"
    )
    await raw.run("ANALYZE")


async def worst(fn: Callable[[], Awaitable[Any]], runs: int = 3) -> tuple[float, float]:
    """The slowest of `runs` calls, and the longest the event loop went without a turn
    meanwhile (what every other request and the dispatcher waited), both in ms."""
    slowest = stall = 0.0
    last = time.perf_counter()
    gaps = [0.0]

    async def ticker() -> None:
        nonlocal last
        while True:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    for _ in range(runs):
        t = last = time.perf_counter()
        gaps[:] = [0.0]
        await fn()
        slowest = max(slowest, time.perf_counter() - t)
        stall = max(stall, *gaps, time.perf_counter() - last)
    task.cancel()
    return slowest * 1000, stall * 1000


def show(name: str, took: tuple[float, float], extra: str = "") -> None:
    print(f"{name:36s} {took[0]:8.1f} ms, loop held {took[1]:7.1f} ms{extra}")


async def main(n: int, engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fixtures.database(engine, Path(tmp)) as url, fixtures.runtime(url) as rt:
            raw = Raw(url)
            svc = rt.service
            acct = await svc.create_account("reads@example.com", "Str0ng!Password-1")
            aid = acct.account_id
            shop = await svc.create_integration(
                aid, parse_changes({"shop_name": "big", "system": "api"}, creating=True)
            )
            now = rt.clock.now_ms()
            t = time.perf_counter()
            await fill(raw, aid, shop.id, n, now)
            print(f"filled {n:,} deliveries in {time.perf_counter() - t:.1f} s")
            await svc.create_parcel(aid, acct.integration, NewParcel(**PARCEL))
            await copy_parcels(raw, n, now)
            mid = n // 2
            day = now - 15 * DAY_MS
            cases: dict[str, Callable[[], Awaitable[Any]]] = {
                "log: first page, all": lambda: svc.search_log(aid, LogFilter()),
                "log: first page, integration": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id)
                ),
                "log: page deep (before_id=100)": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id, before_id=100)
                ),
                "log: status failed": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id, status=dl.FAILED)
                ),
                "log: status pending": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id, status=dl.PENDING)
                ),
                "log: action with no match": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id, action="refund_requested")
                ),
                "log: action + status, no match": lambda: svc.search_log(
                    aid,
                    LogFilter(integration_id=shop.id, action="refund_requested", status="failed"),
                ),
                "log: one day": lambda: svc.search_log(
                    aid, LogFilter(integration_id=shop.id, from_ms=day, until_ms=day + DAY_MS)
                ),
                "log: a day, status failed": lambda: svc.search_log(
                    aid,
                    LogFilter(
                        integration_id=shop.id, status="failed", from_ms=day, until_ms=day + DAY_MS
                    ),
                ),
                "log: event id": lambda: svc.search_log(
                    aid, LogFilter(event_id="evt_00000000000000000000000000")
                ),
                "log: parcel id": lambda: svc.search_log(aid, LogFilter(parcel_ids=(mid,))),
                "log: order number": lambda: svc.search_log(aid, LogFilter(), order_number="x"),
                "api: parcels, status nobody has": lambda: svc.find_parcels(
                    aid, ParcelFilter(status_id=62997), None, 100
                ),
                "api: parcels, announced after": lambda: svc.find_parcels(
                    aid, ParcelFilter(announced_after_ms=now), None, 100
                ),
                "api: parcels, updated after": lambda: svc.find_parcels(
                    aid, ParcelFilter(updated_after_ms=now - DAY_MS), None, 100
                ),
                "api: parcels, first page": lambda: svc.find_parcels(
                    aid, ParcelFilter(), None, 100
                ),
                "banner: health": lambda: svc.integration_health(aid, shop.id),
                "api: deliveries": lambda: svc.list_deliveries(aid),
                "api: deliveries failed": lambda: svc.list_deliveries(aid, status=dl.FAILED),
                "api: deliveries, action no match": lambda: svc.list_deliveries(
                    aid, action="refund_requested"
                ),
                "api: deliveries deep": lambda: svc.list_deliveries(aid, before_id=100),
                "api: delivery": lambda: svc.get_delivery(aid, mid),
                "api: events first page": lambda: svc.list_events(aid, "", 100),
                "api: events last page": lambda: svc.list_events(aid, "evt_Z", 100),
                "metrics: refresh": lambda: rt.metrics.refresh(rt.store, now),
            }
            for name, fn in cases.items():
                show(name, await worst(fn))
            # an endpoint down for long: everything waits
            await raw.run("UPDATE deliveries SET status = 'pending'")
            show(
                "banner: health, all pending",
                await worst(lambda: svc.integration_health(aid, shop.id)),
            )
            retried: list[int] = []

            async def retry_all() -> None:
                retried.append(await svc.retry_all_now(aid, shop.id))

            show("panel: retry all now", await worst(retry_all, runs=1), f" ({retried[0]:,})")
            await raw.run("UPDATE deliveries SET status = 'failed'")
            counted: list[int] = []

            async def redeliver() -> None:
                counted.append(await svc.redeliver_many(aid, status=dl.FAILED))

            show("api: redeliver all failed", await worst(redeliver, runs=1), f" ({counted[0]:,})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--deliveries", type=int, default=200_000)
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    asyncio.run(main(args.deliveries, args.engine))
