"""The headers of one delivery attempt, and the user agent every request of ours carries."""

from __future__ import annotations

from parcelhook import __version__
from parcelhook.domain import signing
from parcelhook.domain.integrations import Integration

USER_AGENT = f"parcelhook/{__version__}"


def delivery_headers(
    integration: Integration,
    *,
    msg_id: str,
    body: bytes,
    at_ms: int,
    signature_key: str | None = None,
) -> dict[str, str]:
    """Every header of one attempt to deliver `body` to `integration`, signed with its key
    (or `signature_key`, a key typed for a test) and its current webhook secrets."""
    return signing.webhook_headers(
        body=body,
        msg_id=msg_id,
        timestamp=at_ms // 1000,
        signature_key=signature_key or integration.signing_key,
        webhook_secrets=integration.webhook_secrets(at_ms),
        user_agent=USER_AGENT,
    )
