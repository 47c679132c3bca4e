"""Verifying that a webhook came from parcelhook (or Sendcloud) and is not a replay."""

from __future__ import annotations

import base64
import binascii
import hmac
import time
from collections.abc import Mapping

from parcelhook.domain.signing import (
    sendcloud_signature,
    standard_signature,
    webhook_secret_bytes,
)


class WebhookVerificationError(Exception):
    """The request is not an authentic, fresh webhook; answer 401."""


def verify_signature(body: bytes, header: str | None, key: str) -> bool:
    """Whether `header` (`Sendcloud-Signature`) is the HMAC of the raw `body` under `key`."""
    if not header:
        return False
    expected = sendcloud_signature(body, key).encode("ascii")
    # bytes, not str: compare_digest refuses non-ASCII strings, and headers are attacker input
    return hmac.compare_digest(expected, header.strip().lower().encode("utf-8", "replace"))


def verify_standard(
    headers: Mapping[str, str],
    body: bytes,
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> None:
    """Check the Standard Webhooks headers (`webhook-id/-timestamp/-signature`) or raise."""
    lower = {name.lower(): value for name, value in headers.items()}
    msg_id = lower.get("webhook-id")
    stamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    age = (time.time() if now is None else now) - timestamp
    if age > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if age < -tolerance:
        raise WebhookVerificationError("webhook-timestamp is in the future")
    expected = _decode(standard_signature(msg_id, timestamp, body, secret))
    # several signatures are sent while the sender rotates its secret: any one may match
    for candidate in signatures.split():
        got = _decode(candidate)
        if got is not None and expected is not None and hmac.compare_digest(expected, got):
            return
    raise WebhookVerificationError("no matching webhook-signature")


def check_webhook_secret(secret: str) -> None:
    """Raise ValueError unless `secret` is a usable `whsec_` secret (catch typos at start-up)."""
    try:
        usable = bool(webhook_secret_bytes(secret))
    except (binascii.Error, ValueError):
        usable = False
    if not usable:
        raise ValueError("expected a whsec_ secret: whsec_ followed by base64")


def _decode(versioned: str) -> bytes | None:
    version, _, encoded = versioned.partition(",")
    if version != "v1":
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
