"""SQLite on the event loop's own thread, for the API's transactions and reads.

Through aiosqlite each statement is three or four hand-offs to its thread and back (cursor,
execute, fetch, close), and a hand-off costs far more than the statement: a status change
took ~30 of them, the largest share of its CPU (docs/performance.md, "The API write path").
In WAL mode with `synchronous=NORMAL` a commit does not wait for the disk, so these short
statements run directly on the loop. The one wait that could block it, another process's
write lock, is waited for asynchronously instead (`begin_immediate`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")

# how long a statement may wait for a lock on the loop's thread; longer waits (for another
# process's write transaction) happen in begin_immediate, without blocking the loop
LOOP_BUSY_MS = 20
# how long a write waits for another process's write lock in all
WRITE_WAIT_S = 10.0


def loop_engine(async_engine_url: URL, pragmas: tuple[str, ...]) -> Engine | None:
    """A synchronous engine on the same SQLite file, or None for an in-memory database."""
    url = async_engine_url.set(drivername="sqlite")
    if not url.database or url.database == ":memory:":
        return None
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        # a failed statement's error must not carry ciphertexts into logs
        hide_parameters=True,
        # transactions are begun and ended explicitly; a connection is only ever returned
        # between them, so resetting it on return would be one more statement for nothing
        pool_reset_on_return=None,
        # a full pool would make connect() wait on a lock, blocking the loop that has to
        # give a connection back: never full (idle connections beyond 5 are closed)
        pool_size=5,
        max_overflow=-1,
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in pragmas:
            if not pragma.lower().startswith("pragma busy_timeout"):
                cur.execute(pragma)
        cur.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")
        cur.close()

    return engine


def raw_connection(path: str, pragmas: tuple[str, ...] = ()) -> sqlite3.Connection:
    """A plain sqlite3 connection for statements on the loop's thread (autocommit: writes
    say BEGIN IMMEDIATE themselves, through `begin_immediate`)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in pragmas:
        if not pragma.lower().startswith("pragma busy_timeout"):
            conn.execute(pragma)
    conn.execute(f"PRAGMA busy_timeout={LOOP_BUSY_MS}")
    return conn


def dbapi(conn: Connection) -> sqlite3.Connection:
    """The sqlite3 connection under a SQLAlchemy one (checked out, so never None)."""
    raw = conn.connection.dbapi_connection
    if not isinstance(raw, sqlite3.Connection):
        raise RuntimeError("not an open sqlite3 connection")
    return raw


class LoopConnection:
    """A synchronous Connection behind the awaitable methods `Tx` calls: no hand-offs."""

    def __init__(self, conn: Connection) -> None:
        self.sync_connection = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.execute(statement, parameters, **kw)

    async def exec_driver_sql(self, statement: str, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.exec_driver_sql(statement, parameters, **kw)

    async def scalar(self, statement: Any, parameters: Any = None, **kw: Any) -> Any:
        return self.sync_connection.scalar(statement, parameters, **kw)

    async def run_sync(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return fn(self.sync_connection, *args, **kw)

    def as_async(self) -> AsyncConnection:
        """Typed as what `Tx` takes: it calls only the methods above."""
        return cast(AsyncConnection, self)


async def begin_immediate(conn: Connection | sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting for another process's write lock without blocking the loop."""
    deadline = time.monotonic() + WRITE_WAIT_S
    pause = 0.002
    while True:
        try:
            if isinstance(conn, sqlite3.Connection):
                conn.execute("BEGIN IMMEDIATE")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            return
        except (OperationalError, sqlite3.OperationalError) as exc:
            reason = str(getattr(exc, "orig", exc))
            locked = "locked" in reason or "busy" in reason
            if not locked or time.monotonic() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)
