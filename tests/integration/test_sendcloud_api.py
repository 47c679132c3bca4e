"""Sendcloud's API v2 as its reference publishes it, on SQLite and PostgreSQL.

Each response of an endpoint parcelhook shares with Sendcloud is validated against the
schema fragments in `tests/contracts/` (transcribed from sendcloud.dev, see its README).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pypdfium2
import pytest
import zxingcpp

from support.harness import Account, HarnessFactory
from support.hostile_receiver import HostileReceiver
from support.panel_client import sign_in

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
PARCEL: dict[str, Any] = {
    "name": "Anna de Vries",
    "company_name": "De Vries BV",
    "address": "Insulindelaan 115",
    "house_number": "115",
    "city": "Eindhoven",
    "postal_code": "5642 CV",
    "country": "NL",
    "telephone": "+31612345678",
    "email": "anna@example.com",
    "weight": "2.5",
    "order_number": "ORD-7",
}
# every other field the reference documents for "Create a parcel"
DOCUMENTED: dict[str, Any] = {
    "address_2": "2nd floor",
    "country_state": "NB",
    "request_label": False,
    "data": {},
    "shipment": {"id": 1343},
    "insured_value": 50,
    "total_order_value_currency": "EUR",
    "total_order_value": "99.95",
    "quantity": 1,
    "shipping_method_checkout_name": "PostNL Standard",
    "to_post_number": "",
    "to_service_point": 217165,
    "customs_invoice_nr": "INV-7",
    "customs_shipment_type": 2,
    "external_reference": "ext-7",
    "reference": "ref-7",
    "parcel_items": [
        {
            "description": "Shoes",
            "quantity": 2,
            "value": "49.95",
            "weight": "1.2",
            "hs_code": "640399",
            "origin_country": "PT",
            "sku": "SH-42",
            "product_id": "1458",
            "properties": {"size": "42"},
        }
    ],
    "is_return": False,
    "length": "30",
    "width": "20",
    "height": "10",
    "apply_shipping_rules": False,
    "contract": 1,
}


def contract(name: str) -> tuple[dict[str, Any], str]:
    document, _, schema = name.partition("#")
    return json.loads((CONTRACTS / document).read_text()), schema


def _inline(node: Any, document: dict[str, Any]) -> Any:
    # the fragments refer to each other as {"$ref": "#/Name"} within one file
    if isinstance(node, dict):
        if set(node) == {"$ref"}:
            return _inline(document[node["$ref"].removeprefix("#/")], document)
        return {k: _inline(v, document) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, document) for v in node]
    return node


def conforms(body: Any, name: str) -> None:
    """`body` is valid against the published schema `file.json#Name`."""
    document, schema = contract(name)
    jsonschema.Draft202012Validator(_inline(document[schema], document)).validate(body)


async def create(acct: Account, **fields: Any) -> dict[str, Any]:
    r = await acct.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, **fields}})
    assert r.status_code == 200, r.text
    conforms(r.json(), "parcels.json#SingleParcelCreated")
    parcel: dict[str, Any] = r.json()["parcel"]
    return parcel


async def test_every_documented_parcel_field_is_accepted_stored_and_echoed(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    made = await create(acct, **DOCUMENTED, colour="red")  # an unknown field is ignored
    got = (await acct.call("GET", f"/api/v2/parcels/{made['id']}")).json()["parcel"]
    conforms({"parcel": got}, "parcels.json#SingleParcelCreated")
    assert got == made and "colour" not in got
    # the house number once, however it was given
    assert got["address"] == "Insulindelaan 115"
    assert got["address_divided"] == {"street": "Insulindelaan", "house_number": "115"}
    assert got["address_2"] == "2nd floor" and got["to_state"] == "NB"
    assert got["weight"] == "2.500" and got["shipment"] == {
        "id": 1343,
        "name": "PostNL Standard 0-23kg",
    }
    assert got["insured_value"] == 50 and got["total_order_value"] == "99.95"
    assert got["total_order_value_currency"] == "EUR" and got["quantity"] == 1
    assert got["to_service_point"] == "217165" and got["customs_shipment_type"] == 2
    assert got["external_reference"] == "ext-7" and got["reference"] == "ref-7"
    assert got["parcel_items"][0]["value"] == "49.95" and got["parcel_items"][0]["quantity"] == 2
    assert (got["length"], got["width"], got["height"]) == ("30.00", "20.00", "10.00")
    assert got["status"] == {"id": 1000, "message": "Ready to send"}
    assert got["label"] == {"normal_printer": [], "label_printer": None}
    # an external_reference is an idempotence key: a second parcel may not reuse it
    r = await acct.call(
        "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "external_reference": "ext-7"}}
    )
    assert r.status_code == 400 and r.json()["error"]["field"] == "external_reference"
    conforms(r.json(), "parcels.json#Error")
    assert r.json()["error"]["request"] == "api/v2/parcels"


async def test_a_batch_is_all_or_nothing_unless_errors_are_verbose(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    good, bad = {**PARCEL}, {**PARCEL, "country": "XX"}
    r = await acct.call("POST", "/api/v2/parcels", {"parcels": [good, bad]})
    assert r.status_code == 400 and r.json()["error"]["field"] == "country"
    listed = (await acct.call("GET", "/api/v2/parcels")).json()
    assert listed["parcels"] == []
    r = await acct.call("POST", "/api/v2/parcels?errors=verbose", {"parcels": [good, bad, good]})
    assert r.status_code == 200, r.text
    body = r.json()
    conforms(body, "parcels.json#ParcelsCreated")
    assert len(body["parcels"]) == 2
    assert body["failed_parcels"] == [
        {"parcel": bad, "errors": {"country": [body["failed_parcels"][0]["errors"]["country"][0]]}}
    ]
    r = await acct.call("POST", "/api/v2/parcels", {"parcels": [good, good]})
    assert r.status_code == 200 and len(r.json()["parcels"]) == 2
    assert r.json()["failed_parcels"] == []


async def test_statuses_list_filters_and_cursor_pages(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    r = await acct.call("GET", "/api/v2/parcels/statuses")
    assert r.status_code == 200, r.text
    conforms(r.json(), "parcel-statuses.json#ParcelStatuses")
    assert {"id": 1000, "message": "Ready to send"} in r.json()
    made = [await create(acct, order_number=f"ORD-{n}") for n in range(5)]
    r = await acct.call("POST", f"/api/v2/parcels/{made[1]['id']}/status", {"status_id": 11})
    assert r.status_code == 200
    ids = [p["id"] for p in made]

    async def listed(query: str) -> list[int]:
        r = await acct.call("GET", f"/api/v2/parcels?{query}")
        assert r.status_code == 200, r.text
        conforms(r.json(), "parcels.json#ParcelList")
        return [p["id"] for p in r.json()["parcels"]]

    assert await listed("parcel_status=11") == [ids[1]]
    assert await listed("order_number=ORD-3") == [ids[3]]
    assert await listed(f"tracking_number={made[4]['tracking_number']}") == [ids[4]]
    assert await listed(f"ids={ids[0]},{ids[2]}") == [ids[0], ids[2]]
    # an id no database column holds is bad input, not a crash
    r = await acct.call("GET", f"/api/v2/parcels?ids={ids[0]},9999999999999999999")
    assert r.status_code == 400, r.text
    assert await listed("updated_after=2000-01-01T00:00:00Z") == [*ids[:1], *ids[2:], ids[1]]
    assert await listed("announced_after=2000-01-01T00:00:00Z") == []
    # cursor pagination: forward through every page, then back again
    seen, url, pages = [], "/api/v2/parcels?limit=2", []
    while url:
        page = (await acct.client.get(url)).json()
        pages.append(page)
        seen += [p["id"] for p in page["parcels"]]
        url = page["next"]
    assert sorted(seen) == sorted(ids) and len(pages) == 3
    assert pages[0]["previous"] is None and pages[-1]["next"] is None
    back = (await acct.client.get(pages[-1]["previous"])).json()
    assert [p["id"] for p in back["parcels"]] == [p["id"] for p in pages[1]["parcels"]]
    r = await acct.call("GET", "/api/v2/parcels?cursor=bm90LWEtY3Vyc29y")
    assert r.status_code == 400 and r.json()["error"]["field"] == "cursor"


async def test_update_then_request_a_label_announces_with_webhooks(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    acct = await h.account()
    async with HostileReceiver() as rx:
        r = await acct.call(
            "PATCH",
            f"/api/v2/integrations/{acct.api.id}",
            {"webhook_active": True, "webhook_url": rx.url("/hook")},
        )
        assert r.status_code == 200
        made = await create(acct)
        r = await acct.call(
            "PUT", "/api/v2/parcels", {"parcel": {"id": made["id"], "name": "Anna Tester"}}
        )
        assert r.status_code == 200, r.text
        conforms(r.json(), "parcels.json#ParcelUpdated")
        assert r.json()["parcel"][0]["name"] == "Anna Tester"
        r = await acct.call(
            "PUT",
            "/api/v2/parcels",
            {"parcel": {"id": made["id"], "request_label": True, "shipment": {"id": 1343}}},
        )
        assert r.status_code == 200, r.text
        announced = r.json()["parcel"][0]
        assert announced["status"]["id"] == 1000 and announced["date_announced"]
        assert announced["label"]["label_printer"].endswith(f"/labels/label_printer/{made['id']}")
        # once announced a parcel may not change
        r = await acct.call("PUT", "/api/v2/parcels", {"parcel": {"id": made["id"], "name": "X"}})
        assert r.status_code == 400
        await rx.wait_for_requests(4)
        # in the order of their timestamps, not of their arrival: a lane sends on several
        # connections at once, and what is ordered is a parcel's event timestamps (strictly
        # increasing, docs/receiving.md)
        changes = sorted(
            (json.loads(q.body) for q in rx.requests if b"parcel_status_changed" in q.body),
            key=lambda event: int(event["timestamp"]),
        )
        assert len({event["timestamp"] for event in changes}) == len(changes)
        assert [event["parcel"]["status"]["id"] for event in changes] == [1000, 1001, 1000]


async def test_an_announcement_that_cannot_be_made_fails_and_cancelling_deletes(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    # DHL Parcel Connect carries at most 2 kg
    failed = await create(acct, request_label=True, shipment={"id": 1315}, weight="5")
    assert failed["status"]["id"] == 1002 and failed["label"]["label_printer"] is None
    assert "2.001 kg" in failed["errors"]["non_field_errors"][0]
    r = await acct.call("POST", f"/api/v2/parcels/{failed['id']}/cancel")
    assert r.status_code == 410 and r.json() == {
        "status": "deleted",
        "message": "Parcel has been deleted",
    }
    conforms(r.json(), "parcels.json#CancelParcelStatus")
    ready = await create(acct)
    r = await acct.call("POST", f"/api/v2/parcels/{ready['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    conforms(r.json(), "parcels.json#CancelParcelStatus")
    r = await acct.call("POST", f"/api/v2/parcels/{ready['id']}/cancel")
    assert r.status_code == 400 and r.json()["error"]["code"] == 400
    moving = await create(acct)
    await acct.call("POST", f"/api/v2/parcels/{moving['id']}/status", {"status_id": 91})
    r = await acct.call("POST", f"/api/v2/parcels/{moving['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    got = (await acct.call("GET", f"/api/v2/parcels/{moving['id']}")).json()["parcel"]
    assert got["status"]["id"] == 1999


def decode_barcodes(pdf: bytes) -> list[str]:
    page = pypdfium2.PdfDocument(pdf)[0]
    image = page.render(scale=300 / 72).to_pil()
    return [
        b.text for b in zxingcpp.read_barcodes(image) if b.format == zxingcpp.BarcodeFormat.Code128
    ]


async def test_a_requested_label_is_a_pdf_whose_barcode_is_the_tracking_number(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    other = await h.account()
    parcel = await create(acct, request_label=True, shipment={"id": 1343})
    assert parcel["status"]["id"] == 1000
    links = parcel["label"]
    assert len(links["normal_printer"]) == 4
    a6 = await acct.client.get(links["label_printer"])
    assert a6.status_code == 200 and a6.headers["content-type"] == "application/pdf"
    assert decode_barcodes(a6.content) == [parcel["tracking_number"]]
    a4 = await acct.client.get(links["normal_printer"][3])
    assert a4.status_code == 200 and decode_barcodes(a4.content) == [parcel["tracking_number"]]
    width, height = pypdfium2.PdfDocument(a4.content)[0].get_size()
    assert (round(width), round(height)) == (595, 842)  # A4 in points
    (document,) = parcel["documents"]
    label = await acct.client.get(document["link"])
    assert decode_barcodes(label.content) == [parcel["tracking_number"]]
    r = await acct.call("GET", f"/api/v2/labels/{parcel['id']}")
    assert r.status_code == 200 and r.json() == {"label": links}
    conforms(r.json(), "shipping.json#Label")
    # authenticated like the API; another account's label is not there at all
    async with httpx.AsyncClient(timeout=10) as anonymous:
        assert (await anonymous.get(links["label_printer"])).status_code == 401
    assert (await other.client.get(links["label_printer"])).status_code == 404
    unlabelled = await create(acct)
    r = await acct.call("GET", f"/api/v2/labels/label_printer/{unlabelled['id']}")
    assert r.status_code == 404


async def test_return_portal_url_opens_a_page_for_that_parcel(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    parcel = await create(acct)
    r = await acct.call("GET", f"/api/v2/parcels/{parcel['id']}/return_portal_url")
    assert r.status_code == 200
    conforms(r.json(), "parcels.json#ReturnPortalUrl")
    async with httpx.AsyncClient(timeout=10) as browser:
        page = await browser.get(r.json()["url"])
        assert page.status_code == 200 and parcel["tracking_number"] in page.text
        wrong = await browser.get(r.json()["url"].replace("code=", "code=X"))
        assert wrong.status_code == 404
        # the page shows a recipient's name: knowing the (guessable) parcel id and postal
        # code is not enough to open it, only the link the merchant was given
        for guess in (parcel["postal_code"], parcel["postal_code"].replace(" ", ""), ""):
            page = await browser.get(f"{h.base_url}/returns/{parcel['id']}", params={"code": guess})
            assert page.status_code == 404


async def test_shipping_methods_user_and_sender_addresses(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    r = await acct.call("GET", "/api/v2/shipping_methods")
    conforms(r.json(), "shipping.json#ShippingMethodList")
    methods = {m["id"]: m for m in r.json()["shipping_methods"]}
    assert methods[1315]["max_weight"] == "2.001" and methods[1343]["carrier"] == "postnl"
    r = await acct.call("GET", "/api/v2/shipping_methods?to_country=US")
    assert [m["id"] for m in r.json()["shipping_methods"]] == [2281]
    r = await acct.call("GET", "/api/v2/shipping_methods/1343")
    conforms(r.json(), "shipping.json#ShippingMethod")
    assert (await acct.call("GET", "/api/v2/shipping_methods/99")).status_code == 404
    r = await acct.call("GET", "/api/v2/user")
    conforms(r.json(), "shipping.json#User")
    r = await acct.call("GET", "/api/v2/user/addresses/sender")
    assert r.json() == {"sender_addresses": []}
    from parcelhook.domain.senders import parse_sender_address

    added = await h.service.add_sender_address(
        acct.account_id,
        parse_sender_address(
            {
                "company_name": "De Vries BV",
                "contact_name": "Anna de Vries",
                "street": "Stationsplein",
                "house_number": "1",
                "postal_code": "5611 AB",
                "city": "Eindhoven",
                "country": "nl",
            }
        ),
    )
    r = await acct.call("GET", "/api/v2/user/addresses/sender")
    conforms(r.json(), "shipping.json#SenderAddressList")
    assert [a["id"] for a in r.json()["sender_addresses"]] == [added.id]
    r = await acct.call("GET", f"/api/v2/user/addresses/sender/{added.id}")
    conforms(r.json(), "shipping.json#SenderAddress")
    assert r.json()["sender_address"]["country"] == "NL"
    other = await h.account()
    assert (await other.call("GET", f"/api/v2/user/addresses/sender/{added.id}")).status_code == 404
    r = await acct.call("GET", "/api/v2/user")
    assert r.json()["user"]["company_name"] == "De Vries BV"
    # a parcel may ship from it; one that names another account's address is refused
    made = await create(acct, sender_address=added.id)
    assert made["sender_address"] == added.id
    r = await other.call(
        "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "sender_address": added.id}}
    )
    assert r.status_code == 400 and r.json()["error"]["field"] == "sender_address"


async def test_integrations_conform_to_the_published_schema(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    r = await acct.call("GET", "/api/v2/integrations")
    conforms(r.json(), "integrations.json#IntegrationList")
    one = r.json()[0]
    r = await acct.call("GET", f"/api/v2/integrations/{one['id']}")
    conforms(r.json(), "integrations.json#Integration")
    # GET, modify, PUT back: the read-only fields sent back are ignored
    r = await acct.call(
        "PUT",
        f"/api/v2/integrations/{one['id']}",
        {**one, "shop_name": "Renamed", "service_point_carriers": ["ups"]},
    )
    assert r.status_code == 200, r.text
    conforms(r.json(), "integrations.json#Integration")
    assert r.json()["shop_name"] == "Renamed" and r.json()["service_point_carriers"] == ["ups"]
    r = await acct.call(
        "PATCH", f"/api/v2/integrations/{one['id']}", {"service_point_enabled": True}
    )
    assert r.status_code == 200 and r.json()["shop_name"] == "Renamed"
    assert r.json()["service_point_enabled"] is True
    r = await acct.call("GET", "/api/v2/integrations/9000000")
    assert r.status_code == 404
    conforms(r.json(), "integrations.json#Error")
    r = await acct.call("PATCH", f"/api/v2/integrations/{one['id']}", {"webhook_active": "yes"})
    assert r.status_code == 400
    conforms(r.json(), "integrations.json#Error")
    r = await acct.call("POST", f"/api/v2/integrations/{one['id']}/webhook-test", {})
    assert r.status_code == 422 and r.json()["error"]["field"] == "webhook_url"


@pytest.mark.parametrize("path", ["/openapi.json"])
async def test_openapi_declares_http_basic_and_both_error_styles(
    harness: HarnessFactory, path: str
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    doc = (await acct.call("GET", path)).json()
    assert doc["components"]["securitySchemes"]["HTTPBasicAuth"]["scheme"] == "basic"
    schemas = doc["components"]["schemas"]
    assert schemas["SendcloudErrorBody"]["properties"]["code"]["type"] == "integer"
    assert schemas["ErrorBody"]["properties"]["code"]["type"] == "string"
    get_parcels = doc["paths"]["/api/v2/parcels"]["get"]
    assert get_parcels["security"] == [{"HTTPBasicAuth": []}]
    bad = get_parcels["responses"]["400"]["content"]["application/json"]["schema"]["$ref"]
    assert bad.endswith("/SendcloudErrorOut")
    tests = doc["paths"]["/api/v2/integrations/{integration_id}/webhook-test"]["post"]
    own = tests["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert own.endswith("/ErrorOut")


async def test_sender_addresses_are_edited_in_the_panel_and_print_on_labels(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account("sender-owner@example.com")
    panel = await sign_in(h.base_url, "sender-owner@example.com", "password123")
    try:
        form = {
            "company_name": "Schoenen BV",
            "contact_name": "Piet Jansen",
            "street": "Kerkstraat",
            "house_number": "9",
            "postal_code": "1017 GB",
            "city": "Amsterdam",
            "country": "nl",
        }
        r = await panel.post("/settings/sender-addresses", {**form, "country": "XX"})
        assert r.status_code == 422 and "two-letter ISO code" in r.text
        # the form's errors name its fields as the form does, in the reader's language
        italian = {"Accept-Language": "it-IT,it;q=0.9"}
        r = await panel.post(
            "/settings/sender-addresses", {**form, "contact_name": " "}, headers=italian
        )
        assert r.status_code == 422 and "Nome del referente è obbligatorio." in r.text
        assert '<html lang="it">' in r.text and "Aggiungi indirizzo del mittente" in r.text
        r = await panel.post("/settings/sender-addresses", form)
        assert r.status_code == 303
        (address,) = (await acct.call("GET", "/api/v2/user/addresses/sender")).json()[
            "sender_addresses"
        ]
        assert address["company_name"] == "Schoenen BV" and address["country"] == "NL"
        page = await panel.get(f"/settings/sender-addresses/{address['id']}")
        assert page.status_code == 200 and "Kerkstraat" in page.text
        r = await panel.post(
            f"/settings/sender-addresses/{address['id']}",
            {**form, "city": "Haarlem", "is_default": "on"},
        )
        assert r.status_code == 303
        got = await acct.call("GET", f"/api/v2/user/addresses/sender/{address['id']}")
        assert got.json()["sender_address"]["city"] == "Haarlem"
        parcel = await create(acct, request_label=True, shipment={"id": 1343})
        pdf = (await acct.client.get(parcel["label"]["label_printer"])).content
        text = pypdfium2.PdfDocument(pdf)[0].get_textpage().get_text_range()
        assert "Schoenen BV" in text and "Haarlem" in text
        other = await h.account()
        theirs = await other.call("GET", f"/api/v2/user/addresses/sender/{address['id']}")
        assert theirs.status_code == 404
        # nor can another account put this address on its parcels, made or changed
        own = await create(other)
        change = {"parcel": {"id": own["id"], "sender_address": address["id"]}}
        assert (await other.call("PUT", "/api/v2/parcels", change)).status_code == 400
        # an id beyond any row is the same 404, not a crash
        assert (
            await panel.get("/settings/sender-addresses/99999999999999999999")
        ).status_code == 404
        r = await panel.post(f"/settings/sender-addresses/{address['id']}", {"delete": "1"})
        assert r.status_code == 303
        after = await acct.call("GET", "/api/v2/user/addresses/sender")
        assert after.json() == {"sender_addresses": []}
    finally:
        await panel.client.aclose()


async def test_the_shipping_method_catalogue_is_configurable(
    harness: HarnessFactory, tmp_path: Path
) -> None:
    catalogue = tmp_path / "methods.json"
    catalogue.write_text(
        json.dumps(
            [
                {
                    "id": 1343,
                    "name": "PostNL Light",
                    "carrier": "postnl",
                    "min_weight": "0.001",
                    "max_weight": "1.000",
                    "prices": {"NL": "4.10", "BE": "8.00"},
                }
            ]
        )
    )
    h = await harness(dispatcher=False, shipping_methods_file=catalogue)
    acct = await h.account()
    r = await acct.call("GET", "/api/v2/shipping_methods")
    (method,) = r.json()["shipping_methods"]
    assert method["name"] == "PostNL Light" and method["max_weight"] == "1.000"
    assert [(c["iso_2"], c["price"]) for c in method["countries"]] == [("NL", 4.1), ("BE", 8.0)]
    heavy = await create(acct, request_label=True, shipment={"id": 1343}, weight="2")
    assert heavy["status"]["id"] == 1002
    light = await create(acct, request_label=True, shipment={"id": 1343}, weight="0.5")
    assert light["status"]["id"] == 1000
