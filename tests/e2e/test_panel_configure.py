"""Configure in a browser: Test always answers in words, and each system's own copy.

Every case runs at desktop width with JavaScript on and at phone width with it off, so
both the script's answer and the re-rendered page are held to the same words.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import Page, expect

from support.browsing import (
    DESKTOP,
    DOCS,
    LOCALES,
    UPDATE_DOCS,
    axe_violations,
    cells,
    new_shop,
    sentence,
    sign_in,
    words,
)
from support.hostile_receiver import HostileReceiver, Mode, refused_port

if TYPE_CHECKING:
    from conftest import Served

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]

# the timeout test waits this long once per cell (the default 5 s, eight times, was 40 s)
SERVE_TIMEOUT = 2
KEY = "Str0ng!Signature-Key"
OpenPage = Callable[..., Awaitable[Page]]
# every case in each cell of #14: both widths, both languages, JavaScript on and off
CELLS = cells()


def cell_id(viewport: Any, js: bool, lang: str) -> str:
    """The cell's name, for what a test makes that must not meet another cell's."""
    return f"{viewport['width']}-{int(js)}-{lang}"


async def press_test(page: Page, name: str = "Test API Webhook") -> None:
    """Press the Test button from the keyboard, as the issue's merchant did."""
    await page.get_by_role("button", name=name).focus()
    await page.keyboard.press("Enter")


async def answered_in_place(
    page: Page, configure_url: str, *, typed_url: str, js: bool, lang: str = "en"
) -> None:
    """Focus is back on the button, the address is Configure's, typed values stay but the key."""
    await expect(page.locator("#test-button")).to_be_focused()
    assert page.url == configure_url
    await expect(page.locator("#webhook_url")).to_have_value(typed_url)
    assert KEY not in await page.content()
    if not js:
        await expect(page.locator("#webhook_signature_key")).to_have_value("")
        await expect(page.locator("#key-private")).to_have_text(
            words(lang)(
                "The key you typed is not shown again, for your safety: "
                "type it once more before saving."
            )
        )


async def configure(
    open_page: OpenPage, served: Served, viewport: Any, js: bool, lang: str = "en"
) -> Page:
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{served.integration_id}")
    return page


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_a_dead_port_is_named_in_words(
    open_page: OpenPage, served: Served, viewport: Any, js: bool, lang: str, axe_source: str
) -> None:
    _ = words(lang)
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{served.integration_id}")
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    configure_url = page.url
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}/hook"
        await page.locator("#webhook_url").fill(url)
        await page.locator("#webhook_signature_key").fill(KEY)
        await press_test(page, _("Test API Webhook"))
        result = page.locator("#test-result")
        await expect(result).to_have_class(re.compile(r"\bbad\b"))
        await expect(result).to_contain_text(
            sentence(
                lang,
                "Not delivered: %(problem)s (after %(ms)s ms).",
                problem=re.escape(_("connection refused")),
                ms=r"\d+",
            )
        )
    await expect(page.locator("#test-button")).to_be_focused()
    assert page.url == configure_url
    await expect(page.locator("#webhook_url")).to_have_value(url)
    assert KEY not in await page.content()
    if not js:
        await expect(page.locator("#webhook_signature_key")).to_have_value("")
        await expect(page.locator("#key-private")).to_have_text(
            _(
                "The key you typed is not shown again, for your safety: "
                "type it once more before saving."
            )
        )
    assert await axe_violations(page, axe_source, js=js) == []
    if js and UPDATE_DOCS and viewport == DESKTOP:
        await page.screenshot(
            path=str(DOCS / f"panel-configure-failing-{lang}.png"), full_page=True
        )


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_a_401_shows_the_status_time_and_the_response(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
) -> None:
    _ = words(lang)
    path = f"/unauthorised-{cell_id(viewport, js, lang)}"
    receiver.route(path, Mode.status(401, body=b"invalid token"))
    page = await configure(open_page, served, viewport, js, lang)
    configure_url = page.url
    await page.locator("#webhook_url").fill(receiver.url(path))
    await page.locator("#webhook_signature_key").fill(KEY)
    await press_test(page, _("Test API Webhook"))
    result = page.locator("#test-result")
    said = sentence(
        lang,
        "Not delivered: the endpoint answered HTTP %(status)s in %(ms)s ms.",
        status="401",
        ms=r"\d+",
    )
    await expect(result).to_contain_text(said)
    await expect(result).to_contain_text(_("Only an answer in the 2xx range counts as delivered."))
    await expect(result.locator("pre")).to_have_text("invalid token")
    await answered_in_place(page, configure_url, typed_url=receiver.url(path), js=js, lang=lang)
    assert [r.path for r in receiver.requests].count(path) == 1


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_a_timeout_says_how_long_it_waited(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
) -> None:
    _ = words(lang)
    path = f"/hangs-{cell_id(viewport, js, lang)}"
    receiver.route(path, Mode.hang())
    page = await configure(open_page, served, viewport, js, lang)
    configure_url = page.url
    await page.locator("#webhook_url").fill(receiver.url(path))
    await page.locator("#webhook_signature_key").fill(KEY)
    await press_test(page, _("Test API Webhook"))
    waited = _("timed out after %(seconds)s s") % {"seconds": str(SERVE_TIMEOUT)}
    said = sentence(
        lang, "Not delivered: %(problem)s (after %(ms)s ms).", problem=re.escape(waited), ms=r"\d+"
    )
    await expect(page.locator("#test-result")).to_contain_text(said, timeout=15_000)
    await answered_in_place(page, configure_url, typed_url=receiver.url(path), js=js, lang=lang)


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_a_weak_key_sends_nothing_and_names_the_rules(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
) -> None:
    _ = words(lang)
    path = f"/weak-{cell_id(viewport, js, lang)}"
    page = await configure(open_page, served, viewport, js, lang)
    configure_url = page.url
    await page.locator("#webhook_url").fill(receiver.url(path))
    await page.locator("#webhook_signature_key").fill("short1a")
    await press_test(page, _("Test API Webhook"))
    nothing_sent = _("Nothing was sent:").rstrip(":")
    await expect(page.locator("#test-result, .problem").first).to_contain_text(nothing_sent)
    await expect(page.locator('#key-rules li[data-rule="special"]')).to_have_class(
        re.compile(r"\bunmet\b")
    )
    await expect(page.locator('#key-rules li[data-rule="digit"]')).not_to_have_class(
        re.compile(r"\bunmet\b")
    )
    await expect(page.locator("#test-button")).to_be_focused()
    assert page.url == configure_url
    assert "short1a" not in await page.content()
    assert path not in [r.path for r in receiver.requests]


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_a_shop_is_told_what_it_receives_and_how_to_verify_it(
    open_page: OpenPage,
    served: Served,
    receiver: HostileReceiver,
    viewport: Any,
    js: bool,
    lang: str,
    axe_source: str,
) -> None:
    _ = words(lang)
    shop = await new_shop(served, name=f"Shop {cell_id(viewport, js, lang)}")
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, f"/settings/integrations/{shop}")
    events = page.locator("#events li")
    await expect(events).to_have_count(1)
    await expect(events).to_contain_text("parcel_status_changed")
    await expect(events).to_contain_text(_("A parcel's status changed"))
    await expect(page.locator("#key-state")).to_contain_text("Sendcloud-Signature")
    api_key_hint = _("Not set: deliveries are signed with this integration's API secret key.")
    assert api_key_hint not in await page.content()
    await expect(page.get_by_role("button", name=_("Test API Webhook"))).to_have_count(0)

    await page.locator("#webhook_url").fill(receiver.url("/shop-test"))
    await press_test(page, _("Send a test webhook"))
    said = sentence(
        lang,
        "Delivered: the endpoint answered HTTP %(status)s in %(ms)s ms.",
        status="200",
        ms=r"\d+",
    )
    await expect(page.locator("#test-result")).to_contain_text(said)
    await expect(page.locator("#test-button")).to_be_focused()
    assert await axe_violations(page, axe_source, js=js) == []


@pytest.mark.parametrize(("viewport", "js", "lang"), CELLS)
async def test_the_api_integration_says_every_event_and_names_itself_once(
    open_page: OpenPage, served: Served, viewport: Any, js: bool, lang: str
) -> None:
    _ = words(lang)
    page = await configure(open_page, served, viewport, js, lang)
    # the integration's name is the merchant's own, the same in every language
    await expect(page.locator("h1")).to_have_text("API integration")
    await expect(page.locator("#events li")).to_have_count(5)
    for action in ("parcel_status_changed", "integration_updated", "refund_requested"):
        await expect(page.locator("#events")).to_contain_text(action)
    await expect(page.get_by_role("button", name=_("Test API Webhook"))).to_be_visible()
    await expect(page.locator("#key-state")).to_contain_text(
        _("Not set: deliveries are signed with this integration's API secret key.")
    )
