"""Which database errors mean "the database is away for now" rather than "this is wrong"."""

from __future__ import annotations

import sqlite3

import asyncpg
from sqlalchemy import exc as sa

# the connection went or could not be made, the server is shutting down or refusing
# connections, or it ran out of room (connections, disk): trying again later may work
_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # ConnectionError, TimeoutError, socket errors
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    # the connection's protocol state is broken: seen when the server's "terminating
    # connection" error reached a connection idle in a pool before its end of stream did
    # (asyncpg then refuses the next statement, "cannot switch to state 12; another
    # operation (2) is in progress"); the connection is of no more use, the database may be
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    sqlite3.OperationalError,  # locked, busy, disk full, unable to open
    sa.OperationalError,
    sa.InterfaceError,
    sa.DisconnectionError,
    sa.TimeoutError,  # the pool had no connection to give
)

# every type an unavailable database raises as, outermost: SQLAlchemy's wrappers included
UNAVAILABLE_TYPES: tuple[type[Exception], ...] = (*_UNAVAILABLE, sa.DBAPIError)


def is_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or what it wraps) says the database is unreachable or overloaded."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _UNAVAILABLE):
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else current.__cause__ or current.__context__
        )
    return False
