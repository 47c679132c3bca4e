"""The panel's languages: no template holds a word outside the catalogue, every catalogue
has every message (with the same placeholders), and the language a request gets."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po
from starlette.requests import Request

from parcelhook.panel import i18n

PANEL = Path(i18n.__file__).parent
ROOT = PANEL.parents[2]
TEMPLATES = sorted((PANEL / "templates").glob("*.html"))
# words that are names, the same in every language
NAMES = {"parcelhook", "HTTP"}
# attributes a person reads or hears
SPOKEN = {"aria-label", "title", "alt", "placeholder", "data-label"}
# data- attributes that hold a state or a key for the script, never words
UNSPOKEN_DATA = {"data-rule", "data-rules-checked"}
# translated blocks, comments and tags; macros write attributes, not words
JINJA = re.compile(r"{%-?\s*(trans|macro)\b.*?{%-?\s*end\1\s*-?%}|{#.*?#}|{%.*?%}", re.S)
EXPRESSION = re.compile(r"{{(.*?)}}", re.S)
# the strings of an expression that are not shown: gettext's messages, operands of a comparison,
# a call's or a subscript's arguments (names of fields and ids)
NOT_SHOWN = re.compile(
    r"""\b(?:_|gettext|ngettext)\(\s*("[^"]*"|'[^']*')(?:\s*,\s*("[^"]*"|'[^']*'))?"""
    r"""|(?:==|!=|\bin)\s*("[^"]*"|'[^']*')|("[^"]*"|'[^']*')\s*(?:==|!=)"""
    r"""|\w\((?:\s*("[^"]*"|'[^']*')\s*,?)+\)|\[\s*("[^"]*"|'[^']*')\s*\]""",
    re.S,
)
LITERAL = re.compile(r""""([^"]*)"|'([^']*)'""")


def _shown_literals(expression: re.Match[str]) -> str:
    """An expression's string literals that would be shown as they are, in place of it, so
    that `{{ "Words" }}` counts as words where it stands (text or a spoken attribute)."""
    rest = NOT_SHOWN.sub(" ", expression.group(1))
    return " ".join(a or b for a, b in LITERAL.findall(rest)) or " "


class _Words(HTMLParser):
    """The text and spoken attributes of a template, Jinja taken out, `<code>` left alone."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._code += tag == "code"
        for name, value in attrs:
            spoken = name in SPOKEN or (name.startswith("data-") and name not in UNSPOKEN_DATA)
            if spoken and value and not value.startswith(("http", "/")):
                self.found.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._code -= tag == "code"

    def handle_data(self, data: str) -> None:
        if not self._code:
            self.found.append(data)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_hold_no_untranslated_literal(template: Path) -> None:
    words = _Words()
    words.feed(EXPRESSION.sub(_shown_literals, JINJA.sub(" ", template.read_text())))
    literals = [
        token
        for text in words.found
        for token in text.split()
        if re.search(r"[^\W\d_]", token) and token not in NAMES
    ]
    assert literals == [], f"{template.name} shows words outside the catalogue: {literals}"


def _extracted() -> set[str]:
    method_map = [
        ("src/parcelhook/panel/**.py", "python"),
        ("src/parcelhook/panel/templates/**.html", "jinja2"),
    ]
    options = {"src/parcelhook/panel/templates/**.html": {"extensions": "jinja2.ext.i18n"}}
    found = extract_from_dir(ROOT, method_map, options, keywords={**DEFAULT_KEYWORDS, "N_": None})
    return {m if isinstance(m, str) else m[0] for _, _, m, _, _ in found}


def _ids(path: Path) -> set[str]:
    with path.open("rb") as f:
        return {m.id if isinstance(m.id, str) else m.id[0] for m in read_po(f) if m.id}


def test_the_committed_template_catalogue_is_up_to_date() -> None:
    extracted = _extracted()
    assert len(extracted) > 100
    assert _ids(PANEL / "locales" / "messages.pot") == extracted, "run `make messages`"


@pytest.mark.parametrize("lang", [lang for lang in i18n.LANGUAGES if lang != i18n.DEFAULT])
def test_every_catalogue_translates_every_message(lang: str) -> None:
    path = PANEL / "locales" / lang / "LC_MESSAGES" / "messages.po"
    with path.open("rb") as f:
        catalog = read_po(f, locale=lang)
    messages = {m.id if isinstance(m.id, str) else m.id[0]: m for m in catalog if m.id}
    assert set(messages) == _extracted()
    untranslated = [
        key
        for key, m in messages.items()
        if m.fuzzy or not all(m.string if isinstance(m.string, tuple) else (m.string,))
    ]
    assert untranslated == []
    # babel's checks: the same python-format placeholders as the English
    problems = [(m.id, [str(e) for e in errors]) for m, errors in catalog.check()]
    assert problems == []


def _request(accept: str = "", cookie: str = "") -> Request:
    headers = [(b"accept-language", accept.encode())] if accept else []
    if cookie:
        headers.append((b"cookie", f"{i18n.COOKIE}={cookie}".encode()))
    return Request({"type": "http", "headers": headers})


def test_the_language_is_the_switchers_else_the_browsers_else_english() -> None:
    assert i18n.language_of(_request()) == "en"
    assert i18n.language_of(_request("it-IT,it;q=0.9,en;q=0.8")) == "it"
    assert i18n.language_of(_request("da, de-CH;q=0.5, nl;q=0.7")) == "nl"
    assert i18n.language_of(_request("fr;q=0, es;q=0.1")) == "es"
    assert i18n.language_of(_request("xx, *")) == "en"
    assert i18n.language_of(_request("it", cookie="de")) == "de"
    assert i18n.language_of(_request("it", cookie="klingon")) == "it"


def test_the_original_features_italian_terms() -> None:
    _ = i18n.load()["it"].gettext
    assert _("Webhook feedback enabled") == "Abilita feedback webhook"
    assert _("Webhook URL") == "URL webhook"
    assert "chiave di firma" in _("Webhook Signature Key").lower()
    assert _("Test API Webhook") == "Testa il webhook API"
    assert _("Save") == "Salva"
