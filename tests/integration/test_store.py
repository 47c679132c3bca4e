"""The store's contract, run identically on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import func, select, text

from parcelhook.domain import deliveries as dl
from parcelhook.domain import events as ev
from parcelhook.domain.deliveries import Claimed
from parcelhook.domain.integrations import Integration, IntegrationChanges
from parcelhook.domain.outcome import Outcome, decide_outcome
from parcelhook.domain.parcels import parse_new_parcel, tracking_number
from parcelhook.domain.retry import AttemptResult, RetryPolicy, Verdict
from parcelhook.store import Store, ingest, migrations, sqlite
from parcelhook.store import schema as s
from parcelhook.store.crypto import SecretBox

NOW = 1_800_000_000_000
LEASE = 60_000
# one retry, 300 s after the first attempt, unjittered; and none at all
RETRY_ONCE = RetryPolicy(delays=(300.0,), jitter=0.0)
NO_RETRY = RetryPolicy(delays=())
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    st = Store.open(database_url, SecretBox(Fernet.generate_key()))
    assert await st.migrate(NOW) == migrations.revisions()
    yield st
    await st.close()


def _outcome(
    c: Claimed,
    lease: str,
    at_ms: int,
    result: AttemptResult,
    verdict: Verdict,
    policy: RetryPolicy = RETRY_ONCE,
) -> Outcome:
    decision = decide_outcome(
        result,
        attempt_count=c.attempt_count,
        schedule_base=c.schedule_base,
        policy=policy,
        at_ms=at_ms,
    )
    assert decision.verdict is verdict
    return Outcome(c.id, c.integration_id, lease, at_ms, result, decision)


async def _integration(store: Store, url: str = "https://example.com/hook") -> Integration:
    async with store.transaction() as tx:
        account = await tx.create_account(f"x{id(store)}@example.com", "hash", NOW)
        return await tx.create_integration(
            account,
            IntegrationChanges(
                shop_name="app",
                system="api",
                webhook_active=True,
                webhook_url=url,
                webhook_signature_key="Str0ng!Signature-Key",
            ),
            NOW,
        )


async def _enqueue(store: Store, integration: Integration, n: int) -> list[str]:
    events = [
        ev.make_event(
            integration.account_id,
            ev.integration_changed("integration_updated", integration, NOW + i),
        )
        for i in range(n)
    ]
    async with store.transaction() as tx:
        await tx.enqueue_many([(e, [integration]) for e in events], NOW)
    return [e.id for e in events]


async def _count(store: Store, table: object) -> int:
    async with store.reading() as r:
        return int((await r.conn.execute(select(func.count()).select_from(table))).scalar_one())  # type: ignore[arg-type]


async def test_migrations_are_versioned_and_idempotent(store: Store) -> None:
    assert await store.migrate(NOW) == []
    assert await migrations.current(store.engine) == migrations.head()


async def test_secrets_are_encrypted_at_rest(store: Store) -> None:
    integration = await _integration(store)
    async with store.reading() as r:
        row = (await r.conn.execute(select(s.integrations))).one()
    stored = " ".join(str(v) for v in row)
    assert "Str0ng!Signature-Key" not in stored
    assert integration.secret_key not in stored and integration.webhook_secret not in stored
    assert row.webhook_signature_key_last4 == "-Key"
    assert integration.webhook_signature_key == "Str0ng!Signature-Key"


async def test_a_failed_transaction_leaves_neither_change_nor_event(store: Store) -> None:
    integration = await _integration(store)
    event = ev.make_event(
        integration.account_id, ev.integration_changed("integration_updated", integration, NOW)
    )
    with pytest.raises(RuntimeError):
        async with store.transaction() as tx:
            await tx.update_integration(integration, IntegrationChanges(shop_name="new"), NOW)
            await tx.enqueue(event, [integration], NOW)
            raise RuntimeError("crash between change and commit")
    assert await _count(store, s.events) == 0
    assert await _count(store, s.deliveries) == 0
    async with store.reading() as r:
        assert (await r.integration(integration.account_id, integration.id)).shop_name == "app"


async def test_a_new_parcel_is_stored_with_its_tracking_number(store: Store) -> None:
    # the INSERT makes the number from the id it takes, in SQL: as tracking_number() does,
    # an id of more than ten digits included
    integration = await _integration(store)
    new = parse_new_parcel(PARCEL)
    async with store.transaction() as tx:
        first = await tx.create_parcel(integration.account_id, integration.id, new, NOW, 1000)
        big = 12_345_678_900
        if store.engine.dialect.name == "sqlite":
            await tx.conn.execute(text(f"UPDATE parcels SET id = {big} WHERE id = {first.id}"))
        else:
            await tx.conn.execute(text(f"SELECT setval('parcels_id_seq', {big})"))
        second = await tx.create_parcel(integration.account_id, integration.id, new, NOW, 1000)
    assert first.tracking_number == tracking_number(first.id) == "3SPH0000000001"
    assert second.id == big + 1
    assert second.tracking_number == tracking_number(second.id) == "3SPH12345678901"
    async with store.reading() as r:
        for made in (second, first):
            if made is first and store.engine.dialect.name == "sqlite":
                continue  # renumbered above
            stored = await r.parcel(integration.account_id, made.id)
            assert stored == made


async def test_concurrent_claims_never_hand_out_a_delivery_twice(store: Store) -> None:
    integration = await _integration(store)
    await _enqueue(store, integration, 50)
    claims = await asyncio.gather(
        *(store.queue.claim_due(f"w{i}", NOW, LEASE, 10) for i in range(6))
    )
    ids = [c.id for batch in claims for c in batch]
    assert len(ids) == 50 and len(set(ids)) == 50
    assert await store.queue.claim_due("late", NOW, LEASE, 10) == []
    assert all(c.body.startswith(b'{"action": "integration_updated"') for c in claims[0])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_dispatcher_writes_wait_for_another_writer_without_blocking_the_loop(
    store: Store, database_url: str
) -> None:
    # the dispatcher's statements run on the loop's thread, whose statements wait at most
    # 20 ms for a lock: a longer foreign write (an import-tracking next to serve) must be
    # waited out asynchronously, not fail the claim, and not stall everything else
    integration = await _integration(store)
    await _enqueue(store, integration, 3)
    other = sqlite3.connect(database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(ticking())
    asyncio.get_running_loop().call_later(0.5, other.execute, "ROLLBACK")
    try:
        started = time.monotonic()
        claimed = await store.queue.claim_due("w", NOW, LEASE, 10)
        waited = time.monotonic() - started
    finally:
        ticker.cancel()
        other.close()
    assert len(claimed) == 3
    assert waited >= 0.45
    # the loop went on while the claim waited (~25 ticks of 10 ms on a quiet machine, 0 or 1
    # had the claim held the loop): half that leaves room for a busy one
    assert ticks >= 10, ticks


async def test_expired_leases_are_taken_over_and_the_old_owner_is_fenced(store: Store) -> None:
    integration = await _integration(store)
    await _enqueue(store, integration, 1)
    (mine,) = await store.queue.claim_due("crashed", NOW, LEASE, 10)
    assert await store.queue.claim_due("other", NOW + LEASE - 1, LEASE, 10) == []
    (theirs,) = await store.queue.claim_due("other", NOW + LEASE, LEASE, 10)
    assert theirs.id == mine.id
    ok = AttemptResult(200, 5, "ok")
    # the crashed owner's late write changes nothing; the new owner's counts
    await store.queue.record_outcomes(
        [_outcome(mine, "crashed", NOW + LEASE, ok, Verdict.DELIVERED)]
    )
    async with store.reading() as r:
        assert (await r.delivery(integration.account_id, mine.id)).status == dl.PENDING
    await store.queue.record_outcomes([_outcome(mine, "other", NOW + LEASE, ok, Verdict.DELIVERED)])
    async with store.reading() as r:
        d = await r.delivery(integration.account_id, mine.id)
    assert d.status == dl.DELIVERED and d.attempt_count == 1


async def test_outcomes_schedule_retries_and_track_endpoint_health(store: Store) -> None:
    integration = await _integration(store)
    await _enqueue(store, integration, 2)
    a, b = await store.queue.claim_due("w", NOW, LEASE, 10)
    fail = AttemptResult(500, 12, "boom")
    await store.queue.record_outcomes(
        [
            _outcome(a, "w", NOW, fail, Verdict.RETRY),
            _outcome(b, "w", NOW, fail, Verdict.RETRY),
        ],
    )
    async with store.reading() as r:
        d = await r.delivery(integration.account_id, a.id)
        health = await r.integration(integration.account_id, integration.id)
    assert (d.status, d.attempt_count, d.next_attempt_ms) == (dl.PENDING, 1, NOW + 300_000)
    assert d.attempts[0].status_code == 500 and d.attempts[0].response_excerpt == "boom"
    assert health.failing_since_ms == NOW
    assert await store.queue.next_due_ms() == NOW + 300_000
    assert await store.queue.claim_due("w", NOW + 299_999, LEASE, 10) == []
    later = await store.queue.claim_due("w", NOW + 300_000, LEASE, 10)
    assert [c.attempt_count for c in later] == [1, 1]
    await store.queue.record_outcomes(
        [
            _outcome(later[0], "w", NOW + 300_000, AttemptResult(204, 3, ""), Verdict.DELIVERED),
            _outcome(later[1], "w", NOW + 300_000, AttemptResult(410, 3, ""), Verdict.GONE),
        ],
    )
    async with store.reading() as r:
        health = await r.integration(integration.account_id, integration.id)
    assert health.failing_since_ms is None  # cleared by the success
    assert health.webhook_active is False  # turned off by 410


async def test_redelivery_restarts_the_schedule(store: Store) -> None:
    integration = await _integration(store)
    await _enqueue(store, integration, 1)
    (c,) = await store.queue.claim_due("w", NOW, LEASE, 10)
    await store.queue.record_outcomes(
        [
            _outcome(
                c, "w", NOW, AttemptResult(None, 10_000, "", "timed out"), Verdict.FAILED, NO_RETRY
            )
        ],
    )
    async with store.transaction() as tx:
        assert await tx.redeliver(integration.account_id, NOW + 5, status=dl.FAILED) == 1
        assert await tx.redeliver(integration.account_id, NOW + 5, status=dl.FAILED) == 0
    (again,) = await store.queue.claim_due("w", NOW + 5, LEASE, 10)
    assert (again.attempt_count, again.schedule_base) == (1, 1)


async def test_prune_drops_old_settled_payloads_in_batches(store: Store) -> None:
    integration = await _integration(store)
    await _enqueue(store, integration, 5)
    claimed = await store.queue.claim_due("w", NOW, LEASE, 10)
    ok = AttemptResult(200, 1, "ok")
    await store.queue.record_outcomes(
        [_outcome(c, "w", NOW, ok, Verdict.DELIVERED) for c in claimed[:4]]
    )
    await store.queue.record_outcomes(
        [_outcome(claimed[4], "w", NOW, AttemptResult(500, 1, ""), Verdict.FAILED, NO_RETRY)],
    )
    assert await store.prune(NOW + 1, batch=3) == 3
    assert await store.prune(NOW + 1, batch=3) == 1
    assert await store.prune(NOW + 1, batch=3) == 0
    assert await _count(store, s.attempts) == 1  # the failed one's attempt stays
    assert await _count(store, s.events) == 1
    assert await _count(store, s.deliveries) == 1


@pytest.mark.parametrize(
    "sql",
    [
        sqlite.CLAIM_SQL,
        sqlite.RELEASE_SQL,
        sqlite.STATES_SQL,
        sqlite.HEALTH_SQL,
        sqlite.NEXT_DUE_SQL,
        ingest.SQLITE_INSERT_PARCEL,
        ingest.SQLITE_PARCELS_OF,
        ingest.SQLITE_SET_STATUS,
        ingest.SQLITE_CHANGE_STATUSES,
        ingest.SQLITE_INTEGRATIONS,
    ],
)
async def test_sqlite_hot_statements_never_scan_a_table(tmp_path: Path, sql: str) -> None:
    # a scan would make every claim or outcome cost more as the tables grow
    st = Store.open(f"sqlite:///{tmp_path / 'plan.db'}", SecretBox(Fernet.generate_key()))
    await st.migrate(NOW)
    await st.close()
    with sqlite3.connect(tmp_path / "plan.db") as conn:
        numbered = [int(n) for n in re.findall(r"\?(\d)", sql)]
        params = [1] * (max(numbered) if numbered else sql.count("?"))
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    scans = [
        step
        for step in plan
        if (m := re.match(r"SCAN (\w+)", step)) and m.group(1) in s.metadata.tables
    ]
    assert scans == [], plan


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_connections_never_jit_compile(store: Store) -> None:
    # with a large backlog the claim's estimated cost crossed jit_above_cost, and compiling
    # took four times as long as running it
    async with store.reading() as r:
        assert (await r.conn.exec_driver_sql("SHOW jit")).scalar() == "off"


async def test_claims_take_each_integration_only_up_to_its_room_oldest_first(
    store: Store,
) -> None:
    async with store.transaction() as tx:
        account = await tx.create_account("rooms@example.com", "hash", NOW)
        shops = [
            await tx.create_integration(
                account,
                IntegrationChanges(
                    shop_name=name,
                    system="api",
                    webhook_active=True,
                    webhook_url=f"https://example.com/{name}",
                ),
                NOW,
            )
            for name in ("a", "b", "c")
        ]
    # a's deliveries are the oldest, c's the newest
    for age, shop in zip((3000, 2000, 1000), shops, strict=True):
        events = [
            ev.make_event(account, ev.integration_changed("integration_updated", shop, NOW + i))
            for i in range(5)
        ]
        async with store.transaction() as tx:
            await tx.enqueue_many([(e, [shop]) for e in events], NOW - age)
    a, b, c = (shop.id for shop in shops)

    def per_shop(claimed: list[Claimed]) -> dict[int, int]:
        return {i: n for i in (a, b, c) if (n := sum(x.integration_id == i for x in claimed))}

    # a lane's room caps its integration, 0 leaves it out, any other gets the default room
    first = await store.queue.claim_due("w#1", NOW, LEASE, 100, {a: 2, b: 0}, 3)
    assert per_shop(first) == {a: 2, c: 3}
    # with room to spare, the oldest come first across integrations
    second = await store.queue.claim_due("w#2", NOW, LEASE, 4, {}, 10)
    assert per_shop(second) == {a: 3, b: 1}
    rest = await store.queue.claim_due("w#3", NOW, LEASE, 100, {}, 100)
    assert per_shop(rest) == {b: 4, c: 2}
    assert len({x.id for x in first + second + rest}) == 15
