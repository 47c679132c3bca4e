"""Through the real dispatcher, on SQLite and PostgreSQL: an endpoint that answers with an
endless chunked trailer, and a host whose AAAA record is black-holed, each leave every
other tenant's deliveries flowing (a binary answer is in test_outcome_safety.py).

The trailer once was read until the deadline (8 such endpoints took `serve` to 1.6 GB, and
attempts overran the deadline); the black-holed IPv6 address once held every delivery to
that host until the deadline, because addresses were tried one after another.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from parcelhook.domain import deliveries as dl
from support.dns import StaticResolver, black_hole_v6
from support.harness import Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
TIMEOUT = 5.0
EACH = 4  # parcels per tenant
# how long the trailer endpoint keeps writing if nobody stops reading (beyond the deadline)
ENDLESS_S = TIMEOUT * 3


class EndlessTrailer:
    """Answers 200 with a chunked body, then trailer lines until the client goes away;
    counts what it managed to write."""

    def __init__(self) -> None:
        self.port = 0
        self.answered = 0
        self.written = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            self.answered += 1
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
            deadline = time.monotonic() + ENDLESS_S
            line = b"X-Trailer: " + b"t" * 1000 + b"\r\n"
            while time.monotonic() < deadline:
                writer.write(line)
                await writer.drain()
                self.written += len(line)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.transport.abort()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{self.port}/hook"
        finally:
            self._server.close()


async def _parcels(acct: Account, shop: int, n: int) -> None:
    for _ in range(n):
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200, r.text


async def _settled(h: Harness, acct: Account, shop: int, n: int) -> list[dl.Delivery]:
    found = await h.service.list_deliveries(acct.account_id, integration_id=shop)
    return [d for d in found if d.status == dl.DELIVERED] if len(found) == n else []


async def test_an_endless_trailer_and_a_black_holed_aaaa_leave_other_tenants_flowing(
    harness: HarnessFactory,
) -> None:
    trailer = EndlessTrailer()
    async with HostileReceiver() as rx, trailer.running() as trailer_url:
        resolver = StaticResolver({"dual.test": ["::1", "127.0.0.1"]})
        with black_hole_v6(rx.port):
            h = await harness(timeout=TIMEOUT, resolver=resolver)
            streaming, dual, healthy = await h.account(), await h.account(), await h.account()
            trailer_shop = await streaming.shop(trailer_url)
            dual_shop = await dual.shop(f"http://dual.test:{rx.port}/dual")
            healthy_shop = await healthy.shop(rx.url("/healthy"))

            await _parcels(streaming, trailer_shop, EACH)
            await _parcels(dual, dual_shop, EACH)
            await eventually(lambda: trailer.answered >= 1, what="the endless trailer")
            # while those are under way, another tenant's webhooks arrive at once
            started = time.monotonic()
            await _parcels(healthy, healthy_shop, EACH)
            await eventually(
                lambda: sum(r.path == "/healthy" for r in rx.requests) == EACH, within=TIMEOUT
            )
            assert time.monotonic() - started < TIMEOUT / 2

            # the host with the black-holed AAAA got its webhooks over IPv4, well within
            # the deadline each
            async def dual_done() -> bool:
                return len(await _settled(h, dual, dual_shop, EACH)) == EACH

            await eventually(dual_done, within=TIMEOUT * 2)
            for d in await _settled(h, dual, dual_shop, EACH):
                (attempt,) = (await h.service.get_delivery(dual.account_id, d.id)).attempts
                assert attempt.duration_ms < TIMEOUT * 1000 / 2, attempt

            # the trailer's answers count (the status and body came whole); reading stopped
            # at the exchange's byte cap, not at the deadline
            async def trailer_done() -> bool:
                return len(await _settled(h, streaming, trailer_shop, EACH)) == EACH

            await eventually(trailer_done, within=TIMEOUT * 3)
            for d in await _settled(h, streaming, trailer_shop, EACH):
                (attempt,) = (await h.service.get_delivery(streaming.account_id, d.id)).attempts
                assert attempt.status_code == 200 and attempt.response_excerpt == "ok"
                assert attempt.duration_ms < TIMEOUT * 1000, attempt

            # and later deliveries still flow
            await _parcels(healthy, healthy_shop, 1)
            await eventually(
                lambda: sum(r.path == "/healthy" for r in rx.requests) == EACH + 1, within=TIMEOUT
            )
