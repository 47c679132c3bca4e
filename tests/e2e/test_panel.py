"""The control panel, as its users meet it.

In-process tests (an ASGI client, an injected clock) cover sessions, CSRF, the sign-in
throttle, tenant isolation and secrets; browser tests drive Chromium against a real
`parcelhook serve` and a real receiver on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from playwright.async_api import Page, expect

from parcelhook.app import create_app
from parcelhook.config import Settings
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.integrations import parse_changes
from parcelhook.domain.parcels import parse_new_parcel
from parcelhook.panel import i18n, present
from parcelhook.runtime import Runtime
from parcelhook.service import NewAccount
from support.hostile_receiver import HostileReceiver, Mode, ReceivedRequest

if TYPE_CHECKING:
    from conftest import Served

pytestmark = pytest.mark.asyncio(loop_scope="module")
DOCS = Path(__file__).resolve().parents[2] / "docs"
# the committed screenshots are refreshed only on request, so a test run leaves the tree clean
UPDATE_DOCS = os.environ.get("PARCELHOOK_UPDATE_SCREENSHOTS") == "1"

KEY = "Str0ng!Signature-Key"
PASSWORD = "correct horse battery"
PARCEL = {
    "name": "Anna de Vries",
    "address": "Stationsplein 1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
}


def signed_with(request: ReceivedRequest, key: str) -> bool:
    expected = hmac.new(key.encode(), request.body, hashlib.sha256).hexdigest()
    return request.headers["Sendcloud-Signature"] == expected


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


# -- in process: an ASGI client and a clock that moves when told -----------------------


@dataclass
class InProcess:
    app: Any
    clock: FakeClock
    runtime: Runtime
    owner: NewAccount
    other: NewAccount

    def client(self, address: str = "192.0.2.1", https: bool = False) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 50000))
        scheme = "https" if https else "http"
        return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://panel.test")


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    token = csrf((await client.get("/login")).text)
    return await client.post(
        "/login", data={"email": email, "password": password, "csrf_token": token}
    )


async def signed_in(inproc: InProcess, **kw: Any) -> tuple[httpx.AsyncClient, str]:
    """A client signed in as the owner, and its CSRF token."""
    client = inproc.client(**kw)
    response = await sign_in(client, "owner@example.com", PASSWORD)
    assert response.status_code == 303, response.text
    return client, csrf((await client.get("/settings/integrations")).text)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, *, dispatcher: bool = False) -> AsyncIterator[InProcess]:
    """The app in this process with two accounts, on a clock that moves only when told."""
    clock = FakeClock(start_ms=int(time.time() * 1000))
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'panel.db'}",
        master_key=Fernet.generate_key().decode(),
        dispatcher=dispatcher,
        allow_private_targets=True,
        allow_http_targets=True,
        timeout=5,
    )
    runtime = Runtime(settings, clock=clock)
    await runtime.start()
    try:
        owner = await runtime.service.create_account("owner@example.com", PASSWORD)
        other = await runtime.service.create_account("other@example.com", PASSWORD)
        yield InProcess(create_app(runtime, manage_runtime=False), clock, runtime, owner, other)
    finally:
        await runtime.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def inproc(tmp_path: Path) -> AsyncIterator[InProcess]:
    async with running(tmp_path) as started:
        yield started


async def test_repeated_failed_sign_ins_lock_the_email_out_for_longer_each_time(
    inproc: InProcess,
) -> None:
    client = inproc.client()
    for _ in range(5):
        refused = await sign_in(client, "Owner@Example.com", "wrong password")
        assert refused.status_code == 401
        assert "do not match an account" in refused.text

    locked = await sign_in(client, "owner@example.com", PASSWORD)
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "30"
    assert "Too many failed sign-ins" in locked.text

    await inproc.clock.advance(31)
    assert (await sign_in(client, "owner@example.com", "still wrong")).status_code == 401
    assert (await sign_in(client, "owner@example.com", PASSWORD)).headers["Retry-After"] == "60"

    await inproc.clock.advance(61)
    assert (await sign_in(client, "owner@example.com", PASSWORD)).status_code == 303
    # a success starts the count afresh
    assert (await sign_in(inproc.client(), "owner@example.com", "wrong")).status_code == 401


async def test_many_failed_sign_ins_from_one_address_lock_that_address_only(
    inproc: InProcess,
) -> None:
    guesser = inproc.client("198.51.100.7")
    for n in range(20):
        assert (await sign_in(guesser, f"guess{n}@example.com", "x")).status_code == 401
    assert (await sign_in(guesser, "owner@example.com", PASSWORD)).status_code == 429
    assert (
        await sign_in(inproc.client("203.0.113.9"), "owner@example.com", PASSWORD)
    ).status_code == 303


async def test_posts_without_the_sessions_csrf_token_get_the_403_page(inproc: InProcess) -> None:
    fresh = inproc.client()
    await fresh.get("/login")
    no_token = await fresh.post("/login", data={"email": "owner@example.com", "password": PASSWORD})
    assert no_token.status_code == 403
    assert "This form has expired" in no_token.text

    client, token = await signed_in(inproc)
    url = f"/settings/integrations/{inproc.owner.integration.id}"
    forged = await client.post(
        url, data={"csrf_token": "forged", "webhook_active": "on", "webhook_url": "http://x.test/"}
    )
    assert forged.status_code == 403
    assert 'value="http://x.test/"' not in (await client.get(url)).text
    as_json = await client.post(
        f"{url}/test",
        data={"webhook_url": "http://x.test/"},
        headers={"Accept": "application/json"},
    )
    assert as_json.status_code == 403
    assert as_json.json()["error"]["code"] == "http_403"
    assert (await client.post("/logout")).status_code == 403
    assert (await client.post("/logout", data={"csrf_token": token})).status_code == 303


async def test_the_scripts_error_messages_are_in_the_readers_language(inproc: InProcess) -> None:
    """Configure's script shows a refusal's message in the page, so it must be translated."""
    _ = i18n.load()["it"].gettext
    italian = {"Accept": "application/json", "Accept-Language": "it-IT,it;q=0.9"}
    url = f"/settings/integrations/{inproc.owner.integration.id}/test"
    signed_out = await inproc.client().post(
        url, data={"webhook_url": "http://x.test/"}, headers=italian
    )
    assert signed_out.status_code == 401
    assert signed_out.json()["error"]["message"] == _("Sign in again.") != "Sign in again."
    client, _token = await signed_in(inproc)
    expired = await client.post(
        url, data={"csrf_token": "forged", "webhook_url": "http://x.test/"}, headers=italian
    )
    assert expired.status_code == 403
    assert expired.json()["error"]["message"] == _(
        "The form did not carry this session's security token. It may be older "
        "than your last sign-in. Go back, reload the page and try again."
    )
    assert "security token" not in expired.text


async def test_session_cookie_is_httponly_lax_and_secure_under_https(inproc: InProcess) -> None:
    def attributes(response: httpx.Response) -> set[str]:
        return {a.lower() for a in response.headers["set-cookie"].split("; ")[1:]}

    over_http = attributes(await inproc.client().get("/login"))
    assert {"httponly", "samesite=lax"} <= over_http
    assert "secure" not in over_http
    assert "secure" in attributes(await inproc.client(https=True).get("/login"))


async def test_signing_in_replaces_the_session_and_signing_out_revokes_it(
    inproc: InProcess,
) -> None:
    client = inproc.client()
    token = csrf((await client.get("/login")).text)
    before = client.cookies["parcelhook_session"]
    await sign_in(client, "owner@example.com", PASSWORD)
    stolen = client.cookies["parcelhook_session"]
    assert stolen != before
    new_token = csrf((await client.get("/settings/integrations")).text)
    assert new_token != token
    await client.post("/logout", data={"csrf_token": new_token})

    replay = inproc.client()
    replay.cookies.set("parcelhook_session", stolen)
    answer = await replay.get("/settings/integrations")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/settings/integrations"


async def test_sign_in_only_returns_to_pages_of_this_site(inproc: InProcess) -> None:
    for target, landing in [
        ("//evil.example/x", "/settings/integrations"),
        ("https://evil.example/", "/settings/integrations"),
        (f"/settings/integrations/{inproc.owner.integration.id}/log", None),
    ]:
        client = inproc.client()
        token = csrf((await client.get("/login", params={"next": target})).text)
        answer = await client.post(
            "/login",
            data={
                "email": "owner@example.com",
                "password": PASSWORD,
                "csrf_token": token,
                "next": target,
            },
        )
        assert answer.headers["location"] == (landing or target)


async def test_another_accounts_integration_and_deliveries_are_404_pages(
    inproc: InProcess,
) -> None:
    theirs = inproc.other.integration.id
    service = inproc.runtime.service
    await service.update_integration(
        inproc.other.account_id,
        theirs,
        parse_changes(
            {"webhook_active": True, "webhook_url": "http://127.0.0.1:9/x"}, creating=False
        ),
    )
    (their_delivery,) = await service.list_deliveries(inproc.other.account_id)
    mine = inproc.owner.integration.id
    client, token = await signed_in(inproc)
    for path in [
        f"/settings/integrations/{theirs}",
        f"/settings/integrations/{theirs}/log",
        f"/settings/integrations/{theirs}/log/{their_delivery.id}",
        f"/settings/integrations/{mine}/log/{their_delivery.id}",
        "/settings/integrations/99999999999999999999999",
    ]:
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "<h1>Not found</h1>" in answer.text
    for path in [
        f"/settings/integrations/{theirs}",
        f"/settings/integrations/{theirs}/test",
        f"/settings/integrations/{theirs}/log/redeliver-failed",
        f"/settings/integrations/{mine}/log/{their_delivery.id}/redeliver",
    ]:
        answer = await client.post(
            path, data={"csrf_token": token, "webhook_url": "http://y.test/"}
        )
        assert answer.status_code == 404, path
    unchanged = await service.get_integration(inproc.other.account_id, theirs)
    assert unchanged.webhook_url == "http://127.0.0.1:9/x"


async def test_unknown_pages_are_html_404s_and_unknown_api_paths_stay_json(
    inproc: InProcess,
) -> None:
    client, _token = await signed_in(inproc)
    html = {"accept": "text/html,application/xhtml+xml"}
    for path in ["/settings/integrations/abc", "/no/such/page"]:
        answer = await client.get(path, headers=html)
        assert answer.status_code == 404, path
        assert "<h1>Not found</h1>" in answer.text
    answer = await client.get("/api/v2/nothing-here", headers=html)
    assert answer.status_code == 404
    # under /api/v2 a Sendcloud client may ask for any of Sendcloud's endpoints: its error body
    assert answer.json()["error"]["code"] == 404


async def test_no_page_shows_a_signature_key_even_after_a_failed_save_or_a_test(
    inproc: InProcess,
) -> None:
    client, token = await signed_in(inproc)
    shop = await inproc.runtime.service.create_integration(
        inproc.owner.account_id,
        parse_changes({"shop_name": "Shop", "system": "shopify"}, creating=True),
    )
    configure = f"/settings/integrations/{shop.id}"
    async with HostileReceiver() as rx:
        form = {"csrf_token": token, "webhook_active": "on", "webhook_url": rx.url("/hook")}
        saved = await client.post(configure, data={**form, "webhook_signature_key": KEY})
        assert saved.status_code == 303
        weak = "SecretButNoSpecial1"
        refused = await client.post(configure, data={**form, "webhook_signature_key": weak})
        assert refused.status_code == 422
        assert "at least one special character" in refused.text
        # the form works without JavaScript: Test re-renders the page with the result
        typed = "Another!Strong-Key9"
        tested = await client.post(
            f"{configure}/test", data={**form, "webhook_signature_key": typed}
        )
        assert "Delivered: the endpoint answered HTTP 200" in tested.text
        (request,) = await rx.wait_for_requests(1)
        assert json.loads(request.body)["action"] == "test_webhook"
        assert signed_with(request, typed)

        pages = [refused.text, tested.text]
        pages += [(await client.get(p)).text for p in ("/settings/integrations", configure)]
        pages += [(await client.get(f"{configure}/log")).text]
        assert f'ending in <span class="mono">••••{KEY[-4:]}</span>' in pages[-2]
        for html in pages:
            for secret in (KEY, weak, typed, shop.secret_key, shop.webhook_secret):
                assert secret not in html

        api_page = (await client.get(f"/settings/integrations/{inproc.owner.integration.id}")).text
        reveal = api_page[api_page.index("<details>") : api_page.index("</details>")]
        assert inproc.owner.integration.secret_key in reveal
        assert api_page.count(inproc.owner.integration.secret_key) == 1


async def test_a_delivery_waiting_for_its_next_attempt_shows_as_retrying(tmp_path: Path) -> None:
    async with (
        running(tmp_path, dispatcher=True) as inproc,
        HostileReceiver(Mode.status(503, body=b"maintenance")) as rx,
    ):
        service, owner = inproc.runtime.service, inproc.owner
        shop = await service.create_integration(
            owner.account_id,
            parse_changes(
                {
                    "shop_name": "Shop",
                    "system": "shopify",
                    "webhook_active": True,
                    "webhook_url": rx.url("/down"),
                },
                creating=True,
            ),
        )
        await service.create_parcel(
            owner.account_id,
            owner.integration,
            parse_new_parcel({**PARCEL, "integration_id": shop.id}),
        )

        async def attempted() -> bool:
            found = await service.list_deliveries(owner.account_id, integration_id=shop.id)
            return bool(found) and found[0].attempt_count == 1

        await until(attempted, "the first attempt to be recorded")
        (delivery,) = await service.list_deliveries(owner.account_id, integration_id=shop.id)
        client, _ = await signed_in(inproc)
        log = (await client.get(f"/settings/integrations/{shop.id}/log")).text
        assert '<span class="badge badge-retrying">retrying</span>' in log
        assert present.when(delivery.next_attempt_ms) in log
        detail = (await client.get(f"/settings/integrations/{shop.id}/log/{delivery.id}")).text
        assert "HTTP 503" in detail
        assert "maintenance" in detail


# -- in the browser, against `parcelhook serve` ----------------------------------------


async def browse_signed_in(page: Page, served: Served, path: str = "/") -> None:
    await page.goto(served.base_url + path)
    await page.get_by_label("E-mail").fill(served.email)
    await page.get_by_label("Password").fill(served.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("h1")).not_to_have_text("Sign in")


async def new_shop(served: Served, url: str | None = None, name: str = "Webshop") -> int:
    settings = {"webhook_active": True, "webhook_url": url} if url else {}
    async with served.api() as api:
        answer = await api.post(
            "/api/v2/integrations",
            json={"shop_name": name, "system": "shopify_v2", **settings},
        )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def new_parcel(served: Served, integration_id: int) -> int:
    async with served.api() as api:
        answer = await api.post(
            "/api/v2/parcels", json={"parcel": {**PARCEL, "integration_id": integration_id}}
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["parcel"]["id"])


def rule(page: Page, name: str) -> Any:
    return page.locator(f'#key-rules li[data-rule="{name}"]')


MET, UNMET = re.compile(r"(^|\s)met(\s|$)"), re.compile(r"(^|\s)unmet(\s|$)")


@pytest.mark.browser
async def test_sign_in_list_integrations_and_add_one(page: Page, served: Served) -> None:
    await page.goto(served.base_url + "/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.get_by_label("E-mail").fill(served.email)
    await page.get_by_label("Password").fill("not the password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("do not match an account")

    await page.get_by_label("Password").fill(served.password)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Integrations", exact=True)).to_be_visible()
    await expect(page.get_by_role("cell", name="API integration").first).to_be_visible()

    await page.get_by_label("Name", exact=True).fill("My Etsy shop")
    await page.get_by_label("System").select_option(label="Etsy v2")
    await page.get_by_role("button", name="Add integration").click()
    await expect(page.locator(".notice")).to_have_text(re.compile("Integration added"))
    await expect(page.locator("h1")).to_contain_text("My Etsy shop")
    await page.get_by_role("link", name="Settings › Integrations").click()
    row = page.get_by_role("row").filter(has_text="My Etsy shop")
    await expect(row).to_contain_text("Etsy v2")
    await expect(row).to_contain_text("off")


@pytest.mark.browser
async def test_key_checklist_ticks_as_you_type_and_the_key_can_be_shown(
    page: Page, served: Served
) -> None:
    shop = await new_shop(served)
    await browse_signed_in(page, served, f"/settings/integrations/{shop}")
    key = page.get_by_label("Webhook Signature Key", exact=True)
    await key.press_sequentially("abc")
    await expect(rule(page, "lowercase")).to_have_class(MET)
    for failing in ("length", "digit", "uppercase", "special"):
        await expect(rule(page, failing)).to_have_class(UNMET)
    await key.press_sequentially("DEF-1234567890")
    for name in ("length", "digit", "uppercase", "lowercase", "special"):
        await expect(rule(page, name)).to_have_class(MET)

    await expect(key).to_have_attribute("type", "password")
    await page.get_by_role("button", name="Show").click()
    await expect(key).to_have_attribute("type", "text")
    await page.get_by_role("button", name="Hide").click()
    await expect(key).to_have_attribute("type", "password")


@pytest.mark.browser
async def test_a_weak_key_is_refused_on_save_naming_every_failed_rule(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    shop = await new_shop(served)
    await browse_signed_in(page, served, f"/settings/integrations/{shop}")
    await page.get_by_label("Webhook feedback enabled").check()
    await page.get_by_label("Webhook URL").fill(receiver.url("/weak"))
    await page.get_by_label("Webhook Signature Key", exact=True).fill("short1a")
    await page.get_by_role("button", name="Save").click()

    error = page.locator("#webhook_signature_key-error")
    await expect(error).to_contain_text("at least 16 characters")
    await expect(error).to_contain_text("at least one upper-case letter")
    await expect(error).to_contain_text("at least one special character")
    await expect(error).not_to_contain_text("digit")
    await expect(rule(page, "digit")).to_have_class(MET)
    await expect(rule(page, "special")).to_have_class(UNMET)
    await expect(page.get_by_label("Webhook Signature Key", exact=True)).to_have_value("")
    assert "short1a" not in await page.content()
    async with served.api() as api:
        stored = (await api.get(f"/api/v2/integrations/{shop}")).json()
    assert stored["webhook_active"] is False


@pytest.mark.browser
async def test_test_api_webhook_sends_the_typed_values_and_shows_the_answer(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    await browse_signed_in(page, served, f"/settings/integrations/{served.integration_id}")
    configure_url = page.url
    url = receiver.url("/test-button")
    await page.get_by_label("Webhook URL").fill(url)
    await page.get_by_label("Webhook Signature Key", exact=True).fill(KEY)
    await page.get_by_role("button", name="Test API Webhook").click()

    result = page.locator("#test-result")
    await expect(result).to_contain_text("Delivered: the endpoint answered HTTP 200 in")
    await expect(result).to_contain_text(re.compile(r"\d+ ms"))
    await expect(result.locator("pre")).to_have_text("ok")
    assert page.url == configure_url
    (sent,) = [r for r in receiver.requests if r.path == "/test-button"]
    assert json.loads(sent.body)["action"] == "test_webhook"
    assert signed_with(sent, KEY)
    if UPDATE_DOCS:
        await page.screenshot(path=str(DOCS / "panel-configure.png"), full_page=True)

    async with served.api() as api:
        stored = (await api.get(f"/api/v2/integrations/{served.integration_id}")).json()
    assert stored["webhook_url"] is None
    assert stored["webhook_signature_key_set"] is False


@pytest.mark.browser
async def test_saved_settings_are_shown_after_a_reload_without_the_key(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    shop = await new_shop(served)
    await browse_signed_in(page, served, f"/settings/integrations/{shop}")
    await page.get_by_label("Webhook feedback enabled").check()
    await page.get_by_label("Webhook URL").fill(receiver.url("/saved"))
    await page.get_by_label("Webhook Signature Key", exact=True).fill(KEY)
    await page.get_by_role("button", name="Save").click()
    await expect(page.locator(".notice")).to_have_text("Settings saved.")

    await page.reload()
    await expect(page.get_by_label("Webhook feedback enabled")).to_be_checked()
    await expect(page.get_by_label("Webhook URL")).to_have_value(receiver.url("/saved"))
    await expect(page.locator("#key-state")).to_contain_text(f"Set, ending in ••••{KEY[-4:]}")
    await expect(page.get_by_label("Webhook Signature Key", exact=True)).to_have_value("")
    assert KEY not in await page.content()


@pytest.mark.browser
async def test_a_parcel_status_change_appears_in_the_webhook_log(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    shop = await new_shop(served, receiver.url("/log"), name="Log shop")
    parcel = await new_parcel(served, shop)
    async with served.api() as api:
        changed = await api.post(f"/api/v2/parcels/{parcel}/status", json={"status_id": 11})
    assert changed.status_code == 200, changed.text

    await browse_signed_in(page, served, f"/settings/integrations/{shop}/log")
    rows = page.locator("tbody tr[data-delivery]")

    async def both_delivered() -> bool:
        await page.reload()
        return await rows.filter(has_text="delivered").count() == 2

    await until(both_delivered, "two delivered parcel_status_changed deliveries")
    await expect(rows.first).to_contain_text("parcel_status_changed")

    await rows.first.get_by_role("link").click()
    await expect(page.locator("pre.payload")).to_contain_text('"message": "Delivered"')
    headers = page.locator("table.headers")
    await expect(headers.get_by_role("row").filter(has_text="Sendcloud-Signature")).to_contain_text(
        "…"
    )
    await expect(headers.get_by_role("row").filter(has_text="webhook-signature")).to_contain_text(
        "…"
    )
    await expect(headers.get_by_role("row").filter(has_text="webhook-id")).to_contain_text("evt_")
    await expect(page.locator(".attempts")).to_contain_text("HTTP 200")


@pytest.mark.browser
async def test_a_failed_delivery_is_redelivered_once_the_receiver_recovers(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    receiver.route("/failing", Mode.status(500, body=b"database is down"))
    shop = await new_shop(served, receiver.url("/failing"), name="Failing shop")
    await new_parcel(served, shop)
    await new_parcel(served, shop)

    await browse_signed_in(page, served, f"/settings/integrations/{shop}/log")
    await page.get_by_role("link", name="Failed requests").click()
    rows = page.locator("tbody tr[data-delivery]")

    def failed(count: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            await page.reload()
            return await rows.filter(has_text="failed").count() == count

        return check

    await until(failed(2), "two failed deliveries")
    receiver.route("/failing", Mode.ok())
    await rows.first.get_by_role("link").click()
    await expect(page.locator(".attempts")).to_contain_text("database is down")
    await page.get_by_role("button", name="Redeliver").click()
    await expect(page.locator(".notice")).to_have_text("Queued for redelivery.")

    async def delivered() -> bool:
        await page.reload()
        return await page.locator("#delivery-status").inner_text() == "delivered"

    await until(delivered, "the redelivered delivery to succeed")
    await page.get_by_role("link", name="Webhook log").click()
    await expect(rows.filter(has_text="delivered")).to_have_count(1)
    await expect(rows.filter(has_text="failed")).to_have_count(1)
    if UPDATE_DOCS:
        await page.screenshot(path=str(DOCS / "panel-log.png"), full_page=True)
    await page.get_by_role("button", name="Redeliver all failed").click()
    await expect(page.locator(".notice")).to_have_text("1 failed delivery queued for redelivery.")
    await page.get_by_role("link", name="Failed requests").click()
    await until(failed(0), "no failed deliveries left")
    await expect(page.get_by_role("cell", name="No failed requests.")).to_be_visible()


@pytest.mark.browser
async def test_another_accounts_integration_is_a_404_page(page: Page, served: Served) -> None:
    created = json.loads(
        served.cli(
            "account",
            "create",
            "--email",
            "other@example.com",
            "--password",
            "other-password-1",
            "--json",
        )
    )
    await browse_signed_in(page, served)
    for path in ("", "/log"):
        answer = await page.goto(
            f"{served.base_url}/settings/integrations/{created['integration_id']}{path}"
        )
        assert answer is not None and answer.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()


@pytest.mark.browser
async def test_pages_fit_375_px_label_every_input_and_save_from_the_keyboard(
    page: Page, served: Served, receiver: HostileReceiver
) -> None:
    await page.set_viewport_size({"width": 375, "height": 800})
    shop = await new_shop(served, receiver.url("/narrow"), name="A shop with a rather long name")
    await new_parcel(served, shop)
    await browse_signed_in(page, served)
    unlabelled = """() => [
        ...document.querySelectorAll('input:not([type=hidden]), select, textarea')
    ].filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
     .map(e => e.name)"""
    for path in (
        "/settings/integrations",
        f"/settings/integrations/{shop}",
        f"/settings/integrations/{shop}/log",
    ):
        await page.goto(served.base_url + path)
        assert await page.evaluate("document.documentElement.scrollWidth") <= 375, path
        assert await page.evaluate(unlabelled) == [], path

    await page.goto(f"{served.base_url}/settings/integrations/{shop}")
    await page.get_by_label("Webhook URL").focus()
    await page.keyboard.press("Control+A")
    await page.keyboard.type(receiver.url("/narrow-keyboard"))
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "webhook_signature_key"
    await page.keyboard.press("Enter")
    await expect(page.locator(".notice")).to_have_text("Settings saved.")
    await expect(page.get_by_label("Webhook URL")).to_have_value(receiver.url("/narrow-keyboard"))
