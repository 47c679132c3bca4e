"""The receivers in docs/examples run as written, against signed deliveries."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from parcelhook.domain import signing
from parcelhook.tools.trigger import sample_payload, signed_request

EXAMPLES = Path(__file__).parents[2] / "docs" / "examples"
KEY = "Signature-Key-2024!"
SECRET = signing.new_webhook_secret()
PATH = "/webhooks/parcelhook"


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh copy of the example, configured through its environment variables."""
    monkeypatch.setenv("WEBHOOK_SIGNATURE_KEY", KEY)
    monkeypatch.setenv("WEBHOOK_SECRET", SECRET)
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def delivery(action: str, *, at_ms: int, status_id: int = 11) -> tuple[bytes, dict[str, str]]:
    payload = sample_payload(
        action,
        now_ms=at_ms,
        status_id=status_id,
        url="https://example.com",
        key=KEY,
        secret=SECRET,
    )
    # signed now, as a retry of an old event is: webhook-timestamp is the attempt's time
    return signed_request(payload, key=KEY, secret=SECRET, now_ms=int(time.time() * 1000))


def scenario() -> list[tuple[bytes, dict[str, str], int]]:
    """(body, headers, expected status) of a realistic morning, retries and forgeries included."""
    t = int(time.time() * 1000)
    delivered = delivery("parcel_status_changed", at_ms=t, status_id=11)
    late_retry = delivery("parcel_status_changed", at_ms=t - 60_000, status_id=3)
    refund = delivery("refund_requested", at_ms=t)
    deleted = delivery("integration_deleted", at_ms=t)
    forged_body, forged_headers = delivery("refund_requested", at_ms=t)
    forged = (forged_body.replace(b"damaged", b"lost"), forged_headers)
    return [
        (*delivered, 200),
        (*late_retry, 200),
        (*refund, 200),
        (*refund, 200),  # a duplicate: acknowledged, not applied twice
        (*deleted, 200),
        (*delivery("test_webhook", at_ms=t), 200),
        (*forged, 401),
    ]


def check_state(module: Any) -> None:
    assert module.parcel_statuses == {1001: 11}  # the late retry did not undo "Delivered"
    assert module.refund_requests == [501]  # once, although delivered twice
    assert module.disconnected_integrations == {7}


async def test_fastapi_example(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("fastapi_receiver", monkeypatch)
    transport = httpx.ASGITransport(app=module.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
        for body, headers, expected in scenario():
            response = await client.post(PATH, content=body, headers=headers)
            assert response.status_code == expected, response.text
    check_state(module)


def test_flask_example(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load("flask_receiver", monkeypatch)
    client = module.app.test_client()
    for body, headers, expected in scenario():
        response = client.post(PATH, data=body, headers=headers)
        assert response.status_code == expected, response.text
    check_state(module)
