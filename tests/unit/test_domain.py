"""The pure domain, exactly per SPEC: systems, statuses, keys, payloads, signing, retries."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from parcelhook.domain import events as ev
from parcelhook.domain import keys, signing, systems
from parcelhook.domain.clock import iso_seconds
from parcelhook.domain.errors import InvalidInput
from parcelhook.domain.integrations import Integration, parse_changes
from parcelhook.domain.parcels import Parcel, parse_new_parcel
from parcelhook.domain.retry import AttemptResult, RetryPolicy, Verdict
from parcelhook.domain.statuses import STATUS_MESSAGES, ParcelStatus


def _integration(**kw: object) -> Integration:
    base: dict[str, object] = dict(
        id=7,
        account_id=1,
        shop_name="Shop",
        shop_url=None,
        system="api",
        webhook_active=True,
        webhook_url="https://example.com/h",
        webhook_signature_key=None,
        public_key="pk",
        secret_key="sk",
        webhook_secret=signing.new_webhook_secret(),
        previous_webhook_secret=None,
        previous_webhook_secret_until_ms=None,
        failing_since_ms=None,
        last_fetch_ms=None,
        last_updated_ms=1,
        created_ms=1,
    )
    base.update(kw)
    return Integration(**base)  # type: ignore[arg-type]


def test_the_spec_signature_example() -> None:
    assert signing.sendcloud_signature(b'{"key": "value"}', "secretkey") == (
        "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a"
    )


def test_body_bytes_are_json_dumps_with_defaults() -> None:
    payload = {"action": "x", "timestamp": 1, "name": "Zoë", "n": [1, 2]}
    assert signing.body_bytes(payload) == json.dumps(payload).encode()
    assert b"Zo\\u00eb" in signing.body_bytes(payload)  # ensure_ascii
    # every JSON type, nesting, escapes, floats and non-BMP text, byte for byte
    tricky: dict[Any, Any] = {
        "s": 'quote " backslash \\ tab \t nl \n nul \x00 \u2028 \U0001f4e6 ü',
        "floats": [0.1, -2.5e-08, 1e300, 3.0, float("inf"), float("-inf")],
        "ints": [0, -1, 2**70],
        "none": None,
        "bools": [True, False],
        "nested": {"empty": {}, "list": [[], [{}], {"k": [1, "2", None]}]},
        "tuple": (1, 2),
        7: "int key",
    }
    assert signing.body_bytes(tricky) == json.dumps(tricky).encode()
    with pytest.raises(TypeError):
        signing.body_bytes({"not json": object()})


def test_standard_webhooks_headers_verify_with_the_official_library() -> None:
    secret, old = signing.new_webhook_secret(), signing.new_webhook_secret()
    body = b'{"action": "test_webhook"}'
    import time

    headers = signing.webhook_headers(
        body=body,
        msg_id="evt_1",
        timestamp=int(time.time()),
        signature_key="k",
        webhook_secrets=[secret, old],
        user_agent="parcelhook/test",
    )
    assert headers["webhook-signature"].count("v1,") == 2
    Webhook(secret).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_webhook_secret()).verify(body, headers)


def test_sixteen_systems_and_their_events() -> None:
    assert len(systems.SYSTEMS) == 16
    assert all(systems.can_receive("api", a) for a in systems.ACTIONS)
    for system in set(systems.SYSTEMS) - {"api"}:
        assert systems.can_receive(system, "parcel_status_changed")
        for action in (
            "integration_connected",
            "integration_updated",
            "integration_deleted",
            "refund_requested",
        ):
            assert not systems.can_receive(system, action)


def test_unknown_system_is_refused_listing_the_accepted_values() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_changes({"shop_name": "x", "system": "magento"}, creating=True)
    assert info.value.field == "system"
    assert "magento_v2" in info.value.message and "woocommerce" in info.value.message


def test_statuses_as_listed_in_the_spec() -> None:
    assert STATUS_MESSAGES[11] == "Delivered" and ParcelStatus(62997).message == "Address invalid"
    assert STATUS_MESSAGES[94] == "Parcel cancellation failed."
    # SPEC §3 lists 35 (as do Sendcloud clients' own tables); one message per enum member
    assert len(STATUS_MESSAGES) == 35
    assert {s.value for s in ParcelStatus} == set(STATUS_MESSAGES)


@pytest.mark.parametrize(
    ("key", "failed"),
    [
        ("Str0ng!Signature-Key", []),
        ("short", ["length", "digit", "uppercase", "special"]),
        ("aaaaaaaaaaaaaaaa", ["digit", "uppercase", "special"]),
        ("AAAAAAAAAAAAAAA1!", ["lowercase"]),
        ("Abcdefghijklmnop 1", ["special"]),  # a space is not special
        ("", ["length", "digit", "uppercase", "lowercase", "special"]),
    ],
)
def test_signature_key_policy_names_every_failed_rule(key: str, failed: list[str]) -> None:
    assert keys.failed_rules(key) == failed
    if failed:
        with pytest.raises(keys.WeakSignatureKey) as info:
            keys.check_signature_key(key)
        body = info.value.as_dict()
        assert body["code"] == "weak_signature_key" and body["rules"] == failed
        assert body["field"] == "webhook_signature_key"
        for rule in failed:
            assert keys.RULES[rule] in body["message"]


def test_parcel_payload_has_the_spec_fields() -> None:
    new = parse_new_parcel(
        {
            "name": "A",
            "address": "Street",
            "house_number": "5",
            "city": "C",
            "postal_code": "1",
            "country": "de",
            "weight": 2,
        }
    )
    p = Parcel(
        id=1,
        account_id=1,
        integration_id=7,
        created_ms=0,
        updated_ms=0,
        tracking_number="T",
        status_id=1000,
        carrier_status_change_ms=None,
        **{
            k: getattr(new, k)
            for k in (
                "name",
                "company_name",
                "address",
                "house_number",
                "city",
                "postal_code",
                "country",
                "telephone",
                "email",
                "weight",
                "order_number",
                "external_order_id",
                "external_shipment_id",
                "shipment_id",
                "is_return",
            )
        },
    )
    payload = ev.parcel_status_changed(p, 1_700_000_000_123)
    assert list(payload) == ["action", "timestamp", "carrier_status_change_timestamp", "parcel"]
    parcel = payload["parcel"]
    for field in (
        "id",
        "name",
        "company_name",
        "address",
        "address_divided",
        "city",
        "postal_code",
        "telephone",
        "email",
        "date_created",
        "tracking_number",
        "tracking_url",
        "weight",
        "label",
        "customs_declaration",
        "status",
        "data",
        "country",
        "shipment",
        "carrier",
        "order_number",
        "shipment_uuid",
        "external_order_id",
        "external_shipment_id",
        "is_return",
    ):
        assert field in parcel
    assert parcel["weight"] == "2.000" and parcel["date_created"] == "1970-01-01T00:00:00"
    assert parcel["country"] == {"iso_2": "DE", "iso_3": "DEU", "name": "Germany"}
    assert parcel["status"] == {"id": 1000, "message": "Ready to send"}
    assert parcel["label"] == {"normal_printer": [], "label_printer": None}


def test_integration_payload_never_carries_a_secret() -> None:
    i = _integration(webhook_signature_key="Str0ng!Signature-Key")
    body = json.dumps(ev.integration_changed("integration_updated", i, 5))
    assert "Str0ng" not in body and "sk" not in json.loads(body)["integration"].values()
    assert list(json.loads(body)["integration"]) == [
        "id",
        "shop_name",
        "shop_url",
        "system",
        "failing_since",
        "last_fetch",
        "last_updated_at",
        "service_point_enabled",
        "service_point_carriers",
        "webhook_active",
        "webhook_url",
    ]


def test_signing_key_falls_back_to_the_api_secret() -> None:
    assert _integration().signing_key == "sk"
    assert _integration(webhook_signature_key="K").signing_key == "K"


def test_routing_skips_ineligible_and_switched_off_integrations() -> None:
    api_on, api_off = _integration(id=1), _integration(id=2, webhook_active=False)
    shop = _integration(id=3, system="shopify")
    assert ev.recipients("integration_updated", api_on) == [api_on]
    assert ev.recipients("integration_updated", api_off) == []
    assert ev.recipients("integration_updated", shop) == []
    assert ev.recipients("refund_requested", shop) == []
    assert ev.recipients("parcel_status_changed", shop) == [shop]
    assert ev.recipients("parcel_status_changed", api_off) == []
    assert ev.recipients("parcel_status_changed", None) == []


def test_the_default_retry_schedule_is_sendclouds() -> None:
    policy = RetryPolicy()
    minutes = [d / 60 for d in policy.delays]
    assert minutes == [5, 10, 20, 40, 60, 60, 60, 60, 60, 60]
    assert policy.max_attempts == 11
    rng = random.Random(1)
    fail = AttemptResult(500, 1)
    for n, planned in enumerate(policy.delays, start=1):
        d = policy.decide(fail, n, rng)
        assert d.verdict is Verdict.RETRY and d.retry_in is not None
        assert 0.9 * planned <= d.retry_in <= 1.1 * planned
    assert policy.decide(fail, 11, rng).verdict is Verdict.FAILED


@pytest.mark.parametrize(
    ("result", "verdict"),
    [
        (AttemptResult(200, 1), Verdict.DELIVERED),
        (AttemptResult(204, 1), Verdict.DELIVERED),
        (AttemptResult(301, 1), Verdict.RETRY),
        (AttemptResult(410, 1), Verdict.GONE),
        (AttemptResult(None, 1, error="connection refused"), Verdict.RETRY),
        (AttemptResult(200, 1, error="timed out while reading"), Verdict.RETRY),
    ],
)
def test_outcome_classification(result: AttemptResult, verdict: Verdict) -> None:
    assert RetryPolicy().decide(result, 1).verdict is verdict


def test_retry_after_is_honoured_within_one_to_two_times_the_plan() -> None:
    policy = RetryPolicy()
    for status in (429, 503):
        assert policy.decide(AttemptResult(status, 1, retry_after=10), 1).retry_in == 300
        assert policy.decide(AttemptResult(status, 1, retry_after=450), 1).retry_in == 450
        assert policy.decide(AttemptResult(status, 1, retry_after=9999), 1).retry_in == 600


def test_hmac_is_over_the_exact_bytes() -> None:
    body = signing.body_bytes({"a": 1})
    assert (
        signing.sendcloud_signature(body, "k") == hmac.new(b"k", body, hashlib.sha256).hexdigest()
    )


def test_a_parcels_dates_read_as_datetime_formats_them() -> None:
    # iso_seconds formats each second once (cached) with time.strftime; the webhook bodies
    # must read as before, when datetime formatted every one
    rng = random.Random(15)
    stamps = [0, 999, 1000, -1, -1500, 1_780_000_000_999, 253_402_300_799_999]
    stamps += [rng.randrange(-(10**12), 253_402_300_799_999) for _ in range(2000)]
    for ms in stamps:
        expected = datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        assert iso_seconds(ms) == expected, ms


def _plain_parcel(**changes: object) -> Parcel:
    fields: dict[str, object] = {
        "id": 9,
        "account_id": 1,
        "integration_id": 2,
        "name": "Jan Jansen",
        "company_name": "",
        "address": "Stadhuisplein",
        "house_number": "10",
        "city": "Eindhoven",
        "postal_code": "5611 EM",
        "country": "NL",
        "telephone": "",
        "email": "",
        "weight": "2.500",
        "order_number": "",
        "external_order_id": None,
        "external_shipment_id": None,
        "shipment_id": 8,
        "tracking_number": "3SPH0000000009",
        "is_return": False,
        "status_id": 1000,
        "created_ms": 0,
        "updated_ms": 0,
        "carrier_status_change_ms": None,
        "details": {},
        "announced_ms": None,
        "external_reference": None,
    }
    return Parcel(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_parcel_object_made_twice_is_the_same_and_never_another_parcels() -> None:
    # parcel_object remembers what it made, by the Parcel's identity: the webhook's and the
    # API answer's object of one status change are made once
    p = _plain_parcel()
    first = ev.parcel_object(p, "https://events.example")
    # an unlabelled parcel has no links, so the base URL does not matter
    assert ev.parcel_object(p, "http://127.0.0.1:8000") is first
    # an equal but distinct parcel in another status: its own object, never the cached one
    moved = p.with_status(ParcelStatus.DELIVERED, 5_000, None)
    assert ev.parcel_object(moved, "https://events.example")["status"]["id"] == 11
    assert first["status"]["id"] == 1000
    # a labelled parcel's links name the base URL each caller asked for
    labelled = _plain_parcel(announced_ms=1_000)
    a = ev.parcel_object(labelled, "https://a.example")
    b = ev.parcel_object(labelled, "https://b.example")
    assert a["label"]["label_printer"].startswith("https://a.example/")
    assert b["label"]["label_printer"].startswith("https://b.example/")
    assert a["documents"][0]["link"].startswith("https://a.example/")
    assert ev.parcel_object(labelled, "https://a.example") is a
