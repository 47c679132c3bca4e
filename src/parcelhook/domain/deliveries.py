"""Deliveries: one event on its way to one integration, and the record of every attempt."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from parcelhook.domain.text import storable

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERED, FAILED)

ELIDED = "…"
# answer headers whose values are not kept: a cookie may be a session on the endpoint's site
_VALUES_NOT_KEPT = frozenset({"set-cookie", "set-cookie2"})


def storable_headers(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """An answer's headers as an attempt keeps them: every name and value storable (as
    the body excerpt is: an endpoint may answer NUL, other controls or invalid UTF-8), on
    one line (a line break becomes a space), and no cookie's value."""
    return tuple(
        (
            _one_line(storable(name)),
            ELIDED if name.lower() in _VALUES_NOT_KEPT else _one_line(storable(value)),
        )
        for name, value in headers
    )


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ") if "\n" in text or "\r" in text else text


@dataclass(frozen=True, slots=True)
class Attempt:
    at_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str
    # (name, value) as the endpoint answered them, made `storable_headers`
    response_headers: tuple[tuple[str, str], ...] = ()
    # the URL it was sent to; None for attempts recorded before migration 0011
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_id: str
    integration_id: int
    account_id: int
    action: str
    status: str
    attempt_count: int
    next_attempt_ms: int | None
    created_ms: int
    updated_ms: int
    last_status_code: int | None
    last_error: str | None
    attempts: tuple[Attempt, ...] = ()
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a dispatcher holds a lease on, with what it needs to send it."""

    id: int
    event_id: str
    integration_id: int
    integration_version: int
    # attempts already made, and how many of them came before the last redelivery
    attempt_count: int
    schedule_base: int
    body: bytes
