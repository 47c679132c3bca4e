"""The receiver kit as an integrator uses it: verify, parse, de-duplicate, order."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Any

import pytest

from parcelhook.domain import signing, statuses
from parcelhook.receiver import (
    Deduplicator,
    IntegrationConnected,
    IntegrationDeleted,
    IntegrationUpdated,
    ParcelOrdering,
    ParcelStatus,
    ParcelStatusChanged,
    RefundRequested,
    TestWebhook,
    UnknownEvent,
    WebhookPayloadError,
    WebhookVerificationError,
    parse_event,
    verify_signature,
    verify_standard,
)
from parcelhook.tools.trigger import sample_payload

KEY = "Signature-Key-2024!"
SECRET = signing.new_webhook_secret()
NOW = 1_800_000_000


def payload(action: str, status_id: int = 11) -> dict[str, Any]:
    return sample_payload(
        action,
        now_ms=NOW * 1000,
        status_id=status_id,
        url="https://example.com/hook",
        key=KEY,
        secret=SECRET,
    )


def standard_headers(
    body: bytes, *, timestamp: int = NOW, secrets: tuple[str, ...] = (SECRET,)
) -> dict[str, str]:
    return signing.webhook_headers(
        body=body,
        msg_id="evt_1",
        timestamp=timestamp,
        signature_key=KEY,
        webhook_secrets=secrets,
        user_agent="parcelhook/test",
    )


# --- Sendcloud-Signature -------------------------------------------------------------------


def test_signature_matches_the_spec_example() -> None:
    body = b'{"key": "value"}'
    sig = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a"
    assert verify_signature(body, sig, "secretkey")
    assert verify_signature(body, sig.upper(), "secretkey")
    assert verify_signature(body, f" {sig}\n", "secretkey")


@pytest.mark.parametrize(
    ("body", "header", "key"),
    [
        (b'{"key": "value "}', signing.sendcloud_signature(b'{"key": "value"}', KEY), KEY),
        (b'{"key": "value"}', signing.sendcloud_signature(b'{"key": "value"}', KEY), KEY + "x"),
        (b"{}", None, KEY),
        (b"{}", "", KEY),
        (b"{}", "é" * 64, KEY),
        (b"{}", signing.sendcloud_signature(b"{}", KEY)[:-1], KEY),
    ],
    ids=["tampered body", "wrong key", "missing", "empty", "non-ascii", "truncated"],
)
def test_signature_rejects(body: bytes, header: str | None, key: str) -> None:
    assert verify_signature(body, header, key) is False


# --- Standard Webhooks ---------------------------------------------------------------------


def test_standard_headers_verify_with_any_header_case() -> None:
    body = signing.body_bytes(payload("parcel_status_changed"))
    headers = {k.upper(): v for k, v in standard_headers(body).items()}
    verify_standard(headers, body, SECRET, now=NOW)


def test_standard_accepts_either_secret_during_a_rotation() -> None:
    body = b'{"action": "test_webhook"}'
    old, new = SECRET, signing.new_webhook_secret()
    headers = standard_headers(body, secrets=(new, old))
    verify_standard(headers, body, old, now=NOW)
    verify_standard(headers, body, new, now=NOW)
    with pytest.raises(WebhookVerificationError, match="no matching"):
        verify_standard(headers, body, signing.new_webhook_secret(), now=NOW)


@pytest.mark.parametrize("skew", [-300, 0, 300])
def test_standard_accepts_timestamps_within_tolerance(skew: int) -> None:
    body = b"{}"
    verify_standard(standard_headers(body, timestamp=NOW + skew), body, SECRET, now=NOW)


@pytest.mark.parametrize(("skew", "words"), [(-301, "too old"), (301, "in the future")])
def test_standard_rejects_timestamps_outside_tolerance(skew: int, words: str) -> None:
    body = b"{}"
    headers = standard_headers(body, timestamp=NOW + skew)
    with pytest.raises(WebhookVerificationError, match=words):
        verify_standard(headers, body, SECRET, now=NOW)
    verify_standard(headers, body, SECRET, now=NOW, tolerance=400)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_standard_rejects_missing_headers(missing: str) -> None:
    body = b"{}"
    headers = standard_headers(body)
    del headers[missing]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_standard(headers, body, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-signature", "v2,abc v1,not-base64!! garbage"),
        ("webhook-timestamp", "yesterday"),
        ("webhook-id", "evt_other"),
    ],
)
def test_standard_rejects_tampered_headers(name: str, value: str) -> None:
    body = b"{}"
    headers = standard_headers(body) | {name: value}
    with pytest.raises(WebhookVerificationError):
        verify_standard(headers, body, SECRET, now=NOW)


def test_standard_finds_the_valid_signature_among_others() -> None:
    body = b"{}"
    headers = standard_headers(body)
    headers["webhook-signature"] = "v1a,xyz v1,AAAA " + headers["webhook-signature"]
    verify_standard(headers, body, SECRET, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify_standard(headers, body + b" ", SECRET, now=NOW)


# --- parse_event ---------------------------------------------------------------------------


def test_parse_parcel_status_changed() -> None:
    data = payload("parcel_status_changed", status_id=11)
    event = parse_event(signing.body_bytes(data))
    assert isinstance(event, ParcelStatusChanged)
    assert (event.action, event.timestamp) == ("parcel_status_changed", NOW * 1000)
    assert event.carrier_status_change_timestamp == data["carrier_status_change_timestamp"]
    parcel = event.parcel
    assert parcel.id == data["parcel"]["id"]
    assert parcel.status is ParcelStatus.DELIVERED
    assert (parcel.status_id, parcel.status_message) == (11, "Delivered")
    assert parcel.tracking_number == data["parcel"]["tracking_number"]
    assert (parcel.carrier_code, parcel.country, parcel.is_return) == ("postnl", "NL", False)
    assert parcel.raw == data["parcel"]
    assert event.raw == data


@pytest.mark.parametrize(
    ("action", "cls"),
    [
        ("integration_connected", IntegrationConnected),
        ("integration_updated", IntegrationUpdated),
        ("integration_deleted", IntegrationDeleted),
    ],
)
def test_parse_integration_events(action: str, cls: type) -> None:
    data = payload(action)
    event = parse_event(json.dumps(data))
    assert isinstance(event, cls)
    integration = event.integration
    assert (integration.id, integration.system) == (data["integration"]["id"], "api")
    assert integration.webhook_url == "https://example.com/hook"
    assert integration.webhook_active is True
    assert integration.raw == data["integration"]


def test_parse_refund_requested() -> None:
    data = payload("refund_requested")
    event = parse_event(signing.body_bytes(data))
    assert isinstance(event, RefundRequested)
    assert event.refund.parcel_id == event.parcel.id == data["parcel"]["id"]
    assert (event.refund.status, event.refund.reason) == ("requested", "Parcel arrived damaged")
    assert event.refund.total_refund == "6.95"


def test_parse_test_webhook_has_only_the_short_integration() -> None:
    event = parse_event(signing.body_bytes(payload("test_webhook")))
    assert isinstance(event, TestWebhook)
    assert event.integration.shop_name == "Demo Webshop"
    assert event.integration.webhook_url is None and event.integration.webhook_active is None


def test_unknown_actions_and_statuses_are_kept_not_refused() -> None:
    event = parse_event(b'{"action": "parcel_teleported", "timestamp": 5, "where": "Mars"}')
    assert isinstance(event, UnknownEvent)
    assert (event.action, event.timestamp, event.raw["where"]) == ("parcel_teleported", 5, "Mars")
    data = payload("parcel_status_changed")
    data["parcel"]["status"] = {"id": 77777, "message": "Beamed"}
    parsed = parse_event(json.dumps(data))
    assert isinstance(parsed, ParcelStatusChanged)
    assert (parsed.parcel.status, parsed.parcel.status_id) == (None, 77777)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"timestamp": 1}', "action"),
        (b'{"action": "test_webhook"}', "timestamp"),
        (b'{"action": "test_webhook", "timestamp": true, "integration": {"id": 1}}', "timestamp"),
        (b'{"action": "parcel_status_changed", "timestamp": 1, "parcel": []}', "parcel"),
        (b'{"action": "parcel_status_changed", "timestamp": 1, "parcel": {"id": 1}}', "status"),
        (b'{"action": "integration_updated", "timestamp": 1, "integration": {}}', "id"),
    ],
)
def test_malformed_bodies_raise_payload_errors(body: bytes, words: str) -> None:
    with pytest.raises(WebhookPayloadError, match=words):
        parse_event(body)


def test_events_are_frozen_and_the_status_enum_is_the_domains() -> None:
    event = parse_event(signing.body_bytes(payload("parcel_status_changed")))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.timestamp = 0  # type: ignore[misc]
    assert ParcelStatus is statuses.ParcelStatus
    assert ParcelStatus(62997).message == "Address invalid"


# --- Deduplicator and ParcelOrdering -------------------------------------------------------


def test_deduplicator_answers_seen_and_forgets_the_least_recently_used() -> None:
    dedupe = Deduplicator(maxsize=2)
    assert [dedupe.seen("a"), dedupe.seen("b"), dedupe.seen("a")] == [False, False, True]
    assert dedupe.seen("c") is False  # evicts "b", the least recently seen
    assert ("a" in dedupe, "b" in dedupe, len(dedupe)) == (True, False, 2)
    dedupe.forget("a")
    assert dedupe.seen("a") is False
    with pytest.raises(ValueError):
        Deduplicator(maxsize=0)


def test_deduplicator_memory_is_bounded_by_default() -> None:
    dedupe = Deduplicator()
    for n in range(10_500):
        dedupe.seen(f"evt_{n}")
    assert len(dedupe) == 10_000
    assert dedupe.seen("evt_10499") and not dedupe.seen("evt_0")


def test_ordering_keeps_only_newer_events_per_parcel() -> None:
    ordering = ParcelOrdering()
    assert ordering.is_newer(1, 2000)
    assert not ordering.is_newer(1, 1000)  # a late retry of an older status
    assert not ordering.is_newer(1, 2000)  # the same event again
    assert ordering.is_newer(2, 1000)  # other parcels are independent
    assert ordering.is_newer(1, 3000)
    assert ordering.latest(1) == 3000


def test_ordering_memory_is_bounded() -> None:
    ordering = ParcelOrdering(maxsize=2)
    ordering.is_newer(1, 100)
    ordering.is_newer(2, 100)
    ordering.is_newer(3, 100)
    assert (ordering.latest(1), ordering.latest(3)) == (None, 100)
    assert ordering.is_newer(1, 50)  # forgotten, so accepted


def test_receiver_imports_none_of_the_servers_dependencies() -> None:
    code = (
        "import sys, parcelhook.receiver, parcelhook.receiver.asgi, parcelhook.receiver.wsgi;"
        "heavy = {'aiohttp', 'sqlalchemy', 'fastapi', 'starlette', 'flask', 'click', 'httpx'};"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
