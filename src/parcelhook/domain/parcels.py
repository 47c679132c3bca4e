"""Parcels, refunds, and the validation of what creates them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.errors import InvalidInput
from parcelhook.domain.text import check_text

# shipment method id → (name, carrier code, price in EUR); a small realistic catalogue
SHIPMENT_METHODS: Final[dict[int, tuple[str, str, str]]] = {
    8: ("Unstamped letter", "sendcloud", "0.00"),
    1343: ("PostNL Standard 0-23kg", "postnl", "6.95"),
    1315: ("DHL Parcel Connect 0-2kg", "dhl", "5.45"),
    1460: ("DPD Home 0-31.5kg", "dpd", "7.25"),
    2281: ("UPS Standard 0-70kg", "ups", "9.80"),
}
DEFAULT_SHIPMENT_ID: Final = 8
TRACKING_URL: Final = "https://tracking.sendcloud.sc/forward?carrier={carrier}&code={code}"


@dataclass(frozen=True, slots=True)
class Parcel:
    id: int
    account_id: int
    integration_id: int
    name: str
    company_name: str
    address: str
    house_number: str
    city: str
    postal_code: str
    country: str
    telephone: str
    email: str
    weight: str
    order_number: str
    external_order_id: str
    external_shipment_id: str
    shipment_id: int
    tracking_number: str
    is_return: bool
    status_id: int
    created_ms: int
    updated_ms: int
    carrier_status_change_ms: int | None = None

    @property
    def carrier_code(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][1]

    @property
    def shipment_name(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][0]

    @property
    def price(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][2]


@dataclass(frozen=True, slots=True)
class Refund:
    id: int
    parcel_id: int
    reason: str
    status: str
    message: str
    total_refund: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class NewParcel:
    """Validated fields of `POST /api/v2/parcels`."""

    name: str
    address: str
    city: str
    postal_code: str
    country: str
    company_name: str = ""
    house_number: str = ""
    telephone: str = ""
    email: str = ""
    weight: str = "1.000"
    order_number: str = ""
    external_order_id: str = ""
    external_shipment_id: str = ""
    shipment_id: int = DEFAULT_SHIPMENT_ID
    integration_id: int | None = None
    is_return: bool = False


_REQUIRED = ("name", "address", "city", "postal_code", "country")
_OPTIONAL = (
    "company_name",
    "house_number",
    "telephone",
    "email",
    "order_number",
    "external_order_id",
    "external_shipment_id",
)
_KNOWN = {*_REQUIRED, *_OPTIONAL, "weight", "shipment", "integration_id", "is_return"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _text(data: dict[str, Any], name: str, *, required: bool, max_len: int = 255) -> str:
    value = data.get(name)
    if value is None or (isinstance(value, str) and not value.strip() and required):
        if required:
            raise InvalidInput(f"{name} is required.", field=name, code="required")
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string.", field=name)
    if len(value) > max_len:
        raise InvalidInput(f"{name} must be at most {max_len} characters.", field=name)
    return check_text(value, name).strip()


def normalise_weight(value: Any) -> str:
    """Weight in kg as Sendcloud shows it: a string with three decimals."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput("weight must be a number of kilograms.", field="weight")
    try:
        kg = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput("weight must be a number of kilograms.", field="weight") from None
    # compared as shown (three decimals), so 0.0001 is not accepted as a weight of "0.000"
    if not kg.is_finite() or not 0 < kg <= 1000 or kg.quantize(Decimal("0.001")) == 0:
        raise InvalidInput("weight must be more than 0 and at most 1000 kg.", field="weight")
    return f"{kg:.3f}"


def parse_new_parcel(data: Any) -> NewParcel:
    """Validate the `parcel` object of a create request; every error names its field."""
    if not isinstance(data, dict):
        raise InvalidInput("parcel must be an object.", field="parcel")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise InvalidInput(f"Unknown field {unknown[0]}.", field=unknown[0], code="unknown_field")
    fields = {n: _text(data, n, required=True) for n in _REQUIRED}
    fields.update({n: _text(data, n, required=False) for n in _OPTIONAL})
    country = fields["country"].upper()
    if country not in COUNTRIES:
        raise InvalidInput(
            "country must be an ISO 3166-1 alpha-2 code such as NL.", field="country"
        )
    fields["country"] = country
    if fields["email"] and not _EMAIL.match(fields["email"]):
        raise InvalidInput("email is not a valid e-mail address.", field="email")
    weight = normalise_weight(data["weight"]) if data.get("weight") is not None else "1.000"
    shipment_id = DEFAULT_SHIPMENT_ID
    shipment = data.get("shipment")
    if shipment is not None:
        sid = shipment.get("id") if isinstance(shipment, dict) else None
        if isinstance(sid, bool) or not isinstance(sid, int) or sid not in SHIPMENT_METHODS:
            known = ", ".join(str(k) for k in SHIPMENT_METHODS)
            raise InvalidInput(f"shipment.id must be one of {known}.", field="shipment")
        shipment_id = sid
    integration_id = data.get("integration_id")
    if integration_id is not None and (
        isinstance(integration_id, bool) or not isinstance(integration_id, int)
    ):
        raise InvalidInput("integration_id must be an integer.", field="integration_id")
    is_return = data.get("is_return", False)
    if not isinstance(is_return, bool):
        raise InvalidInput("is_return must be true or false.", field="is_return")
    return NewParcel(
        weight=weight,
        shipment_id=shipment_id,
        integration_id=integration_id,
        is_return=is_return,
        **fields,
    )


def tracking_number(parcel_id: int) -> str:
    """A carrier-looking tracking code, stable for a parcel."""
    return f"3SPH{parcel_id:010d}"
