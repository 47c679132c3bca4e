"""What only PostgreSQL does: wake dispatchers on other hosts with LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("parcelhook.store")
NOTIFY_CHANNEL = "parcelhook_deliveries"


class DeliveryListener:
    """Calls `on_notify` whenever any process commits new deliveries; reconnects on loss."""

    def __init__(self, database_url: str, on_notify: Callable[[], None]) -> None:
        u = make_url(database_url)
        self._dsn = u.set(drivername="postgresql").render_as_string(hide_password=False)
        self._on_notify = on_notify
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            conn: Any = None
            try:
                conn = await asyncpg.connect(self._dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: self._on_notify())
                # anything committed while we were not listening is picked up now
                self._on_notify()
                await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection failed (%s); retrying", type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(1)


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
    INSERT INTO attempts (delivery_id, at_ms, duration_ms, status_code, error, response_excerpt)
    SELECT * FROM unnest($9::bigint[], $10::bigint[], $11::int[], $12::int[], $13::text[],
                         $14::text[])
), health AS (
    -- one update per integration ($15 succeeded, $16 failed, $18 answered 410), and only
    -- where something changes, so a run of successes rewrites no integration row
    UPDATE integrations SET
        failing_since_ms = CASE WHEN id = ANY($15::bigint[]) THEN NULL
                                ELSE COALESCE(failing_since_ms, $17) END,
        webhook_active = webhook_active AND NOT (id = ANY($18::bigint[])),
        last_updated_ms = CASE WHEN id = ANY($18::bigint[]) AND webhook_active
                               THEN $17 ELSE last_updated_ms END
    WHERE (id = ANY($15::bigint[]) AND failing_since_ms IS NOT NULL)
       OR (id = ANY($16::bigint[]) AND failing_since_ms IS NULL)
       OR (id = ANY($18::bigint[]) AND webhook_active)
)
UPDATE deliveries AS d SET
    status = o.status, attempt_count = d.attempt_count + o.inc, next_attempt_ms = o.next_ms,
    lease_owner = NULL, last_status_code = o.code, last_error = o.last_error,
    updated_ms = o.at_ms
FROM o WHERE d.id = o.id AND d.lease_owner = o.lease
"""


RELEASE_SQL = """
UPDATE deliveries SET next_attempt_ms = $1, lease_owner = NULL
WHERE id = ANY($2::bigint[]) AND lease_owner = ANY($3::text[]) AND status = 'pending'
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


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a pooled SQLAlchemy one (no transaction is opened)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection
