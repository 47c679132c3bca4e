"""What free text from users may contain before it is stored."""

from __future__ import annotations

import re

from parcelhook.domain.errors import InvalidInput


def has_nul(value: str) -> bool:
    """True when `value` holds a NUL character, which PostgreSQL text cannot store."""
    return "\x00" in value


def check_text(value: str, field: str) -> str:
    """`value`, or an error naming `field` when it cannot be stored as text on every engine."""
    if has_nul(value):
        raise InvalidInput(f"{field} must not contain NUL characters.", field=field)
    return value


# C0 controls other than tab, line feed and carriage return, and DEL: PostgreSQL text cannot
# hold NUL at all, and the others only garble the log where the excerpt is shown
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# what `storable` changes: those controls, and lone surrogates (which UTF-8 cannot encode)
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def is_storable(value: str) -> bool:
    """True when `storable(value)` is `value`: one scan, nothing built."""
    return _UNSTORABLE.search(value) is None


def storable(value: str) -> str:
    """`value` as any engine stores it: controls as U+FFFD, lone surrogates as `?`."""
    value = value.encode("utf-8", "replace").decode("utf-8")
    return _CONTROLS.sub("\ufffd", value)
