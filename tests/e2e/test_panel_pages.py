"""Every page of the panel at desktop and phone width: axe-core finds nothing, nothing
scrolls sideways (neither the page nor any box in it), and every action is on screen and can
be pressed (not covered)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from support.browsing import (
    DESKTOP,
    LOCALES,
    PHONE,
    axe_violations,
    cells,
    new_parcel,
    new_shop,
    sign_in,
    words,
)
from support.hostile_receiver import HostileReceiver, Mode
from support.panel_client import sign_in as panel_sign_in

if TYPE_CHECKING:
    from conftest import Served

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]
OpenPage = Callable[..., Awaitable[Page]]

# every control a user can act on that is out of place: off screen sideways, hidden, or
# covered by something else where a finger or pointer would land
MISPLACED = """() => {
  const out = [];
  const controls = document.querySelectorAll(
    'main a[href], main button, main input:not([type=hidden]), main select, main summary, '
    + 'header a[href], header button');
  for (const el of controls) {
    if (el.closest('.sr, [hidden]')) continue;
    el.scrollIntoView({block: 'center', inline: 'nearest'});
    const r = el.getBoundingClientRect();
    const name = el.tagName + ' ' + (el.textContent.trim() || el.name || el.id);
    if (r.width < 1 || r.height < 1) { out.push('hidden: ' + name); continue; }
    if (r.left < 0 || r.right > innerWidth + 0.5) { out.push('off screen: ' + name); continue; }
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    const label = el.labels && el.labels[0];
    if (!(hit && (el.contains(hit) || hit.contains(el) || (label && label.contains(hit)))))
      out.push('covered: ' + name);
  }
  return out;
}"""


# an event type in a log row on more than two lines (it may wrap after an underscore, once)
TALL_EVENTS = """() => [...document.querySelectorAll('td .event')].flatMap(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const lines = new Set([...range.getClientRects()].map(r => Math.round(r.bottom))).size;
  return lines > 2 ? ['event type on ' + lines + ' lines: ' + el.textContent] : [];
})"""


# every box on the page whose content is wider than the box, so that it scrolls sideways
SIDEWAYS = """() => [...document.querySelectorAll('body, body *')]
  .filter(el => ['auto', 'scroll'].includes(getComputedStyle(el).overflowX)
    && el.scrollWidth > el.clientWidth + 1)
  .map(el => 'scrolls sideways: ' + el.tagName + (el.className ? '.' + el.className : '')
    + ' (' + el.scrollWidth + ' px in ' + el.clientWidth + ')')"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def paths(served: Served, receiver: HostileReceiver) -> list[str]:
    """One of each page, with content: a shop with a failed delivery and a delivered one."""
    receiver.route("/pages", Mode.status(500, body=b"database is down"), Mode.ok())
    shop = await new_shop(served, receiver.url("/pages"), name="A shop with a rather long name")
    await new_parcel(served, shop)
    await new_parcel(served, shop)
    async with served.api() as api:
        deadline = time.monotonic() + 15
        while True:
            found = (
                await api.get("/api/v2/webhook-deliveries", params={"integration_id": shop})
            ).json()["deliveries"]
            if len(found) == 2 and all(d["status"] != "pending" for d in found):
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.2)
    # a shop whose endpoint is down: its pages open with the failing banner
    receiver.route("/down", Mode.status(503, body=b"maintenance"))
    down = await new_shop(served, receiver.url("/down"), name="Down shop")
    await new_parcel(served, down, order_number="ORD-DOWN")
    panel = await panel_sign_in(served.base_url, served.email, served.password)
    try:
        typed = {"contact_name": "Piet Jansen", "street": "Kerkstraat", "postal_code": "1017 GB"}
        added = await panel.post(
            "/settings/sender-addresses",
            {**typed, "company_name": "Schoenen BV", "city": "Amsterdam", "country": "NL"},
        )
        assert added.status_code == 303, added.text
        # a test send, so that the logs hold a row marked as a test
        await panel.get(f"/settings/integrations/{shop}")
        tested = await panel.post(
            f"/settings/integrations/{shop}/test",
            {"webhook_active": "on", "webhook_url": receiver.url("/pages")},
        )
        assert tested.status_code in (200, 303), tested.text
    finally:
        await panel.aclose()
    async with served.api() as api:
        [sender] = (await api.get("/api/v2/user/addresses/sender")).json()["sender_addresses"]
        deadline = time.monotonic() + 15
        while True:
            failed = (
                await api.get("/api/v2/webhook-deliveries", params={"integration_id": down})
            ).json()["deliveries"]
            if failed and failed[0]["status"] == "failed":
                break
            assert time.monotonic() < deadline, failed
            await asyncio.sleep(0.2)
    base = f"/settings/integrations/{shop}"
    return [
        "/settings/integrations",
        f"/settings/integrations/{served.integration_id}",
        base,
        f"{base}/log",
        f"{base}/log?status=failed",
        f"{base}/log/{found[0]['id']}",
        f"{base}/log/{found[1]['id']}",
        f"/settings/integrations/{down}",
        f"/settings/integrations/{down}/log",
        "/settings/log",
        "/settings/log?status=delivered&action=parcel_status_changed&by=order_number&q=ORD",
        "/settings/sender-addresses",
        f"/settings/sender-addresses/{sender['id']}",
        "/settings/integrations/999999",
    ]


@pytest.mark.parametrize(("viewport", "js", "lang"), cells())
async def test_every_page_passes_axe_fits_and_keeps_every_action_usable(
    open_page: OpenPage,
    served: Served,
    paths: list[str],
    viewport: dict[str, int],
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await page.goto(served.base_url + "/login")
    problems: dict[str, Any] = {}

    async def check(path: str) -> None:
        found = await axe_violations(page, axe_source, js=js)
        if await page.get_attribute("html", "lang") != lang:
            found.append("not in the browser's language")
        if await page.evaluate("document.documentElement.scrollWidth") > viewport["width"]:
            found.append("the page scrolls sideways")
        found += await page.evaluate(SIDEWAYS)
        found += await page.evaluate(MISPLACED)
        found += await page.evaluate(TALL_EVENTS)
        if found:
            problems[path] = found

    await check("/login")
    await sign_in(page, served, "/settings/integrations")
    for path in paths:
        await page.goto(served.base_url + path)
        await check(path)
    assert problems == {}


@pytest.mark.parametrize(
    ("viewport", "js"),
    [
        pytest.param(viewport, js, id=f"{width}-{'js' if js else 'nojs'}")
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE))
        for js in (True, False)
    ],
)
async def test_the_language_switcher_is_remembered_from_page_to_page(
    open_page: OpenPage, served: Served, viewport: dict[str, int], js: bool
) -> None:
    _ = words("it")
    page = await open_page(viewport, js=js)
    await sign_in(page, served, "/settings/integrations")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await page.get_by_label("Language").select_option("it")
    await page.get_by_role("button", name="Change language").click()
    await expect(page.locator("html")).to_have_attribute("lang", "it")
    await expect(page.locator("h1")).to_have_text(_("Integrations"))
    assert page.url.endswith("/settings/integrations")
    await page.goto(f"{served.base_url}/settings/integrations/{served.integration_id}")
    await expect(page.get_by_label(_("Webhook feedback enabled"))).to_be_visible()
    await expect(page.get_by_role("button", name=_("Test API Webhook"))).to_be_visible()
    await expect(page.get_by_role("button", name=_("Save"), exact=True)).to_be_visible()
    # a time is UTC in <time datetime>; the script shows it in the reader's zone
    await page.goto(f"{served.base_url}/settings/log")
    first = page.locator("time[datetime]").first
    await expect(first).to_have_text(re.compile(r"^(?!.*UTC)") if js else re.compile("UTC$"))
