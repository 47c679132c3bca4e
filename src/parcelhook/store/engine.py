"""Database URLs and the SQLAlchemy engine for each of them."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# A commit that takes the WAL past this many pages copies it back into the database file
# itself. parcelhook's processes copy it on a thread of their own (store/checkpoints.py), so
# this is only the WAL's bound: 64 MB, sixteen times SQLite's default. At 4,000 pages the
# commits on the loop still copied (and synced) often enough to keep a third of the gain.
WAL_BOUND_PAGES = 16000

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA wal_autocheckpoint={WAL_BOUND_PAGES}",
)


# Every PostgreSQL session parcelhook opens (SQLAlchemy's, and the raw asyncpg ones in
# postgres.py).
# - jit: JIT compilation pays off for long analytical queries, never for ours: with a
#   large backlog the claim's cost estimate crossed jit_above_cost and each claim spent
#   ~12 ms compiling a 3 ms statement.
# - enable_seqscan: each statement is planned once per connection and its generic plan
#   kept (asyncpg prepares every statement). Planned while a table was small, or with no
#   statistics (a new database, a bulk load, a server with autovacuum off), that plan read
#   the whole table, and nothing replans it until the next ANALYZE: each outcome batch
#   read all of `deliveries` and each status change all of `parcels`, slower with every
#   row. Every statement we send has an index to use; with sequential scans priced out
#   the planner takes it whatever it knows (a statement with no index path still scans).
PG_SESSION_SETTINGS = {"jit": "off", "enable_seqscan": "off"}


def normalise_url(url: str) -> str:
    """SQLAlchemy URL with the async driver for `sqlite:` / `postgresql:` URLs."""
    u = make_url(url)
    if u.drivername in ("sqlite", "sqlite+pysqlite"):
        u = u.set(drivername="sqlite+aiosqlite")
    elif u.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


def single_writer(url: str) -> bool:
    """Whether the database lets one process write at a time (SQLite), so more serving
    processes would only queue for its lock."""
    return make_url(url).get_backend_name() == "sqlite"


def database_file(url: str) -> Path | None:
    """The file an embedded (SQLite) database lives in; None for a server or in memory."""
    if not single_writer(url):
        return None
    database = make_url(url).database
    return Path(database) if database and database != ":memory:" else None


def create_private(path: str | None) -> None:
    """Create the database file readable by its owner only, unless it exists: it holds
    account data and ciphertexts, and SQLite gives its -wal and -shm files the same mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


def open_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    """The engine for `url` (any spelling `normalise_url` takes), configured for parcelhook."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        create_private(make_url(url).database)
        # hide_parameters: a failed statement's error must not carry ciphertexts into logs
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT", hide_parameters=True)

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            for pragma in SQLITE_PRAGMAS:
                cur.execute(pragma)
            cur.close()

        return engine
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        hide_parameters=True,
        connect_args={"server_settings": dict(PG_SESSION_SETTINGS)},
    )

    @event.listens_for(engine.sync_engine, "checkout")
    def _alive(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        # A pooled connection the server or the network dropped (a failover, a restart,
        # pg_terminate_backend) is found out and replaced at checkout, not handed to a
        # caller: asyncpg marks it closed when the server's goodbye or the socket's end
        # arrives, and the pool then tries another (SQLAlchemy's pessimistic disconnect
        # handling). `pool_pre_ping` found the same by a ping, which on asyncpg is BEGIN,
        # an empty query and ROLLBACK: three round trips before every transaction, each
        # a socket write that costs the API more CPU than the statements' own work.
        if dbapi_conn.driver_connection.is_closed():
            raise DisconnectionError("the database closed this connection")

    return engine
