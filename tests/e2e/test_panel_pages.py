"""Every page of the panel at desktop and phone width: axe-core finds nothing, nothing
scrolls sideways, and every action is on screen and can be pressed (not covered)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from playwright.async_api import Page

from support.browsing import DESKTOP, PHONE, axe_violations, new_parcel, new_shop, sign_in
from support.hostile_receiver import HostileReceiver, Mode

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
    base = f"/settings/integrations/{shop}"
    return [
        "/settings/integrations",
        f"/settings/integrations/{served.integration_id}",
        base,
        f"{base}/log",
        f"{base}/log?status=failed",
        f"{base}/log/{found[0]['id']}",
        f"{base}/log/{found[1]['id']}",
        "/settings/integrations/999999",
    ]


@pytest.mark.parametrize(
    "viewport", [pytest.param(DESKTOP, id="desktop"), pytest.param(PHONE, id="phone")]
)
async def test_every_page_passes_axe_fits_and_keeps_every_action_usable(
    open_page: OpenPage,
    served: Served,
    paths: list[str],
    viewport: dict[str, int],
    axe_source: str,
) -> None:
    page = await open_page(viewport)
    await page.goto(served.base_url + "/login")
    problems: dict[str, Any] = {}

    async def check(path: str) -> None:
        found = await axe_violations(page, axe_source)
        if await page.evaluate("document.documentElement.scrollWidth") > viewport["width"]:
            found.append("scrolls sideways")
        found += await page.evaluate(MISPLACED)
        if found:
            problems[path] = found

    await check("/login")
    await sign_in(page, served, "/settings/integrations")
    for path in paths:
        await page.goto(served.base_url + path)
        await check(path)
    assert problems == {}
