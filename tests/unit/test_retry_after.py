"""Retry-After as the sender reads it, on a mock transport and an injected wall clock."""

from __future__ import annotations

import email.utils

import pytest

from parcelhook.delivery.sender import Sender
from parcelhook.testing import MockTransport, Response

NOW_S = 1_800_000_000.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (email.utils.formatdate(NOW_S + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW_S - 90, usegmt=True), 0.0),  # a date past is now
        ("soon", None),
    ],
)
async def test_retry_after_in_seconds_or_as_a_date(value: str, seconds: float | None) -> None:
    transport = MockTransport(lambda _: Response(503, retry_after=value))
    async with Sender(transport=transport, wall_clock=lambda: NOW_S) as sender:
        result = await sender.send("https://shop.example/hook", b"{}", {})
    assert (result.status_code, result.retry_after) == (503, seconds)
    assert transport.requests[0].headers["User-Agent"].startswith("parcelhook/")
