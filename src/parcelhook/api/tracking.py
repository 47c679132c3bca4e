"""/api/v2/tracking-updates: carrier scans in bulk, for platforms that feed them in."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from parcelhook.api import models as m
from parcelhook.api.integrations import ERRORS, CallerDep, _service
from parcelhook.api.json_answer import JSONAnswer
from parcelhook.domain import tracking
from parcelhook.domain.statuses import STATUS_MESSAGES

router = APIRouter(prefix="/api/v2/tracking-updates", tags=["parcels"])


@router.post("", response_model=None, responses={200: {"model": m.TrackingResults}, **ERRORS})
async def track_many(request: Request, caller: CallerDep, body: m.TrackingUpdatesIn) -> JSONAnswer:
    """Up to 1,000 status changes in one transaction, each answered in its place.

    A change sends `parcel_status_changed` as the single call does. An item that is
    malformed or names no parcel of yours fails alone; the others still apply.
    """
    results = await _service(request).track_many(caller.account_id, body.tracking_updates)
    counts = {tracking.CHANGED: 0, tracking.UNCHANGED: 0, tracking.FAILED: 0}
    out: list[dict[str, Any]] = []
    for r in results:
        counts[r.outcome] += 1
        item: dict[str, Any] = {"parcel_id": r.parcel_id, "result": r.outcome}
        if r.status_id is not None:
            item["status"] = {"id": r.status_id, "message": STATUS_MESSAGES[r.status_id]}
        if r.error is not None:
            item["error"] = r.error.as_dict()
        out.append(item)
    # JSON-native already: no jsonable_encoder walk of up to 1,000 results
    return JSONAnswer({"results": out, **counts})
