"""Request and response shapes, for validation of types and for the OpenAPI document.

Types are checked here; meaning (systems, statuses, key strength, URLs) is checked by the
domain, so the panel and the API refuse the same things with the same words.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from parcelhook.domain import systems
from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.parcels import SHIPMENT_METHODS
from parcelhook.domain.statuses import STATUS_MESSAGES

# ids are 64-bit integers in the database; a larger one must be a 4xx, not a driver overflow
MAX_ID = 2**63 - 1
# the last millisecond of the year 9999: timestamps beyond it are no instant anyone means
MAX_MS = 253_402_300_799_999

# an event's action (`parcel_status_changed`, …) and an event id (`evt_…`), as filters take them
ACTION_PATTERN = r"^[a-z_]+$"
EVENT_ID_PATTERN = r"^[a-z0-9_]*$"

IntegrationId = Annotated[int, Path(ge=1, le=MAX_ID)]
ParcelId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
IdFilter = Annotated[int | None, Query(ge=1, le=MAX_ID)]

# enums are documented, not enforced here: the domain refuses other values in its own words
_SYSTEM_ENUM: dict[str, Any] = {"enum": list(systems.SYSTEMS)}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Open(BaseModel):
    """Sendcloud's request objects: fields it does not document are ignored, as it does."""

    model_config = ConfigDict(extra="ignore", strict=True)


def _number_as_text(value: Any) -> Any:
    # Sendcloud takes 10 for "10" in its text fields (house numbers, postal codes…)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


_CARRIERS = Field(default=None, max_length=50)


class _IntegrationFields(_In):
    shop_url: str | None = Field(default=None, max_length=2048)
    webhook_active: bool | None = None
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_signature_key: str | None = Field(
        default=None, max_length=1000, json_schema_extra={"writeOnly": True}
    )
    service_point_enabled: bool | None = None
    service_point_carriers: list[Annotated[str, Field(max_length=50)]] | None = _CARRIERS


class IntegrationCreate(_IntegrationFields):
    """`POST /integrations` (parcelhook's own): `shop_name` and `system` are required."""

    shop_name: str = Field(max_length=255)
    system: str = Field(json_schema_extra=_SYSTEM_ENUM)


class _ReadOnlyEcho(_IntegrationFields):
    """What a read returns may be sent back as it is (GET, modify, PUT); it is ignored."""

    id: int | None = Field(default=None, ge=1, le=MAX_ID, json_schema_extra={"readOnly": True})
    failing_since: str | None = Field(default=None, max_length=64)
    last_fetch: str | None = Field(default=None, max_length=64)
    last_updated_at: str | None = Field(default=None, max_length=64)
    webhook_signature_key_set: bool | None = None
    webhook_signature_key_last4: str | None = Field(default=None, max_length=4)
    public_key: str | None = Field(default=None, max_length=64)
    secret_key: str | None = Field(default=None, max_length=64)
    webhook_secret: str | None = Field(default=None, max_length=100)


class IntegrationReplace(_ReadOnlyEcho):
    """`PUT /integrations/{id}`: the whole integration; `shop_name` is required."""

    shop_name: str = Field(max_length=255)
    system: str | None = Field(default=None, json_schema_extra=_SYSTEM_ENUM)


class IntegrationPatch(_ReadOnlyEcho):
    """`PATCH /integrations/{id}`: only the fields to change."""

    shop_name: str | None = Field(default=None, max_length=255)
    system: str | None = Field(default=None, json_schema_extra=_SYSTEM_ENUM)


class WebhookTestIntegration(_In):
    webhook_url: str | None = Field(default=None, max_length=2048)
    webhook_signature_key: str | None = Field(default=None, max_length=1000)


class WebhookTestEnvelope(_In):
    """Values to test as typed; without them (`{}` or no body) the saved ones are tested."""

    integration: WebhookTestIntegration | None = None


# -- parcels (Sendcloud's "Parcel Creation Object"; types here, meaning in the domain) ----

# the document says what is taken: text, or a number that becomes text (a number of more
# than 255 digits would not fit, hence the bounds)
_TEXT_SCHEMA = {
    "anyOf": [
        {"type": "string", "maxLength": 255},
        {"type": "number", "minimum": -1e250, "maximum": 1e250},
    ]
}
_Text = Annotated[
    str,
    BeforeValidator(_number_as_text),
    Field(max_length=255),
    WithJsonSchema(_TEXT_SCHEMA),
]
_Decimal = Annotated[str | float | int, Field(json_schema_extra={"format": "decimal"})]


class ShipmentRef(_Open):
    id: int = Field(json_schema_extra={"enum": list(SHIPMENT_METHODS)})
    name: str | None = Field(default=None, max_length=255)


class ParcelItemIn(_Open):
    description: _Text
    quantity: int = Field(ge=1, le=100_000)
    value: _Decimal
    weight: _Decimal | None = None
    hs_code: str | None = Field(default=None, max_length=12)
    origin_country: str | None = Field(default=None, max_length=2)
    product_id: _Text | None = None
    sku: _Text | None = None
    item_id: _Text | None = None
    properties: dict[str, str | None] | None = None
    mid_code: _Text | None = None
    material_content: _Text | None = None
    intended_use: _Text | None = None
    return_reason: _Text | None = None


class ParcelIn(_Open):
    """A parcel as Sendcloud's reference documents it; unknown fields are ignored."""

    id: int | None = Field(default=None, ge=1, le=MAX_ID)
    name: _Text | None = None
    address: _Text | None = None
    city: _Text | None = None
    postal_code: _Text | None = None
    country: str | None = Field(
        default=None, max_length=2, json_schema_extra={"enum": list(COUNTRIES)}
    )
    company_name: _Text | None = None
    contract: int | None = Field(default=None, ge=1, le=MAX_ID)
    address_2: _Text | None = None
    house_number: _Text | None = None
    telephone: _Text | None = None
    email: _Text | None = None
    request_label: bool | None = None
    data: dict[str, Any] | None = None
    country_state: _Text | None = None
    shipment: ShipmentRef | None = None
    weight: _Decimal | None = None
    order_number: _Text | None = None
    insured_value: int | None = Field(default=None, ge=0, le=5000)
    total_insured_value: int | None = Field(default=None, ge=0, le=10_000)
    total_order_value_currency: str | None = Field(default=None, max_length=3)
    total_order_value: _Decimal | None = None
    quantity: int | None = Field(default=None, ge=1, le=20)
    shipping_method_checkout_name: _Text | None = None
    to_post_number: _Text | None = None
    to_service_point: int | None = Field(default=None, ge=1, le=MAX_ID)
    sender_address: int | None = Field(default=None, ge=1, le=MAX_ID)
    customs_invoice_nr: _Text | None = None
    customs_shipment_type: int | None = Field(default=None, ge=0, le=4)
    external_reference: _Text | None = None
    reference: _Text | None = None
    note: _Text | None = None
    shipment_uuid: _Text | None = None
    parcel_items: list[ParcelItemIn] | None = Field(default=None, max_length=200)
    is_return: bool | None = None
    length: _Decimal | None = None
    width: _Decimal | None = None
    height: _Decimal | None = None
    request_label_async: bool | None = None
    apply_shipping_rules: bool | None = None
    from_name: _Text | None = None
    from_company_name: _Text | None = None
    from_address_1: _Text | None = None
    from_address_2: _Text | None = None
    from_house_number: _Text | None = None
    from_city: _Text | None = None
    from_postal_code: _Text | None = None
    from_country: str | None = Field(default=None, max_length=2)
    from_telephone: _Text | None = None
    from_email: _Text | None = None
    from_vat_number: _Text | None = None
    from_eori_number: _Text | None = None
    from_inbound_vat_number: _Text | None = None
    from_inbound_eori_number: _Text | None = None
    from_ioss_number: _Text | None = None
    from_country_state: _Text | None = None
    customs_information: dict[str, Any] | None = None
    # parcelhook's own: the integration an imported order belongs to
    integration_id: int | None = Field(default=None, ge=1, le=MAX_ID)


class ParcelCreateBody(_Open):
    """`{"parcel": {...}}` for one parcel, `{"parcels": [...]}` for a batch."""

    parcel: ParcelIn | None = None
    parcels: list[ParcelIn] | None = Field(default=None, min_length=1, max_length=100)


class ParcelUpdateBody(_Open):
    parcel: ParcelIn


class StatusIn(_In):
    status_id: int = Field(json_schema_extra={"enum": list(STATUS_MESSAGES)})
    carrier_status_change_timestamp: int | None = Field(default=None, ge=0, le=MAX_MS)


class TrackingUpdatesIn(_In):
    """Items are checked one by one, so that a bad one fails alone: any JSON here."""

    tracking_updates: list[Any] = Field(
        min_length=1,
        max_length=1000,
        description="Objects of `parcel_id`, `status_id` and optionally "
        "`carrier_status_change_timestamp` (ms); each is answered in its place in `results`.",
    )


class RefundIn(_In):
    reason: str = Field(max_length=2000)


class RefundEnvelope(_In):
    refund: RefundIn


class RedeliverFilter(_In):
    status: Literal["failed", "delivered"] = "failed"
    integration_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    action: str | None = Field(default=None, max_length=40, pattern=ACTION_PATTERN)


# -- responses (documentation only; handlers return plain dicts) ------------------------


class ErrorBody(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorOut(BaseModel):
    """parcelhook's own endpoints: a slug in `code`."""

    error: ErrorBody


class SendcloudErrorBody(BaseModel):
    code: int
    request: str
    message: str
    field: str | None = None


class SendcloudErrorOut(BaseModel):
    """Sendcloud's error body: the HTTP status in `code`, the path in `request`."""

    error: SendcloudErrorBody


class IntegrationOut(BaseModel):
    id: int
    shop_name: str
    shop_url: str | None
    system: str
    failing_since: str | None
    last_fetch: str | None
    last_updated_at: str | None
    service_point_enabled: bool
    service_point_carriers: list[str]
    webhook_active: bool
    webhook_url: str | None
    webhook_signature_key_set: bool
    webhook_signature_key_last4: str | None
    public_key: str | None = None
    secret_key: str | None = None
    webhook_secret: str | None = None


class IntegrationOutEnvelope(BaseModel):
    integration: IntegrationOut


class Status(BaseModel):
    id: int
    message: str


class Country(BaseModel):
    iso_2: str
    iso_3: str
    name: str


class ParcelOut(BaseModel):
    """The parcel (every documented field; the listed ones typed here)."""

    model_config = ConfigDict(extra="allow")

    id: int
    name: str
    company_name: str
    address: str
    city: str
    postal_code: str
    telephone: str
    email: str
    date_created: str
    tracking_number: str
    tracking_url: str
    weight: str
    status: Status
    country: Country
    order_number: str
    is_return: bool


class ParcelOutEnvelope(BaseModel):
    parcel: ParcelOut


class ParcelList(BaseModel):
    next: str | None
    previous: str | None
    parcels: list[ParcelOut]


class FailedParcel(BaseModel):
    parcel: dict[str, Any]
    errors: dict[str, list[str]]


class ParcelCreateOut(BaseModel):
    """`{"parcel"}` for one parcel; `{"parcels", "failed_parcels"}` for a batch."""

    parcel: ParcelOut | None = None
    parcels: list[ParcelOut] | None = None
    failed_parcels: list[FailedParcel] | None = None


class ParcelUpdateOut(BaseModel):
    """As the reference documents it: the updated parcel in a one-item list."""

    parcel: list[ParcelOut]


class CancelOut(BaseModel):
    status: Literal["cancelled", "queued", "deleted"]
    message: str


class ReturnPortalOut(BaseModel):
    url: str


class LabelLinks(BaseModel):
    normal_printer: list[str]
    label_printer: str | None


class LabelOut(BaseModel):
    label: LabelLinks


class ShippingCountry(BaseModel):
    id: int
    name: str
    price: float
    iso_2: str
    iso_3: str
    lead_time_hours: int | None


class ShippingMethodOut(BaseModel):
    id: int
    name: str
    carrier: str
    min_weight: str
    max_weight: str
    service_point_input: str
    price: float
    countries: list[ShippingCountry]


class ShippingMethodEnvelope(BaseModel):
    shipping_method: ShippingMethodOut


class ShippingMethodList(BaseModel):
    next: str | None
    previous: str | None
    shipping_methods: list[ShippingMethodOut]


class UserObject(BaseModel):
    model_config = ConfigDict(extra="allow")

    username: str
    email: str


class UserOut(BaseModel):
    user: UserObject


class SenderAddressOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int
    contact_name: str
    street: str
    postal_code: str
    city: str
    country: str


class SenderAddressList(BaseModel):
    sender_addresses: list[SenderAddressOut]


class SenderAddressOutEnvelope(BaseModel):
    sender_address: SenderAddressOut


class TrackingResult(BaseModel):
    parcel_id: int | None
    result: Literal["changed", "unchanged", "failed"]
    status: Status | None = None
    error: ErrorBody | None = None


class TrackingResults(BaseModel):
    results: list[TrackingResult]
    changed: int
    unchanged: int
    failed: int


class RefundOut(BaseModel):
    id: int
    parcel_id: int
    reason: str
    status: str
    message: str
    total_refund: str
    created_at: str | None


class RefundOutEnvelope(BaseModel):
    refund: RefundOut


class WebhookTestOut(BaseModel):
    delivered: bool
    status_code: int | None
    duration_ms: int
    response_excerpt: str
    error: str | None


class HeaderOut(BaseModel):
    name: str
    value: str


class AttemptOut(BaseModel):
    at: str | None
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str
    # the answer's first 32 headers in order, cookies' values elided; [] without an answer
    response_headers: list[HeaderOut]
    # where it was sent; null for attempts recorded before parcelhook kept it
    url: str | None


class DeliveryOut(BaseModel):
    id: int
    event_id: str
    integration_id: int
    action: str
    status: str
    attempt_count: int
    next_attempt_at: str | None
    created_at: str | None
    last_status_code: int | None
    last_error: str | None
    attempts: list[AttemptOut]


class DeliveryOutEnvelope(BaseModel):
    delivery: DeliveryOut


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next: str | None


class RedeliverCount(BaseModel):
    redelivered: int


class EventOut(BaseModel):
    id: str
    action: str
    timestamp: int
    payload: dict[str, object] | None


class EventList(BaseModel):
    events: list[EventOut]
    next: str | None
