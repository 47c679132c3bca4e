"""/api/v2/parcels: parcels as Sendcloud's reference has them, plus parcelhook's own
tracking updates (`…/status`) and refunds (`…/refund`)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from parcelhook.api import models as m
from parcelhook.api.auth import api_caller
from parcelhook.api.fast_path import fast_route, is_json, path_id
from parcelhook.api.integrations import ERRORS, SC_ERRORS, CallerDep, _service
from parcelhook.api.json_answer import JSONAnswer
from parcelhook.api.labels import base_url
from parcelhook.api.returns import return_code
from parcelhook.domain import events as ev
from parcelhook.domain.clock import parse_iso_ms
from parcelhook.domain.errors import DomainError, InvalidInput
from parcelhook.domain.parcels import NewParcel, Parcel, parse_new_parcel
from parcelhook.domain.statuses import STATUS_MESSAGES
from parcelhook.store.parcel_queries import ParcelFilter, Position

router = APIRouter(prefix="/api/v2/parcels", tags=["parcels"])
Errors = Annotated[Literal["verbose", "verbose-carrier"] | None, Query()]


def _present(request: Request, parcel: Parcel) -> dict[str, Any]:
    return ev.parcel_object(parcel, base_url(request))


def _parse(item: m.ParcelIn, *, updating: bool = False) -> NewParcel:
    return parse_new_parcel(item.model_dump(exclude_none=True), updating=updating)


@router.post(
    "",
    response_model=None,
    responses={200: {"model": m.ParcelCreateOut}, **SC_ERRORS},
)
async def create_parcels(
    request: Request, caller: CallerDep, body: m.ParcelCreateBody, errors: Errors = None
) -> JSONAnswer:
    """One parcel (`{"parcel"}` → `{"parcel"}`) or a batch (`{"parcels"}` → `{"parcels",
    "failed_parcels"}`). An invalid parcel fails the whole request, unless `errors=verbose`
    is given: then the valid ones are created and the others listed with their errors."""
    if (body.parcel is None) == (body.parcels is None):
        raise InvalidInput('Send either {"parcel": {...}} or {"parcels": [...]}.', field="parcel")
    items = [body.parcel] if body.parcel is not None else list(body.parcels or [])
    partial = errors is not None and body.parcels is not None
    parsed: list[NewParcel] = []
    failed: list[dict[str, Any]] = []
    for item in items:
        try:
            parsed.append(_parse(item))
        except DomainError as exc:
            if not partial:
                raise
            failed.append(_failed(item, exc))
    created, refused = await _service(request).create_parcels(
        caller.account_id, caller.integration_id, parsed, partial=partial
    )
    # JSON-native already: FastAPI's jsonable_encoder walk of it cost ~10 % of the call
    if body.parcel is not None:
        return JSONAnswer({"parcel": _present(request, created[0])})
    failed += [_failed(item, exc) for item, exc in ((items[i], e) for i, e in refused)]
    return JSONAnswer(
        {"parcels": [_present(request, p) for p in created], "failed_parcels": failed}
    )


def _failed(item: m.ParcelIn, exc: DomainError) -> dict[str, Any]:
    return {
        "parcel": item.model_dump(exclude_none=True),
        "errors": {exc.field or "non_field_errors": [exc.message]},
    }


@router.put(
    "",
    response_model=None,
    responses={200: {"model": m.ParcelUpdateOut}, **SC_ERRORS},
)
async def update_parcel(
    request: Request, caller: CallerDep, body: m.ParcelUpdateBody
) -> dict[str, Any]:
    """Change a parcel not yet announced (`parcel.id` names it); `request_label: true`
    announces it. Answered as the reference documents it: `{"parcel": [{...}]}`."""
    if body.parcel.id is None:
        raise InvalidInput("parcel.id names the parcel to update.", field="id", code="required")
    change = _parse(body.parcel, updating=True)
    parcel = await _service(request).update_parcel(caller.account_id, body.parcel.id, change)
    return {"parcel": [_present(request, parcel)]}


@router.get(
    "",
    response_model=None,
    responses={200: {"model": m.ParcelList}, **SC_ERRORS},
)
async def list_parcels(
    request: Request,
    caller: CallerDep,
    parcel_status: Annotated[int | None, Query(ge=0, le=m.MAX_ID)] = None,
    tracking_number: Annotated[str | None, Query(max_length=64)] = None,
    external_reference: Annotated[str | None, Query(max_length=255)] = None,
    order_number: Annotated[str | None, Query(max_length=255)] = None,
    updated_after: Annotated[str | None, Query(max_length=64)] = None,
    announced_after: Annotated[str | None, Query(max_length=64)] = None,
    ids: Annotated[
        # 18 digits: every such id fits the 64-bit column (19 may overflow it)
        str | None, Query(max_length=2100, pattern=r"^\d{1,18}(,\d{1,18}){0,99}$")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    errors: Errors = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """Parcels oldest change first, filtered as Sendcloud documents; `next` and `previous`
    are URLs (cursor pagination). Polling: `updated_after`, then follow `next`."""
    f = ParcelFilter(
        status_id=parcel_status,
        tracking_number=tracking_number,
        order_number=order_number,
        external_reference=external_reference,
        updated_after_ms=_instant(updated_after, "updated_after"),
        announced_after_ms=_instant(announced_after, "announced_after"),
        ids=[int(i) for i in ids.split(",")] if ids else None,
    )
    at = _decode_cursor(cursor) if cursor else None
    found, more = await _service(request).find_parcels(caller.account_id, f, at, limit)
    if at is not None and at.backwards:
        # the page before `at`: a next page exists (at's own), a previous one if more
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, at is not None
    next_url = previous_url = None
    if found and has_next:
        next_url = _page(request, Position(found[-1].updated_ms, found[-1].id))
    if found and has_previous:
        previous_url = _page(request, Position(found[0].updated_ms, found[0].id, backwards=True))
    return {
        "next": next_url,
        "previous": previous_url,
        "parcels": [_present(request, p) for p in found],
    }


def _instant(value: str | None, name: str) -> int | None:
    if not value:
        return None
    try:
        return parse_iso_ms(value)
    except (ValueError, OverflowError, OSError):
        raise InvalidInput(f"{name} must be an ISO 8601 date-time.", field=name) from None


def _page(request: Request, at: Position) -> str:
    token = f"p={at.updated_ms}.{at.parcel_id}&r={int(at.backwards)}"
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return str(request.url.include_query_params(cursor=encoded))


def _decode_cursor(cursor: str) -> Position:
    """Sendcloud's cursor: base64 of `p=<position>&r=<reverse>` (ours: updated.id)."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        parts = dict(kv.split("=", 1) for kv in text.split("&"))
        ms, _, pid = parts["p"].partition(".")
        if not (ms.isdigit() and pid.isdigit() and len(ms) <= 15 and len(pid) <= 18):
            raise ValueError(cursor)
        return Position(int(ms), int(pid), backwards=parts.get("r") == "1")
    except (ValueError, KeyError, UnicodeDecodeError, binascii.Error):
        raise InvalidInput("cursor is not one this API gave out.", field="cursor") from None


@router.get(
    "/statuses",
    response_model=None,
    responses={200: {"model": list[m.Status]}, **SC_ERRORS},
)
async def list_statuses(caller: CallerDep) -> list[dict[str, Any]]:
    """Every parcel status, Sendcloud's v2 numbering (declared before `/{parcel_id}`)."""
    return [{"id": i, "message": message} for i, message in STATUS_MESSAGES.items()]


@router.get(
    "/{parcel_id}",
    response_model=None,
    responses={200: {"model": m.ParcelOutEnvelope}, **SC_ERRORS},
)
async def get_parcel(request: Request, caller: CallerDep, parcel_id: m.ParcelId) -> dict[str, Any]:
    parcel = await _service(request).get_parcel(caller.account_id, parcel_id)
    return {"parcel": _present(request, parcel)}


@router.get(
    "/{parcel_id}/return_portal_url",
    response_model=None,
    responses={200: {"model": m.ReturnPortalOut}, **SC_ERRORS},
)
async def return_portal_url(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId
) -> dict[str, Any]:
    """Where the recipient starts a return: parcelhook's own return page for the parcel."""
    parcel = await _service(request).get_parcel(caller.account_id, parcel_id)
    code = quote(return_code(parcel))
    return {"url": f"{base_url(request)}/returns/{parcel.id}?code={code}"}


async def change_status(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId, body: m.StatusIn
) -> JSONAnswer:
    """A carrier tracking update (parcelhook's own); a real change sends
    `parcel_status_changed`."""
    parcel = await _service(request).change_status(
        caller.account_id, parcel_id, body.status_id, body.carrier_status_change_timestamp
    )
    return JSONAnswer({"parcel": _present(request, parcel)})


async def change_status_fast(request: Request) -> Response | None:
    """`change_status` for a well-formed call, without FastAPI's dependency solving (the
    hottest call: api/fast_path.py); None for anything else, which `change_status` then
    answers with its usual errors, in FastAPI's order: a body that is not valid JSON is a
    400 before authentication (FastAPI parses it first), then a wrong key a 401, then
    invalid input its 4xx. So only a valid body is looked at here before authenticating."""
    if not is_json(request.headers.get("content-type")):
        return None
    try:
        body = m.StatusIn.model_validate_json(await request.body())
    except ValidationError:
        return None
    caller = await api_caller(request)
    parcel_id = path_id(request.path_params["parcel_id"], m.MAX_ID)
    if parcel_id is None:
        return None
    return await change_status(request, caller, parcel_id, body)


router.add_api_route(
    "/{parcel_id}/status",
    change_status,
    methods=["POST"],
    response_model=None,
    responses={200: {"model": m.ParcelOutEnvelope}, **ERRORS},
    route_class_override=fast_route(change_status_fast),
)


@router.post(
    "/{parcel_id}/cancel",
    response_model=None,
    responses={
        200: {"model": m.CancelOut},
        202: {"model": m.CancelOut},
        410: {"model": m.CancelOut},
        **SC_ERRORS,
    },
)
async def cancel_parcel(request: Request, caller: CallerDep, parcel_id: m.ParcelId) -> JSONAnswer:
    """Cancel: `cancelled` (200) at once, `queued` (202) while the carrier has the parcel,
    `deleted` (410) when its announcement had failed."""
    done = await _service(request).cancel_parcel(caller.account_id, parcel_id)
    return JSONAnswer(
        {"status": done.status, "message": done.message}, status_code=done.http_status
    )


@router.post(
    "/{parcel_id}/refund",
    status_code=201,
    response_model=None,
    responses={201: {"model": m.RefundOutEnvelope}, **ERRORS},
)
async def request_refund(
    request: Request, caller: CallerDep, parcel_id: m.ParcelId, body: m.RefundEnvelope
) -> dict[str, Any]:
    refund = await _service(request).request_refund(
        caller.account_id, parcel_id, body.refund.reason
    )
    return {"refund": ev.refund_object(refund)}
