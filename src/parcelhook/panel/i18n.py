"""The panel's languages: gettext catalogues (`locales/*/LC_MESSAGES/messages.po`) read
with Babel at start-up, and the one a request gets (its choice, else Accept-Language)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations
from starlette.requests import Request

LOCALES: Final = Path(__file__).parent / "locales"
DOMAIN: Final = "messages"
DEFAULT: Final = "en"
# each language named in itself, in the order the switcher offers them
LANGUAGES: Final = {
    "en": "English",
    "it": "Italiano",
    "nl": "Nederlands",
    "de": "Deutsch",
    "fr": "Français",
    "es": "Español",
}
COOKIE: Final = "parcelhook_lang"


def N_(message: str) -> str:
    """Mark `message` for the catalogue; it is translated where it is shown."""
    return message


def load() -> dict[str, NullTranslations]:
    """Every language's translations, compiled in memory from its committed `.po` file."""
    loaded: dict[str, NullTranslations] = {DEFAULT: NullTranslations()}
    for lang in LANGUAGES:
        if lang == DEFAULT:
            continue
        with (LOCALES / lang / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
            catalog = read_po(po, locale=lang, domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        loaded[lang] = Translations(compiled, domain=DOMAIN)
    return loaded


def from_accept_language(header: str) -> str | None:
    """The best of our languages for an `Accept-Language` header, or None."""
    ranked: list[tuple[float, int, str]] = []
    for n, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                continue
        lang = tag.strip().lower().split("-")[0]
        if lang in LANGUAGES and q > 0:
            ranked.append((-q, n, lang))
    return min(ranked)[2] if ranked else None


def language_of(request: Request) -> str:
    """The language chosen with the switcher, else the browser's, else English."""
    chosen = request.cookies.get(COOKIE, "")
    if chosen in LANGUAGES:
        return chosen
    return from_accept_language(request.headers.get("accept-language", "")) or DEFAULT


Gettext = Callable[[str], str]
Ngettext = Callable[[str, str, int], str]
