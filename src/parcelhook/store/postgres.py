"""What only PostgreSQL does: the dispatcher's statements as single asyncpg round trips,
and waking dispatchers on other hosts with LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import ApiKey, Integration
from parcelhook.domain.outcome import Outcome, health_changes
from parcelhook.group_commit import GroupCommit
from parcelhook.store import queue, raw_statements
from parcelhook.store.crypto import SecretBox
from parcelhook.store.engine import PG_SESSION_SETTINGS
from parcelhook.store.faults import is_unavailable
from parcelhook.store.tx import Tx, api_key_from_row
from parcelhook.supervision import Backoff, LoopHealth

log = logging.getLogger("parcelhook.store")
NOTIFY_CHANNEL = "parcelhook_deliveries"
# the LISTEN connection: how long connecting (or a ping) may take, and how often it pings
LISTEN_CONNECT_S = 10.0
LISTEN_PING_S = 30.0


class DeliveryListener:
    """Calls `on_notify` whenever any process commits new deliveries; reconnects on loss,
    and calls it once after each (re)connection, so commits made meanwhile are not missed."""

    def __init__(
        self,
        database_url: str,
        on_notify: Callable[[], None],
        health: LoopHealth | None = None,
    ) -> None:
        u = make_url(database_url)
        self._dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_notify = on_notify
        self._health = health
        if health is not None:
            # it turns at every ping: silent for longer than one ping and its timeout, it
            # is stuck (/healthz says so)
            health.turns_every_ms = int((LISTEN_PING_S + LISTEN_CONNECT_S) * 1000)
        self._backoff = Backoff(first_s=0.2, cap_s=10.0)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="listener")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            conn: Any = None
            try:
                conn = await asyncio.wait_for(asyncpg.connect(self._dsn), LISTEN_CONNECT_S)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: self._on_notify())
                # anything committed while we were not listening is picked up now
                self._on_notify()
                failures = 0
                while True:
                    if self._health is not None:
                        self._health.ok()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), LISTEN_PING_S)
                    if lost.is_set():
                        raise ConnectionError("the LISTEN connection was closed")
                    # a network that drops packets silently closes nothing: ask
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), LISTEN_CONNECT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._health is not None:
                    failures = self._health.failed(exc)
                else:
                    failures += 1
                    log.warning("LISTEN connection failed (%s); retrying", type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()  # never wait on a connection that may be dead
            await asyncio.sleep(self._backoff.delay(failures))


# The dispatcher's hot statements, one round trip each, autocommitted. The SQL text is
# fixed (arrays instead of IN-lists), so asyncpg prepares each once per connection.

CLAIM_SQL = """
WITH RECURSIVE ints(iid, first_ms) AS (
    -- each integration with pending deliveries and its earliest next_attempt_ms, one probe
    -- of deliveries_pending_integration each (a loose index scan): however long one
    -- integration's backlog, the claim does not walk it
    (SELECT integration_id, next_attempt_ms FROM deliveries WHERE status = 'pending'
     ORDER BY integration_id, next_attempt_ms LIMIT 1)
    UNION ALL
    SELECT n.integration_id, n.next_attempt_ms FROM ints CROSS JOIN LATERAL (
        SELECT integration_id, next_attempt_ms FROM deliveries
        WHERE status = 'pending' AND integration_id > ints.iid
        ORDER BY integration_id, next_attempt_ms LIMIT 1
    ) AS n
), room AS (
    -- those with something due, and how many each may take: its lane's room ($4 → $6,
    -- else $7; 0 leaves it out)
    SELECT ints.iid, LEAST(COALESCE(r.room, $7), $3) AS room
    FROM ints LEFT JOIN unnest($4::bigint[], $6::int[]) AS r(iid, room) ON r.iid = ints.iid
    WHERE ints.first_ms <= $1
), quota AS (
    -- the oldest due deliveries over all integrations, each within its room: how many of
    -- each integration's to take
    SELECT iid, count(*) AS n FROM (
        SELECT room.iid, o.next_attempt_ms
        FROM room CROSS JOIN LATERAL (
            SELECT next_attempt_ms FROM deliveries
            WHERE integration_id = room.iid AND status = 'pending' AND next_attempt_ms <= $1
            ORDER BY next_attempt_ms
            LIMIT room.room
        ) AS o
        WHERE room.room > 0
        ORDER BY o.next_attempt_ms
        LIMIT $3
    ) AS oldest
    GROUP BY iid
), due AS (
    -- lock that many of each, oldest first, skipping what another worker holds
    SELECT x.id FROM quota CROSS JOIN LATERAL (
        SELECT id FROM deliveries
        WHERE integration_id = quota.iid AND status = 'pending' AND next_attempt_ms <= $1
        ORDER BY next_attempt_ms
        LIMIT quota.n
        FOR UPDATE SKIP LOCKED
    ) AS x
    -- no-op (the quotas add up to at most $3), but it bounds the planner's estimate, which
    -- otherwise multiplies default guesses into a huge cost (Store.open turns JIT off too)
    LIMIT $3
), leased AS (
    UPDATE deliveries AS d SET next_attempt_ms = $2, lease_owner = $5
    WHERE d.id = ANY(ARRAY(SELECT id FROM due))
    RETURNING d.id, d.event_id, d.integration_id, d.attempt_count, d.schedule_base
)
SELECT l.id, l.event_id, l.integration_id, l.attempt_count, l.schedule_base,
       e.body, i.last_updated_ms
FROM leased AS l
JOIN events AS e ON e.id = l.event_id
JOIN integrations AS i ON i.id = l.integration_id
ORDER BY l.id
"""

OUTCOMES_SQL = """
WITH o AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::bigint[],
                         $6::int[], $7::text[], $8::bigint[])
        AS o(id, lease, status, inc, next_ms, code, last_error, at_ms)
), attempt AS (
    INSERT INTO attempts (delivery_id, at_ms, duration_ms, status_code, error, response_excerpt,
                          response_headers, url)
    SELECT * FROM unnest($9::bigint[], $10::bigint[], $11::int[], $12::int[], $13::text[],
                         $14::text[], $15::text[], $16::text[])
), health AS (
    -- one update per integration ($17 succeeded, $18 failed, $20 answered 410), and only
    -- where something changes, so a run of successes rewrites no integration row
    UPDATE integrations SET
        failing_since_ms = CASE WHEN id = ANY($17::bigint[]) THEN NULL
                                ELSE COALESCE(failing_since_ms, $19) END,
        webhook_active = webhook_active AND NOT (id = ANY($20::bigint[])),
        last_updated_ms = CASE WHEN id = ANY($20::bigint[]) AND webhook_active
                               THEN $19 ELSE last_updated_ms END,
        disabled_reason = CASE WHEN id = ANY($20::bigint[]) AND webhook_active
                               THEN 'its endpoint answered 410 Gone' ELSE disabled_reason END,
        disabled_ms = CASE WHEN id = ANY($20::bigint[]) AND webhook_active
                           THEN $19 ELSE disabled_ms END
    WHERE (id = ANY($17::bigint[]) AND failing_since_ms IS NOT NULL)
       OR (id = ANY($18::bigint[]) AND failing_since_ms IS NULL)
       OR (id = ANY($20::bigint[]) AND webhook_active)
)
UPDATE deliveries AS d SET
    status = o.status, attempt_count = d.attempt_count + o.inc, next_attempt_ms = o.next_ms,
    lease_owner = NULL, last_status_code = o.code, last_error = o.last_error,
    updated_ms = o.at_ms
FROM o WHERE d.id = o.id AND d.lease_owner = o.lease
"""


# as on SQLite (sqlite.py): of those that answered 410, the ones OUTCOMES_SQL turns off,
# locked until it has; then how they read after it
TURNING_OFF_SQL = """
SELECT id FROM integrations WHERE id = ANY($1::bigint[]) AND webhook_active FOR UPDATE
"""
TURNED_OFF_SQL = "SELECT * FROM integrations WHERE id = ANY($1::bigint[])"
EVENT_SQL = """
INSERT INTO events (id, account_id, action, timestamp_ms, body) VALUES ($1, $2, $3, $4, $5)
"""

# a dispatcher's heartbeat; those silent since $1, forgotten; a forgotten one's leases
# (an UPDATE first: it waits for a reaper's DELETE of the row and then finds nothing, so a
# dispatcher learns it was taken for dead)
BEAT_SQL = "UPDATE dispatchers SET heartbeat_ms = $2 WHERE owner = $1"
JOIN_SQL = """
INSERT INTO dispatchers (owner, heartbeat_ms) VALUES ($1, $2)
ON CONFLICT (owner) DO UPDATE SET heartbeat_ms = EXCLUDED.heartbeat_ms
"""
DEAD_SQL = "DELETE FROM dispatchers WHERE heartbeat_ms < $1 RETURNING owner"
REVIVE_SQL = """
UPDATE deliveries SET next_attempt_ms = $1, lease_owner = NULL
WHERE status = 'pending' AND left(lease_owner, length($2) + 1) = $2 || '#'
"""

RELEASE_SQL = """
UPDATE deliveries SET next_attempt_ms = $1, lease_owner = NULL
WHERE id = ANY($2::bigint[]) AND lease_owner = ANY($3::text[]) AND status = 'pending'
"""

RELEASE_CLAIM_SQL = """
UPDATE deliveries SET next_attempt_ms = $1, lease_owner = NULL
WHERE lease_owner = $2 AND status = 'pending'
"""


# the earliest next_attempt_ms of a pending delivery: each integration's, one probe of
# deliveries_pending_integration each (a loose index scan)
NEXT_DUE_SQL = """
WITH RECURSIVE ints(iid) AS (
    SELECT min(integration_id) FROM deliveries WHERE status = 'pending'
    UNION ALL
    SELECT (SELECT min(integration_id) FROM deliveries
            WHERE status = 'pending' AND integration_id > ints.iid)
    FROM ints WHERE ints.iid IS NOT NULL
)
SELECT min((SELECT min(next_attempt_ms) FROM deliveries
            WHERE status = 'pending' AND integration_id = ints.iid))
FROM ints WHERE ints.iid IS NOT NULL
"""


API_KEYS_SQL_PG = (
    "SELECT id, account_id, system, secret_key_enc, public_key FROM integrations"
    " WHERE public_key = ANY($1::text[]) AND deleted_ms IS NULL"
)


async def _nothing_to_reset(_conn: Any) -> None:
    pass


class PostgresQueue:
    """The `DeliveryQueue` on PostgreSQL, and the store's write transactions there."""

    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self._engine = engine
        self._box = box
        self._listener: DeliveryListener | None = None
        # the API's authentication and the dispatcher's statements, each on a small pool of
        # plain asyncpg connections (opened on first use); concurrent calls' key lookups
        # share one round trip
        self._keys: Any = None
        self._dispatch: Any = None
        self._opening = asyncio.Lock()
        # the claims', outcome batches' and next-due queries' connection, held rather than
        # taken from the pool for each: a checkout and its return were ~40 Python calls and
        # a task (asyncpg shields every release), three times per event when events arrive
        # one commit at a time. Claims and outcome writes take turns anyway (the
        # dispatcher's _db_turn); beats and releases, which must not wait behind them,
        # stay on the pool
        self._held: Any = None
        self._held_turn = asyncio.Lock()
        self._key_lookups: GroupCommit[str, ApiKey | None] = GroupCommit(
            self._api_keys, key=None, shared_failure=is_unavailable
        )

    async def _raw_pool(self, max_size: int) -> Any:
        """A pool of plain asyncpg connections for single autocommitted statements: nothing
        to reset on release (asyncpg rolls back a transaction left open, and replaces a
        connection found closed, a terminated backend's included, at acquire)."""
        url = self._engine.url.set(drivername="postgresql")
        return await asyncpg.create_pool(
            url.render_as_string(hide_password=False),
            min_size=1,
            max_size=max_size,
            reset=_nothing_to_reset,
            server_settings=dict(PG_SESSION_SETTINGS),
        )

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[Any]:
        """A connection of the dispatcher's own pool, for its beats and releases (claims,
        outcome batches and next-due queries use `_hot`). Not SQLAlchemy's pool: its checkout
        pinged every connection first when this was written (`pool_pre_ping`, on asyncpg
        BEGIN, an empty query and ROLLBACK: three round trips before each claim and each
        outcome batch, which took a worker from 42 to 119 µs and PostgreSQL from 47 to
        109 µs per delivery), and a checkout is still a dozen Python calls and a task."""
        if self._dispatch is None:
            async with self._opening:
                if self._dispatch is None:
                    # the heartbeats and lanes' releases
                    self._dispatch = await self._raw_pool(2)
        async with self._dispatch.acquire() as pg:
            try:
                yield pg
            except BaseException as exc:
                # a connection that failed or was left mid-statement is not reused
                if is_unavailable(exc) or isinstance(exc, asyncio.CancelledError):
                    pg.terminate()
                raise

    @asynccontextmanager
    async def _hot(self) -> AsyncIterator[Any]:
        """The held connection, one statement at a time; replaced when found closed (a
        terminated backend's included), dropped when it failed or was left mid-statement."""
        async with self._held_turn:
            pg = self._held
            if pg is None or pg.is_closed():
                url = self._engine.url.set(drivername="postgresql")
                pg = self._held = await asyncpg.connect(
                    url.render_as_string(hide_password=False),
                    server_settings=dict(PG_SESSION_SETTINGS),
                )
            try:
                yield pg
            except BaseException as exc:
                if is_unavailable(exc) or isinstance(exc, asyncio.CancelledError):
                    self._held = None
                    pg.terminate()
                raise

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self._engine.begin() as conn:
            tx = Tx(conn, self._box)
            tx.notify_channel = NOTIFY_CHANNEL
            yield tx
            if tx.queued and not tx.notified:
                await conn.execute(text("SELECT pg_notify(:c, '')"), {"c": NOTIFY_CHANNEL})

    @asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        yield  # PostgreSQL has many writers

    @asynccontextmanager
    async def reading(self) -> AsyncIterator[Tx]:
        async with self._engine.connect() as conn:
            # each statement on its own, as on SQLite: without this SQLAlchemy wraps the
            # reads in BEGIN … ROLLBACK, two more round trips (an API call's authentication
            # took three)
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield Tx(conn, self._box)

    def browsing(self) -> AbstractAsyncContextManager[Tx]:
        return self.reading()  # asyncpg never blocks the loop

    async def api_key(self, public_key: str) -> ApiKey | None:
        """Every API call's lookup, read when the call has arrived, so a deleted key stops
        at once. Lookups made meanwhile by other calls share one round trip: through
        SQLAlchemy's pool each was three (the checkout's ping, the statement, the rollback
        on return), and even one was a quarter of a status change's CPU."""
        return await self._key_lookups.submit(public_key)

    async def _api_keys(self, public_keys: Sequence[str]) -> list[ApiKey | Exception | None]:
        pool = await self._key_pool()
        wanted = list(set(public_keys))
        for attempt in (1, 2):
            raw_statements.sent(API_KEYS_SQL_PG)
            async with pool.acquire() as pg:
                try:
                    rows = await pg.fetch(API_KEYS_SQL_PG, wanted)
                    break
                except BaseException as exc:
                    if not (is_unavailable(exc) or isinstance(exc, asyncio.CancelledError)):
                        raise
                    # never back into the pool: a connection the server ended while it sat
                    # idle there is handed out until its end of stream is read, and answers
                    # "another operation is in progress" (or may never recover) meanwhile
                    pg.terminate()
                    # a read, so once more on a fresh connection: a stale one need not cost
                    # a 503. Not after a failed connect (raised by `acquire`, out of this
                    # try), which may have waited for its whole timeout already
                    if attempt == 2 or not isinstance(exc, Exception):
                        raise
        found = {row["public_key"]: api_key_from_row(row, self._box) for row in rows}
        return [found.get(k) for k in public_keys]

    async def _key_pool(self) -> Any:
        if self._keys is None:
            async with self._opening:
                if self._keys is None:
                    self._keys = await self._raw_pool(2)
        return self._keys

    def listen(
        self, wake: Callable[[], None], health: LoopHealth | None = None
    ) -> asyncio.Task[None] | None:
        if self._listener is not None:
            return None
        url = self._engine.url.render_as_string(hide_password=False)
        self._listener = DeliveryListener(url, wake, health)
        return self._listener.start()

    async def close(self) -> None:
        for pool in (self._keys, self._dispatch):
            if pool is not None:
                await pool.close()
        self._keys = self._dispatch = None
        held, self._held = self._held, None
        if held is not None:
            held.terminate()  # idle between statements, or its statement is abandoned
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.stop()

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
        async with self._hot() as pg:
            rows = await pg.fetch(
                CLAIM_SQL,
                now_ms,
                now_ms + lease_ms,
                limit,
                list(room),
                lease,
                list(room.values()),
                default,
            )
        return [queue.claimed_from_row(r) for r in rows]

    async def release(self, leases: Sequence[str], ids: Sequence[int], due_ms: int) -> None:
        if not ids:
            return
        async with self._conn() as pg:
            await pg.execute(RELEASE_SQL, due_ms, list(ids), list(set(leases)))

    async def release_claim(self, lease: str, due_ms: int) -> None:
        async with self._conn() as pg:
            await pg.execute(RELEASE_CLAIM_SQL, due_ms, lease)

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        attempts, states = queue.outcome_rows(outcomes)
        health = health_changes(outcomes)
        now = max(o.at_ms for o in outcomes)
        columns = [list(c) for c in zip(*states, strict=True)]
        columns += [list(c) for c in zip(*attempts, strict=True)] or [[]] * 8
        args = (*columns, list(health.ok), list(health.failing), now, list(health.gone))
        async with self._hot() as pg:
            if not health.gone:
                await pg.execute(OUTCOMES_SQL, *args)
                return
            # rare (an endpoint answered 410): the webhooks it turns off emit their
            # integration_updated in the same transaction
            async with pg.transaction():
                off = [r["id"] for r in await pg.fetch(TURNING_OFF_SQL, list(health.gone))]
                await pg.execute(OUTCOMES_SQL, *args)
                if off:
                    rows = await pg.fetch(TURNED_OFF_SQL, off)
                    await pg.executemany(EVENT_SQL, queue.turned_off_events(rows, self._box, now))

    async def next_due_ms(self) -> int | None:
        async with self._hot() as pg:
            due = await pg.fetchval(NEXT_DUE_SQL)
        return None if due is None else int(due)

    async def heartbeat(self, owner: str, now_ms: int, dead_after_ms: int) -> queue.Beat:
        async with self._conn() as pg:
            known = await pg.execute(BEAT_SQL, owner, now_ms) == "UPDATE 1"
            if not known:
                await pg.execute(JOIN_SQL, owner, now_ms)
            dead = [r["owner"] for r in await pg.fetch(DEAD_SQL, now_ms - dead_after_ms)]
            revived = 0
            for gone in dead:  # rare: a process that died without giving its leases back
                status = await pg.execute(REVIVE_SQL, now_ms, gone)
                revived += int(status.split()[-1])
        return queue.Beat(known, revived)

    async def integrations_by_id(self, ids: Iterable[int]) -> dict[int, Integration]:
        return await queue.integrations_by_id(self._engine, self._box, ids)
