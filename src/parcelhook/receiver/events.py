"""Typed views of webhook bodies: one frozen class per `action`, the raw JSON kept alongside."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias, TypedDict

from parcelhook.domain.statuses import ParcelStatus, is_known_status


class WebhookPayloadError(ValueError):
    """The body is not a well-formed webhook event; answer 400."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Parcel:
    id: int
    name: str | None
    status_id: int
    status_message: str | None
    tracking_number: str | None
    tracking_url: str | None
    carrier_code: str | None
    country: str | None
    order_number: str | None
    external_order_id: str | None
    is_return: bool
    raw: dict[str, Any]

    @property
    def status(self) -> ParcelStatus | None:
        """The status as an enum; None for an id newer than this library."""
        return ParcelStatus(self.status_id) if is_known_status(self.status_id) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Integration:
    id: int
    shop_name: str | None
    system: str | None
    shop_url: str | None
    webhook_active: bool | None
    webhook_url: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Refund:
    id: int
    parcel_id: int | None
    reason: str | None
    status: str | None
    total_refund: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Envelope:
    action: str
    # event time, milliseconds since the Unix epoch: order events by it, not by arrival
    timestamp: int
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ParcelStatusChanged(_Envelope):
    parcel: Parcel
    carrier_status_change_timestamp: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationConnected(_Envelope):
    integration: Integration


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationUpdated(_Envelope):
    integration: Integration


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrationDeleted(_Envelope):
    integration: Integration


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundRequested(_Envelope):
    refund: Refund
    parcel: Parcel


@dataclass(frozen=True, slots=True, kw_only=True)
class TestWebhook(_Envelope):
    # only `id`, `shop_name` and `system` are sent
    integration: Integration

    __test__ = False  # its name must not make pytest collect it in users' test modules


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownEvent(_Envelope):
    """An action this library does not know yet: acknowledge it rather than fail."""


Event: TypeAlias = (
    ParcelStatusChanged
    | IntegrationConnected
    | IntegrationUpdated
    | IntegrationDeleted
    | RefundRequested
    | TestWebhook
    | UnknownEvent
)


class _Head(TypedDict):
    action: str
    timestamp: int
    raw: dict[str, Any]


def parse_event(body: bytes | str) -> Event:
    """Parse a webhook body into its typed event, or raise `WebhookPayloadError`."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WebhookPayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WebhookPayloadError("body is not a JSON object")
    action = data.get("action")
    if not isinstance(action, str):
        raise WebhookPayloadError("action is missing")
    head = _Head(action=action, timestamp=_int(data, "timestamp"), raw=data)
    match action:
        case "parcel_status_changed":
            return ParcelStatusChanged(
                **head,
                parcel=_parcel(_obj(data, "parcel")),
                carrier_status_change_timestamp=_opt_int(data, "carrier_status_change_timestamp"),
            )
        case "integration_connected":
            return IntegrationConnected(**head, integration=_integration(_obj(data, "integration")))
        case "integration_updated":
            return IntegrationUpdated(**head, integration=_integration(_obj(data, "integration")))
        case "integration_deleted":
            return IntegrationDeleted(**head, integration=_integration(_obj(data, "integration")))
        case "refund_requested":
            return RefundRequested(
                **head, refund=_refund(_obj(data, "refund")), parcel=_parcel(_obj(data, "parcel"))
            )
        case "test_webhook":
            return TestWebhook(**head, integration=_integration(_obj(data, "integration")))
    return UnknownEvent(**head)


def _parcel(d: dict[str, Any]) -> Parcel:
    status = _obj(d, "status")
    return Parcel(
        id=_int(d, "id", "parcel"),
        name=_opt_str(d, "name"),
        status_id=_int(status, "id", "parcel.status"),
        status_message=_opt_str(status, "message"),
        tracking_number=_opt_str(d, "tracking_number"),
        tracking_url=_opt_str(d, "tracking_url"),
        carrier_code=_opt_str(_opt_obj(d, "carrier"), "code"),
        country=_opt_str(_opt_obj(d, "country"), "iso_2"),
        order_number=_opt_str(d, "order_number"),
        external_order_id=_opt_str(d, "external_order_id"),
        is_return=d.get("is_return") is True,
        raw=d,
    )


def _integration(d: dict[str, Any]) -> Integration:
    active = d.get("webhook_active")
    return Integration(
        id=_int(d, "id", "integration"),
        shop_name=_opt_str(d, "shop_name"),
        system=_opt_str(d, "system"),
        shop_url=_opt_str(d, "shop_url"),
        webhook_active=active if isinstance(active, bool) else None,
        webhook_url=_opt_str(d, "webhook_url"),
        raw=d,
    )


def _refund(d: dict[str, Any]) -> Refund:
    return Refund(
        id=_int(d, "id", "refund"),
        parcel_id=_opt_int(d, "parcel_id"),
        reason=_opt_str(d, "reason"),
        status=_opt_str(d, "status"),
        total_refund=_opt_str(d, "total_refund"),
        raw=d,
    )


def _obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{key} must be an object")
    return value


def _opt_obj(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def _int(d: dict[str, Any], key: str, where: str = "") -> int:
    value = _opt_int(d, key)
    if value is None:
        raise WebhookPayloadError(f"{where + '.' if where else ''}{key} must be an integer")
    return value


def _opt_int(d: dict[str, Any], key: str) -> int | None:
    value = d.get(key)
    # bool is an int in Python but never a valid id or timestamp
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None
