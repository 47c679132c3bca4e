"""The ingest path's statements straight on the driver (sqlite3, asyncpg): status changes in
batches (`/tracking-updates`, group commit) and the events and deliveries they queue.

Through SQLAlchemy each row of a batch was a dict bound column by column, and each row read
back a `Row` read by attribute: per event, more CPU than SQLite or PostgreSQL spent running
the statements (docs/performance.md, "Store-side ingest"). Here rows go in and come back as
tuples, and the SQL text is fixed (JSON arrays on SQLite, arrays on PostgreSQL), so each
driver prepares a statement once. The statements run on the transaction's own connection,
so they commit or roll back with the rest of it; each is told to `raw_statements`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from parcelhook.domain.events import Event
from parcelhook.domain.integrations import Integration
from parcelhook.domain.parcels import Parcel
from parcelhook.domain.tracking import StatusChange
from parcelhook.store import raw_statements
from parcelhook.store import schema as s

# a parcel's columns in the order of `Parcel`'s fields (parcel_from_values)
PARCEL_COLUMNS = (
    "id, account_id, integration_id, name, company_name, address, house_number, city,"
    " postal_code, country, telephone, email, weight, order_number, external_order_id,"
    " external_shipment_id, shipment_id, tracking_number, is_return, status_id, created_ms,"
    " updated_ms, carrier_status_change_ms, details, announced_ms, external_reference"
)


def parcel_from_values(r: Sequence[Any]) -> Parcel:
    """A parcel from its PARCEL_COLUMNS, in order (a driver's row)."""
    details = r[23]
    return Parcel(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        r[13],
        r[14],
        r[15],
        r[16],
        r[17],
        bool(r[18]),
        r[19],
        r[20],
        r[21],
        r[22],
        json.loads(details) if details else {},
        r[24],
        r[25],
    )


# a new parcel's columns, in the order insert_parcel's values come in
NEW_PARCEL_COLUMNS = (
    "account_id, integration_id, name, company_name, address, house_number, city, postal_code,"
    " country, telephone, email, weight, order_number, external_order_id,"
    " external_shipment_id, shipment_id, is_return, status_id, created_ms, updated_ms,"
    " external_reference, details"
)
NEW_PARCEL_NAMES = tuple(c.strip() for c in NEW_PARCEL_COLUMNS.split(","))
_NEW_PARCEL_COUNT = len(NEW_PARCEL_NAMES)


def _insert_parcel_sql(next_id: str, tracking: str, placeholders: Sequence[str]) -> str:
    """A parcel's INSERT with its tracking number, one statement: the id is taken first (a
    row's own id cannot be read while it is inserted), then it and the tracking number
    made of it (`tracking`: the SQL of `domain.parcels.tracking_number` of `n.id`) go in."""
    return f"""
WITH n AS ({next_id})
INSERT INTO parcels (id, tracking_number, {NEW_PARCEL_COLUMNS})
VALUES ((SELECT id FROM n), (SELECT {tracking} FROM n), {", ".join(placeholders)})
RETURNING id
"""


# -- SQLite (sqlite3's DB-API, on the transaction's connection) ---------------------------

# the rowid SQLite itself would give the row (one more than the largest); the transaction
# holds the write lock, so nobody else takes it meanwhile
SQLITE_INSERT_PARCEL = _insert_parcel_sql(
    "SELECT coalesce(max(id), 0) + 1 AS id FROM parcels",
    "'3SPH' || printf('%010d', n.id)",
    ["?"] * _NEW_PARCEL_COUNT,
)

# ?1 account, ?2 parcel ids (JSON array)
# `+account_id` (and `account_id + 0` on PostgreSQL) keeps the account out of the index
# choice: with no statistics (a new database, or autovacuum off) both planners took an index
# that starts with account_id and walked all of the account's parcels for each batch, the
# primary key left unused (tests/integration/test_query_plans.py)
SQLITE_PARCELS_OF = f"""
SELECT {PARCEL_COLUMNS} FROM parcels
WHERE id IN (SELECT value FROM json_each(?2)) AND +account_id = ?1 ORDER BY id
"""
SQLITE_INTEGRATIONS = "SELECT * FROM integrations WHERE id IN (SELECT value FROM json_each(?1))"
SQLITE_SET_STATUS = """
UPDATE parcels SET status_id = ?2, updated_ms = ?3, carrier_status_change_ms = ?4 WHERE id = ?1
"""
# A batch of status changes (group commit), one statement: each item's parcel, if the item's
# account has it and its status differs, gets the status and a change time strictly after its
# previous one. ?1 is a JSON array of [parcel, account, status, carrier ms], ?2 now
# (json_extract rather than ->>, which needs SQLite 3.38).
SQLITE_CHANGE_STATUSES = f"""
UPDATE parcels SET status_id = x.sid, carrier_status_change_ms = x.cms,
    updated_ms = CASE WHEN parcels.updated_ms >= ?2 THEN parcels.updated_ms + 1 ELSE ?2 END
FROM (SELECT json_extract(value, '$[0]') AS pid, json_extract(value, '$[1]') AS aid,
             json_extract(value, '$[2]') AS sid, json_extract(value, '$[3]') AS cms
      FROM json_each(?1)) AS x
WHERE parcels.id = x.pid AND parcels.account_id = x.aid AND parcels.status_id <> x.sid
RETURNING {PARCEL_COLUMNS}
"""
SQLITE_EVENT = (
    "INSERT INTO events (id, account_id, action, timestamp_ms, body) VALUES (?, ?, ?, ?, ?)"
)
# ?6: now, as the delivery's due time, creation and update time
SQLITE_DELIVERY = """
INSERT INTO deliveries (event_id, integration_id, account_id, action, parcel_id, status,
    attempt_count, schedule_base, next_attempt_ms, created_ms, updated_ms)
VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, 0, ?6, ?6, ?6)
"""


def _fetch(db: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    raw_statements.sent(sql)
    cursor = db.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _executemany(db: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    raw_statements.sent(sql)
    cursor = db.cursor()
    try:
        cursor.executemany(sql, rows)
    finally:
        cursor.close()


def sqlite_insert_parcel(db: Any, values: Sequence[Any]) -> int:
    """Insert a parcel (NEW_PARCEL_COLUMNS) with its tracking number; its id."""
    [(new_id,)] = _fetch(db, SQLITE_INSERT_PARCEL, values)
    return int(new_id)


def sqlite_parcels_of(db: Any, account_id: int, ids: Iterable[int]) -> dict[int, Parcel]:
    rows = _fetch(db, SQLITE_PARCELS_OF, (account_id, json.dumps(list(ids))))
    return {r[0]: parcel_from_values(r) for r in rows}


def sqlite_integrations(db: Any, ids: Iterable[int]) -> list[dict[str, Any]]:
    """Integrations by id, each as a mapping of column name to value."""
    raw_statements.sent(SQLITE_INTEGRATIONS)
    cursor = db.cursor()
    try:
        cursor.execute(SQLITE_INTEGRATIONS, (json.dumps(list(ids)),))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        cursor.close()


def sqlite_set_statuses(db: Any, parcels: Sequence[Parcel]) -> None:
    rows = [(p.id, p.status_id, p.updated_ms, p.carrier_status_change_ms) for p in parcels]
    _executemany(db, SQLITE_SET_STATUS, rows)


def sqlite_change_statuses(
    db: Any, changes: Sequence[StatusChange], now_ms: int
) -> dict[int, tuple[Parcel, Integration | None]]:
    items = json.dumps([[c.parcel_id, c.account_id, c.status_id, c.carrier_ms] for c in changes])
    rows = _fetch(db, SQLITE_CHANGE_STATUSES, (items, now_ms))
    return {r[0]: (parcel_from_values(r), None) for r in rows}


def sqlite_enqueue(
    db: Any, batch: Sequence[tuple[Event, Sequence[Integration]]], now_ms: int
) -> bool:
    """Store the events and their deliveries; whether there were any deliveries."""
    _executemany(
        db,
        SQLITE_EVENT,
        [(e.id, e.account_id, e.action, e.timestamp_ms, e.body.decode("ascii")) for e, _ in batch],
    )
    deliveries = [
        (e.id, i.id, e.account_id, e.action, e.parcel_id, now_ms)
        for e, recipients in batch
        for i in recipients
    ]
    if deliveries:
        _executemany(db, SQLITE_DELIVERY, deliveries)
    return bool(deliveries)


# -- PostgreSQL (asyncpg, on the transaction's connection) --------------------------------

PG_INSERT_PARCEL = _insert_parcel_sql(
    "SELECT nextval(pg_get_serial_sequence('parcels', 'id')) AS id",
    # lpad cuts a longer string: an id of more than 10 digits keeps them all, as in Python
    "'3SPH' || lpad(n.id::text, greatest(10, length(n.id::text)), '0')",
    [f"${k}" for k in range(1, _NEW_PARCEL_COUNT + 1)],
)
PG_PARCELS_OF = f"""
SELECT {PARCEL_COLUMNS} FROM parcels
WHERE id = ANY($2::bigint[]) AND account_id + 0 = $1 ORDER BY id FOR UPDATE
"""
PG_SET_STATUSES = """
UPDATE parcels AS p SET status_id = x.sid, updated_ms = x.ums, carrier_status_change_ms = x.cms
FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::bigint[]) AS x(id, sid, ums, cms)
WHERE p.id = x.id
"""
_OWNER = ", ".join(f"i.{c.name} AS owner_{c.name}" for c in s.integrations.c)
# As on SQLite, but the rows are locked in id order first, as every writer of several parcels
# locks them, so that concurrent batches (other processes, /tracking-updates) cannot
# deadlock; a row another writer changed meanwhile is re-checked against its latest version.
# Each parcel's integration comes back with it (one round trip less). Parcels are found by
# id alone and their account compared after (the locked row's, which never changes): a join
# on account_id let the planner, with no statistics, walk the whole account through an
# index starting with it, for each parcel (5.4 ms for 19 changes among 1,000 parcels, and
# growing with the account; 1.4 ms through the primary key). A parcel id of another
# account is locked for the batch's few milliseconds and left unchanged.
PG_CHANGE_STATUSES = f"""
WITH x AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bigint[])
        AS x(pid, aid, sid, cms)
), locked AS MATERIALIZED (
    SELECT p.id, p.account_id FROM parcels AS p WHERE p.id = ANY($1::bigint[])
    ORDER BY p.id FOR UPDATE OF p
)
UPDATE parcels AS p SET status_id = x.sid, carrier_status_change_ms = x.cms,
    updated_ms = CASE WHEN p.updated_ms >= $5 THEN p.updated_ms + 1 ELSE $5 END
FROM x JOIN locked AS l ON l.id = x.pid AND l.account_id = x.aid, integrations AS i
WHERE p.id = l.id AND p.status_id <> x.sid AND i.id = p.integration_id
RETURNING {", ".join("p." + c.strip() for c in PARCEL_COLUMNS.split(","))}, {_OWNER}
"""
# events, deliveries and the wake-up in one round trip ($12: NOTIFY at commit, or not)
PG_ENQUEUE = """
WITH e AS (
    INSERT INTO events (id, account_id, action, timestamp_ms, body)
    SELECT * FROM unnest($1::varchar[], $2::bigint[], $3::varchar[], $4::bigint[], $5::text[])
), d AS (
    INSERT INTO deliveries (event_id, integration_id, account_id, action, parcel_id, status,
        attempt_count, schedule_base, next_attempt_ms, created_ms, updated_ms)
    SELECT x.ev, x.iid, x.aid, x.act, x.pid, 'pending', 0, 0, $11, $11, $11
    FROM unnest($6::varchar[], $7::bigint[], $8::bigint[], $9::varchar[], $10::bigint[])
        AS x(ev, iid, aid, act, pid)
)
SELECT pg_notify($12, '') WHERE $13::boolean
"""


async def pg_insert_parcel(pg: Any, values: Sequence[Any]) -> int:
    raw_statements.sent(PG_INSERT_PARCEL)
    return int(await pg.fetchval(PG_INSERT_PARCEL, *values))


async def pg_parcels_of(pg: Any, account_id: int, ids: Iterable[int]) -> dict[int, Parcel]:
    raw_statements.sent(PG_PARCELS_OF)
    rows = await pg.fetch(PG_PARCELS_OF, account_id, list(ids))
    return {r[0]: parcel_from_values(r) for r in rows}


async def pg_set_statuses(pg: Any, parcels: Sequence[Parcel]) -> None:
    raw_statements.sent(PG_SET_STATUSES)
    await pg.execute(
        PG_SET_STATUSES,
        [p.id for p in parcels],
        [p.status_id for p in parcels],
        [p.updated_ms for p in parcels],
        [p.carrier_status_change_ms for p in parcels],
    )


async def pg_change_statuses(pg: Any, changes: Sequence[StatusChange], now_ms: int) -> list[Any]:
    """The changed rows: a parcel's PARCEL_COLUMNS, then its integration's as owner_*."""
    raw_statements.sent(PG_CHANGE_STATUSES)
    return list(
        await pg.fetch(
            PG_CHANGE_STATUSES,
            [c.parcel_id for c in changes],
            [c.account_id for c in changes],
            [c.status_id for c in changes],
            [c.carrier_ms for c in changes],
            now_ms,
        )
    )


async def pg_enqueue(
    pg: Any,
    batch: Sequence[tuple[Event, Sequence[Integration]]],
    now_ms: int,
    channel: str | None,
) -> bool:
    """Store the events and their deliveries, and wake the dispatchers on `channel` at
    commit when there are deliveries; whether there were any."""
    deliveries = [(e, i.id) for e, recipients in batch for i in recipients]
    raw_statements.sent(PG_ENQUEUE)
    await pg.execute(
        PG_ENQUEUE,
        [e.id for e, _ in batch],
        [e.account_id for e, _ in batch],
        [e.action for e, _ in batch],
        [e.timestamp_ms for e, _ in batch],
        [e.body.decode("ascii") for e, _ in batch],
        [e.id for e, _ in deliveries],
        [i for _, i in deliveries],
        [e.account_id for e, _ in deliveries],
        [e.action for e, _ in deliveries],
        [e.parcel_id for e, _ in deliveries],
        now_ms,
        channel or "",
        bool(deliveries and channel),
    )
    return bool(deliveries)
