"""What free text from users may contain before it is stored."""

from __future__ import annotations

from parcelhook.domain.errors import InvalidInput


def has_nul(value: str) -> bool:
    """True when `value` holds a NUL character, which PostgreSQL text cannot store."""
    return "\x00" in value


def check_text(value: str, field: str) -> str:
    """`value`, or an error naming `field` when it cannot be stored as text on every engine."""
    if has_nul(value):
        raise InvalidInput(f"{field} must not contain NUL characters.", field=field)
    return value
