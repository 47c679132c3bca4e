"""Rotating secrets without dropping a webhook, on SQLite and PostgreSQL.

A rotated `whsec_` secret signs alongside the old one for the grace period (24 h), so
receivers verifying with either keep working; after it only the new one signs. A changed
signature key signs the very next attempt, retries of older events included.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime, tzinfo

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from parcelhook.domain.clock import FakeClock
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode, ReceivedRequest

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
KEY_1 = "First-Signature-Key1"
KEY_2 = "Second-Signature-Key2"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """A FakeClock that the `standardwebhooks` library also reads its "now" from."""
    fake = FakeClock()

    class FakeNow(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> FakeNow:
            return cls.fromtimestamp(fake.now_ms() / 1000, tz)

    monkeypatch.setattr("standardwebhooks.webhooks.datetime", FakeNow)
    return fake


def signatures(request: ReceivedRequest) -> list[str]:
    return request.headers["webhook-signature"].split(" ")


def verifies(secret: str, request: ReceivedRequest, signature: str | None = None) -> bool:
    """Whether the official library accepts the request (or only `signature` of it)."""
    headers = dict(request.headers)
    if signature is not None:
        headers["webhook-signature"] = signature
    try:
        Webhook(secret).verify(request.body, headers)
    except WebhookVerificationError:
        return False
    return True


def sendcloud_signed_with(key: str, request: ReceivedRequest) -> bool:
    expected = hmac.new(key.encode(), request.body, hashlib.sha256).hexdigest()
    return request.headers["Sendcloud-Signature"] == expected


async def whsec(acct: Account, integration_id: int) -> str:
    r = await acct.call("GET", f"/api/v2/integrations/{integration_id}")
    secret: str = r.json()["webhook_secret"]
    return secret


async def new_parcel(acct: Account, **extra: object) -> int:
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, **extra}})
    assert r.status_code == 200, r.text
    return int(r.json()["parcel"]["id"])


async def test_a_rotated_secret_signs_alongside_the_old_one_for_the_grace_period(
    harness: HarnessFactory, clock: FakeClock
) -> None:
    h = await harness(clock=clock)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/hook", Mode.ok(), Mode.ok(), Mode.status(500), Mode.status(500), Mode.ok())
        r = await acct.call(
            "PATCH",
            f"/api/v2/integrations/{acct.api.id}",
            {"webhook_active": True, "webhook_url": rx.url("/hook")},
        )
        assert r.status_code == 200
        (before,) = await rx.wait_for_requests(1)
        old = await whsec(acct, acct.api.id)
        assert signatures(before) and len(signatures(before)) == 1 and verifies(old, before)

        r = await acct.call("POST", f"/api/v2/integrations/{acct.api.id}/rotate-webhook-secret")
        assert r.status_code == 200
        new = r.json()["integration"]["webhook_secret"]
        assert new.startswith("whsec_") and new != old
        assert await whsec(acct, acct.api.id) == new  # the owner sees only the current one
        stranger = "whsec_" + "A" * 43 + "="

        # the rotation is a change of the integration's webhook settings (SPEC §2): its own
        # integration_updated, signed with both secrets (a receiver on either verifies it)
        told = (await rx.wait_for_requests(2))[1]
        update = json.loads(told.body)
        assert update["action"] == "integration_updated"
        assert update["integration"]["id"] == acct.api.id
        assert (
            update["integration"]["last_updated_at"] == r.json()["integration"]["last_updated_at"]
        )
        assert new not in told.body.decode() and old not in told.body.decode()
        assert len(signatures(told)) == 2 and verifies(new, told) and verifies(old, told)

        # during the grace period: two signatures, the new one first, each verifiable alone
        await new_parcel(acct)  # answered 500: retried later, after the grace period
        first = (await rx.wait_for_requests(3))[2]
        assert json.loads(first.body)["action"] == "parcel_status_changed"
        fresh, previous = signatures(first)
        assert verifies(new, first, fresh) and not verifies(old, first, fresh)
        assert verifies(old, first, previous) and not verifies(new, first, previous)
        assert verifies(new, first) and verifies(old, first) and not verifies(stranger, first)
        assert sendcloud_signed_with(acct.api.secret_key, first)  # untouched by the rotation

        # a minute before the grace period ends, both still sign (the retry included)
        await clock.advance(24 * 3600 - 60)
        retried = (await rx.wait_for_requests(4))[3]
        assert retried.headers["webhook-id"] == first.headers["webhook-id"]
        assert len(signatures(retried)) == 2
        assert verifies(new, retried) and verifies(old, retried)

        # after it, only the new secret signs: new events and retries of older ones alike
        await clock.advance(2 * 60)
        await new_parcel(acct)
        after = (await rx.wait_for_requests(5))[4]
        assert len(signatures(after)) == 1
        assert verifies(new, after) and not verifies(old, after)
        await clock.advance(20 * 60)  # the second retry of the first parcel's event
        last = (await rx.wait_for_requests(6))[5]
        assert last.headers["webhook-id"] == first.headers["webhook-id"] and last.body == first.body
        assert len(signatures(last)) == 1
        assert verifies(new, last) and not verifies(old, last)


async def test_a_changed_signature_key_signs_the_next_attempt(
    harness: HarnessFactory, clock: FakeClock
) -> None:
    h = await harness(clock=clock)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rx.route("/flaky", Mode.status(500), Mode.status(500), Mode.ok())
        shop = await acct.shop(rx.url("/flaky"), webhook_signature_key=KEY_1)
        await new_parcel(acct, integration_id=shop)
        (first,) = await rx.wait_for_requests(1)
        assert sendcloud_signed_with(KEY_1, first)
        await wait_for_attempts(h, acct, shop, 1)

        r = await acct.call(
            "PATCH", f"/api/v2/integrations/{shop}", {"webhook_signature_key": KEY_2}
        )
        assert r.status_code == 200
        assert r.json()["webhook_signature_key_last4"] == KEY_2[-4:]
        await clock.advance(6 * 60)
        second = (await rx.wait_for_requests(2))[1]
        assert second.body == first.body
        assert sendcloud_signed_with(KEY_2, second) and not sendcloud_signed_with(KEY_1, second)
        await wait_for_attempts(h, acct, shop, 2)

        # removing the key: the next attempt is signed with the integration's API secret key
        r = await acct.call("PATCH", f"/api/v2/integrations/{shop}", {"webhook_signature_key": ""})
        assert r.status_code == 200
        assert r.json()["webhook_signature_key_set"] is False
        await clock.advance(12 * 60)
        third = (await rx.wait_for_requests(3))[2]
        secret_key = (await h.service.get_integration(acct.account_id, shop)).secret_key
        assert sendcloud_signed_with(secret_key, third)
        assert not sendcloud_signed_with(KEY_2, third)


async def wait_for_attempts(h: Harness, acct: Account, integration_id: int, n: int) -> None:
    """Until the outcome of attempt `n` is written (so a settings change comes after it)."""

    async def recorded() -> bool:
        (d,) = await h.service.list_deliveries(acct.account_id, integration_id=integration_id)
        return d.attempt_count >= n

    await eventually(recorded, what=f"attempt {n} to be recorded")
