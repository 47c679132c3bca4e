"""Hostile endpoints against the real dispatcher, on SQLite and PostgreSQL.

Every way an endpoint can misbehave (error statuses, Retry-After, 410, hanging, refusing,
resetting, trickling, flooding, redirecting, answering garbage or no TLS) is recorded in the
delivery's attempts in plain words, retried on schedule (a FakeClock steps through it), and
never slows down deliveries to a healthy endpoint next to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from parcelhook.domain import deliveries as dl
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.deliveries import Delivery
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode, not_tls_server, refused_port

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
TIMEOUT = 1.0
FIRST_RETRY = 300.0  # Sendcloud's schedule: 5 min, then 10, 20, 40, 60 …
SECOND_RETRY = 600.0
JITTER = 0.1


@dataclass(frozen=True)
class Case:
    """One hostile endpoint and what its first attempt must look like."""

    name: str
    mode: Mode | None  # None: the URL is not on the receiver (refused port, not TLS)
    status_code: int | None
    error: str | None
    # seconds until the retry after attempts 1 and 2: exact, or None for "scheduled ± jitter"
    first_retry: float | None = None
    second_retry: float | None = None
    settles: str | None = None  # the delivery's status after one attempt, when final
    excerpt: str | None = None


CASES = [
    Case("500", Mode.status(500, body=b"boom"), 500, None, excerpt="boom"),
    # Retry-After is honoured within [1x, 2x] of the scheduled delay
    Case("503-sooner", Mode.status(503, retry_after="1"), 503, None, 300.0, 600.0),
    Case("503-within", Mode.status(503, retry_after="450"), 503, None, 450.0, 600.0),
    Case("503-later", Mode.status(503, retry_after="86400"), 503, None, 600.0, 1200.0),
    Case("429", Mode.status(429, retry_after="450"), 429, None, 450.0, 600.0),
    Case("429-bare", Mode.status(429), 429, None),
    Case("410", Mode.status(410), 410, None, settles=dl.FAILED),
    Case("hang", Mode.hang(), None, "timed out after 1 s"),
    Case("refused", None, None, "connection refused"),
    Case(
        "reset",
        Mode.reset(),
        200,
        "connection reset by peer while reading the response",
        excerpt="",
    ),
    Case(
        "trickle",
        Mode.trickle(interval=1.0, size=60),
        200,
        "timed out after 1 s while reading the response",
    ),
    Case("huge", Mode.huge(10 * 1024 * 1024), 200, None, settles=dl.DELIVERED, excerpt="x" * 1024),
    Case("301", Mode.redirect(301, "/moved"), 301, None),
    Case("302", Mode.redirect(302, "/moved"), 302, None),
    Case("garbage", Mode.garbage(), None, "invalid HTTP response from endpoint"),
    Case("tls", None, None, "TLS handshake failed: wrong version number"),
]


def ms(iso: str | None) -> int:
    assert iso is not None
    return round(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


async def parcel_for(acct: Account, shop_id: int) -> None:
    r = await acct.call(
        "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
    )
    assert r.status_code == 200, r.text


async def the_delivery(h: Harness, acct: Account, shop_id: int) -> Delivery:
    (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
    return await h.service.get_delivery(acct.account_id, d.id)


@pytest.fixture
async def receiver() -> AsyncIterator[HostileReceiver]:
    async with HostileReceiver() as rx:
        yield rx


async def test_every_hostile_endpoint_is_recorded_retried_and_isolated(
    harness: HarnessFactory, receiver: HostileReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    h = await harness(clock=clock, timeout=TIMEOUT)
    acct = await h.account()
    rx = receiver
    shops: dict[str, int] = {}
    async with not_tls_server() as tls_port:
        with refused_port() as closed_port:
            for case in CASES:
                if case.mode is not None:
                    rx.route(f"/{case.name}", case.mode)
                    url = rx.url(f"/{case.name}")
                elif case.name == "refused":
                    url = f"http://127.0.0.1:{closed_port}/hook"
                else:
                    url = f"https://127.0.0.1:{tls_port}/hook"
                shops[case.name] = await acct.shop(url, name=url)
            healthy = await acct.shop(rx.url("/healthy"), name=rx.url("/healthy"))

            for case in CASES:
                await parcel_for(acct, shops[case.name])

            # while the hanging and trickling attempts are still in flight, a healthy
            # endpoint next to them is served at once
            await eventually(
                lambda: {"/hang", "/trickle"} <= {r.path for r in rx.requests},
                what="the hang and trickle requests",
            )
            # timed from its event's commit (which wakes the dispatcher) to the receiver's
            # stamp, so neither the API call nor this test's polling counts. Queued behind
            # the hang it would wait out the rest of that timeout: over TIMEOUT / 2, as the
            # commit comes 0.05-0.35 s after the hang's request (2 cores, both kept busy)
            committed: list[float] = []
            h.store.on_enqueue(lambda: committed.append(time.monotonic()))
            await parcel_for(acct, healthy)
            await eventually(lambda: any(r.path == "/healthy" for r in rx.requests))
            (served,) = [r for r in rx.requests if r.path == "/healthy"]
            waited = served.received_monotonic - committed[0]
            assert waited < TIMEOUT / 2, f"the healthy endpoint was served {waited:.3f} s late"
            assert (await the_delivery(h, acct, shops["hang"])).attempts == ()

            async def all_attempted(n: int) -> bool:
                for case in CASES:
                    d = await the_delivery(h, acct, shops[case.name])
                    if len(d.attempts) < (1 if case.settles else n):
                        return False
                return True

            await eventually(lambda: all_attempted(1), what="every first attempt")
            await check_first_attempts(h, acct, shops)

            # step the clock to just before, then to, each retry's due time
            await step_through_retries(h, acct, clock, rx, shops, healthy)
            await eventually(lambda: all_attempted(2), what="every second attempt")
            await check_second_schedule(h, acct, rx, shops)

    # the 410 endpoint is off: new events are not even queued for it
    await parcel_for(acct, shops["410"])
    assert len(await h.service.list_deliveries(acct.account_id, integration_id=shops["410"])) == 1
    # redirects were never followed
    assert not any(r.path == "/moved" for r in rx.requests)
    # and the dispatcher is still alive and prompt
    before = sum(r.path == "/healthy" for r in rx.requests)
    await parcel_for(acct, healthy)
    await eventually(lambda: sum(r.path == "/healthy" for r in rx.requests) > before, within=2)
    problems = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith("parcelhook")
    ]
    assert problems == []


async def check_first_attempts(h: Harness, acct: Account, shops: dict[str, int]) -> None:
    wrong = []
    for case in CASES:
        listed = await acct.call(
            "GET", f"/api/v2/webhook-deliveries?integration_id={shops[case.name]}"
        )
        (summary,) = listed.json()["deliveries"]
        r = await acct.call("GET", f"/api/v2/webhook-deliveries/{summary['id']}")
        d = r.json()["delivery"]
        (attempt,) = d["attempts"]
        got = (attempt["status_code"], attempt["error"])
        if got != (case.status_code, case.error):
            wrong.append(f"{case.name}: attempt {got}, expected {(case.status_code, case.error)}")
        if case.excerpt is not None and attempt["response_excerpt"] != case.excerpt:
            wrong.append(f"{case.name}: excerpt {attempt['response_excerpt'][:40]!r}")
        if len(attempt["response_excerpt"]) > 1024:
            wrong.append(f"{case.name}: excerpt of {len(attempt['response_excerpt'])} characters")
        if case.settles is not None:
            if d["status"] != case.settles or d["next_attempt_at"] is not None:
                wrong.append(f"{case.name}: {d['status']}, next {d['next_attempt_at']}")
            continue
        delay = (ms(d["next_attempt_at"]) - ms(attempt["at"])) / 1000
        low, high = (
            (case.first_retry, case.first_retry)
            if case.first_retry is not None
            else (FIRST_RETRY * (1 - JITTER), FIRST_RETRY * (1 + JITTER))
        )
        if d["status"] != dl.PENDING or not low <= delay <= high:
            wrong.append(f"{case.name}: {d['status']}, retry in {delay} s, not in [{low}, {high}]")
    assert wrong == [], "\n".join(wrong)
    gone = (await acct.call("GET", f"/api/v2/integrations/{shops['410']}")).json()
    assert gone["webhook_active"] is False
    d = await the_delivery(h, acct, shops["410"])
    assert d.last_status_code == 410 and "410 Gone" in (d.last_error or "")
    failing = (await acct.call("GET", f"/api/v2/integrations/{shops['500']}")).json()
    assert failing["failing_since"] is not None
    delivered = (await acct.call("GET", f"/api/v2/integrations/{shops['huge']}")).json()
    assert delivered["failing_since"] is None


async def step_through_retries(
    h: Harness,
    acct: Account,
    clock: FakeClock,
    rx: HostileReceiver,
    shops: dict[str, int],
    healthy: int,
) -> None:
    due: dict[int, list[str]] = {}
    for case in CASES:
        d = await the_delivery(h, acct, shops[case.name])
        if d.status == dl.PENDING:
            assert d.next_attempt_ms is not None
            due.setdefault(d.next_attempt_ms, []).append(case.name)
    assert len(due) >= 5  # jitter spreads the plain retries out
    for when in sorted(due):
        names = due[when]
        await clock.advance((when - 1000 - clock.now_ms()) / 1000)
        await asyncio.sleep(0.15)
        for name in names:
            d = await the_delivery(h, acct, shops[name])
            assert len(d.attempts) == 1, f"{name} retried before it was due"
        # the healthy endpoint is served at every step
        served = sum(r.path == "/healthy" for r in rx.requests)
        await parcel_for(acct, healthy)
        await eventually(lambda s=served: sum(r.path == "/healthy" for r in rx.requests) > s)
        await clock.advance((when - clock.now_ms()) / 1000)
        for name in names:

            async def retried(name: str = name) -> bool:
                return len((await the_delivery(h, acct, shops[name])).attempts) == 2

            await eventually(retried, within=5, what=f"the retry of {name}")
            d = await the_delivery(h, acct, shops[name])
            assert d.attempts[1].at_ms == when, name
            case = next(c for c in CASES if c.name == name)
            assert (d.attempts[1].status_code, d.attempts[1].error) == (
                case.status_code,
                case.error,
            )


async def check_second_schedule(
    h: Harness, acct: Account, rx: HostileReceiver, shops: dict[str, int]
) -> None:
    for case in CASES:
        d = await the_delivery(h, acct, shops[case.name])
        if case.settles is not None:
            assert len(d.attempts) == 1, case.name
            continue
        assert d.status == dl.PENDING and d.next_attempt_ms is not None, case.name
        delay = (d.next_attempt_ms - d.attempts[1].at_ms) / 1000
        if case.second_retry is not None:
            assert delay == case.second_retry, case.name
        else:
            assert SECOND_RETRY * (1 - JITTER) <= delay <= SECOND_RETRY * (1 + JITTER), case.name
    # every attempt of a delivery sent the same bytes under the same webhook-id
    for case in CASES:
        if case.mode is not None:
            sent = {
                (r.body, r.headers["webhook-id"]) for r in rx.requests if r.path == f"/{case.name}"
            }
            assert len(sent) == 1, case.name


async def test_a_10_mb_answer_is_read_only_in_part(
    harness: HarnessFactory, receiver: HostileReceiver
) -> None:
    h = await harness(timeout=TIMEOUT)
    acct = await h.account()
    receiver.route("/huge", Mode.huge(10 * 1024 * 1024))
    shop_id = await acct.shop(receiver.url("/huge"), name=receiver.url("/huge"))
    tracemalloc.start()
    try:
        await parcel_for(acct, shop_id)

        async def delivered() -> bool:
            return (await the_delivery(h, acct, shop_id)).status == dl.DELIVERED

        await eventually(delivered, what="the delivery")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (attempt,) = (await the_delivery(h, acct, shop_id)).attempts
    assert (attempt.status_code, attempt.error) == (200, None)
    assert attempt.response_excerpt == "x" * 1024
    # the endpoint's 10 MiB never sat in memory (everything in this process is counted,
    # the API request and the receiver included)
    assert peak < 3 * 1024 * 1024, f"peak {peak / 1024 / 1024:.1f} MiB"
    assert json.loads(receiver.requests[0].body)["action"] == "parcel_status_changed"
