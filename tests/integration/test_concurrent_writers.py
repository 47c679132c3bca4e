"""Writers that agree: 50 clients at once on one parcel, on SQLite and PostgreSQL.

The same status change made twice at once emits one event; of 50 refunds at once one is
created and the others get 409; a parcel's events carry strictly increasing timestamps in
the order they committed, so receivers ordering by `timestamp` end on the stored status.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from itertools import pairwise

from sqlalchemy import select

from parcelhook.domain import systems
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.statuses import ParcelStatus
from parcelhook.store import schema as s
from support.harness import Account, Harness, HarnessFactory

CLIENTS = 50
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}


async def _parcel(acct: Account) -> int:
    shop = await acct.shop("http://127.0.0.1:9/hook")  # deliveries stay queued: no dispatcher
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}})
    assert r.status_code == 200, r.text
    return int(r.json()["parcel"]["id"])


async def _status_events(h: Harness, parcel_id: int) -> list[tuple[int, int]]:
    """(timestamp, status id) of the parcel's status events, in commit order (delivery ids
    are taken under the parcel's lock, so they follow the commits)."""
    d, e = s.deliveries, s.events
    q = (
        select(e.c.timestamp_ms, e.c.body)
        .join(d, d.c.event_id == e.c.id)
        .where(e.c.action == systems.PARCEL_STATUS_CHANGED)
        .order_by(d.c.id)
    )
    async with h.store.reading() as r:
        rows = [(ts, json.loads(body)) for ts, body in await r.conn.execute(q)]
    return [(ts, b["parcel"]["status"]["id"]) for ts, b in rows if b["parcel"]["id"] == parcel_id]


async def test_the_same_status_change_made_fifty_times_at_once_emits_one_event(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    parcel = await _parcel(acct)
    answers = await asyncio.gather(
        *(
            acct.call("POST", f"/api/v2/parcels/{parcel}/status", {"status_id": 11})
            for _ in range(CLIENTS)
        )
    )
    assert Counter(r.status_code for r in answers) == {200: CLIENTS}
    statuses = [status for _, status in await _status_events(h, parcel)]
    assert statuses == [ParcelStatus.READY_TO_SEND, ParcelStatus.DELIVERED]


async def test_fifty_refunds_at_once_get_one_201_and_409s(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    parcel = await _parcel(acct)
    answers = await asyncio.gather(
        *(
            acct.call("POST", f"/api/v2/parcels/{parcel}/refund", {"refund": {"reason": "x"}})
            for _ in range(CLIENTS)
        )
    )
    assert Counter(r.status_code for r in answers) == {201: 1, 409: CLIENTS - 1}
    assert {r.json()["error"]["code"] for r in answers if r.status_code == 409} == {"conflict"}


async def test_a_parcels_events_have_strictly_increasing_timestamps_in_commit_order(
    harness: HarnessFactory,
) -> None:
    # a clock that never moves: every change happens "at the same millisecond"
    h = await harness(dispatcher=False, clock=FakeClock())
    acct = await h.account()
    parcel = await _parcel(acct)
    statuses = [3, 5, 7, 11, 12, 91, 92, 22, 8, 4]
    answers = await asyncio.gather(
        *(
            acct.call(
                "POST",
                f"/api/v2/parcels/{parcel}/status",
                {"status_id": statuses[i % len(statuses)]},
            )
            for i in range(CLIENTS)
        )
    )
    assert {r.status_code for r in answers} == {200}
    events = await _status_events(h, parcel)
    assert len(events) > len(statuses)
    stamps = [ts for ts, _ in events]
    assert all(a < b for a, b in pairwise(stamps)), stamps
    stored = (await acct.call("GET", f"/api/v2/parcels/{parcel}")).json()["parcel"]
    # the newest event by timestamp is the status the parcel ended in
    assert max(events)[1] == stored["status"]["id"]
