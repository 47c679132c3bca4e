"""Schema upgrades with Alembic: fresh databases, databases made by parcelhook 0.1.0 (the
release before Alembic), concurrent starters, and the offline SQL for review."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from parcelhook.domain import deliveries as dl
from parcelhook.store import Store, migrations, schema
from parcelhook.store.crypto import SecretBox

RELEASE = Path(__file__).parents[1] / "fixtures" / "release_0_1_0"
# the key the fixture's secrets were sealed with (tests/fixtures/release_0_1_0/make.py)
RELEASE_KEY = b"n2FnYmkFCe1bgtIvfiZ4O8CRcB_r-JZ7pxI3aWJcddA="
NOW = 1_780_000_100_000


def _load_release(database_url: str) -> None:
    """The database parcelhook 0.1.0 left behind (schema_migrations at version 2)."""
    if database_url.startswith("sqlite"):
        import sqlite3

        db = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        db.executescript((RELEASE / "sqlite.sql").read_text())
        db.close()
        return
    subprocess.run(
        [
            "psql",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(RELEASE / "postgresql.sql"),
            database_url,
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def _schema_diff(conn: Connection) -> list[Any]:
    diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    # SQLite's time-ordered claim index exists on SQLite only (ddl_if), which
    # autogenerate does not know about
    return [d for d in diff if not (d[0] == "add_index" and d[1].name == "deliveries_due")]


async def _rows(conn: AsyncConnection, columns: dict[str, list[str]]) -> dict[str, list[Any]]:
    out = {}
    for table, names in columns.items():
        cols = ", ".join(names)
        order = "id" if "id" in names else names[0]
        result = await conn.execute(text(f"SELECT {cols} FROM {table} ORDER BY {order}"))
        out[table] = [tuple(r) for r in result]
    return out


def _columns(conn: Connection) -> dict[str, list[str]]:
    i = inspect(conn)
    return {
        t: [c["name"] for c in i.get_columns(t)]
        for t in i.get_table_names()
        if t not in ("schema_migrations", "alembic_version")
    }


async def test_a_fresh_database_gets_every_revision_and_matches_the_schema(
    database_url: str,
) -> None:
    store = Store.open(database_url, SecretBox(RELEASE_KEY))
    try:
        assert await store.migrate() == migrations.revisions()
        assert await store.migrate() == []
        assert await migrations.current(store.engine) == migrations.head()
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_schema_diff) == []
    finally:
        await store.close()


async def test_a_release_0_1_0_database_upgrades_and_loses_nothing(database_url: str) -> None:
    _load_release(database_url)
    store = Store.open(database_url, SecretBox(RELEASE_KEY))
    try:
        async with store.engine.connect() as conn:
            columns = await conn.run_sync(_columns)
            before = await _rows(conn, columns)
        assert await migrations.current(store.engine) == "0002"
        applied = await store.migrate()
        assert applied == migrations.revisions()[2:]
        async with store.engine.connect() as conn:
            assert await _rows(conn, columns) == before
            assert not await conn.run_sync(lambda c: inspect(c).has_table("schema_migrations"))
            assert await conn.run_sync(_schema_diff) == []
        # the secrets still open with the key that sealed them, and the app reads every row
        async with store.reading() as r:
            account = await r.account_by_email("release@example.com")
            assert account is not None
            api, shop = await r.integrations(account[0])
            assert api.webhook_signature_key == "Str0ng!Signature-Key"
            assert api.webhook_secret.startswith("whsec_")
            assert api.previous_webhook_secret is not None
            assert len(api.secret_key) == 32
            assert shop.system == "shopify"
            deliveries = await r.deliveries(account[0], limit=100)
            assert {d.status for d in deliveries} == {dl.PENDING, dl.DELIVERED, dl.FAILED}
            delivered = next(d for d in deliveries if d.status == dl.DELIVERED)
            full = await r.delivery(account[0], delivered.id)
            assert [a.status_code for a in full.attempts] == [200]
            assert full.body is not None and b'"action"' in full.body
        # and the dispatcher's claim finds the pending ones through the new indexes
        claimed = await store.queue.claim_due("upgrade-test", NOW, 60_000, 100)
        assert len(claimed) == sum(d.status == dl.PENDING for d in deliveries) > 0
    finally:
        await store.close()


async def test_concurrent_starters_wait_for_each_other(database_url: str) -> None:
    stores = [Store.open(database_url, SecretBox(RELEASE_KEY)) for _ in range(3)]
    try:
        results = await asyncio.gather(*(s.migrate() for s in stores))
        assert sorted(results, key=len) == [[], [], migrations.revisions()]
    finally:
        for s in stores:
            await s.close()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_builds_the_claim_index_concurrently(database_url: str) -> None:
    sql = migrations.offline_sql(database_url, "0001")
    build = sql.index("CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_pending_integration")
    # outside the migration's transaction: it was committed first
    assert sql.rfind("COMMIT;", 0, build) > sql.rfind("BEGIN;", 0, build)
    assert "DROP INDEX CONCURRENTLY IF EXISTS deliveries_due" in sql
    # and on a database at revision 0001 the build leaves a valid index behind
    store = Store.open(database_url, SecretBox(RELEASE_KEY))
    try:
        async with store.engine.connect() as conn:
            await conn.run_sync(lambda c: _to(c, "0001"))
        assert await store.migrate() == migrations.revisions()[1:]
        async with store.engine.connect() as conn:
            valid = await conn.execute(
                select(text("i.indisvalid"))
                .select_from(text("pg_index i JOIN pg_class c ON c.oid = i.indexrelid"))
                .where(text("c.relname = 'deliveries_pending_integration'"))
            )
            assert valid.scalar_one() is True
            assert not await conn.run_sync(
                lambda c: any(
                    i["name"] == "deliveries_due" for i in inspect(c).get_indexes("deliveries")
                )
            )
    finally:
        await store.close()


def _to(conn: Connection, revision: str) -> None:
    from alembic import command

    cfg = migrations.config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)
    conn.commit()


def test_migrate_sql_prints_the_pending_sql_without_changing_anything(tmp_path: Path) -> None:
    db = tmp_path / "offline.db"
    url = f"sqlite:///{db}"
    result = subprocess.run(
        [sys.executable, "-m", "parcelhook.cli", "migrate", "--sql", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PARCELHOOK_KEY_FILE": str(tmp_path / "k.key")},
    )
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE accounts" in result.stdout
    assert "CREATE INDEX deliveries_pending_integration" in result.stdout
    assert not db.exists() or db.stat().st_size == 0


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_vacuums_and_analyzes_the_queue_early(database_url: str) -> None:
    """Autovacuum's defaults wait for a fifth of a table to be dead; the queue's tables are
    vacuumed and analyzed after 1–2 % (migration 0012; docs/performance.md)."""
    store = Store.open(database_url, SecretBox(RELEASE_KEY))
    try:
        await store.migrate()
        async with store.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT relname, reloptions FROM pg_class"
                    " WHERE relname IN ('deliveries', 'events', 'parcels')"
                )
            )
            options = {name: sorted(opts or []) for name, opts in rows}
    finally:
        await store.close()
    assert options == {
        "deliveries": [
            "autovacuum_analyze_scale_factor=0.01",
            "autovacuum_vacuum_insert_scale_factor=0.01",
            "autovacuum_vacuum_scale_factor=0.01",
        ],
        "events": ["autovacuum_vacuum_insert_scale_factor=0.02"],
        "parcels": [
            "autovacuum_analyze_scale_factor=0.02",
            "autovacuum_vacuum_scale_factor=0.02",
        ],
    }
