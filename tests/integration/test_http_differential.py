"""The own HTTP client and aiohttp's against the same scripted servers: they must agree.

Each case is a raw-socket server behaviour (sloppy framing, trailers, interim answers,
bodies ended by closing, resets, stalls). Both clients post to it; where they may
disagree, the case says why (`differs`). Hostile cases also bound time and memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest

from parcelhook.delivery import wire
from parcelhook.delivery.sender import Sender

Script = Callable[[asyncio.StreamWriter], Awaitable[None]]
TIMEOUT = 2.0


def says(data: bytes, *, then_close: bool = True) -> Script:
    async def script(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if not then_close:
            await asyncio.sleep(TIMEOUT * 2)

    return script


async def _endless_trailer(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n")
    deadline = time.monotonic() + TIMEOUT * 3
    while time.monotonic() < deadline:
        writer.write(b"X-Trailer: " + b"t" * 1000 + b"\r\n")
        await writer.drain()


async def _endless_header_value(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
    deadline = time.monotonic() + TIMEOUT * 3
    while time.monotonic() < deadline:
        writer.write(b"v" * 4096)
        await writer.drain()


async def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()


@dataclass(frozen=True)
class Case:
    name: str
    script: Script
    # what both clients must see: the status (None: no answer) and the body's start
    status: int | None
    body: bytes = b""
    # why the own client may see something else than aiohttp, if it may
    differs: str | None = None


CASES = [
    Case("plain", says(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), 200, b"ok"),
    Case("bare-lf", says(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"), 200, b"ok"),
    Case(
        "obs-fold",
        says(b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok"),
        200,
        b"ok",
    ),
    Case(
        "space-before-colon", says(b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok"), 200, b"ok"
    ),
    Case(
        "te-identity-close-delimited",
        says(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\nall of it"),
        200,
        b"all of it",
    ),
    Case(
        "te-chunked-not-final",
        says(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nraw"),
        200,
        b"raw",
    ),
    Case(
        "te-gzip-chunked",
        says(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
        200,
        b"ok",
    ),
    Case(
        "chunked-with-trailers",
        says(
            b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
            then_close=False,
        ),
        202,
        b"abc",
    ),
    Case(
        "chunk-size-with-spaces",
        says(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2  \r\nok\r\n0\r\n\r\n"),
        200,
        b"ok",
    ),
    Case(
        "interim-answers",
        says(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
        ),
        201,
    ),
    Case("http-1.0-close-delimited", says(b"HTTP/1.0 200 OK\r\n\r\nold"), 200, b"old"),
    Case("no-content", says(b"HTTP/1.1 204 No Content\r\n\r\n", then_close=False), 204),
    Case("reset-before-answer", _reset, None),
    Case("closed-before-answer", says(b""), None),
    Case("stall-before-answer", says(b"", then_close=False), None),
    Case("garbage", says(b"SSH-2.0-OpenSSH\r\n\r\n"), None),
    Case(
        "endless-trailer",
        _endless_trailer,
        200,
        b"ok",
        differs="aiohttp refuses trailers beyond its header limits; the own client keeps the "
        "status it read and stops at EXCHANGE_LIMIT",
    ),
    Case("endless-header-value", _endless_header_value, None),
]


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            await script(writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    finally:
        server.close()


async def own_client(url: str) -> tuple[int | None, bytes, float]:
    started = time.monotonic()
    async with Sender(timeout=TIMEOUT, allow_private=True, allow_http=True) as sender:
        r = await sender.send(url, b"{}", {"Content-Type": "application/json"})
    ok = r.status_code is not None and (r.error is None or "while reading" not in r.error)
    body = r.response_excerpt.encode() if ok else b""
    return (r.status_code if r.error is None or ok else None), body, time.monotonic() - started


async def aiohttp_client(url: str) -> tuple[int | None, bytes]:
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, data=b"{}", headers={"Content-Type": "application/json"}) as r,
        ):
            return r.status, (await r.read())[: wire.EXCERPT_LIMIT]
    except (aiohttp.ClientError, TimeoutError):
        return None, b""


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_the_own_client_agrees_with_aiohttp(case: Case) -> None:
    async with scripted(case.script) as url:
        own_status, own_body, took = await own_client(url)
    async with scripted(case.script) as url:
        their_status, their_body = await aiohttp_client(url)
    assert (own_status, own_body[: len(case.body)]) == (case.status, case.body), case.name
    # never longer than the deadline, whatever the endpoint does
    assert took < TIMEOUT + 0.5
    if case.differs is None:
        assert (their_status, their_body[: len(case.body)]) == (case.status, case.body), (
            f"aiohttp disagrees on {case.name}: {their_status} {their_body[:60]!r}"
        )
