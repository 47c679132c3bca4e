"""What every adapter does around the integrator's handler: verify, parse, de-duplicate, reply."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from parcelhook.receiver.events import Event, WebhookPayloadError, parse_event
from parcelhook.receiver.memory import Deduplicator
from parcelhook.receiver.verify import (
    WebhookVerificationError,
    check_webhook_secret,
    verify_signature,
    verify_standard,
)

log = logging.getLogger("parcelhook.receiver")

MAX_BODY = 1 << 20


class HeaderItems(Protocol):
    """Anything with `items()`: a dict, Starlette's or Werkzeug's headers."""

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    @classmethod
    def json(cls, status: int, **fields: Any) -> Reply:
        return cls(status, json.dumps(fields).encode())


OK = Reply.json(200, ok=True)


class Gate:
    """Admits only authentic, well-formed, first-seen webhooks."""

    def __init__(
        self,
        *,
        key: str | None,
        secret: str | None,
        tolerance: int,
        deduplicator: Deduplicator | None,
        max_body: int,
    ) -> None:
        if not key and not secret:
            raise ValueError("pass key= (Sendcloud-Signature) and/or secret= (whsec_...)")
        if secret:
            # a mistyped secret should fail at start-up, not as a 500 on every delivery
            check_webhook_secret(secret)
        self.key, self.secret, self.tolerance = key, secret, tolerance
        self.deduplicator, self.max_body = deduplicator, max_body

    def admit(self, body: bytes, headers: Mapping[str, str]) -> Event | Reply:
        """The event to hand to the handler, or the reply that ends the request now."""
        if len(body) > self.max_body:
            return Reply.json(413, error="body too large")
        if self.key and not verify_signature(body, headers.get("sendcloud-signature"), self.key):
            return Reply.json(401, error="missing or invalid Sendcloud-Signature")
        if self.secret:
            try:
                verify_standard(headers, body, self.secret, tolerance=self.tolerance)
            except WebhookVerificationError as exc:
                return Reply.json(401, error=str(exc))
        try:
            event = parse_event(body)
        except WebhookPayloadError as exc:
            return Reply.json(400, error=str(exc))
        webhook_id = headers.get("webhook-id")
        if self.deduplicator is not None and webhook_id and self.deduplicator.seen(webhook_id):
            return Reply.json(200, ok=True, duplicate=True)
        return event

    def failed(self, event: Event, headers: Mapping[str, str]) -> Reply:
        """Log the handler's exception; a 5xx makes the sender retry, so forget the id."""
        webhook_id = headers.get("webhook-id")
        log.exception("webhook handler failed on %s %s", event.action, webhook_id or "")
        if self.deduplicator is not None and webhook_id:
            self.deduplicator.forget(webhook_id)
        return Reply.json(500, error="handler failed")


def lower_headers(headers: HeaderItems) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
