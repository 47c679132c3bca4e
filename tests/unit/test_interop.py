"""What we send verifies with other people's code: the official libraries and plain HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import standardwebhooks
import svix.webhooks

from parcelhook.domain import signing, systems
from parcelhook.receiver import verify_signature, verify_standard
from parcelhook.tools.trigger import sample_payload, signed_request

KEY = "Signature-Key-2024!"
SECRET = signing.new_webhook_secret()


def delivery(action: str, **overrides: Any) -> tuple[bytes, dict[str, str]]:
    now_ms = int(time.time() * 1000)
    payload = sample_payload(
        action,
        now_ms=now_ms,
        status_id=11,
        url="https://example.com/hook",
        key=KEY,
        secret=SECRET,
    )
    if "parcel" in payload:
        payload["parcel"].update(overrides)
    return signed_request(payload, key=KEY, secret=SECRET, now_ms=now_ms)


def test_spec_example_signature() -> None:
    body = signing.body_bytes({"key": "value"})
    expected = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a"
    assert body == b'{"key": "value"}'
    assert signing.sendcloud_signature(body, "secretkey") == expected


@pytest.mark.parametrize("action", systems.ACTIONS)
def test_standardwebhooks_library_verifies_our_headers(action: str) -> None:
    body, headers = delivery(action)
    assert standardwebhooks.Webhook(SECRET).verify(body, headers) == json.loads(body)


@pytest.mark.parametrize("action", systems.ACTIONS)
def test_svix_library_verifies_our_headers(action: str) -> None:
    body, headers = delivery(action)
    svix.webhooks.Webhook(SECRET).verify(body, headers)
    # svix's own header names carry the same values
    renamed = {k.replace("webhook-", "svix-"): v for k, v in headers.items()}
    svix.webhooks.Webhook(SECRET).verify(body, renamed)


def test_libraries_refuse_a_tampered_body() -> None:
    body, headers = delivery(systems.PARCEL_STATUS_CHANGED)
    tampered = body.replace(b'"Jan Jansen"', b'"Jan Janssen"')
    with pytest.raises(standardwebhooks.webhooks.WebhookVerificationError):
        standardwebhooks.Webhook(SECRET).verify(tampered, headers)
    with pytest.raises(svix.webhooks.WebhookVerificationError):
        svix.webhooks.Webhook(SECRET).verify(tampered, headers)


def test_our_verifier_accepts_what_the_standard_library_signs() -> None:
    body = b'{"action": "test_webhook", "timestamp": 1}'
    now = datetime.now(UTC).replace(microsecond=0)
    signature = standardwebhooks.Webhook(SECRET).sign("msg_1", now, body.decode())
    headers = {
        "Webhook-Id": "msg_1",
        "Webhook-Timestamp": str(int(now.timestamp())),
        "Webhook-Signature": signature,
    }
    verify_standard(headers, body, SECRET)


@pytest.mark.parametrize(
    "name", ["Jan Jansen", "Zoë Ünal-Ødegård", "東京 太郎", 'Quote " and \\ slash', "emoji 📦"]
)
def test_sendcloud_signature_verifies_raw_and_after_reserialising(name: str) -> None:
    body, headers = delivery(systems.PARCEL_STATUS_CHANGED, name=name)
    sent = headers["Sendcloud-Signature"]
    raw = hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    # receivers that parse first, then json.dumps with the defaults, get the same bytes
    reserialised = json.dumps(json.loads(body)).encode()
    again = hmac.new(KEY.encode(), reserialised, hashlib.sha256).hexdigest()
    assert sent == raw == again
    assert body.isascii()
    assert verify_signature(body, sent, KEY)
