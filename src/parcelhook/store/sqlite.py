"""What only SQLite does: the dispatcher's statements on one sqlite3 connection of its own.

Why not through SQLAlchemy: every statement there is several hand-offs to aiosqlite's
thread (cursor, execute, fetch, close, the pool's reset) plus compiling an IN-list whose
length changes with every batch. Here the statements run on the event loop's own thread
(as the API's do, sqlite_loop.py) with fixed SQL text, so sqlite3 prepares each once: a
claim is one statement in its transaction, an outcome batch five. Through aiosqlite each was
a hand-off to its thread and a wake-up of the loop, 3.7 % of `serve`'s CPU end to end in the
semaphore posts alone (docs/performance.md, "The dispatcher's SQLite statements on the
loop"). Lists are passed as JSON arrays (`json_each`), which keeps the SQL text fixed too.

SQLite has one writer, so this process's writers (the store's transactions and the
dispatcher's statements) take turns on one lock rather than in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import ApiKey, Integration
from parcelhook.domain.outcome import Outcome, health_changes
from parcelhook.store import queue, raw_statements, sqlite_loop
from parcelhook.store.checkpoints import Checkpointer
from parcelhook.store.crypto import SecretBox
from parcelhook.store.engine import SQLITE_PRAGMAS as PRAGMAS
from parcelhook.store.faults import is_unavailable
from parcelhook.store.tx import API_KEY_SQL, Tx, api_key_from_row
from parcelhook.store.write_turns import WriteTurns
from parcelhook.supervision import LoopHealth

# a claim reads at most this many times its batch of due deliveries in time order, then
# keeps those within their lane's room: its cost is bounded whatever the backlog
CLAIM_SCAN_FACTOR = 4

# ?1 lease end, ?2 lease token, ?3 now, ?4 integrations to leave out (JSON array),
# ?5 limit, ?6 room by integration id (JSON object), ?7 room of any other, ?8 rows to read
CLAIM_SQL = """
UPDATE deliveries SET next_attempt_ms = ?1, lease_owner = ?2
WHERE id IN (
    SELECT id FROM (
        SELECT id, next_attempt_ms,
            row_number() OVER (PARTITION BY integration_id ORDER BY next_attempt_ms, id) AS n,
            coalesce(json_extract(?6, '$."' || integration_id || '"'), ?7) AS room
        FROM (
            SELECT id, integration_id, next_attempt_ms FROM deliveries
            WHERE status = 'pending' AND next_attempt_ms <= ?3
              AND integration_id NOT IN (SELECT value FROM json_each(?4))
            ORDER BY next_attempt_ms
            LIMIT ?8
        )
    )
    WHERE n <= room
    ORDER BY next_attempt_ms
    LIMIT ?5
)
RETURNING id, event_id, integration_id, attempt_count, schedule_base,
    -- the CAST gives the RETURNING column an affinity again; without it SQLite scans events
    (SELECT body FROM events WHERE events.id = CAST(deliveries.event_id AS TEXT)) AS body,
    (SELECT last_updated_ms FROM integrations WHERE integrations.id = deliveries.integration_id)
        AS last_updated_ms
"""

# a dispatcher's heartbeat; those silent since ?1, forgotten; a forgotten one's leases
BEAT_SQL = "UPDATE dispatchers SET heartbeat_ms = ?2 WHERE owner = ?1"
JOIN_SQL = """
INSERT INTO dispatchers (owner, heartbeat_ms) VALUES (?1, ?2)
ON CONFLICT (owner) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms
"""
DEAD_SQL = "DELETE FROM dispatchers WHERE heartbeat_ms < ?1 RETURNING owner"
REVIVE_SQL = """
UPDATE deliveries SET next_attempt_ms = ?1, lease_owner = NULL
WHERE status = 'pending' AND substr(lease_owner, 1, length(?2) + 1) = ?2 || '#'
"""

# ?1 due, ?2 ids (JSON), ?3 leases (JSON)
RELEASE_SQL = """
UPDATE deliveries SET next_attempt_ms = ?1, lease_owner = NULL
WHERE id IN (SELECT value FROM json_each(?2))
  AND lease_owner IN (SELECT value FROM json_each(?3))
  AND status = 'pending'
"""
RELEASE_CLAIM_SQL = """
UPDATE deliveries SET next_attempt_ms = ?1, lease_owner = NULL
WHERE lease_owner = ?2 AND status = 'pending'
"""

ATTEMPTS_SQL = """
INSERT INTO attempts (delivery_id, at_ms, duration_ms, status_code, error, response_excerpt,
                      response_headers, url)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""

# the parameters in the order of queue.outcome_rows' state tuples
STATES_SQL = """
UPDATE deliveries SET
    status = ?3, attempt_count = attempt_count + ?4, next_attempt_ms = ?5, lease_owner = NULL,
    last_status_code = ?6, last_error = ?7, updated_ms = ?8
WHERE id = ?1 AND lease_owner = ?2
"""

# as OUTCOMES_SQL's health step on PostgreSQL: ?1 succeeded, ?2 failed, ?3 answered 410
# (JSON arrays), ?4 now; only rows where something changes are written
HEALTH_SQL = """
UPDATE integrations SET
    failing_since_ms = CASE WHEN id IN (SELECT value FROM json_each(?1)) THEN NULL
                            ELSE COALESCE(failing_since_ms, ?4) END,
    webhook_active = webhook_active AND id NOT IN (SELECT value FROM json_each(?3)),
    last_updated_ms = CASE WHEN id IN (SELECT value FROM json_each(?3)) AND webhook_active
                           THEN ?4 ELSE last_updated_ms END,
    disabled_reason = CASE WHEN id IN (SELECT value FROM json_each(?3)) AND webhook_active
                           THEN 'its endpoint answered 410 Gone' ELSE disabled_reason END,
    disabled_ms = CASE WHEN id IN (SELECT value FROM json_each(?3)) AND webhook_active
                       THEN ?4 ELSE disabled_ms END
WHERE (id IN (SELECT value FROM json_each(?1)) AND failing_since_ms IS NOT NULL)
   OR (id IN (SELECT value FROM json_each(?2)) AND failing_since_ms IS NULL)
   OR (id IN (SELECT value FROM json_each(?3)) AND webhook_active)
"""

# of the integrations that answered 410 (?1, JSON), those HEALTH_SQL is about to turn off;
# then how they read after it, for the integration_updated each emits
TURNING_OFF_SQL = """
SELECT id FROM integrations WHERE id IN (SELECT value FROM json_each(?1)) AND webhook_active
"""
TURNED_OFF_SQL = "SELECT * FROM integrations WHERE id IN (SELECT value FROM json_each(?1))"
EVENT_SQL = "INSERT INTO events (id, account_id, action, timestamp_ms, body) VALUES (?, ?, ?, ?, ?)"

API_KEY_SQL_SQLITE = API_KEY_SQL.format("?")

NEXT_DUE_SQL = "SELECT min(next_attempt_ms) FROM deliveries WHERE status = 'pending'"


def connect(path: str) -> sqlite3.Connection:
    """The dispatcher's connection, used on the loop's thread: autocommit, and its writes
    say BEGIN IMMEDIATE themselves (`SqliteQueue._writing`)."""
    conn = sqlite_loop.raw_connection(path, PRAGMAS)
    conn.row_factory = sqlite3.Row  # claimed rows read by name, as asyncpg's are
    return conn


def as_json(values: Iterable[Any] | dict[str, Any]) -> str:
    """A JSON array (any iterable) or object, as the statements' json_each/json_extract take."""
    return json.dumps(values if isinstance(values, dict) else list(values))


class SqliteQueue:
    """The `DeliveryQueue` on SQLite, and the store's write transactions there."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        # this process's write turn; the dispatcher's writes go first (write_turns.py)
        self._turns = WriteTurns()
        # the dispatcher's own connection, opened on first use
        self._hot: sqlite3.Connection | None = None
        # the API's transactions and reads, on the loop's own thread (sqlite_loop.py)
        self._loop = sqlite_loop.loop_engine(engine.url, PRAGMAS)
        # the API's authentication, one raw statement on the loop's thread (opened on use)
        self._keys: sqlite3.Connection | None = None
        # the WAL copied back into the database file off the loop's thread, from the first
        # write on (the file exists by then)
        database = engine.url.database
        self._checkpoints = Checkpointer(database) if self._loop is not None and database else None

    def _conn(self) -> sqlite3.Connection:
        """The dispatcher's connection: the one place this queue obtains it."""
        if self._hot is None:
            database = self._engine.url.database
            if not database or database == ":memory:":
                raise ValueError("an in-memory SQLite database cannot be shared")
            self._hot = connect(database)
        return self._hot

    @property
    def checkpoints(self) -> Checkpointer | None:
        """The thread that copies the WAL back (None for an in-memory database)."""
        return self._checkpoints

    def _checkpointing(self) -> None:
        if self._checkpoints is not None:
            self._checkpoints.start()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[sqlite3.Connection]:
        """The dispatcher's connection in a write transaction (BEGIN IMMEDIATE, waited for
        without blocking the loop), in this process's write turn; committed at the end."""
        async with self._turns.turn(first=True):
            self._checkpointing()
            hot = self._conn()
            try:
                if hot.in_transaction:
                    # left open by a write cancelled halfway: a statement run inside it
                    # would never commit
                    hot.execute("ROLLBACK")
                await sqlite_loop.begin_immediate(hot)
                yield hot
                hot.execute("COMMIT")
            except BaseException as exc:
                # SQLite may have rolled it back itself (a full disk): a ROLLBACK would then
                # fail and hide why
                if hot.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        hot.execute("ROLLBACK")
                if is_unavailable(exc) and not any(w in str(exc) for w in ("locked", "full")):
                    # an I/O error may leave the connection unusable: the next write opens a
                    # fresh one. Not after a full disk: SQLite ends the failed statement or
                    # transaction itself, and a connection closed while a failed cursor is
                    # still referenced (a logged traceback holds one) lingers as a zombie
                    # that kept the write lock, so the fresh one was "locked" for good
                    self._hot = None
                    with contextlib.suppress(Exception):
                        hot.close()
                raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        if self._loop is None:  # an in-memory database: aiosqlite's one connection
            async with self._turns.turn(), self._engine.connect() as conn:
                # IMMEDIATE takes the write lock up front, so no transaction fails halfway
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    yield Tx(conn, self._box)
                except BaseException:
                    await conn.exec_driver_sql("ROLLBACK")
                    raise
                await conn.exec_driver_sql("COMMIT")
            return
        async with self._turns.turn():
            self._checkpointing()
            with self._loop.connect() as sync:
                # BEGIN and COMMIT straight on sqlite3: through exec_driver_sql each was a
                # SQLAlchemy execution context and cursor result, ~1 % of a status change
                raw = sqlite_loop.dbapi(sync)
                raw_statements.sent("BEGIN IMMEDIATE")
                await sqlite_loop.begin_immediate(raw)
                try:
                    yield Tx(sqlite_loop.LoopConnection(sync).as_async(), self._box)
                    raw_statements.sent("COMMIT")
                    raw.execute("COMMIT")
                except BaseException:
                    # a full disk or an I/O error may have rolled it back already (then a
                    # ROLLBACK fails, and would hide why); a failed COMMIT may leave it open,
                    # and a connection back in the pool must never hold the write lock
                    if raw.in_transaction:
                        raw_statements.sent("ROLLBACK")
                        raw.execute("ROLLBACK")
                    raise

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        if self._loop is None:
            async with self._engine.connect() as conn:
                yield Tx(conn, self._box)
            return
        with self._loop.connect() as sync:
            yield Tx(sqlite_loop.LoopConnection(sync).as_async(), self._box)

    async def api_key(self, public_key: str) -> ApiKey | None:
        """Every API call's lookup: one statement straight on sqlite3, on the loop's thread
        (through SQLAlchemy, with its pool, it was ~15 % of a status change's CPU)."""
        if self._loop is None:
            async with self.reading() as r:
                return await r.api_key(public_key)
        if self._keys is None:
            self._keys = sqlite_loop.raw_connection(str(self._engine.url.database))
        raw_statements.sent(API_KEY_SQL_SQLITE)
        try:
            row = self._keys.execute(API_KEY_SQL_SQLITE, (public_key,)).fetchone()
        except sqlite3.Error:
            # a disk or I/O error may leave the connection unusable: the next call opens anew
            keys, self._keys = self._keys, None
            keys.close()
            raise
        return api_key_from_row(row, self._box) if row else None

    @asynccontextmanager
    async def browsing(self) -> AsyncIterator[Tx]:
        # aiosqlite's thread: a few hand-offs more per statement, and the loop stays free
        # (a log filter no index narrows walks 200,000 deliveries in ~90 ms)
        async with self._engine.connect() as conn:
            yield Tx(conn, self._box)

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        async with self._turns.turn():
            yield

    def listen(
        self, wake: Callable[[], None], health: LoopHealth | None = None
    ) -> asyncio.Task[None] | None:
        return None  # other processes on SQLite are noticed by polling

    async def close(self) -> None:
        checkpoints, self._checkpoints = self._checkpoints, None
        if checkpoints is not None:
            await asyncio.to_thread(checkpoints.stop)
        keys, self._keys = self._keys, None
        if keys is not None:
            keys.close()
        if self._loop is not None:
            self._loop.dispose()
        hot, self._hot = self._hot, None
        if hot is not None:
            hot.close()

    async def claim_due(
        self,
        lease: str,
        now_ms: int,
        lease_ms: int,
        limit: int,
        room: Mapping[int, int] | None = None,
        default_room: int | None = None,
    ) -> list[Claimed]:
        room = room or {}
        default = limit if default_room is None else default_room
        full = [i for i, r in room.items() if r <= 0]
        rooms = {str(i): r for i, r in room.items() if r > 0}
        async with self._writing() as hot:
            rows = hot.execute(
                CLAIM_SQL,
                (
                    now_ms + lease_ms,
                    lease,
                    now_ms,
                    as_json(full),
                    limit,
                    as_json(rooms),
                    default,
                    limit * CLAIM_SCAN_FACTOR,
                ),
            ).fetchall()
        # RETURNING has no order; PostgreSQL's claim returns them by id too
        return [queue.claimed_from_row(r) for r in sorted(rows, key=lambda r: r["id"])]

    async def release(self, leases: Sequence[str], ids: Sequence[int], due_ms: int) -> None:
        if not ids:
            return
        async with self._writing() as hot:
            hot.execute(RELEASE_SQL, (due_ms, as_json(ids), as_json(set(leases))))

    async def release_claim(self, lease: str, due_ms: int) -> None:
        async with self._writing() as hot:
            hot.execute(RELEASE_CLAIM_SQL, (due_ms, lease))

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        attempts, states = queue.outcome_rows(outcomes)
        health = health_changes(outcomes)
        now = max(o.at_ms for o in outcomes)
        async with self._writing() as hot:
            if attempts:
                hot.executemany(ATTEMPTS_SQL, attempts)
            hot.executemany(STATES_SQL, states)
            if health:
                gone = as_json(health.gone)
                # rare (an endpoint answered 410): the write lock is held, so exactly these
                # are turned off by this batch
                off = []
                if health.gone:
                    off = [r[0] for r in hot.execute(TURNING_OFF_SQL, (gone,)).fetchall()]
                hot.execute(HEALTH_SQL, (as_json(health.ok), as_json(health.failing), gone, now))
                if off:
                    rows = hot.execute(TURNED_OFF_SQL, (as_json(off),)).fetchall()
                    hot.executemany(EVENT_SQL, queue.turned_off_events(rows, self._box, now))

    async def next_due_ms(self) -> int | None:
        hot = self._conn()
        [(due,)] = hot.execute(NEXT_DUE_SQL).fetchall()
        return None if due is None else int(due)

    async def heartbeat(self, owner: str, now_ms: int, dead_after_ms: int) -> queue.Beat:
        async with self._writing() as hot:
            known = hot.execute(BEAT_SQL, (owner, now_ms)).rowcount == 1
            if not known:
                hot.execute(JOIN_SQL, (owner, now_ms))
            dead = [r[0] for r in hot.execute(DEAD_SQL, (now_ms - dead_after_ms,)).fetchall()]
            revived = 0
            for gone in dead:  # rare: a process that died without giving its leases back
                revived += hot.execute(REVIVE_SQL, (now_ms, gone)).rowcount
        return queue.Beat(known, revived)

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        return await queue.integrations_by_id(self._engine, self._box, ids)
