"""One account never sees or changes another's data, on SQLite and PostgreSQL.

Account B walks every route of the app (API and panel, listed from `app.routes`, so a new
route cannot be forgotten) with account A's ids. Every route that takes an id answers 404,
exactly as for an id that exists nowhere (never 403: no existence leak); every other route
shows B nothing of A's; and not a single row of the database changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import httpx
from fastapi.routing import APIRoute, iter_route_contexts

from parcelhook.app import create_app
from parcelhook.domain import deliveries as dl
from parcelhook.domain.retry import RetryPolicy
from parcelhook.domain.senders import parse_sender_address
from support.db_snapshot import changed_tables, snapshot
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode
from support.panel_client import PanelSession, sign_in

PASSWORD = "password123"  # what the harness gives every account
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
MISSING = 9_000_000  # an id no row has, on any table
# routes that serve no account's data at all
NO_TENANT_DATA = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/static"),
    # Sendcloud's catalogue and statuses: the same for every account
    ("GET", "/api/v2/parcels/statuses"),
    ("GET", "/api/v2/shipping_methods"),
    ("GET", "/api/v2/shipping_methods/{method_id}"),
}
# valid bodies, so that a refusal can only come from ownership (not from validation)
API_BODIES: dict[tuple[str, str], Any] = {
    ("PUT", "/api/v2/integrations/{integration_id}"): {
        "shop_name": "Taken over",
        "webhook_url": "https://hooks.example.com/b",
    },
    ("PATCH", "/api/v2/integrations/{integration_id}"): {
        "webhook_url": "https://hooks.example.com/b"
    },
    ("POST", "/api/v2/integrations/{integration_id}/webhook-test"): {
        "integration": {"webhook_url": "https://hooks.example.com/b"}
    },
    ("POST", "/api/v2/parcels/{parcel_id}/status"): {"status_id": 11},
    ("POST", "/api/v2/parcels/{parcel_id}/refund"): {"refund": {"reason": "Mine now"}},
}
PANEL_FORMS: dict[tuple[str, str], dict[str, str]] = {
    ("POST", "/settings/integrations/{integration_id:int}"): {
        "webhook_active": "on",
        "webhook_url": "https://hooks.example.com/b",
        "webhook_signature_key": "Taken-0ver!Signature",
    },
    ("POST", "/settings/integrations/{integration_id:int}/test"): {
        "webhook_url": "https://hooks.example.com/b"
    },
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


def routes(h: Harness) -> list[tuple[str, str, APIRoute | None]]:
    """(method, path, route) of everything the app serves, API and panel alike."""
    app = create_app(h.runtime, manage_runtime=False)
    found = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        methods = getattr(route, "methods", None) or {"GET"}  # a Mount serves GETs
        for method in sorted(methods - {"HEAD"}):
            found.append((method, path, route if isinstance(route, APIRoute) else None))
    return found


@dataclass
class World:
    a: Account
    b: Account
    ids: dict[str, list[int]]  # path parameter → A's ids to try
    b_integration: int
    shop_name: str
    event_ids: list[str]


async def build(h: Harness, rx: HostileReceiver) -> World:
    a = await h.account("a-owner@example.com")
    b = await h.account("b-owner@example.com")
    rx.route("/down", Mode.status(500))
    r = await a.call(
        "PATCH",
        f"/api/v2/integrations/{a.api.id}",
        {"webhook_active": True, "webhook_url": rx.url("/a")},
    )
    assert r.status_code == 200
    shop_name = "A's secret shop"
    r = await a.call(
        "POST",
        "/api/v2/integrations",
        {
            "shop_name": shop_name,
            "system": "bol",
            "webhook_active": True,
            "webhook_url": rx.url("/down"),
        },
    )
    shop = int(r.json()["id"])
    parcels = []
    for owner in (shop, a.api.id):
        r = await a.call("POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": owner}})
        parcels.append(int(r.json()["parcel"]["id"]))
    r = await a.call(
        "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "request_label": True}}
    )  # a parcel with a label, which B must not print
    assert r.json()["parcel"]["label"]["label_printer"], r.text
    sender = await h.service.add_sender_address(
        a.account_id,
        parse_sender_address(
            {"contact_name": "A", "street": "S 1", "postal_code": "1", "city": "C", "country": "NL"}
        ),
    )
    r = await a.call("POST", f"/api/v2/parcels/{parcels[0]}/refund", {"refund": {"reason": "x"}})
    assert r.status_code == 201

    async def settled() -> bool:
        found = await h.service.list_deliveries(a.account_id)
        return len(found) >= 3 and all(d.status != dl.PENDING for d in found)

    await eventually(settled, what="A's deliveries to settle")
    deliveries = await h.service.list_deliveries(a.account_id)
    failed = [d.id for d in deliveries if d.status == dl.FAILED]
    delivered = [d.id for d in deliveries if d.status == dl.DELIVERED]
    assert failed and delivered
    events = [e.id for e in await h.service.list_events(a.account_id, "", 100)]
    return World(
        a=a,
        b=b,
        ids={
            "integration_id": [a.api.id, shop],
            "parcel_id": parcels,
            "delivery_id": [failed[0], delivered[0]],
            "sender_id": [sender.id],
        },
        b_integration=b.api.id,
        shop_name=shop_name,
        event_ids=events,
    )


def fill(path: str, values: dict[str, int]) -> str:
    return _PARAM.sub(lambda m: str(values[m.group(1)]), path)


def combinations(path: str, world: World) -> list[dict[str, int]]:
    """A's ids for every parameter; with two parameters, also B's own integration + A's id."""
    names = _PARAM.findall(path)
    combos = [{n: world.ids[n][i % len(world.ids[n])] for n in names} for i in range(2)]
    if "integration_id" in names and len(names) > 1:
        combos.append({**combos[0], "integration_id": world.b_integration})
    return combos


async def test_another_accounts_ids_get_404_on_every_route_and_change_nothing(
    harness: HarnessFactory,
) -> None:
    h = await harness(retry=RetryPolicy(delays=()))
    async with HostileReceiver() as rx:
        world = await build(h, rx)
        api = world.b.client
        panel = await sign_in(h.base_url, "b-owner@example.com", PASSWORD)
        requests_before = len(rx.requests)
        before = await snapshot(h.store)
        answers: list[str] = []
        uncovered: list[str] = []
        leaks: list[str] = []
        try:
            for method, path, route in routes(h):
                key = (method, path)
                if key in NO_TENANT_DATA:
                    continue
                is_api = path.startswith("/api/")
                if _PARAM.search(path):
                    if route is not None and route.body_field is not None and key not in API_BODIES:
                        uncovered.append(f"{method} {path}: add a valid body to API_BODIES")
                        continue
                    for values in combinations(path, world):
                        missing = {n: MISSING for n in values}
                        if (
                            "integration_id" in values
                            and values["integration_id"] == world.b_integration
                        ):
                            missing["integration_id"] = world.b_integration
                        got = await send(api, panel, is_api, method, fill(path, values), key)
                        expected = await send(api, panel, is_api, method, fill(path, missing), key)
                        if got.status_code != 404 or answer(got, fill(path, values)) != answer(
                            expected, fill(path, missing)
                        ):
                            answers.append(
                                f"{method} {fill(path, values)} -> {got.status_code} "
                                f"{got.text[:120]!r}; for a missing id {expected.status_code}"
                            )
                    continue
                probe = NO_ID_PROBES.get(key)
                if probe is None:
                    uncovered.append(f"{method} {path}: no probe for this route")
                    continue
                leaks += await probe(world, api, panel)
            assert uncovered == [], "\n".join(uncovered)
            assert answers == [], "\n".join(answers)
            assert leaks == [], "\n".join(leaks)
            assert changed_tables(before, await snapshot(h.store)) == []
            assert len(rx.requests) == requests_before  # nothing was sent for B's attempts
            # B still acts freely within its own account (creating is not blocked wholesale)
            r = await api.post("/api/v2/integrations", json={"shop_name": "B", "system": "bol"})
            assert r.status_code == 201
            r = await panel.post("/logout")
            assert r.status_code == 303
        finally:
            await panel.aclose()


async def send(
    api: httpx.AsyncClient,
    panel: PanelSession,
    is_api: bool,
    method: str,
    path: str,
    key: tuple[str, str],
) -> httpx.Response:
    if is_api:
        return await api.request(method, path, json=API_BODIES.get(key))
    if method == "GET":
        return await panel.get(path)
    return await panel.post(path, PANEL_FORMS.get(key, {}))


def answer(r: httpx.Response, path: str) -> tuple[int, str]:
    """Status and body, less the request's own path (Sendcloud's error body echoes it)."""
    return r.status_code, r.text.replace(path.partition("?")[0].lstrip("/"), "<path>")


def mentions_a(world: World, text: str) -> list[str]:
    found = [world.shop_name] if world.shop_name in text else []
    found += [e for e in world.event_ids if e in text]
    found += [world.a.api.public_key] if world.a.api.public_key in text else []
    return found


async def _same_as_missing(
    api: httpx.AsyncClient,
    what: str,
    method: str,
    paths: tuple[str, str],
    bodies: tuple[Any, Any] = (None, None),
) -> list[str]:
    """A's id (first) must get exactly the answer an id that exists nowhere (second) gets."""
    got = await api.request(method, paths[0], json=bodies[0])
    expected = await api.request(method, paths[1], json=bodies[1])
    if answer(got, paths[0]) != answer(expected, paths[1]) or got.status_code == 403:
        return [f"{what}: {got.status_code} {got.text[:200]} vs {expected.status_code}"]
    return []


async def _list_integrations(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    r = await api.get("/api/v2/integrations")
    ids = [i["id"] for i in r.json()]
    return [] if ids == [world.b_integration] else [f"B lists integrations {ids}"]


async def _create_integration(_w: World, _a: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    return []  # takes no id; tried at the end, once the snapshot has been compared


async def _list_parcels(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    r = await api.get("/api/v2/parcels", params={"updated_after": "2000-01-01T00:00:00Z"})
    return [f"B sees parcels {r.text[:200]}"] if r.json()["parcels"] else []


async def _create_parcel(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    found = []
    for integration_id in world.ids["integration_id"]:
        found += await _same_as_missing(
            api,
            "a parcel for A's integration",
            "POST",
            ("/api/v2/parcels", "/api/v2/parcels"),
            (
                {"parcel": {**PARCEL, "integration_id": integration_id}},
                {"parcel": {**PARCEL, "integration_id": MISSING}},
            ),
        )
    return found


async def _track_many(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    # each of A's parcels must fail exactly as a parcel that exists nowhere does
    found = []
    for parcel_id in world.ids["parcel_id"]:
        got, missing = [
            await api.post(
                "/api/v2/tracking-updates",
                json={"tracking_updates": [{"parcel_id": pid, "status_id": 11}]},
            )
            for pid in (parcel_id, MISSING)
        ]
        strip = [{**x, "parcel_id": None} for x in got.json().get("results", [])]
        expected = [{**x, "parcel_id": None} for x in missing.json().get("results", [])]
        if got.status_code != missing.status_code or strip != expected:
            found.append(f"tracking update of A's parcel {parcel_id}: {got.text[:200]}")
    return found


async def _events(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    r = await api.get("/api/v2/webhook-events")
    return [f"B sees A's event {e}" for e in mentions_a(world, r.text)]


async def _deliveries(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    found = []
    r = await api.get("/api/v2/webhook-deliveries")
    found += [f"B's delivery log shows {m}" for m in mentions_a(world, r.text)]
    for integration_id in world.ids["integration_id"]:
        for status in ("failed", "delivered"):
            found += await _same_as_missing(
                api,
                "deliveries of A's integration",
                "GET",
                (
                    f"/api/v2/webhook-deliveries?integration_id={integration_id}&status={status}",
                    f"/api/v2/webhook-deliveries?integration_id={MISSING}&status={status}",
                ),
            )
    return found


async def _redeliver_many(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    found = []
    for integration_id in world.ids["integration_id"]:
        found += await _same_as_missing(
            api,
            "bulk redelivery of A's integration",
            "POST",
            ("/api/v2/webhook-deliveries/redeliver", "/api/v2/webhook-deliveries/redeliver"),
            (
                {"status": "failed", "integration_id": integration_id},
                {"status": "failed", "integration_id": MISSING},
            ),
        )
    # B's own "redeliver all failed" must not reach A's failed deliveries
    r = await api.post("/api/v2/webhook-deliveries/redeliver", json={})
    return found + ([] if r.json() == {"redelivered": 0} else [f"B redelivered {r.text}"])


async def _operations(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    found = []
    for path in ("/healthz", "/metrics"):
        r = await api.get(path)
        if r.status_code != 200 or mentions_a(world, r.text):
            found.append(f"{path}: {r.status_code} {mentions_a(world, r.text)}")
    return found


async def _panel_home(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    r = await panel.get("/", follow_redirects=True)
    return [f"panel home shows {m}" for m in mentions_a(world, r.text)]


async def _panel_login_page(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    r = await panel.get("/login")
    return [f"login page shows {m}" for m in mentions_a(world, r.text)]


async def _panel_sign_in(_w: World, _a: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    return []  # B's session was made by signing in through it


async def _panel_sign_out(_w: World, _a: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    return []  # used at the end, so that the session lasts the whole walk


async def _panel_list(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    r = await panel.get("/settings/integrations")
    found = [f"B's integrations page shows {m}" for m in mentions_a(world, r.text)]
    for integration_id in world.ids["integration_id"]:
        if f"/settings/integrations/{integration_id}" in r.text:
            found.append(f"B's integrations page links to A's integration {integration_id}")
    return found


async def _panel_add(_w: World, _a: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    return []  # takes no id (like POST /api/v2/integrations)


async def _update_parcel(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    found = []
    for parcel_id in world.ids["parcel_id"]:
        found += await _same_as_missing(
            api,
            "an update of A's parcel",
            "PUT",
            ("/api/v2/parcels", "/api/v2/parcels"),
            ({"parcel": {"id": parcel_id, "name": "B"}}, {"parcel": {"id": MISSING, "name": "B"}}),
        )
    return found


async def _user(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    r = await api.get("/api/v2/user")
    mine = r.json()["user"]["email"] == "b-owner@example.com"
    return [f"B's user shows {m}" for m in mentions_a(world, r.text)] + (
        [] if mine else [f"B's user is {r.text[:100]}"]
    )


async def _senders(world: World, api: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    r = await api.get("/api/v2/user/addresses/sender")
    return [] if r.json() == {"sender_addresses": []} else [f"B sees senders {r.text[:100]}"]


async def _panel_senders(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    r = await panel.get("/settings/sender-addresses")
    ids = world.ids["sender_id"]
    return [f"B's sender page links to {i}" for i in ids if f"sender-addresses/{i}" in r.text]


async def _panel_add_sender(_w: World, _a: httpx.AsyncClient, _p: PanelSession) -> list[str]:
    return []  # takes no id (like POST /settings/integrations)


async def _panel_account_log(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    """B's account-wide log shows none of A, and searching it for one of A's ids answers the
    same page as searching for an id nobody has (the page echoes what was searched for)."""
    r = await panel.get("/settings/log")
    found = [f"B's account log shows {m}" for m in mentions_a(world, r.text)]
    found += [
        f"B's account log links to A's integration {i}"
        for i in world.ids["integration_id"]
        if f"/settings/integrations/{i}/" in r.text
    ]
    searches = [("event", e, "evt_" + "0" * 26) for e in world.event_ids]
    searches += [("parcel", str(p), str(MISSING)) for p in world.ids["parcel_id"]]
    for by, q, nobodys in searches:
        got = await panel.get("/settings/log", params={"by": by, "q": q})
        expected = await panel.get("/settings/log", params={"by": by, "q": nobodys})
        if (got.status_code, unechoed(got.text, q)) != (
            expected.status_code,
            unechoed(expected.text, nobodys),
        ):
            found.append(f"B's account log searched by {by} for A's {q} differs from a missing id")
    return found


# the account log echoes a search in its search box and in the language form's `next`
_ECHOES = ('name="q" type="search" value="{}"', 'q={}">')


def unechoed(text: str, searched: str) -> str:
    for echo in _ECHOES:
        text = text.replace(echo.format(searched), echo)
    return text


async def _panel_language(world: World, _a: httpx.AsyncClient, panel: PanelSession) -> list[str]:
    # a display preference kept in a cookie: it takes no id and reads no account's data
    r = await panel.post("/language", {"lang": "it", "next": "/settings/integrations"})
    if r.status_code != 303:
        return [f"the language switch answered {r.status_code}"]
    await panel.post("/language", {"lang": "en", "next": "/"})
    return []


NO_ID_PROBES = {
    ("GET", "/settings/log"): _panel_account_log,
    ("POST", "/language"): _panel_language,
    ("GET", "/settings/sender-addresses"): _panel_senders,
    ("POST", "/settings/sender-addresses"): _panel_add_sender,
    ("PUT", "/api/v2/parcels"): _update_parcel,
    ("GET", "/api/v2/user"): _user,
    ("GET", "/api/v2/user/addresses/sender"): _senders,
    ("GET", "/api/v2/integrations"): _list_integrations,
    ("POST", "/api/v2/integrations"): _create_integration,
    ("GET", "/api/v2/parcels"): _list_parcels,
    ("POST", "/api/v2/parcels"): _create_parcel,
    ("POST", "/api/v2/tracking-updates"): _track_many,
    ("GET", "/api/v2/webhook-events"): _events,
    ("GET", "/api/v2/webhook-deliveries"): _deliveries,
    ("POST", "/api/v2/webhook-deliveries/redeliver"): _redeliver_many,
    ("GET", "/healthz"): _operations,
    ("GET", "/metrics"): _operations,
    ("GET", "/"): _panel_home,
    ("GET", "/login"): _panel_login_page,
    ("POST", "/login"): _panel_sign_in,
    ("POST", "/logout"): _panel_sign_out,
    ("GET", "/settings/integrations"): _panel_list,
    ("POST", "/settings/integrations"): _panel_add,
}
