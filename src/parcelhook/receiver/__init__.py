"""The integrator's kit: verify, parse, de-duplicate and order parcelhook (or Sendcloud) webhooks.

Pure standard library: importing it pulls in none of the server's dependencies.
"""

from parcelhook.domain.statuses import ParcelStatus
from parcelhook.receiver.asgi import WebhookApp, webhook_app
from parcelhook.receiver.events import (
    Event,
    Integration,
    IntegrationConnected,
    IntegrationDeleted,
    IntegrationUpdated,
    Parcel,
    ParcelStatusChanged,
    Refund,
    RefundRequested,
    TestWebhook,
    UnknownEvent,
    WebhookPayloadError,
    parse_event,
)
from parcelhook.receiver.memory import Deduplicator, ParcelOrdering
from parcelhook.receiver.verify import (
    WebhookVerificationError,
    check_webhook_secret,
    verify_signature,
    verify_standard,
)
from parcelhook.receiver.wsgi import WebhookWSGIApp, webhook_wsgi_app

__all__ = [
    "Deduplicator",
    "Event",
    "Integration",
    "IntegrationConnected",
    "IntegrationDeleted",
    "IntegrationUpdated",
    "Parcel",
    "ParcelOrdering",
    "ParcelStatus",
    "ParcelStatusChanged",
    "Refund",
    "RefundRequested",
    "TestWebhook",
    "UnknownEvent",
    "WebhookApp",
    "WebhookPayloadError",
    "WebhookVerificationError",
    "WebhookWSGIApp",
    "check_webhook_secret",
    "parse_event",
    "verify_signature",
    "verify_standard",
    "webhook_app",
    "webhook_wsgi_app",
]
