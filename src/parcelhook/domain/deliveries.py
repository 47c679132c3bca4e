"""Deliveries: one event on its way to one integration, and the record of every attempt."""

from __future__ import annotations

from dataclasses import dataclass

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATUSES = (PENDING, DELIVERED, FAILED)


@dataclass(frozen=True, slots=True)
class Attempt:
    at_ms: int
    duration_ms: int
    status_code: int | None
    error: str | None
    response_excerpt: str


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
