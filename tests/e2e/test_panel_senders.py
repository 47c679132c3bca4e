"""Settings › Sender addresses in a browser: add one, be told what is wrong in the reader's
language, make it the default, all with and without JavaScript, in English and Italian."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest
from playwright.async_api import Page, expect

from support.browsing import DESKTOP, LOCALES, PHONE, axe_violations, sign_in, words

if TYPE_CHECKING:
    from conftest import Served

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.browser]
OpenPage = Callable[..., Awaitable[Page]]


@pytest.mark.parametrize(
    ("viewport", "js", "lang"),
    [
        pytest.param(DESKTOP, True, "en", id="desktop-js-en"),
        pytest.param(PHONE, False, "it", id="phone-nojs-it"),
    ],
)
async def test_a_sender_address_is_added_corrected_and_made_the_default(
    open_page: OpenPage, served: Served, viewport: Any, js: bool, lang: str, axe_source: str
) -> None:
    _ = words(lang)
    company = f"Schoenen {lang.upper()}"
    page = await open_page(viewport, js=js, locale=LOCALES[lang])
    await sign_in(page, served, "/settings/sender-addresses")
    await expect(page.locator("h1")).to_have_text(_("Sender addresses"))
    await page.get_by_label(_("Company")).fill(company)
    await page.get_by_label(_("Contact name")).fill("Piet Jansen")
    await page.get_by_label(_("Street")).fill("Kerkstraat")
    await page.get_by_label(_("Postal code")).fill("1017 GB")
    await page.get_by_label(_("City")).fill("Amsterdam")
    await page.get_by_label(_("Country (ISO code, e.g. NL)")).fill("XX")
    await page.get_by_role("button", name=_("Add sender address")).click()
    # refused in the reader's words, naming the field as the form does; typed values kept
    await expect(page.locator(".problem")).to_have_text(
        _("The country must be a two-letter ISO code, such as NL.")
    )
    await expect(page.get_by_label(_("City"))).to_have_value("Amsterdam")
    if js:
        assert await axe_violations(page, axe_source) == []
    await page.get_by_label(_("Country (ISO code, e.g. NL)")).fill("nl")
    await page.get_by_role("button", name=_("Add sender address")).click()
    await expect(page.locator(".notice")).to_have_text(_("Saved."))
    row = page.locator("tbody tr").filter(has_text=company)
    await expect(row).to_contain_text("Kerkstraat")
    await expect(row).to_contain_text("NL")

    await row.get_by_role("link", name=_("Edit %(name)s") % {"name": company}).click()
    await expect(page.locator("#form-heading")).to_have_text(_("Edit sender address"))
    await page.get_by_label(_("Default sender address")).check()
    await page.get_by_role("button", name=_("Save"), exact=True).click()
    await expect(page.locator(".notice")).to_have_text(_("Saved."))
    row = page.locator("tbody tr").filter(has_text=company)
    await expect(row.locator(".badge")).to_have_text(_("default"))
