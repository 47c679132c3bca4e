"""An attempt's response headers as the attempts table holds them: one text column.

One column, written by the same INSERT as the attempt's other columns, so the dispatcher's
outcome writers run no extra statement. The transport has already kept only the first
`wire.HEADERS_KEPT` headers and cut each short; `deliveries.storable_headers` makes them
safe to store. The text is every name and value on a line of its own (name, value, name,
value, …): cheaper to write than JSON on the dispatcher's path, where every attempt of every
delivery comes, and a clean answer (the common case) is checked in a few scans of one string.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from itertools import chain

from parcelhook.domain.deliveries import storable_headers
from parcelhook.domain.text import is_storable


def to_text(headers: Sequence[tuple[str, str]]) -> str | None:
    """The headers as stored, or None for none."""
    if not headers:
        return None
    text = "\n".join(chain.from_iterable(headers))
    if (
        text.count("\n") != 2 * len(headers) - 1  # a line break inside a name or value
        or "\r" in text
        or "set-cookie" in text.lower()
        or not is_storable(text)
    ):
        text = "\n".join(chain.from_iterable(storable_headers(headers)))
    return text


def from_text(text: str | None) -> tuple[tuple[str, str], ...]:
    """The stored headers back as pairs; none for an attempt recorded before they were kept."""
    if not text:
        return ()
    if text.startswith("[["):  # the first form of this column, JSON pairs
        return tuple((str(name), str(value)) for name, value in json.loads(text))
    lines = text.split("\n")
    return tuple(zip(lines[::2], lines[1::2], strict=True))
