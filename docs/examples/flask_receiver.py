"""Receive parcelhook (or Sendcloud) webhooks in a Flask app.

WEBHOOK_SIGNATURE_KEY='...' WEBHOOK_SECRET='whsec_...' flask --app flask_receiver run
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from flask import Flask, request

from parcelhook.receiver import (
    Deduplicator,
    Event,
    IntegrationDeleted,
    ParcelOrdering,
    ParcelStatusChanged,
    RefundRequested,
    webhook_wsgi_app,
)

# Stand-ins for your database, to keep the example self-contained.
parcel_statuses: dict[int, int] = {}
refund_requests: list[int] = []
disconnected_integrations: set[int] = set()
ordering = ParcelOrdering()


def handle(event: Event, headers: Mapping[str, str]) -> None:
    """Record the event and return: anything slow belongs on a job queue, not here."""
    match event:
        case ParcelStatusChanged(parcel=parcel):
            # retries arrive out of order: never let an older status overwrite a newer one
            if ordering.is_newer(parcel.id, event.timestamp):
                parcel_statuses[parcel.id] = parcel.status_id
        case RefundRequested(refund=refund):
            refund_requests.append(refund.id)
        case IntegrationDeleted(integration=integration):
            disconnected_integrations.add(integration.id)
        case _:
            pass  # acknowledge events you do not use, or they are retried for hours


hook = webhook_wsgi_app(
    handle,
    key=os.environ["WEBHOOK_SIGNATURE_KEY"],
    secret=os.environ.get("WEBHOOK_SECRET"),
    deduplicator=Deduplicator(),
)
app = Flask(__name__)


@app.post("/webhooks/parcelhook")
def parcelhook_webhook() -> tuple[bytes, int, dict[str, str]]:
    status, body = hook.respond(request.get_data(), request.headers)
    return body, status, {"Content-Type": "application/json"}
