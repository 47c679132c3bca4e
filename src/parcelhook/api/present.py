"""How records look in API answers: the one place each object is rendered."""

from __future__ import annotations

import json
from typing import Any

from parcelhook.domain import events as ev
from parcelhook.domain import systems
from parcelhook.domain.clock import iso_ms
from parcelhook.domain.deliveries import Delivery
from parcelhook.domain.events import Event
from parcelhook.domain.integrations import Integration


def integration(i: Integration) -> dict[str, Any]:
    """The integration as its owner sees it: never the signature key, only whether it is set."""
    body = ev.integration_object(i)
    body["webhook_signature_key_set"] = i.webhook_signature_key is not None
    body["webhook_signature_key_last4"] = (
        i.webhook_signature_key[-4:] if i.webhook_signature_key else None
    )
    if i.system == systems.API:
        body["public_key"] = i.public_key
        body["secret_key"] = i.secret_key
        body["webhook_secret"] = i.webhook_secret
    return body


def delivery(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "event_id": d.event_id,
        "integration_id": d.integration_id,
        "action": d.action,
        "status": d.status,
        "attempt_count": d.attempt_count,
        "next_attempt_at": iso_ms(d.next_attempt_ms),
        "created_at": iso_ms(d.created_ms),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "attempts": [
            {
                "at": iso_ms(a.at_ms),
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
                "response_excerpt": a.response_excerpt,
                "response_headers": [{"name": n, "value": v} for n, v in a.response_headers],
                "url": a.url,
            }
            for a in d.attempts
        ],
    }


def event(e: Event) -> dict[str, Any]:
    return {
        "id": e.id,
        "action": e.action,
        "timestamp": e.timestamp_ms,
        "payload": json.loads(e.body) if e.body else None,
    }
