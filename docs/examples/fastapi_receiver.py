"""Receive parcelhook (or Sendcloud) webhooks in a FastAPI app.

WEBHOOK_SIGNATURE_KEY='...' WEBHOOK_SECRET='whsec_...' uvicorn fastapi_receiver:app
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fastapi import FastAPI
from starlette.routing import Route

from parcelhook.receiver import (
    Deduplicator,
    Event,
    IntegrationDeleted,
    ParcelOrdering,
    ParcelStatusChanged,
    RefundRequested,
    webhook_app,
)

# Stand-ins for your database, to keep the example self-contained.
parcel_statuses: dict[int, int] = {}
refund_requests: list[int] = []
disconnected_integrations: set[int] = set()
ordering = ParcelOrdering()


async def handle(event: Event, headers: Mapping[str, str]) -> None:
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


app = FastAPI()
app.router.routes.append(
    Route(
        "/webhooks/parcelhook",
        webhook_app(
            handle,
            key=os.environ["WEBHOOK_SIGNATURE_KEY"],
            secret=os.environ.get("WEBHOOK_SECRET"),
            deduplicator=Deduplicator(),
        ),
        methods=["POST"],
    )
)
