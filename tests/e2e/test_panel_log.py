"""The webhook log as people search it: filters, the four searches, the account-wide log,
duration and status in each row, every attempt's request on the delivery page, and tests
marked as tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from support.browsing import (
    DESKTOP,
    DOCS,
    LOCALES,
    PARCEL,
    UPDATE_DOCS,
    axe_violations,
    cells,
    new_shop,
    sentence,
    sign_in,
    words,
)
from support.hostile_receiver import HostileReceiver, Mode

if TYPE_CHECKING:
    from conftest import Served

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]
OpenPage = Callable[..., Awaitable[Page]]
# every case in each cell of #14: both widths, both languages, JavaScript on and off
CELLS = cells()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shop(served: Served, receiver: HostileReceiver) -> dict[str, Any]:
    """A shop with two parcels: the first one's delivery fails, the second's arrives."""
    down = Mode("status", code=500, body=b"database is down", headers=(("X-Request-Id", "r-500"),))
    receiver.route("/searched", down, Mode.ok())
    shop_id = await new_shop(served, receiver.url("/searched"), name="Searched shop")
    parcels = []
    async with served.api() as api:
        for order in ("ORD-100", "ORD-200"):
            answer = await api.post(
                "/api/v2/parcels",
                json={"parcel": {**PARCEL, "order_number": order, "integration_id": shop_id}},
            )
            assert answer.is_success, answer.text
            parcels.append(answer.json()["parcel"])
            # in this order, so that the first parcel's delivery meets the 500
            deadline = time.monotonic() + 15
            while len([r for r in receiver.requests if r.path == "/searched"]) < len(parcels):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        deadline = time.monotonic() + 15
        while True:
            found = (
                await api.get("/api/v2/webhook-deliveries", params={"integration_id": shop_id})
            ).json()["deliveries"]
            if len(found) == 2 and all(d["status"] != "pending" for d in found):
                break
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.2)
    by_parcel = {d["id"]: d for d in found}
    failed = next(d for d in found if d["status"] == "failed")
    return {"id": shop_id, "parcels": parcels, "deliveries": by_parcel, "failed": failed}


def rows(page: Page) -> Any:
    return page.locator("tbody tr[data-delivery]")


async def search(page: Page, by: str, value: str) -> None:
    await page.locator("#f-by").select_option(by)
    await page.locator("#f-q").fill(value)
    await submit(page)


async def submit(page: Page) -> None:
    await page.locator("form.search button[type=submit]").click()


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_filters_and_searches_find_the_right_deliveries(
    open_page: OpenPage,
    served: Served,
    shop: dict[str, Any],
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _ = words(lang)
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{shop['id']}/log")
    await expect(rows(page)).to_have_count(2)
    failed_row = rows(page).filter(has_text=_("failed"))
    await expect(failed_row).to_contain_text("500")
    await expect(failed_row).to_contain_text(sentence(lang, "%(ms)s ms", ms=r"\d+"))

    await page.get_by_label(_("Status")).select_option("failed")
    await submit(page)
    await expect(rows(page)).to_have_count(1)
    await expect(rows(page)).to_contain_text(_("failed"))

    await page.get_by_label(_("Status")).select_option("")
    await page.get_by_label(_("Event type")).select_option("refund_requested")
    await submit(page)
    await expect(rows(page)).to_have_count(0)
    await expect(page.get_by_role("cell", name=_("No deliveries match."))).to_be_visible()

    await page.goto(f"{served.base_url}/settings/integrations/{shop['id']}/log")
    today = datetime.now(UTC).date()
    await page.get_by_label(_("From (UTC)"), exact=True).fill(str(today))
    await page.get_by_label(_("To (UTC)"), exact=True).fill(str(today))
    await submit(page)
    await expect(rows(page)).to_have_count(2)
    assert await axe_violations(page, axe_source, js=js) == []
    await page.get_by_label(_("From (UTC)"), exact=True).fill(str(today - timedelta(days=9)))
    await page.get_by_label(_("To (UTC)"), exact=True).fill(str(today - timedelta(days=1)))
    await submit(page)
    await expect(rows(page)).to_have_count(0)

    first = shop["parcels"][0]
    failed = shop["failed"]
    await page.get_by_role("link", name=_("Clear")).click()
    for by, value in (
        ("parcel", str(first["id"])),
        ("order", "ORD-100"),
        ("tracking", first["tracking_number"]),
        ("event", failed["event_id"]),
    ):
        await search(page, by, value)
        await expect(rows(page)).to_have_count(1)
        await expect(rows(page)).to_contain_text(f"#{failed['id']}")
    await search(page, "order", "ORD-200")
    await expect(rows(page)).not_to_contain_text(f"#{failed['id']}")
    await search(page, "tracking", "no such number")
    await expect(rows(page)).to_have_count(0)
    assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_the_account_wide_log_shows_every_integration_and_tests_marked(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    shop: dict[str, Any],
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _ = words(lang)
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{served.integration_id}")
    await page.locator("#webhook_url").fill(receiver.url(f"/tested-{viewport['width']}-{int(js)}"))
    await page.locator("#test-button").click()
    await expect(page.locator("#test-result")).to_contain_text(
        sentence(
            lang,
            "Delivered: the endpoint answered HTTP %(status)s in %(ms)s ms.",
            status="200",
            ms=r"\d+",
        )
    )

    await page.get_by_role("link", name=_("All deliveries")).click()
    await expect(page.locator("h1")).to_contain_text(_("All deliveries"))
    await expect(rows(page).filter(has_text="Searched shop")).to_have_count(2)
    test_row = rows(page).filter(has_text="test_webhook").first
    # the integration's name is the merchant's own (the first one is called so), not copy
    await expect(test_row).to_contain_text("API integration")
    await expect(test_row.locator(".badge-test")).to_have_text(_("test"))

    await page.get_by_label(_("Event type")).select_option("parcel_status_changed")
    await page.locator("#f-from").fill(str(datetime.now(UTC).date()))
    await submit(page)
    await expect(rows(page).filter(has_text="test_webhook")).to_have_count(0)
    await expect(rows(page).filter(has_text="Searched shop")).to_have_count(2)
    assert await axe_violations(page, axe_source, js=js) == []
    if UPDATE_DOCS and js and viewport == DESKTOP:
        await page.screenshot(path=str(DOCS / f"panel-log-filters-{lang}.png"), full_page=True)


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_the_delivery_page_shows_the_target_and_each_attempts_request_and_response(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    shop: dict[str, Any],
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _ = words(lang)
    # the webhook URL changes after the delivery: the page still says where it went
    async with served.api() as api:
        moved = await api.patch(
            f"/api/v2/integrations/{shop['id']}", json={"webhook_url": receiver.url("/moved")}
        )
    assert moved.status_code == 200, moved.text
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    failed = shop["failed"]
    await sign_in(page, served, f"/settings/integrations/{shop['id']}/log/{failed['id']}")
    await expect(page.locator("#target-url")).to_have_text(receiver.url("/searched"))
    attempt = page.locator(".attempts li").first
    await expect(attempt).to_contain_text("HTTP 500")
    await expect(attempt.locator("pre")).to_have_text("database is down")
    await expect(attempt.locator(".attempt-url")).to_contain_text(_("Sent to") + " http")
    response = attempt.locator(".response-headers")
    await expect(response.locator("summary")).to_have_text(_("Response headers of this attempt"))
    await response.locator("summary").click()
    await expect(response.get_by_role("row").filter(has_text="X-Request-Id")).to_contain_text(
        "r-500"
    )
    await expect(response.get_by_role("row").filter(has_text="Content-Length")).to_be_visible()
    await attempt.locator(".request-headers summary").click()
    headers = attempt.locator(".request-headers table.headers")
    await expect(headers).to_be_visible()
    await expect(headers.get_by_role("row").filter(has_text="webhook-id")).to_contain_text(
        failed["event_id"]
    )
    await expect(headers.get_by_role("row").filter(has_text="Sendcloud-Signature")).to_contain_text(
        "…"
    )
    # with both header tables open
    assert await axe_violations(page, axe_source, js=js) == []
