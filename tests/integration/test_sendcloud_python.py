"""Proof: Sendcloud's own Python client (`sendcloud-python`, unmodified) against parcelhook.

Its base URL is a module attribute; the test points it at a live parcelhook (monkeypatch)
and runs the client's parcel, integration, account and webhook-validation calls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import sendcloud
from sendcloud import (
    IntegrationsAndOrders,
    Labels,
    Parcels,
    SenderAddress,
    ShippingMethods,
    Users,
)
from sendcloud.classes.webhooks import WebHooks

from support.harness import HarnessFactory
from support.hostile_receiver import HostileReceiver

T = TypeVar("T")
PARCEL = {
    "name": "John Doe",
    "company_name": "Sendcloud",
    "address": "Stadhuisplein",
    "house_number": "10",
    "city": "Eindhoven",
    "postal_code": "5611 EM",
    "telephone": "+31612345678",
    "request_label": True,
    "email": "john@doe.com",
    "data": {},
    "country": "NL",
    "shipment": {"id": 1343},
    "weight": "10.000",
    "order_number": "1234567890",
    "insured_value": 0,
    "total_order_value_currency": "GBP",
    "total_order_value": "11.11",
    "quantity": 1,
    "shipping_method_checkout_name": "PostNL Standard",
}


async def call(fn: Callable[..., T], *args: Any) -> T:
    # the client is synchronous (requests); the server runs on this test's loop
    return await asyncio.to_thread(fn, *args)


async def test_sendcloud_python_works_against_parcelhook(
    harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = await harness()
    acct = await h.account()
    monkeypatch.setattr(sendcloud, "BASE_URL", f"{h.base_url}/api/v2/")
    monkeypatch.setattr(sendcloud, "API_KEY", acct.api.public_key, raising=False)
    monkeypatch.setattr(sendcloud, "API_SECRET", acct.api.secret_key, raising=False)
    async with HostileReceiver() as rx:
        # integrations: list, then update one (the client sends what it is given as the body)
        (mine,) = await call(IntegrationsAndOrders().get_integrations)
        assert mine["id"] == acct.api.id and mine["system"] == "api"
        settings = {"shop_name": "My ERP", "webhook_active": True, "webhook_url": rx.url("/sc")}
        updated = await call(
            IntegrationsAndOrders().update_integrations, mine["id"], json.dumps(settings)
        )
        assert updated["shop_name"] == "My ERP" and updated["webhook_url"] == rx.url("/sc")

        # parcels: create with a label, read, find, statuses, print, cancel
        created = await call(Parcels().create_parcel, {"parcel": PARCEL})
        parcel = created["parcel"]
        assert parcel["status"]["id"] == 1000 and parcel["label"]["label_printer"]
        got = await call(Parcels().get_parcel, str(parcel["id"]))
        assert got["parcel"]["tracking_number"] == parcel["tracking_number"]
        found = await call(Parcels().get_parcels, {"order_number": "1234567890"})
        assert [p["id"] for p in found["parcels"]] == [parcel["id"]]
        statuses = await call(Parcels().get_parcels_statuses)
        assert {"id": 11, "message": "Delivered"} in statuses
        label = await call(Labels().get_labels, str(parcel["id"]))
        assert label["label"] == parcel["label"]
        portal = await call(Parcels().return_portal_url, str(parcel["id"]))
        assert portal["url"].startswith(h.base_url)
        second = await call(Parcels().create_parcel, {"parcel": {**PARCEL, "request_label": False}})
        changed = await call(
            Parcels().update_parcel,
            json.dumps({"parcel": {"id": second["parcel"]["id"], "name": "Jane Doe"}}),
        )
        assert changed["parcel"][0]["name"] == "Jane Doe"
        cancelled = await call(Parcels().cancel_parcel, str(second["parcel"]["id"]))
        assert cancelled == {"status": "cancelled", "message": "Parcel has been cancelled"}

        # the account
        user = await call(Users().get_current_user)
        assert user["user"]["email"].endswith("@example.com")
        methods = await call(ShippingMethods().get_shipping_methods)
        assert 1343 in {m["id"] for m in methods["shipping_methods"]}
        one = await call(ShippingMethods().get_shipping_method, "1343")
        assert one["shipping_method"]["carrier"] == "postnl"
        senders = await call(SenderAddress().get_sender_addresses)
        assert senders == {"sender_addresses": []}

        # webhooks: the client's payload validation accepts what parcelhook signs
        await rx.wait_for_requests(4)
        validator = WebHooks()
        validator.API_SECRET = acct.api.secret_key
        for request in rx.requests:
            payload = json.loads(request.body)
            expected = validator.payload_validation(payload)
            assert request.headers["Sendcloud-Signature"] == expected, payload["action"]
        actions = {json.loads(r.body)["action"] for r in rx.requests}
        assert {"integration_updated", "parcel_status_changed"} <= actions
