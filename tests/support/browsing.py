"""Steps the panel's browser tests share: signing in, and making records through the API."""

from __future__ import annotations

import functools
import os
import re
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

# the two widths every panel feature is checked at
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs"
# the committed screenshots are refreshed only on request, so a test run leaves the tree clean
UPDATE_DOCS = os.environ.get("PARCELHOOK_UPDATE_SCREENSHOTS") == "1"


# the browser locales the suite reads the panel in
LOCALES = {"en": "en-US", "it": "it-IT"}


def cells(*, forms: bool = True) -> list[Any]:
    """The cells issue #14 is held to, as `(viewport, js, lang)` parameters: each width, each
    language, with JavaScript on and, for pages with forms, off (ids like desktop-nojs-it)."""
    return [
        pytest.param(viewport, js, lang, id=f"{width}-{'js' if js else 'nojs'}-{lang}")
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE))
        for js in ((True, False) if forms else (True,))
        for lang in LOCALES
    ]


@functools.cache
def catalogue(lang: str) -> Any:
    """The panel's own translations for `lang`: tests expect exactly what a reader sees."""
    from parcelhook.panel import i18n

    return i18n.load()[lang]


def words(lang: str) -> Callable[[str], str]:
    gettext: Callable[[str], str] = catalogue(lang).gettext
    return gettext


def sentence(lang: str, message: str, **values: str) -> re.Pattern[str]:
    """A translated message as a pattern; a value of "\\d+" stands for any number."""
    marks = {k: f"\x00{k}\x00" for k in values}
    text = re.escape(words(lang)(message) % marks)
    for key, value in values.items():
        text = text.replace(re.escape(marks[key]), value)
    return re.compile(text)


async def axe_violations(page: Any, source: str, *, js: bool = True) -> list[str]:
    """Every axe-core violation on the page as `rule: target`, empty when there is none.

    axe runs on timers, which a page without JavaScript never fires: a script-less page is
    checked as a copy of its HTML, served at its own address to a scripted tab that blocks
    the panel's script, so what axe sees is what the reader without JavaScript got."""
    if not js:
        return await _axe_of_copy(page, source)
    # evaluated through the DevTools protocol, which the page's CSP does not govern
    if not await page.evaluate("() => typeof window.axe === 'object'"):
        await page.evaluate(source + "\n;0")
    found = await page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .flatMap(v => v.nodes.map(n => v.id + ': ' + n.target.join(' ') + ' · ' + v.help))"""
    )
    return list(found)


# per browser context under test: a scripted tab that shows copies, and the copy it serves
_COPIES: weakref.WeakKeyDictionary[Any, tuple[Any, dict[str, str]]] = weakref.WeakKeyDictionary()


async def _axe_of_copy(page: Any, source: str) -> list[str]:
    html, url = await page.content(), page.url
    if page.context not in _COPIES:
        # one tab per context, kept until the browser closes: a context each page cost 1 s
        copier = await (
            await page.context.browser.new_context(viewport=page.viewport_size)
        ).new_page()
        served: dict[str, str] = {}
        await copier.route("**/*.js", lambda route: route.abort())
        await copier.route(
            lambda address: address in served,
            lambda route: route.fulfill(
                body=served[route.request.url], content_type="text/html; charset=utf-8"
            ),
        )
        _COPIES[page.context] = (copier, served)
    copier, served = _COPIES[page.context]
    served.clear()
    served[url] = html
    await copier.goto(url)
    return await axe_violations(copier, source)


PARCEL = {
    "name": "Anna de Vries",
    "address": "Stationsplein 1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
}


async def sign_in(page: Page, served: Any, path: str = "/") -> None:
    """Sign in as the demo account on the page's own form and land on `path`."""
    await page.goto(served.base_url + path)
    await page.locator("#email").fill(served.email)
    await page.locator("#password").fill(served.password)
    await page.locator("form[action='/login'] button[type=submit]").click()
    await expect(page.locator("#password")).to_have_count(0)


async def new_shop(served: Any, url: str | None = None, name: str = "Webshop") -> int:
    """A shop integration of the demo account, its webhook on `url` when given."""
    settings = {"webhook_active": True, "webhook_url": url} if url else {}
    async with served.api() as api:
        answer = await api.post(
            "/api/v2/integrations",
            json={"shop_name": name, "system": "shopify_v2", **settings},
        )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def new_parcel(served: Any, integration_id: int, **fields: Any) -> int:
    async with served.api() as api:
        answer = await api.post(
            "/api/v2/parcels",
            json={"parcel": {**PARCEL, **fields, "integration_id": integration_id}},
        )
    assert answer.status_code == 200, answer.text
    return int(answer.json()["parcel"]["id"])
