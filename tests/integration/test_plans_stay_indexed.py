"""On PostgreSQL, the hot statements keep reading through indexes as the tables grow.

asyncpg prepares every statement, and after five runs PostgreSQL keeps one generic plan for
it per connection. Planned while the tables were small and had no statistics (a new
database, a bulk load, or a server with autovacuum off, as on this project's machines),
that plan read whole tables: each outcome batch walked all of `deliveries` and each status
change all of `parcels`, and nothing replanned them until an ANALYZE. The dispatcher's
latency after 20,000 status changes had grown from 1 to 11 ms (docs/performance.md).

This drives the real path, the API and the dispatcher on one fresh database, long enough
for every statement to go generic, then again on the connections that replace those the
server ended, and then reads the tables' own counters.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest
from aiohttp import web

from support.harness import HarnessFactory, eventually, terminate_backends
from support.loopback_http import serving
from support.parcels import PARCEL

# a walk of statuses in which consecutive ones differ, so each call is a change
STATUSES = (1, 3, 5, 7, 11, 12, 91, 92)
GROWING = ("deliveries", "parcels", "events", "attempts")


async def _seq_scans(url: str) -> dict[str, int]:
    pg = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        rows = await pg.fetch(
            "SELECT relname, seq_scan FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
            list(GROWING),
        )
    finally:
        await pg.close()
    return {r["relname"]: r["seq_scan"] for r in rows}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_status_changes_and_deliveries_never_scan_a_whole_table(
    harness: HarnessFactory, database_url: str
) -> None:
    # each (parcel, status) webhook by how often it arrived: a delivery may beat the API's
    # answer back to this test, so counting arrivals after the answer would miss it
    received: Counter[tuple[int, int]] = Counter()

    async def hook(request: web.Request) -> web.Response:
        parcel = (await request.json())["parcel"]
        received[(parcel["id"], parcel["status"]["id"])] += 1
        return web.Response(text="ok")

    # what migrating the new database scanned (small tables, once)
    await (await harness(dispatcher=False)).close()
    migrated = await _seq_scans(database_url)
    async with serving(hook) as port:
        h = await harness()
        acct = await h.account()
        shop = await acct.shop(f"http://127.0.0.1:{port}/hook")
        parcels = []
        for _ in range(4):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
            )
            assert r.status_code == 200, r.text
            parcels.append(r.json()["parcel"]["id"])

        async def walk(times: int) -> None:
            # one change at a time, each delivered before the next: every statement runs
            # well past the five custom plans on the same connections
            for status in STATUSES:
                for parcel in parcels:
                    r = await acct.call(
                        "POST", f"/api/v2/parcels/{parcel}/status", {"status_id": status}
                    )
                    assert r.status_code == 200, r.text
                    key = (parcel, status)
                    await eventually(lambda k=key: received[k] >= times, what="the webhook")

        await walk(1)
        # the database ends every connection (a failover): those that replace them must
        # price out sequential scans too, or their new generic plans walk whole tables
        await asyncio.sleep(0.3)  # everything idle in its pool
        assert await terminate_backends(database_url.rsplit("/", 1)[1]) > 0
        await asyncio.sleep(0.3)  # the server's goodbye has arrived
        await walk(2)
        # a closing backend reports its counters at once (a live one, within seconds)
        await h.close()
    assert await _seq_scans(database_url) == migrated
