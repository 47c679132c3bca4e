"""A failing endpoint in plain sight: the banner, the list's failing state, and Retry now.

This module's server retries (the default schedule: first retry after 5 minutes), so a
failed attempt leaves its delivery waiting, as it would in production.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import Page, expect

from support.browsing import (
    DESKTOP,
    DOCS,
    LOCALES,
    UPDATE_DOCS,
    axe_violations,
    catalogue,
    cells,
    new_parcel,
    new_shop,
    sentence,
    sign_in,
    words,
)
from support.hostile_receiver import HostileReceiver, Mode

if TYPE_CHECKING:
    from conftest import Served

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]
SERVE_RETRIES = 10
OpenPage = Callable[..., Awaitable[Page]]


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 15) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def failing_shop(served: Served, receiver: HostileReceiver, path: str, parcels: int) -> int:
    """A shop whose endpoint answers 500 to its first `parcels` deliveries, then 200."""
    receiver.route(path, *([Mode.status(500, body=b"database is down")] * parcels), Mode.ok())
    shop = await new_shop(served, receiver.url(path), name=f"Failing {path.strip('/')}")
    for _ in range(parcels):
        await new_parcel(served, shop)

    async def all_retrying() -> bool:
        async with served.api() as api:
            found = (
                await api.get(
                    "/api/v2/webhook-deliveries",
                    params={"integration_id": shop, "status": "pending"},
                )
            ).json()["deliveries"]
        return len(found) == parcels and all(d["attempt_count"] == 1 for d in found)

    await until(all_retrying, f"{parcels} deliveries retrying")
    return shop


@pytest.mark.parametrize(("viewport", "js", "lang"), cells())
async def test_the_banner_says_since_when_why_and_how_many_and_retries_them_all(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _, n_ = words(lang), catalogue(lang).ngettext
    path = f"/banner-{viewport['width']}-{int(js)}-{lang}"
    shop = await failing_shop(served, receiver, path, parcels=2)
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, "/settings/integrations")
    row = page.locator("tr.failing").filter(has_text=f"Failing {path.strip('/')}")
    await expect(row).to_contain_text(_("Failing"))
    await expect(row).to_contain_text(sentence(lang, "since %(since)s", since=r"\S"))
    await expect(row.locator("time[datetime]")).to_have_count(1)
    await expect(row.get_by_role("link", name=_("Webhook log"))).to_be_visible()
    width = viewport["width"]
    assert await page.evaluate("document.documentElement.scrollWidth") <= width

    for tab in ("", "/log"):
        await page.goto(f"{served.base_url}/settings/integrations/{shop}{tab}")
        banner = page.locator("#failing-banner")
        await expect(banner).to_contain_text(sentence(lang, "Failing since %(since)s", since=r"\S"))
        since = banner.locator("time[datetime]")
        await expect(since).to_have_attribute("datetime", re.compile(r"^\d{4}-\d\d-\d\dT"))
        # localised by the script; UTC, labelled as such, without it
        await expect(since).to_have_text(re.compile(r"2\d{3}" if js else r"^\d{4}-.* UTC$"))
        last = _("last error: %(code)s %(error)s") % {"code": "HTTP 500", "error": ""}
        await expect(banner).to_contain_text(last.strip())
        waiting = n_("%(count)s delivery waiting", "%(count)s deliveries waiting", 2)
        await expect(banner).to_contain_text(waiting % {"count": 2})
        await expect(banner.get_by_role("button", name=_("Retry all now"))).to_be_visible()
        assert await page.evaluate("document.documentElement.scrollWidth") <= width
        assert await axe_violations(page, axe_source, js=js) == []
        if UPDATE_DOCS and js and tab == "" and viewport == DESKTOP:
            await page.screenshot(path=str(DOCS / f"panel-failing-banner-{lang}.png"))

    await page.locator("#failing-banner").get_by_role("button", name=_("Retry all now")).click()
    sent = n_(
        "%(num)d waiting delivery is being sent now.",
        "%(num)d waiting deliveries are being sent now.",
        2,
    )
    await expect(page.locator(".notice")).to_have_text(sent % {"num": 2})
    assert page.url.split("?")[0].endswith(f"/settings/integrations/{shop}/log")

    async def recovered() -> bool:
        await page.reload()
        return await page.locator("#failing-banner").count() == 0

    await until(recovered, "the banner to go once both deliveries arrived")
    assert [r.path for r in receiver.requests].count(path) == 4


@pytest.mark.parametrize(("viewport", "js", "lang"), cells())
async def test_retry_now_sends_a_retrying_delivery_at_once_with_the_same_webhook_id(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _ = words(lang)
    path = f"/retry-one-{viewport['width']}-{int(js)}-{lang}"
    shop = await failing_shop(served, receiver, path, parcels=1)
    receiver.route(path, Mode.status(503, body=b"still down"))
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{shop}/log")
    row = page.locator("tbody tr[data-delivery]").first
    await expect(row).to_contain_text(_("retrying"))
    button = row.get_by_role("button", name=re.compile("^" + re.escape(_("Retry now"))))
    await expect(button).to_be_visible()
    await row.get_by_role("link").click()
    started = time.time()
    await page.get_by_role("button", name=_("Retry now"), exact=True).click()
    await expect(page.locator(".notice")).to_contain_text(
        _("Sending it now; should it fail again, its retries start over.")
    )
    # the page of a delivery waiting for its retry, with its Retry now button
    assert await axe_violations(page, axe_source, js=js) == []

    async def sent_twice() -> bool:
        return [r.path for r in receiver.requests].count(path) == 2

    await until(sent_twice, "the retried delivery to arrive")
    first, second = [r for r in receiver.requests if r.path == path]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]

    async def next_attempt() -> float | None:
        async with served.api() as api:
            (d,) = (
                await api.get("/api/v2/webhook-deliveries", params={"integration_id": shop})
            ).json()["deliveries"]
        if d["attempt_count"] != 2:
            return None
        return datetime.fromisoformat(d["next_attempt_at"]).timestamp()

    async def failed_again() -> bool:
        return await next_attempt() is not None

    await until(failed_again, "the second attempt to be recorded")
    due = await next_attempt()
    assert due is not None
    # failed again: the schedule starts over at its first step (5 min ± 10 %), not the second
    assert 4.4 * 60 <= due - started <= 5.6 * 60


async def test_the_api_redelivers_a_pending_delivery_now(
    served: Served, receiver: HostileReceiver
) -> None:
    path = "/api-retry"
    shop = await failing_shop(served, receiver, path, parcels=1)
    async with served.api() as api:
        (pending,) = (
            await api.get("/api/v2/webhook-deliveries", params={"integration_id": shop})
        ).json()["deliveries"]
        answer = await api.post(f"/api/v2/webhook-deliveries/{pending['id']}/redeliver")
    assert answer.status_code == 200, answer.text
    assert answer.json()["delivery"]["event_id"] == pending["event_id"]

    async def arrived() -> bool:
        return [r.path for r in receiver.requests].count(path) == 2

    await until(arrived, "the redelivered pending delivery")
    first, second = [r for r in receiver.requests if r.path == path]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == pending["event_id"]
