"""What only SQLite does: the dispatcher's statements on one aiosqlite connection of its own.

Why not through SQLAlchemy: every statement there is several hand-offs to aiosqlite's
thread (cursor, execute, fetch, close, the pool's reset) plus compiling an IN-list whose
length changes with every batch. Here each statement is one hand-off with fixed SQL text,
so sqlite3 prepares it once: a claim is one statement, an outcome batch five.
Lists are passed as JSON arrays (`json_each`), which keeps the SQL text fixed too.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterable
from typing import Any

import aiosqlite

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)

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

# ?1 due, ?2 ids (JSON), ?3 leases (JSON)
RELEASE_SQL = """
UPDATE deliveries SET next_attempt_ms = ?1, lease_owner = NULL
WHERE id IN (SELECT value FROM json_each(?2))
  AND lease_owner IN (SELECT value FROM json_each(?3))
  AND status = 'pending'
"""

ATTEMPTS_SQL = """
INSERT INTO attempts (delivery_id, at_ms, duration_ms, status_code, error, response_excerpt)
VALUES (?, ?, ?, ?, ?, ?)
"""

# the parameters in the order of Store.record_outcomes' state tuples
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
                           THEN ?4 ELSE last_updated_ms END
WHERE (id IN (SELECT value FROM json_each(?1)) AND failing_since_ms IS NOT NULL)
   OR (id IN (SELECT value FROM json_each(?2)) AND failing_since_ms IS NULL)
   OR (id IN (SELECT value FROM json_each(?3)) AND webhook_active)
"""

NEXT_DUE_SQL = "SELECT min(next_attempt_ms) FROM deliveries WHERE status = 'pending'"


def create_private(path: str | None) -> None:
    """Create the database file readable by its owner only, unless it exists: it holds
    account data and ciphertexts, and SQLite gives its -wal and -shm files the same mode."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


async def connect(path: str) -> aiosqlite.Connection:
    # autocommit (isolation_level None): a single statement commits by itself, and
    # multi-statement writes say BEGIN IMMEDIATE themselves
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row  # claimed rows read by name, as asyncpg's are
    for pragma in PRAGMAS:
        await conn.execute(pragma)
    return conn


def as_json(values: Iterable[Any] | dict[str, Any]) -> str:
    """A JSON array (any iterable) or object, as the statements' json_each/json_extract take."""
    return json.dumps(values if isinstance(values, dict) else list(values))
