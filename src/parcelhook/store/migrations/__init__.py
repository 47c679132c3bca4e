"""The schema's history, as Alembic revisions (`versions/`), run from parcelhook itself.

`upgrade` brings a database to the latest revision; concurrent starters wait for each other
(a PostgreSQL advisory lock; SQLite's write lock). A database made by parcelhook 0.1.0,
which kept its own `schema_migrations` table, is stamped with the matching revision first.
To change the schema, add a revision after the latest one in `versions/` (the file names
say the order); PostgreSQL indexes on busy tables are built CONCURRENTLY (see 0002).
"""

from __future__ import annotations

import asyncio
import functools
import io
import sqlite3
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import NullPool

HERE = Path(__file__).parent
# any constant shared by every parcelhook process: the key of the migration lock
ADVISORY_LOCK = 7201
# parcelhook 0.1.0's schema_migrations versions and the revisions that match them
LEGACY = {1: "0001", 2: "0002"}


def config(url: str = "") -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def head() -> str:
    return revisions()[-1]


def _current(conn: Connection) -> str | None:
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables:
        return MigrationContext.configure(conn).get_current_revision()
    if "schema_migrations" in tables:
        done = conn.execute(text("SELECT max(version) FROM schema_migrations")).scalar()
        return LEGACY[int(done)] if done else None
    return None


def _upgrade(conn: Connection) -> list[str]:
    """Stamp a 0.1.0 database, then upgrade. Inside a transaction the caller began, all of
    it happens in that transaction (SQLite); otherwise each migration commits on its own."""
    cfg = config()
    cfg.attributes["connection"] = conn
    external = conn.in_transaction()
    legacy = _current(conn)
    stamp = None if inspect(conn).has_table("alembic_version") else legacy
    if not external:
        # end the transaction the reads began: Alembic begins its own per migration
        conn.commit()
    if stamp is not None:
        command.stamp(cfg, stamp)
        if not external:
            conn.commit()
    command.upgrade(cfg, "head")
    if not external:
        conn.commit()
    applied: list[str] = cfg.attributes.get("applied", [])
    return applied


def _sqlite_engine(url: str) -> Any:
    """A synchronous engine whose transactions are real SQLite transactions (DDL included),
    begun IMMEDIATE so that a second migrator waits for the first."""
    engine = create_engine(make_url(url).set(drivername="sqlite"), poolclass=NullPool)

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA busy_timeout=30000")
        _enter_wal(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _enter_wal(dbapi_conn: Any, wait_s: float = 30.0) -> None:
    """Switch a new database file to WAL. SQLite answers "database is locked" at once, without
    its busy handler, while another starter holds a lock on a file still in rollback-journal
    mode: so wait here, as long as the busy timeout would."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def _lock(conn: AsyncConnection, wait_s: float) -> None:
    """Take the session-level migration lock, held across the migrations' own commits.

    Tried rather than waited for: a waiter blocked inside a statement holds a snapshot, and
    CREATE INDEX CONCURRENTLY in the holder's migration waits for every older snapshot, so
    the two would deadlock."""
    deadline = time.monotonic() + wait_s
    while True:
        got = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK})
        await conn.commit()
        if got:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"another parcelhook held the migration lock for over {wait_s:.0f} s"
            )
        await asyncio.sleep(0.05)


async def upgrade(engine: AsyncEngine, wait_s: float = 3600.0) -> list[str]:
    """Bring the schema to the latest revision; returns the revisions applied."""
    if engine.dialect.name == "sqlite":
        return await asyncio.to_thread(_upgrade_sqlite, str(engine.url))
    async with engine.connect() as conn:
        # the usual case, a fleet restarting on an up-to-date schema, takes no lock
        if await conn.run_sync(_current) == head():
            await conn.commit()
            return []
        await _lock(conn, wait_s)
        try:
            return await conn.run_sync(_upgrade)
        finally:
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
            await conn.commit()


def _upgrade_sqlite(url: str) -> list[str]:
    engine = _sqlite_engine(url)
    try:
        # one IMMEDIATE transaction for all of it (SQLite's DDL is transactional): a second
        # starter waits, then finds the schema up to date
        with engine.connect() as conn, conn.begin():
            return _upgrade(conn)
    finally:
        engine.dispose()


async def current(engine: AsyncEngine) -> str | None:
    """The database's revision (None for an empty database)."""
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


def offline_sql(url: str, since: str | None) -> str:
    """The SQL that brings a database at revision `since` (None: empty) to the latest one."""
    out = io.StringIO()
    cfg = config(url)
    cfg.output_buffer = out
    command.upgrade(cfg, f"{since}:head" if since else "head", sql=True)
    return out.getvalue()


async def pending_sql(database_url: str) -> str:
    """The offline SQL from the database's revision (when it exists) to the latest."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from parcelhook.store.engine import normalise_url

    url = normalise_url(database_url)
    since = None
    sqlite_file = make_url(url).database if url.startswith("sqlite") else None
    # reading SQLite's revision would create an empty file where there was none
    if sqlite_file is None or await asyncio.to_thread(Path(sqlite_file).exists):
        engine = create_async_engine(url)
        try:
            since = await current(engine)
        finally:
            await engine.dispose()
    return offline_sql(url, since)
