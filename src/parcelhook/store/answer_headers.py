"""An attempt's response headers as the attempts table holds them: one JSON text column.

One column, written by the same INSERT as the attempt's other columns, so the dispatcher's
outcome writers run no extra statement. The transport has already kept only the first
`wire.HEADERS_KEPT` headers and cut each short; `deliveries.storable_headers` makes them
safe to store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from parcelhook.domain.deliveries import storable_headers


def to_text(headers: Iterable[tuple[str, str]]) -> str | None:
    """The headers as stored: a JSON list of [name, value] pairs, or None for none."""
    kept = storable_headers(headers)
    return json.dumps(kept, ensure_ascii=False) if kept else None


def from_text(text: str | None) -> tuple[tuple[str, str], ...]:
    """The stored headers back as pairs; none for an attempt recorded before they were kept."""
    if not text:
        return ()
    return tuple((str(name), str(value)) for name, value in json.loads(text))
