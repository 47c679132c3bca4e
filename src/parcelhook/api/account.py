"""/api/v2/shipping_methods, /api/v2/user and /api/v2/user/addresses/sender."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from parcelhook.api import models as m
from parcelhook.api.integrations import SC_ERRORS, CallerDep, _service
from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.errors import NotFound
from parcelhook.domain.senders import sender_address_object
from parcelhook.domain.shipping import ShippingMethod

router = APIRouter(prefix="/api/v2", tags=["account"])
MethodId = Annotated[int, Path(ge=1, le=m.MAX_ID)]
SenderId = Annotated[int, Path(ge=1, le=m.MAX_ID)]


def shipping_method_object(method: ShippingMethod, to_country: str | None) -> dict[str, Any]:
    """A shipping method as Sendcloud lists it: weights as strings, a price per country."""
    countries = [
        {
            "id": i + 1,
            "name": COUNTRIES[iso_2][1],
            "price": float(price),
            "iso_2": iso_2,
            "iso_3": COUNTRIES[iso_2][0],
            "lead_time_hours": method.lead_time_hours,
        }
        for i, (iso_2, price) in enumerate(method.prices.items())
        if to_country is None or iso_2 == to_country
    ]
    return {
        "id": method.id,
        "name": method.name,
        "carrier": method.carrier,
        "min_weight": f"{method.min_weight:.3f}",
        "max_weight": f"{method.max_weight:.3f}",
        "service_point_input": method.service_point_input,
        "price": 0,
        "countries": countries,
    }


@router.get(
    "/shipping_methods",
    response_model=None,
    responses={200: {"model": m.ShippingMethodList}, **SC_ERRORS},
)
async def list_shipping_methods(
    request: Request,
    caller: CallerDep,
    to_country: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
    sender_address: Annotated[str | None, Query(max_length=20)] = None,
    is_return: bool = False,
) -> dict[str, Any]:
    """The catalogue; `to_country` keeps the methods (and prices) that ship there."""
    country = to_country.upper() if to_country else None
    methods = _service(request).shipping_methods
    found = [
        shipping_method_object(x, country)
        for x in methods
        if country is None or country in x.prices
    ]
    return {"next": None, "previous": None, "shipping_methods": found}


@router.get(
    "/shipping_methods/{method_id}",
    response_model=None,
    responses={200: {"model": m.ShippingMethodOut}, **SC_ERRORS},
)
async def get_shipping_method(
    request: Request, caller: CallerDep, method_id: MethodId
) -> dict[str, Any]:
    for method in _service(request).shipping_methods:
        if method.id == method_id:
            return {"shipping_method": shipping_method_object(method, None)}
    raise NotFound("No shipping method matches the given query.", field="id")


@router.get("/user", response_model=None, responses={200: {"model": m.UserOut}, **SC_ERRORS})
async def get_user(request: Request, caller: CallerDep) -> dict[str, Any]:
    """The account behind the API keys, in Sendcloud's user shape."""
    user = await _service(request).user(caller.account_id)
    return {"user": user}


@router.get(
    "/user/addresses/sender",
    response_model=None,
    responses={200: {"model": m.SenderAddressList}, **SC_ERRORS},
)
async def list_sender_addresses(request: Request, caller: CallerDep) -> dict[str, Any]:
    found = await _service(request).sender_addresses(caller.account_id)
    return {"sender_addresses": [sender_address_object(a) for a in found]}


@router.get(
    "/user/addresses/sender/{sender_id}",
    response_model=None,
    responses={200: {"model": m.SenderAddressOutEnvelope}, **SC_ERRORS},
)
async def get_sender_address(
    request: Request, caller: CallerDep, sender_id: SenderId
) -> dict[str, Any]:
    found = await _service(request).sender_address(caller.account_id, sender_id)
    return {"sender_address": sender_address_object(found)}
