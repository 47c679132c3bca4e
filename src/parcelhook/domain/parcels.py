"""Parcels, refunds, and the validation of what creates and changes them.

Fields parcelhook keeps in columns (the recipient, weight, method, status…) are typed here;
the rest of Sendcloud's documented parcel fields are validated and kept as `details`, and
echoed as they were given.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    # Sendcloud's other documented fields, as validated (see DETAIL_FIELDS)
    details: Mapping[str, Any] = field(default_factory=dict)
    announced_ms: int | None = None
    external_reference: str | None = None

    @property
    def carrier_code(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][1]

    @property
    def shipment_name(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][0]

    @property
    def price(self) -> str:
        return SHIPMENT_METHODS[self.shipment_id][2]

    @property
    def has_label(self) -> bool:
        return self.announced_ms is not None

    def with_status(self, status_id: int, updated_ms: int, carrier_ms: int | None) -> Parcel:
        """This parcel in another status since `updated_ms` (`dataclasses.replace`, which
        walks the fields by name, took three times as long: a bulk update makes hundreds)."""
        return Parcel(
            self.id,
            self.account_id,
            self.integration_id,
            self.name,
            self.company_name,
            self.address,
            self.house_number,
            self.city,
            self.postal_code,
            self.country,
            self.telephone,
            self.email,
            self.weight,
            self.order_number,
            self.external_order_id,
            self.external_shipment_id,
            self.shipment_id,
            self.tracking_number,
            self.is_return,
            status_id,
            self.created_ms,
            updated_ms,
            carrier_ms,
            self.details,
            self.announced_ms,
            self.external_reference,
        )


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
    """Validated fields of a parcel to create (or, with `given`, to change)."""

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
    request_label: bool = False
    sender_address: int | None = None
    external_reference: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # the fields the request named (an update changes only these)
    given: frozenset[str] = frozenset()


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
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# "Insulindelaan 115", "Stationsweg 12a", "Rue de la Paix 3-5": a street, then its number
_STREET_NUMBER = re.compile(r"^(?P<street>.*\S)\s+(?P<number>\d[\w/-]{0,9})$")

# documented fields kept in `details`: name → kind of value
DETAIL_TEXT = (
    "address_2",
    "country_state",
    "shipping_method_checkout_name",
    "to_post_number",
    "customs_invoice_nr",
    "reference",
    "note",
    "from_name",
    "from_company_name",
    "from_address_1",
    "from_address_2",
    "from_house_number",
    "from_city",
    "from_postal_code",
    "from_telephone",
    "from_email",
    "from_vat_number",
    "from_eori_number",
    "from_inbound_vat_number",
    "from_inbound_eori_number",
    "from_ioss_number",
    "from_country_state",
)
DETAIL_BOOL = ("apply_shipping_rules", "request_label_async")
DETAIL_DECIMAL = ("length", "width", "height")


def _text(data: Mapping[str, Any], name: str, *, required: bool, max_len: int = 255) -> str:
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


def _decimal(value: Any, name: str, *, places: int = 2, maximum: int = 10**9) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise InvalidInput(f"{name} must be a decimal number.", field=name)
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"{name} must be a decimal number.", field=name) from None
    if not number.is_finite() or not 0 <= number <= maximum:
        raise InvalidInput(f"{name} must be between 0 and {maximum}.", field=name)
    return f"{number:.{places}f}"


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{name} must be a whole number from {low} to {high}.", field=name)
    return value


def _country(value: Any, name: str) -> str:
    code = value.upper() if isinstance(value, str) else ""
    if code not in COUNTRIES:
        raise InvalidInput(f"{name} must be an ISO 3166-1 alpha-2 code such as NL.", field=name)
    return code


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


def split_street(address: str, house_number: str) -> tuple[str, str]:
    """(street, house number), the number said once: "Insulindelaan 115" + "115" is one."""
    found = _STREET_NUMBER.match(address)
    if found and (not house_number or found["number"] == house_number):
        return found["street"], found["number"]
    return address, house_number


def _parcel_item(item: Any, at: int) -> dict[str, Any]:
    where = f"parcel_items[{at}]"
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where} must be an object.", field="parcel_items")
    out: dict[str, Any] = {
        "description": _text(item, "description", required=True, max_len=255),
        "quantity": _int(item.get("quantity"), "quantity", 1, 100_000),
        "value": _decimal(item.get("value"), "value"),
    }
    if item.get("weight") is not None:
        out["weight"] = _decimal(item.get("weight"), "weight", places=3, maximum=1000)
    for name, limit in (("hs_code", 12), ("sku", 255), ("product_id", 255), ("item_id", 255)):
        if item.get(name) is not None:
            out[name] = _text(item, name, required=False, max_len=limit)
    for name in ("mid_code", "material_content", "intended_use", "return_reason"):
        if item.get(name) is not None:
            out[name] = _text(item, name, required=False, max_len=255)
    if item.get("origin_country") is not None:
        out["origin_country"] = _country(item["origin_country"], "origin_country")
    properties = item.get("properties")
    if properties is not None:
        if not isinstance(properties, Mapping) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) and len(k) + len(v or "") < 500
            for k, v in properties.items()
        ):
            raise InvalidInput(f"{where}.properties must map names to text.", field="parcel_items")
        out["properties"] = {
            k: check_text(v, "properties") if v else v for k, v in properties.items()
        }
    return out


def _details(data: Mapping[str, Any]) -> dict[str, Any]:
    """The documented fields without a column of their own, validated and normalised."""
    out: dict[str, Any] = {}
    for name in DETAIL_TEXT:
        if data.get(name) is not None:
            out[name] = _text(data, name, required=False)
    for name in DETAIL_BOOL:
        if data.get(name) is not None:
            if not isinstance(data[name], bool):
                raise InvalidInput(f"{name} must be true or false.", field=name)
            out[name] = data[name]
    for name in DETAIL_DECIMAL:
        if data.get(name) is not None:
            out[name] = _decimal(data[name], name, maximum=10_000)
    if data.get("from_country") is not None:
        out["from_country"] = _country(data["from_country"], "from_country")
    for name, high in (("insured_value", 5000), ("total_insured_value", 10_000)):
        if data.get(name) is not None:
            out[name] = _int(data[name], name, 0, high)
    if data.get("quantity") is not None:
        out["quantity"] = _int(data["quantity"], "quantity", 1, 20)
    for name in ("to_service_point", "contract"):
        if data.get(name) is not None:
            out[name] = _int(data[name], name, 1, 2**63 - 1)
    if data.get("customs_shipment_type") is not None:
        out["customs_shipment_type"] = _int(
            data["customs_shipment_type"], "customs_shipment_type", 0, 4
        )
    if data.get("total_order_value") is not None:
        out["total_order_value"] = _decimal(data["total_order_value"], "total_order_value")
    currency = data.get("total_order_value_currency")
    if currency is not None:
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise InvalidInput(
                "total_order_value_currency must be an ISO 4217 code such as EUR.",
                field="total_order_value_currency",
            )
        out["total_order_value_currency"] = currency
    items = data.get("parcel_items")
    if items is not None:
        if not isinstance(items, list) or len(items) > 200:
            raise InvalidInput("parcel_items must be a list of items.", field="parcel_items")
        out["parcel_items"] = [_parcel_item(item, i) for i, item in enumerate(items)]
    for name in ("data", "customs_information"):
        value = data.get(name)
        if value is not None:
            if not isinstance(value, Mapping):
                raise InvalidInput(f"{name} must be an object.", field=name)
            out[name] = dict(value)
    return out


def parse_new_parcel(data: Any, *, updating: bool = False) -> NewParcel:
    """Validate a parcel of a create (or, `updating`, the fields of a change); errors name
    their field. Fields the reference does not document are ignored, as Sendcloud does."""
    if not isinstance(data, Mapping):
        raise InvalidInput("parcel must be an object.", field="parcel")
    given = frozenset(k for k, v in data.items() if v is not None)
    fields = {n: _text(data, n, required=not updating) for n in _REQUIRED}
    fields.update({n: _text(data, n, required=False) for n in _OPTIONAL})
    if fields["country"] or not updating:
        fields["country"] = _country(fields["country"], "country")
    if fields["email"] and not _EMAIL.match(fields["email"]):
        raise InvalidInput("email is not a valid e-mail address.", field="email")
    if fields["address"]:
        fields["address"], fields["house_number"] = split_street(
            fields["address"], fields["house_number"]
        )
        given |= {"house_number"}
    weight = normalise_weight(data["weight"]) if data.get("weight") is not None else "1.000"
    shipment_id = DEFAULT_SHIPMENT_ID
    shipment = data.get("shipment")
    if shipment is not None:
        sid = shipment.get("id") if isinstance(shipment, Mapping) else None
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
    request_label = data.get("request_label", data.get("requestLabel", False))
    if not isinstance(request_label, bool):
        raise InvalidInput("request_label must be true or false.", field="request_label")
    sender = data.get("sender_address")
    if sender is not None:
        sender = _int(sender, "sender_address", 1, 2**63 - 1)
    reference = data.get("external_reference")
    if reference is not None:
        reference = _text(data, "external_reference", required=False) or None
    return NewParcel(
        weight=weight,
        shipment_id=shipment_id,
        integration_id=integration_id,
        is_return=is_return,
        request_label=request_label,
        sender_address=sender,
        external_reference=reference,
        details=_details(data),
        given=given,
        **fields,
    )


def new_shipment_uuid() -> str:
    return str(uuid.uuid4())


def tracking_number(parcel_id: int) -> str:
    """A carrier-looking tracking code, stable for a parcel."""
    return f"3SPH{parcel_id:010d}"
