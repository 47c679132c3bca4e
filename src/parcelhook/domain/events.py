"""Events: their payloads (the wire format of SPEC §3) and who receives them."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from parcelhook.domain import signing, systems
from parcelhook.domain.clock import iso_ms, iso_seconds
from parcelhook.domain.countries import COUNTRIES
from parcelhook.domain.integrations import Integration
from parcelhook.domain.parcels import TRACKING_URL, Parcel, Refund
from parcelhook.domain.statuses import STATUS_MESSAGES


@dataclass(frozen=True, slots=True)
class Event:
    """One event, with the exact body bytes every delivery of it will send."""

    id: str
    account_id: int
    action: str
    timestamp_ms: int
    body: bytes
    # the parcel a parcel or refund event is about, so the log can be searched by it
    parcel_id: int | None = None


_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"  # ascending in ASCII, so ids sort by time


# every two Crockford digits, by the 10 bits they spell
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
_PAIR_SHIFTS = tuple(range(120, -1, -10))


def new_event_id(now_ms: int) -> str:
    """`evt_` + a 26-character ULID: 48 bits of milliseconds, then 80 random bits."""
    n = (now_ms << 80) | int.from_bytes(_random_tail(), "big")
    # two digits a step (13 steps, not 26): a digit at a time was a twentieth of a bulk
    # tracking update's CPU
    pairs = _PAIRS
    return "evt_" + "".join([pairs[(n >> shift) & 1023] for shift in _PAIR_SHIFTS])


class _RandomPool:
    """The OS's random bytes drawn 4 KiB at a time: a system call per event id (getrandom)
    cost as much as the rest of the id. A forked child forgets its parent's bytes, so two
    processes never hand out the same ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = b""
        self._at = 0

    def take(self, k: int) -> bytes:
        with self._lock:
            at = self._at
            if at + k > len(self._bytes):
                self._bytes, at = os.urandom(4096), 0
            self._at = at + k
            return self._bytes[at : at + k]

    def forget(self) -> None:
        self._bytes, self._at = b"", 0


_pool = _RandomPool()
os.register_at_fork(after_in_child=_pool.forget)


def _random_tail() -> bytes:
    """An event id's 80 random bits."""
    return _pool.take(10)


# Crockford's digits as int(…, 32) reads them
_AS_BASE32 = str.maketrans(_CROCKFORD, "0123456789abcdefghijklmnopqrstuv")


def event_time_ms(event_id: str) -> int:
    """The millisecond an event id was made in (its ULID's first 48 bits)."""
    return int(event_id[4:14].translate(_AS_BASE32), 32)


def make_event(account_id: int, payload: dict[str, Any]) -> Event:
    return Event(
        id=new_event_id(payload["timestamp"]),
        account_id=account_id,
        action=payload["action"],
        timestamp_ms=payload["timestamp"],
        body=signing.body_bytes(payload),
        parcel_id=payload["parcel"]["id"] if "parcel" in payload else None,
    )


def label_links(p: Parcel, base_url: str) -> dict[str, Any]:
    """Where a parcel's label is printed from, once it is announced (Sendcloud's shape)."""
    if not p.has_label or not base_url:
        return {"normal_printer": [], "label_printer": None}
    root = base_url.rstrip("/")
    return {
        "normal_printer": [
            f"{root}/api/v2/labels/normal_printer/{p.id}?start_from={n}" for n in range(4)
        ],
        "label_printer": f"{root}/api/v2/labels/label_printer/{p.id}",
    }


# The parcel objects made last, by the identity of the Parcel each was made of. A status
# change makes its parcel's object twice, for the webhook and for the API's answer (4.6 µs
# each; the second was 4.7 % of the call's instructions). The entry holds its Parcel, so
# that an id() is never reused while cached, and a Parcel is frozen, so its object never
# goes stale. Callers only serialise the object they get; none changes it.
_MADE: dict[tuple[int, str], tuple[Parcel, dict[str, Any]]] = {}
_MADE_MAX = 1024


def parcel_object(p: Parcel, base_url: str = "") -> dict[str, Any]:
    """The parcel as `GET /api/v2/parcels/{id}` returns it and webhooks carry it."""
    # the base URL shows only in a labelled parcel's links
    key = (id(p), base_url if p.has_label else "")
    made = _MADE.get(key)
    if made is not None:
        # the entry holds its Parcel, so no other object can have its id meanwhile
        return made[1]
    obj = _parcel_object(p, base_url)
    if len(_MADE) >= _MADE_MAX:
        _MADE.clear()
    _MADE[key] = (p, obj)
    return obj


def _parcel_object(p: Parcel, base_url: str) -> dict[str, Any]:
    iso3, country_name = COUNTRIES[p.country]
    d = p.details
    documents = []
    if p.has_label and base_url:
        link = f"{base_url.rstrip('/')}/api/v2/parcels/{p.id}/documents/label"
        documents.append({"type": "label", "size": "a6", "link": link})
    return {
        "id": p.id,
        "name": p.name,
        "company_name": p.company_name,
        "address": f"{p.address} {p.house_number}".strip(),
        "address_2": d.get("address_2", ""),
        "address_divided": {"street": p.address, "house_number": p.house_number},
        "city": p.city,
        "postal_code": p.postal_code,
        "telephone": p.telephone,
        "email": p.email,
        "date_created": iso_seconds(p.created_ms),
        "date_updated": iso_seconds(p.updated_ms),
        "date_announced": iso_seconds(p.announced_ms) if p.announced_ms is not None else None,
        "tracking_number": p.tracking_number,
        "tracking_url": TRACKING_URL.format(carrier=p.carrier_code, code=p.tracking_number),
        "weight": p.weight,
        "label": label_links(p, base_url),
        "documents": documents,
        "customs_declaration": {},
        "status": {"id": p.status_id, "message": STATUS_MESSAGES[p.status_id]},
        "data": d.get("data", {}),
        "country": {"iso_2": p.country, "iso_3": iso3, "name": country_name},
        "to_state": d.get("country_state"),
        "shipment": {"id": p.shipment_id, "name": p.shipment_name},
        "carrier": {"code": p.carrier_code},
        "order_number": p.order_number,
        "shipment_uuid": d.get("shipment_uuid"),
        "external_order_id": p.external_order_id,
        "external_shipment_id": p.external_shipment_id,
        "external_reference": p.external_reference,
        "reference": d.get("reference", "0"),
        "is_return": p.is_return,
        "insured_value": d.get("insured_value", 0),
        "total_insured_value": d.get("total_insured_value", 0),
        "total_order_value": d.get("total_order_value"),
        "total_order_value_currency": d.get("total_order_value_currency"),
        "quantity": d.get("quantity", 1),
        "parcel_items": d.get("parcel_items", []),
        "shipping_method_checkout_name": d.get("shipping_method_checkout_name", ""),
        "to_post_number": d.get("to_post_number", ""),
        "to_service_point": str(d["to_service_point"]) if "to_service_point" in d else None,
        "customs_invoice_nr": d.get("customs_invoice_nr", ""),
        "customs_shipment_type": d.get("customs_shipment_type"),
        "sender_address": d.get("sender_address"),
        "contract": d.get("contract"),
        "length": d.get("length"),
        "width": d.get("width"),
        "height": d.get("height"),
        "type": "letter" if p.carrier_code == "sendcloud" else "parcel",
        "colli_uuid": d.get("shipment_uuid"),
        "collo_nr": 0,
        "collo_count": 1,
        "note": d.get("note"),
        "integration_id": p.integration_id,
        # the rest of what was sent (return-parcel senders, customs information, flags)
        **{k: d[k] for k in _ECHOED if k in d},
    }


# documented request fields the response schema has no place for: echoed under their names
_ECHOED = (
    "errors",
    "apply_shipping_rules",
    "request_label_async",
    "customs_information",
    "from_name",
    "from_company_name",
    "from_address_1",
    "from_address_2",
    "from_house_number",
    "from_city",
    "from_postal_code",
    "from_country",
    "from_telephone",
    "from_email",
    "from_vat_number",
    "from_eori_number",
    "from_inbound_vat_number",
    "from_inbound_eori_number",
    "from_ioss_number",
    "from_country_state",
)


def integration_object(i: Integration) -> dict[str, Any]:
    """The integration as webhooks carry it (never any secret)."""
    return {
        "id": i.id,
        "shop_name": i.shop_name,
        "shop_url": i.shop_url,
        "system": i.system,
        "failing_since": iso_ms(i.failing_since_ms),
        "last_fetch": iso_ms(i.last_fetch_ms),
        "last_updated_at": iso_ms(i.last_updated_ms),
        "service_point_enabled": i.service_point_enabled,
        "service_point_carriers": list(i.service_point_carriers),
        "webhook_active": i.webhook_active,
        "webhook_url": i.webhook_url,
    }


def refund_object(r: Refund) -> dict[str, Any]:
    return {
        "id": r.id,
        "parcel_id": r.parcel_id,
        "reason": r.reason,
        "status": r.status,
        "message": r.message,
        "total_refund": r.total_refund,
        "created_at": iso_ms(r.created_ms),
    }


def parcel_status_changed(parcel: Parcel, now_ms: int, base_url: str = "") -> dict[str, Any]:
    return {
        "action": systems.PARCEL_STATUS_CHANGED,
        "timestamp": now_ms,
        "carrier_status_change_timestamp": parcel.carrier_status_change_ms,
        "parcel": parcel_object(parcel, base_url),
    }


def integration_changed(action: str, integration: Integration, now_ms: int) -> dict[str, Any]:
    return {"action": action, "timestamp": now_ms, "integration": integration_object(integration)}


def integration_event(
    action: str, integration: Integration, now_ms: int
) -> tuple[Event, list[Integration]]:
    """An integration event about `integration` (as it is now) and who receives it."""
    event = make_event(integration.account_id, integration_changed(action, integration, now_ms))
    return event, recipients(action, integration)


def refund_requested(
    refund: Refund, parcel: Parcel, now_ms: int, base_url: str = ""
) -> dict[str, Any]:
    return {
        "action": systems.REFUND_REQUESTED,
        "timestamp": now_ms,
        "refund": refund_object(refund),
        "parcel": parcel_object(parcel, base_url),
    }


def test_webhook(integration_id: int, shop_name: str, system: str, now_ms: int) -> dict[str, Any]:
    return {
        "action": systems.TEST_WEBHOOK,
        "timestamp": now_ms,
        "integration": {"id": integration_id, "shop_name": shop_name, "system": system},
    }


def recipients(action: str, concerned: Integration | None) -> list[Integration]:
    """Who receives an event (SPEC §1): the integration it concerns, if eligible and on.

    Parcel events concern the parcel's integration; integration events the integration
    itself, and only it (Sendcloud scopes webhooks to the integration they are set on).
    """
    if concerned is None:
        return []
    if concerned.deleted_ms is not None and action != systems.INTEGRATION_DELETED:
        return []
    if not (concerned.receives_webhooks and systems.can_receive(concerned.system, action)):
        return []
    return [concerned]
