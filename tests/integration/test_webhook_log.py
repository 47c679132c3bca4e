"""The searchable webhook log on both engines: each filter and search finds what it should
and only the account's own, pages stay put, and no statement scans a table."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text

from parcelhook import service
from parcelhook.domain import deliveries as dl
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.integrations import IntegrationChanges
from parcelhook.domain.parcels import NewParcel
from parcelhook.store import schema as s
from parcelhook.store import webhook_log as wl
from parcelhook.store.parcel_queries import ParcelFilter
from parcelhook.store.webhook_log import LogFilter
from support.harness import Harness, HarnessFactory

START = 1_800_000_000_000
PARCEL = {"name": "Anna", "address": "Stationsplein 1", "city": "Eindhoven"}
PARCEL |= {"postal_code": "5611 AB", "country": "NL"}


@pytest.fixture
async def logged(harness: HarnessFactory) -> AsyncIterator[tuple[Harness, FakeClock, Any]]:
    clock = FakeClock(START)
    h = await harness(clock=clock, dispatcher=False)
    yield h, clock, await h.account()


async def _parcel(h: Harness, account: Any, order: str) -> Any:
    new = NewParcel(**{**PARCEL, "order_number": order})
    return await h.service.create_parcel(account.account_id, account.api, new)


async def _search(h: Harness, account_id: int, **kw: Any) -> list[int]:
    async with h.store.reading() as r:
        return [row.id for row in await wl.search(r, account_id, LogFilter(**kw))]


async def test_each_filter_and_search_finds_its_deliveries_newest_first(
    logged: tuple[Harness, FakeClock, Any],
) -> None:
    h, clock, account = logged
    await h.service.update_integration(
        account.account_id,
        account.api.id,
        IntegrationChanges(webhook_active=True, webhook_url="http://127.0.0.1:9/"),
    )
    first = await _parcel(h, account, "ORDER-1")
    await clock.advance(3600)
    second = await _parcel(h, account, "ORDER-2")
    await h.service.change_status(account.account_id, second.id, 11)
    other = await h.account()
    await _parcel(h, other, "ORDER-1")

    everything = await _search(h, account.account_id)
    assert everything == sorted(everything, reverse=True)
    assert len(everything) == 4  # integration_updated, and three parcel status changes
    by_parcel = await _search(h, account.account_id, parcel_ids=(second.id,))
    assert len(by_parcel) == 2
    async with h.store.reading() as r:
        by_order = await wl.parcels_matching(r, account.account_id, order_number="ORDER-1")
        by_tracking = await wl.parcels_matching(
            r, account.account_id, tracking_number=second.tracking_number
        )
    assert by_order == (first.id,)
    assert by_tracking == (second.id,)
    assert await _search(h, account.account_id, parcel_ids=()) == []

    async with h.store.reading() as r:
        rows = await wl.search(r, account.account_id, LogFilter(parcel_ids=(first.id,)))
    (row,) = rows
    assert (await _search(h, account.account_id, event_id=row.event_id)) == [row.id]
    assert row.shop_name == "API integration"
    assert row.action == "parcel_status_changed"

    updated = await _search(h, account.account_id, action="integration_updated")
    assert len(updated) == 1
    assert await _search(h, account.account_id, status=dl.PENDING) == everything
    assert await _search(h, account.account_id, status=dl.FAILED) == []
    assert await _search(h, account.account_id, integration_id=account.api.id) == everything

    later = await _search(h, account.account_id, from_ms=START + 1800_000)
    assert later == [i for i in everything if i not in (*updated, row.id)]
    earlier = await _search(h, account.account_id, until_ms=START + 1800_000)
    assert sorted(earlier + later) == sorted(everything)
    assert await _search(h, account.account_id, from_ms=START + 7200_000) == []

    page = await _search(h, account.account_id, before_id=everything[1])
    assert page == everything[2:]


# each of the log's shapes: account-wide, by integration, status, action, parcel, event id,
# a date range, and a later page
SHAPES = [
    LogFilter(),
    LogFilter(before_id=1000),
    LogFilter(integration_id=1, before_id=1000),
    LogFilter(integration_id=1, status=dl.FAILED),
    LogFilter(status=dl.FAILED, before_id=1000),
    LogFilter(action="refund_requested", before_id=1000),
    LogFilter(integration_id=1, action="parcel_status_changed"),
    LogFilter(parcel_ids=(1, 2, 3)),
    LogFilter(event_id="evt_01"),
    LogFilter(from_ms=START, until_ms=START + 1000),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[str(n) for n in range(len(SHAPES))])
async def test_no_log_statement_scans_a_table(harness: HarnessFactory, shape: LogFilter) -> None:
    # a million deliveries must not make a page of the log any slower to find
    h = await harness(dispatcher=False)
    query = wl.search_query(1, shape, 50, (1, 1000) if shape.from_ms else (None, None))
    sql = str(query.compile(h.store.engine, compile_kwargs={"literal_binds": True}))
    # the searches by order and tracking number, and one step of a date's id bisection
    lookups = [
        "SELECT id FROM parcels WHERE account_id = 1 AND order_number = 'x' LIMIT 100",
        "SELECT id FROM parcels WHERE account_id = 1 AND tracking_number = 'x' LIMIT 100",
        "SELECT created_ms FROM deliveries WHERE id >= 5 ORDER BY id LIMIT 1",
    ]
    async with h.store.reading() as r:
        for statement in (sql, *lookups):
            if h.store.engine.dialect.name == "sqlite":
                plan = [
                    row[3]
                    for row in await r.conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement)
                ]
                scans = [
                    p
                    for p in plan
                    if (m := re.match(r"SCAN (\w+)", p)) and m.group(1) in s.metadata.tables
                ]
            else:
                # on an empty table a sequential scan is cheapest: forbid it, and see
                # that an index path remains
                await r.conn.exec_driver_sql("SET enable_seqscan = off")
                plan = [row[0] for row in await r.conn.execute(text("EXPLAIN " + statement))]
                scans = [p for p in plan if "Seq Scan" in p]
            assert scans == [], (statement, plan)


async def test_the_logs_and_lists_reads_leave_the_event_loop_free(
    logged: tuple[Harness, FakeClock, Any],
) -> None:
    # on SQLite the API's short statements run on the loop's own thread; these reads can
    # walk a large table (a filter no index narrows: 87 ms over 200,000 deliveries), so they
    # run off it: the loop gets turns while each one runs (timing-free: on the loop's thread
    # a read never yields)
    h, _clock, account = logged
    await _parcel(h, account, "ORDER-1")
    aid, iid = account.account_id, account.api.id
    reads = {
        "log": lambda: h.service.search_log(aid, LogFilter(integration_id=iid)),
        "log by date": lambda: h.service.search_log(aid, LogFilter(from_ms=0, until_ms=START)),
        "log by order": lambda: h.service.search_log(aid, LogFilter(), order_number="ORDER-1"),
        "deliveries": lambda: h.service.list_deliveries(aid, action="refund_requested"),
        "events": lambda: h.service.list_events(aid, "", 100),
        "banner": lambda: h.service.integration_health(aid, iid),
        # GET /parcels with a filter no index narrows walks the account's parcels (155 ms
        # over 200,000 for a status nobody has)
        "parcels by status": lambda: h.service.find_parcels(
            aid, ParcelFilter(status_id=62997), None, 100
        ),
        "parcels announced after": lambda: h.service.find_parcels(
            aid, ParcelFilter(announced_after_ms=START), None, 100
        ),
    }
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        for name, read in reads.items():
            before = turns
            await read()
            assert turns > before, f"{name} held the event loop"
    finally:
        task.cancel()


async def test_a_bulk_redelivery_goes_in_pages_with_the_loop_free_between(
    logged: tuple[Harness, FakeClock, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # on SQLite a transaction runs on the loop's thread: 200,000 redelivered in one held it
    # 1.8 s; in pages the loop gets turns between them, and every one is still queued
    h, _clock, account = logged
    await h.service.update_integration(
        account.account_id,
        account.api.id,
        IntegrationChanges(webhook_active=True, webhook_url="http://127.0.0.1:9/"),
    )
    for n in range(5):
        await _parcel(h, account, f"ORDER-{n}")
    async with h.store.transaction() as tx:
        await tx.conn.execute(text("UPDATE deliveries SET status = 'failed', attempt_count = 11"))
        await tx.conn.execute(
            text(
                "UPDATE deliveries SET status = 'delivered'"
                " WHERE id = (SELECT min(id) FROM deliveries)"
            )
        )
    monkeypatch.setattr(service, "REDELIVER_PAGE", 2)
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = turns
        assert await h.service.redeliver_many(account.account_id) == 5
        assert turns - before >= 2  # three pages (2, 2, 1 deliveries)
    finally:
        task.cancel()
    statuses = [d.status for d in await h.service.list_deliveries(account.account_id, limit=10)]
    assert sorted(statuses) == [dl.DELIVERED] + [dl.PENDING] * 5


async def test_retry_all_now_goes_in_pages_with_the_loop_free_between(
    logged: tuple[Harness, FakeClock, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # 200,000 waiting deliveries made due in one transaction held SQLite's loop 1.5 s
    h, clock, account = logged
    await h.service.update_integration(
        account.account_id,
        account.api.id,
        IntegrationChanges(webhook_active=True, webhook_url="http://127.0.0.1:9/"),
    )
    for n in range(4):
        await _parcel(h, account, f"ORDER-{n}")
    later = clock.now_ms() + 3_600_000
    async with h.store.transaction() as tx:
        await tx.conn.execute(text(f"UPDATE deliveries SET next_attempt_ms = {later}"))
    monkeypatch.setattr(service, "REDELIVER_PAGE", 2)
    turns = 0

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        before = turns
        assert await h.service.retry_all_now(account.account_id, account.api.id) == 5
        assert turns - before >= 2  # three pages (2, 2, 1 deliveries)
    finally:
        task.cancel()
    found = await h.service.list_deliveries(account.account_id, limit=10)
    assert [d.next_attempt_ms for d in found] == [clock.now_ms()] * 5
