"""A parcel named by id is found through the primary key, whatever the planner knows.

With no statistics (a new database, or a server with autovacuum off, as on this project's
machines) both planners weighed an index that starts with account_id as highly as the
primary key for "this account's parcel N", and took it: every status change batch then
walked all of the account's parcels (5.4 ms for 19 changes among 1,000 parcels on
PostgreSQL, growing with the account). These tests give one account many parcels and read
each hot statement's plan, before and after ANALYZE.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql import Select

from parcelhook.domain.integrations import IntegrationChanges
from parcelhook.store import Store, ingest
from parcelhook.store.crypto import SecretBox
from parcelhook.store.tx import _PARCEL, _PARCEL_FOR_UPDATE

NOW = 1_800_000_000_000
PARCELS = 20_000

# the same statement on both engines; `n` counts 1…{count}
FILL = """
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {count})
INSERT INTO parcels (account_id, integration_id, name, company_name, address, house_number,
    city, postal_code, country, telephone, email, weight, order_number, external_order_id,
    external_shipment_id, shipment_id, tracking_number, is_return, status_id, created_ms,
    updated_ms, external_reference)
SELECT {account}, {integration}, 'A', '', 'B 1', '', 'C', '1234', 'NL', '', '', '1.000',
    'order-' || n, '', '', 8, '3SPH' || n, false, 1, {now}, {now} + n, 'ref-' || n
FROM s
"""


@pytest.fixture
async def filled(database_url: str) -> AsyncIterator[tuple[str, int, list[int]]]:
    """`database_url`, never analyzed, with one account of PARCELS parcels and another of
    ten; the big account's id and ten of its parcel ids from the middle."""
    st = Store.open(database_url, SecretBox(Fernet.generate_key()))
    await st.migrate(NOW)
    async with st.transaction() as tx:
        fills = []
        for email, count in (("big@example.com", PARCELS), ("small@example.com", 10)):
            account = await tx.create_account(email, "hash", NOW)
            shop = await tx.create_integration(
                account, IntegrationChanges(shop_name="s", system="api"), NOW
            )
            fills.append(FILL.format(count=count, account=account, integration=shop.id, now=NOW))
            if count == PARCELS:
                big = account
    await st.close()
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            for fill in fills:
                conn.execute(fill)
            ids = [r[0] for r in conn.execute(_MIDDLE, (big,))]
    else:
        pg = await asyncpg.connect(database_url)
        try:
            for fill in fills:
                await pg.execute(fill)
            ids = [r[0] for r in await pg.fetch(_MIDDLE.replace("?", "$1"), big)]
        finally:
            await pg.close()
    yield database_url, big, ids


_MIDDLE = f"SELECT id FROM parcels WHERE account_id = ? ORDER BY id LIMIT 10 OFFSET {PARCELS // 2}"


def _literal(q: Select[Any], dialect: Any, account: int, parcel: int) -> str:
    bound = q.params(pid=parcel, aid=account)
    return str(bound.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


# -- PostgreSQL ---------------------------------------------------------------------------


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


def _parcel_reads(plan_json: str) -> list[str]:
    """How each plan node reads parcels: its index's name, or its node type."""
    [top] = json.loads(plan_json)
    reads = []
    for node in _nodes(top["Plan"]):
        index = node.get("Index Name", "")
        scan = node["Node Type"].endswith("Scan") and node["Node Type"] != "Bitmap Heap Scan"
        if node.get("Relation Name") == "parcels" and scan:
            reads.append(index or node["Node Type"])
        elif node["Node Type"] == "Bitmap Index Scan" and index.startswith("parcels"):
            reads.append(index)
    return reads


def _pg_literal(value: Any) -> str:
    # EXECUTE takes no bind parameters; the prepared statement's casts type these
    if isinstance(value, list):
        return "'{" + ",".join(map(_pg_literal, value)) + "}'"
    return "NULL" if value is None else str(int(value))


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_postgresql_reads_parcels_by_id_through_the_primary_key(
    filled: tuple[str, int, list[int]], analyzed: bool
) -> None:
    url, account, ids = filled
    n = len(ids)
    statements: list[tuple[str, list[Any]]] = [
        (ingest.PG_CHANGE_STATUSES, [ids, [account] * n, [3] * n, [None] * n, NOW]),
        (ingest.PG_PARCELS_OF, [account, ids]),
        (_literal(_PARCEL, postgresql.dialect(), account, ids[0]), []),
        (_literal(_PARCEL_FOR_UPDATE, postgresql.dialect(), account, ids[0]), []),
    ]
    pg = await asyncpg.connect(url)
    try:
        if analyzed:
            await pg.execute("ANALYZE")
        for sql, args in statements:
            # the plan of one call, and the generic plan a prepared statement turns to
            # after five (asyncpg prepares every statement)
            for mode in ("force_custom_plan", "force_generic_plan"):
                await pg.execute(f"SET plan_cache_mode = {mode}")
                async with pg.transaction():
                    await pg.execute(f"PREPARE q AS {sql}")
                    try:
                        values = f"({', '.join(map(_pg_literal, args))})" if args else ""
                        plan = await pg.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE q{values}")
                    finally:
                        await pg.execute("DEALLOCATE q")
                reads = _parcel_reads(plan)
                assert reads and set(reads) == {"parcels_pkey"}, (mode, sql, plan)
    finally:
        await pg.close()


# -- SQLite -------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("analyzed", [False, True], ids=["no-statistics", "analyzed"])
async def test_sqlite_reads_parcels_by_id_through_the_primary_key(
    filled: tuple[str, int, list[int]], analyzed: bool
) -> None:
    url, account, ids = filled
    items = json.dumps([[i, account, 3, None] for i in ids])
    statements: list[tuple[str, tuple[Any, ...]]] = [
        (ingest.SQLITE_CHANGE_STATUSES, (items, NOW)),
        (ingest.SQLITE_PARCELS_OF, (account, json.dumps(ids))),
        (_literal(_PARCEL, sqlite_dialect.dialect(), account, ids[0]), ()),
    ]
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        if analyzed:
            conn.execute("ANALYZE")
        for sql, args in statements:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]
            reads = [step for step in plan if re.search(r"\bparcels\b", step)]
            assert reads, plan
            assert all("USING INTEGER PRIMARY KEY" in step for step in reads), (sql, plan)
