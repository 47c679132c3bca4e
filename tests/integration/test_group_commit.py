"""Status changes committed together (group commit), on SQLite and PostgreSQL: each caller
still gets its own answer, a batch changes all or nothing, and nothing is lost or mixed up."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select, text

from parcelhook.domain import events as ev
from parcelhook.domain import systems
from parcelhook.domain.errors import InvalidInput, NotFound
from parcelhook.domain.parcels import Parcel, parse_new_parcel
from parcelhook.domain.statuses import ParcelStatus
from parcelhook.store import schema as s
from support.harness import Account, Harness, HarnessFactory
from support.statements import statements

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}


async def _parcels(acct: Account, n: int) -> list[int]:
    shop = await acct.shop("http://127.0.0.1:9/hook")  # deliveries stay queued: no dispatcher
    ids = []
    for _ in range(n):
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200, r.text
        ids.append(int(r.json()["parcel"]["id"]))
    return ids


async def _events(h: Harness) -> list[tuple[int, int, int]]:
    """(parcel id, status id, timestamp) of every parcel_status_changed, in commit order."""
    d, e = s.deliveries, s.events
    q = (
        select(e.c.timestamp_ms, e.c.body)
        .join(d, d.c.event_id == e.c.id)
        .where(e.c.action == systems.PARCEL_STATUS_CHANGED)
        .order_by(d.c.id)
    )
    async with h.store.reading() as r:
        rows = [(ts, json.loads(body)) for ts, body in await r.conn.execute(q)]
    return [(b["parcel"]["id"], b["parcel"]["status"]["id"], ts) for ts, b in rows]


async def _status(h: Harness, parcel_id: int) -> int:
    async with h.store.reading() as r:
        found = await r.parcels_any_account([parcel_id])
    return found[parcel_id].status_id


async def test_concurrent_changes_share_one_transaction_of_the_same_statements_as_one(
    harness: HarnessFactory, database_url: str
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    ids = await _parcels(acct, 20)
    await h.service.change_status(acct.account_id, ids[0], ParcelStatus.SORTED)  # warm up
    with statements() as sql:
        changed = await asyncio.gather(
            *(h.service.change_status(acct.account_id, i, ParcelStatus.DELIVERED) for i in ids)
        )
    assert [p.status_id for p in changed] == [ParcelStatus.DELIVERED] * 20
    # BEGIN, the UPDATE, the integrations, the events, the deliveries, COMMIT on SQLite; the
    # UPDATE with the integrations and the enqueue on PostgreSQL (BEGIN and COMMIT are not
    # cursor executions there): as for one change (tests/integration/test_statement_counts.py)
    assert len(sql) == (6 if database_url.startswith("sqlite") else 2), "\n".join(sql)
    events = await _events(h)
    delivered = [(p, st) for p, st, _ in events if st == ParcelStatus.DELIVERED]
    assert sorted(delivered) == sorted((i, ParcelStatus.DELIVERED) for i in ids)


async def test_each_caller_in_a_batch_gets_its_own_answer(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct, other = await h.account(), await h.account()
    mine, already = await _parcels(acct, 2)
    [theirs] = await _parcels(other, 1)
    before = len(await _events(h))
    answers = await asyncio.gather(
        h.service.change_status(acct.account_id, mine, ParcelStatus.SORTED),
        h.service.change_status(acct.account_id, theirs, ParcelStatus.SORTED),
        h.service.change_status(acct.account_id, 10**15, ParcelStatus.SORTED),
        h.service.change_status(acct.account_id, already, ParcelStatus.READY_TO_SEND),
        return_exceptions=True,
    )
    assert isinstance(answers[0], Parcel) and answers[0].status_id == ParcelStatus.SORTED
    assert isinstance(answers[1], NotFound)  # another tenant's parcel: as if none
    assert isinstance(answers[2], NotFound)
    assert isinstance(answers[3], Parcel) and answers[3].id == already  # unchanged, no event
    assert await _status(h, theirs) == ParcelStatus.READY_TO_SEND
    assert [(p, st) for p, st, _ in (await _events(h))[before:]] == [(mine, ParcelStatus.SORTED)]


async def test_two_changes_of_one_parcel_at_once_apply_one_after_the_other(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    [parcel] = await _parcels(acct, 1)
    walk = [ParcelStatus.SORTED, ParcelStatus.DELIVERED, ParcelStatus.DELIVERED]
    answers = await asyncio.gather(
        *(h.service.change_status(acct.account_id, parcel, st) for st in walk)
    )
    assert [p.status_id for p in answers] == walk
    mine = [(st, ts) for p, st, ts in await _events(h) if p == parcel]
    # created, then each real change once (the repeated DELIVERED changes nothing)
    assert [st for st, _ in mine] == [
        ParcelStatus.READY_TO_SEND,
        ParcelStatus.SORTED,
        ParcelStatus.DELIVERED,
    ]
    stamps = [ts for _, ts in mine]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


async def test_an_item_that_fails_its_batch_fails_alone(
    harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    ids = await _parcels(acct, 3)
    bad = ids[1]
    real = ev.parcel_status_changed

    def buggy(parcel: Parcel, *args: Any) -> Any:
        if parcel.id == bad:
            raise ValueError("a bug that this parcel alone triggers")
        return real(parcel, *args)

    monkeypatch.setattr(ev, "parcel_status_changed", buggy)
    before = len(await _events(h))
    answers = await asyncio.gather(
        *(h.service.change_status(acct.account_id, i, ParcelStatus.SORTED) for i in ids),
        return_exceptions=True,
    )
    assert isinstance(answers[1], ValueError)
    assert [a.status_id for a in answers if isinstance(a, Parcel)] == [ParcelStatus.SORTED] * 2
    assert await _status(h, bad) == ParcelStatus.READY_TO_SEND  # its change rolled back
    changed = {p for p, _, _ in (await _events(h))[before:]}
    assert changed == {ids[0], ids[2]}


async def test_a_database_error_in_a_batch_answers_503_and_changes_nothing(
    harness: HarnessFactory, database_url: str
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    ids = await _parcels(acct, 5)
    before = len(await _events(h))
    # the batch's last statement fails (after its UPDATE) as a database that went away does
    if database_url.startswith("sqlite"):
        broken = [
            "CREATE TRIGGER broken BEFORE INSERT ON deliveries "
            "BEGIN INSERT INTO no_such_table VALUES (1); END"
        ]
    else:
        broken = [
            "CREATE FUNCTION broken() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION USING ERRCODE = 'admin_shutdown'; END $$",
            "CREATE TRIGGER broken BEFORE INSERT ON deliveries "
            "FOR EACH ROW EXECUTE FUNCTION broken()",
        ]
    async with h.store.transaction() as tx:
        for statement in broken:
            await tx.conn.execute(text(statement))
    answers = await asyncio.gather(
        *(
            acct.call("POST", f"/api/v2/parcels/{i}/status", {"status_id": ParcelStatus.SORTED})
            for i in ids
        )
    )
    assert Counter(r.status_code for r in answers) == {503: 5}, [r.text for r in answers]
    assert {r.json()["error"]["code"] for r in answers} == {"unavailable"}
    for i in ids:
        assert await _status(h, i) == ParcelStatus.READY_TO_SEND
    assert len(await _events(h)) == before


async def test_concurrent_parcel_creations_share_one_transaction_and_a_bad_one_fails_alone(
    harness: HarnessFactory, database_url: str
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    shop = await acct.shop("http://127.0.0.1:9/hook")
    await _parcels(acct, 1)  # warm up
    good = parse_new_parcel({**PARCEL, "integration_id": shop})
    with statements() as sql:
        created = await asyncio.gather(
            *(
                h.service.create_parcels(acct.account_id, acct.api.id, [good], partial=False)
                for _ in range(10)
            )
        )
    assert len({c[0][0].id for c in created}) == 10
    # per parcel: its integration, the INSERT (with its tracking number), the outbox (two
    # on SQLite); once: BEGIN and COMMIT (SQLite)
    sqlite = database_url.startswith("sqlite")
    assert len(sql) == (10 * 4 + 2 if sqlite else 10 * 3), "\n".join(sql)

    async with h.store.reading() as r:
        before = len(await r.parcels_updated_after(acct.account_id, 0, 0, 1000))
    bad = parse_new_parcel({**PARCEL, "integration_id": shop, "sender_address": 10**9})
    answers = await asyncio.gather(
        *(
            h.service.create_parcels(
                acct.account_id, acct.api.id, [bad if i == 3 else good], partial=False
            )
            for i in range(6)
        ),
        return_exceptions=True,
    )
    assert isinstance(answers[3], InvalidInput)
    assert sum(1 for a in answers if isinstance(a, tuple)) == 5
    async with h.store.reading() as r:
        after = len(await r.parcels_updated_after(acct.account_id, 0, 0, 1000))
    assert after == before + 5
