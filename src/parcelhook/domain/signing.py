"""The one place that turns a payload into body bytes and signs them.

Body bytes are `json.dumps(payload)` with its defaults: receivers that verify the
raw body and receivers that re-serialise the parsed JSON both compute the same HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

WHSEC_PREFIX = "whsec_"


# `json.dumps` with its defaults, built once: `dumps` makes this encoder anew at every call and
# keeps a table of the containers it is inside, to refuse a cycle (a payload is a tree of
# dicts and lists built here). The same bytes; 9.2 against 10.8 µs for a parcel's event.
_ENCODE = (
    c_make_encoder(
        None,
        json.JSONEncoder().default,
        encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
    if c_make_encoder is not None
    else None
)


def body_bytes(payload: Mapping[str, Any]) -> bytes:
    """The exact bytes sent on the wire for `payload` (the same on every attempt)."""
    if _ENCODE is None:  # no C accelerator (not CPython)
        return json.dumps(payload).encode("ascii")
    return "".join(_ENCODE(payload, 0)).encode("ascii")


def sendcloud_signature(body: bytes, key: str) -> str:
    """`Sendcloud-Signature`: lower-case hex HMAC-SHA256 of the body."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


def new_webhook_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return WHSEC_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def webhook_secret_bytes(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret."""
    raw = secret[len(WHSEC_PREFIX) :] if secret.startswith(WHSEC_PREFIX) else secret
    return base64.b64decode(raw)


def standard_signature(msg_id: str, timestamp: int, body: bytes, secret: str) -> str:
    """One `v1,<base64>` Standard Webhooks signature over `{id}.{timestamp}.{body}`."""
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_secret_bytes(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def webhook_headers(
    *,
    body: bytes,
    msg_id: str,
    timestamp: int,
    signature_key: str,
    webhook_secrets: Iterable[str],
    user_agent: str,
) -> dict[str, str]:
    """Every header of one delivery attempt.

    `webhook_secrets` holds the current `whsec_` secret first and, during a rotation's
    grace period, the previous one: receivers on either secret keep verifying.
    """
    standard = " ".join(standard_signature(msg_id, timestamp, body, s) for s in webhook_secrets)
    return {
        "Content-Type": "application/json",
        "User-Agent": user_agent,
        "Sendcloud-Signature": sendcloud_signature(body, signature_key),
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }
