"""The whole path, on SQLite and PostgreSQL: an API call changes something, and a signed
POST reaches a real receiver on loopback (or lands in the Failed Request log)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from standardwebhooks import Webhook

from parcelhook.domain import deliveries as dl
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.retry import RetryPolicy
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode, ReceivedRequest

KEY = "Str0ng!Signature-Key"
PARCEL = {
    "name": "Anna de Vries",
    "address": "Stationsplein",
    "house_number": "1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
    "weight": "2",
    "email": "anna@example.com",
    "order_number": "ORD-1001",
}


def actions(requests: list[ReceivedRequest], path: str | None = None) -> list[str]:
    return [json.loads(r.body)["action"] for r in requests if path is None or r.path == path]


async def configure(acct: Account, integration_id: int, url: str, key: str | None = KEY) -> None:
    settings: dict[str, Any] = {"webhook_active": True, "webhook_url": url}
    if key:
        settings["webhook_signature_key"] = key
    r = await acct.call("PATCH", f"/api/v2/integrations/{integration_id}", settings)
    assert r.status_code == 200, r.text


async def new_parcel(acct: Account, **extra: Any) -> dict[str, Any]:
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, **extra}})
    assert r.status_code == 200, r.text
    parcel: dict[str, Any] = r.json()["parcel"]
    return parcel


async def test_status_changes_arrive_signed_and_verifiable(harness: HarnessFactory) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        await configure(acct, acct.api.id, rx.url("/hook"))
        parcel = await new_parcel(acct)
        for status in (3, 11):
            r = await acct.call(
                "POST", f"/api/v2/parcels/{parcel['id']}/status", {"status_id": status}
            )
            assert r.status_code == 200 and r.json()["parcel"]["status"]["id"] == status
        await rx.wait_for_requests(4)  # integration_updated + three status changes
        # by timestamp, not by arrival: a lane sends on several connections at once, and what
        # is ordered is a parcel's event timestamps (strictly increasing, docs/receiving.md)
        got = sorted(
            (r for r in rx.requests if b"parcel_status_changed" in r.body),
            key=lambda r: int(json.loads(r.body)["timestamp"]),
        )
        assert len({json.loads(r.body)["timestamp"] for r in got}) == len(got)
        assert [json.loads(r.body)["parcel"]["status"]["id"] for r in got] == [1000, 3, 11]
        secret = (await acct.call("GET", f"/api/v2/integrations/{acct.api.id}")).json()[
            "webhook_secret"
        ]
        for req in got:
            expected = hmac.new(KEY.encode(), req.body, hashlib.sha256).hexdigest()
            assert req.headers["Sendcloud-Signature"] == expected
            # receivers that re-serialise the parsed JSON compute the same bytes
            assert json.dumps(json.loads(req.body)).encode() == req.body
            assert req.headers["Content-Type"] == "application/json"
            assert req.headers["User-Agent"].startswith("parcelhook/")
            Webhook(secret).verify(req.body, dict(req.headers))
        body = json.loads(got[-1].body)
        assert list(body)[:2] == ["action", "timestamp"]
        assert body["parcel"]["weight"] == "2.000"
        assert body["parcel"]["status"] == {"id": 11, "message": "Delivered"}
        assert body["parcel"]["country"] == {"iso_2": "NL", "iso_3": "NLD", "name": "Netherlands"}


async def test_failing_twice_then_ok_gives_three_attempts_on_schedule(
    harness: HarnessFactory,
) -> None:
    clock = FakeClock()
    h = await harness(clock=clock)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/flaky", Mode.status(500), Mode.status(500), Mode.ok())
        shop_id = await acct.shop(rx.url("/flaky"))
        await new_parcel(acct, integration_id=shop_id)
        await rx.wait_for_requests(1)
        (delivery,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
        await eventually(lambda: _attempts(h, acct, delivery.id, 1), what="first attempt")
        await clock.advance(5 * 60 * 1.1)
        await rx.wait_for_requests(2)
        await eventually(lambda: _attempts(h, acct, delivery.id, 2), what="second attempt")
        await clock.advance(10 * 60 * 1.1)
        await rx.wait_for_requests(3)
        await eventually(lambda: _status(h, acct, delivery.id, dl.DELIVERED))
    d = await h.service.get_delivery(acct.account_id, delivery.id)
    at = [a.at_ms for a in d.attempts]
    assert [a.status_code for a in d.attempts] == [500, 500, 200]
    assert 270_000 <= at[1] - at[0] <= 330_000 + 30_000  # 5 min ± 10 % (+ clock step)
    assert 540_000 <= at[2] - at[1] <= 660_000 + 60_000
    assert len({r.headers["webhook-id"] for r in rx.requests}) == 1
    assert len({r.body for r in rx.requests}) == 1  # the same bytes on every attempt


async def test_always_failing_ends_failed_after_11_attempts_then_redelivers(
    harness: HarnessFactory,
) -> None:
    clock = FakeClock()
    h = await harness(clock=clock)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/down", Mode.status(503))
        shop_id = await acct.shop(rx.url("/down"))
        await new_parcel(acct, integration_id=shop_id)
        (delivery,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
        for n in range(1, 12):
            await eventually(
                lambda n=n: _attempts(h, acct, delivery.id, n),  # type: ignore[misc]
                what=f"attempt {n}",
            )
            await clock.advance(3600 * 1.2)
        await eventually(lambda: _status(h, acct, delivery.id, dl.FAILED))
        failed = await acct.call("GET", "/api/v2/webhook-deliveries?status=failed")
        assert [d["id"] for d in failed.json()["deliveries"]] == [delivery.id]
        integ = (await acct.call("GET", f"/api/v2/integrations/{shop_id}")).json()
        assert integ["failing_since"] is not None
        assert len(rx.requests) == 11

        rx.route("/down", Mode.ok())
        r = await acct.call("POST", f"/api/v2/webhook-deliveries/{delivery.id}/redeliver")
        assert r.status_code == 200 and r.json()["delivery"]["status"] == "pending"
        await eventually(lambda: _status(h, acct, delivery.id, dl.DELIVERED))
        assert len(rx.requests) == 12
        integ = (await acct.call("GET", f"/api/v2/integrations/{shop_id}")).json()
        assert integ["failing_since"] is None


async def test_bulk_redelivery_by_filter(harness: HarnessFactory) -> None:
    h = await harness(retry=RetryPolicy(delays=()))  # no retries: fail at once
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/down", Mode.status(500))
        shop_id = await acct.shop(rx.url("/down"))
        for _ in range(3):
            await new_parcel(acct, integration_id=shop_id)
        await eventually(lambda: _count(h, acct, dl.FAILED, 3), what="3 failed")
        rx.route("/down", Mode.ok())
        r = await acct.call(
            "POST",
            "/api/v2/webhook-deliveries/redeliver",
            {"status": "failed", "integration_id": shop_id},
        )
        assert r.json() == {"redelivered": 3}
        await eventually(lambda: _count(h, acct, dl.DELIVERED, 3), what="3 delivered")


async def test_shop_integration_receives_only_parcel_status_changes(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        shop_id = await acct.shop(rx.url("/shop"), system="woocommerce_v2")
        parcel = await new_parcel(acct, integration_id=shop_id)
        await acct.call("POST", f"/api/v2/parcels/{parcel['id']}/status", {"status_id": 11})
        r = await acct.call(
            "POST", f"/api/v2/parcels/{parcel['id']}/refund", {"refund": {"reason": "Damaged"}}
        )
        assert r.status_code == 201
        await acct.call("PUT", f"/api/v2/integrations/{shop_id}", {"shop_name": "Renamed"})
        await rx.wait_for_requests(2)
        # never queued, not queued-then-dropped
        mine = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
        assert {d.action for d in mine} == {"parcel_status_changed"}
        assert actions(rx.requests) == ["parcel_status_changed"] * 2


async def test_integration_events_reach_only_the_integration_concerned(
    harness: HarnessFactory,
) -> None:
    """SPEC §1: renaming or deleting B is news for B's receiver only, never for A's.

    (Until issue 11 every API integration of the account heard of every other one, which
    made A's receiver overwrite or switch off its own configuration on B's events.)
    """
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx_a, HostileReceiver() as rx_b:
        await configure(acct, acct.api.id, rx_a.url("/a"))
        r = await acct.call(
            "POST",
            "/api/v2/integrations",
            {
                "shop_name": "Second app",
                "system": "api",
                "webhook_active": True,
                "webhook_url": rx_b.url("/b"),
            },
        )
        b = r.json()
        assert r.status_code == 201 and "webhook_signature_key" not in b
        await acct.call(
            "PUT",
            f"/api/v2/integrations/{b['id']}",
            {"shop_name": "Second app, renamed"},
        )
        r = await acct.call("DELETE", f"/api/v2/integrations/{b['id']}")
        assert r.status_code == 204
        await rx_b.wait_for_requests(3)
        # A's own update, and then a final one of A's own as a marker that nothing else came
        await acct.call("PUT", f"/api/v2/integrations/{acct.api.id}", {"shop_name": "A"})
        await eventually(
            lambda: any(b'"shop_name": "A"' in q.body for q in rx_a.requests), what="marker"
        )
        assert actions(rx_a.requests) == ["integration_updated", "integration_updated"]
        assert {json.loads(q.body)["integration"]["id"] for q in rx_a.requests} == {acct.api.id}
        # the deleted integration hears of its own deletion before it goes (each event once,
        # matched by action: they may arrive in any order, on several connections at once)
        assert sorted(actions(rx_b.requests)) == [
            "integration_connected",
            "integration_deleted",
            "integration_updated",
        ]
        assert {json.loads(q.body)["integration"]["id"] for q in rx_b.requests} == {b["id"]}
        names = {
            json.loads(q.body)["action"]: json.loads(q.body)["integration"]["shop_name"]
            for q in rx_b.requests
        }
        assert names == {
            "integration_connected": "Second app",
            "integration_updated": "Second app, renamed",
            "integration_deleted": "Second app, renamed",
        }
        assert (await acct.call("GET", f"/api/v2/integrations/{b['id']}")).status_code == 404


async def test_refund_request_emits_refund_requested(harness: HarnessFactory) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        await configure(acct, acct.api.id, rx.url("/hook"))
        parcel = await new_parcel(acct, shipment={"id": 1343})
        r = await acct.call(
            "POST", f"/api/v2/parcels/{parcel['id']}/refund", {"refund": {"reason": "Parcel lost"}}
        )
        assert r.status_code == 201
        await rx.wait_for_requests(3)
        # matched by action, not taken as the last to arrive: deliveries go out on several
        # connections at once
        (body,) = [
            json.loads(r.body)
            for r in rx.requests
            if json.loads(r.body)["action"] == "refund_requested"
        ]
        assert body["refund"]["parcel_id"] == parcel["id"]
        assert body["refund"]["reason"] == "Parcel lost"
        assert body["refund"]["total_refund"] == "6.95"
        assert body["parcel"]["id"] == parcel["id"]


async def test_webhook_test_uses_typed_values_and_stores_nothing(harness: HarnessFactory) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        before = (await acct.call("GET", f"/api/v2/integrations/{acct.api.id}")).json()
        r = await acct.call(
            "POST",
            f"/api/v2/integrations/{acct.api.id}/webhook-test",
            {"integration": {"webhook_url": rx.url("/typed"), "webhook_signature_key": KEY}},
        )
        result = r.json()
        assert r.status_code == 200 and result["delivered"] is True
        assert result["status_code"] == 200 and result["response_excerpt"] == "ok"
        (req,) = rx.requests
        assert json.loads(req.body)["action"] == "test_webhook"
        assert (
            req.headers["Sendcloud-Signature"]
            == hmac.new(KEY.encode(), req.body, hashlib.sha256).hexdigest()
        )
        after = (await acct.call("GET", f"/api/v2/integrations/{acct.api.id}")).json()
        assert after == before
        rx.route("/typed", Mode.status(500))
        r = await acct.call(
            "POST",
            f"/api/v2/integrations/{acct.api.id}/webhook-test",
            {"integration": {"webhook_url": rx.url("/typed")}},
        )
        assert r.json()["delivered"] is False and r.json()["status_code"] == 500
        assert "2xx" in r.json()["error"]
    assert await h.service.list_deliveries(acct.account_id) == []


async def test_410_turns_the_webhook_off(harness: HarnessFactory) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/gone", Mode.status(410))
        shop_id = await acct.shop(rx.url("/gone"))
        await new_parcel(acct, integration_id=shop_id)
        await eventually(lambda: _count(h, acct, dl.FAILED, 1), what="failed delivery")
        integ = (await acct.call("GET", f"/api/v2/integrations/{shop_id}")).json()
        assert integ["webhook_active"] is False
        (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
        assert d.last_status_code == 410 and "410 Gone" in (d.last_error or "")


async def _attempts(h: Harness, acct: Account, delivery_id: int, n: int) -> bool:
    return len((await h.service.get_delivery(acct.account_id, delivery_id)).attempts) >= n


async def _status(h: Harness, acct: Account, delivery_id: int, status: str) -> bool:
    return (await h.service.get_delivery(acct.account_id, delivery_id)).status == status


async def _count(h: Harness, acct: Account, status: str, n: int) -> bool:
    return len(await h.service.list_deliveries(acct.account_id, status=status)) == n


async def test_retention_prunes_old_payloads_while_delivery_goes_on(
    harness: HarnessFactory,
) -> None:
    clock = FakeClock()
    h = await harness(clock=clock, retention_days=30)
    acct = await h.account()
    async with HostileReceiver() as rx:
        shop_id = await acct.shop(rx.url("/shop"))
        for _ in range(3):
            await new_parcel(acct, integration_id=shop_id)
        await eventually(lambda: _count(h, acct, dl.DELIVERED, 3), what="3 delivered")
        assert await h.runtime.prune_once() == 0  # nothing is old yet
        await clock.advance(31 * 86_400)
        await new_parcel(acct, integration_id=shop_id)
        pruned = []
        while n := await h.runtime.prune_once(batch=2):
            pruned.append(n)
        # in small batches: 3 old deliveries, then the 2 events nobody was to receive
        assert pruned == [2, 1, 2]
        await eventually(lambda: _count(h, acct, dl.DELIVERED, 1), what="new one delivered")
        assert len(rx.requests) == 4
        events = (await acct.call("GET", "/api/v2/webhook-events")).json()["events"]
        assert [e["action"] for e in events] == ["parcel_status_changed"]
