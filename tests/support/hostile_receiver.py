"""A webhook endpoint that misbehaves on demand, for tests that need real sockets.

    from support.hostile_receiver import HostileReceiver, Mode

    async with HostileReceiver() as receiver:  # 200 "ok" on every path until told otherwise
        receiver.mode = Mode.status(503, retry_after="7")
        receiver.route("/flaky", Mode.status(500), Mode.status(500), Mode.ok())
        await send(receiver.url("/flaky"))
        assert receiver.requests[0].body == b"..."

`route(path, mode, *then)` answers one path with each mode in turn, the last one then
sticking; `play(*modes)` does the same for every other path, then falls back to `mode`.
`requests` records everything received, `connections_accepted` counts TCP connections.
Everything is bounded (hang and trickle stop by themselves, and at once when the receiver
closes) and every socket is closed on exit. Also here: `not_tls_server()` (answers a TLS
ClientHello with plain text) and `refused_port()` (a port where connecting is refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Literal

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

Kind = Literal["ok", "status", "redirect", "hang", "trickle", "huge", "reset", "garbage"]

MAX_HANG = 30.0
GARBAGE = b"\x00\xff\xfeSSH-2.0-definitely-not-http\r\n\x1b[31m\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Mode:
    """How the receiver answers one request; build one with the class methods."""

    kind: Kind
    code: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    interval: float = 1.0
    size: int = 0

    @classmethod
    def ok(cls, body: bytes = b"ok") -> Mode:
        """200 with a small body."""
        return cls("ok", body=body)

    @classmethod
    def status(cls, code: int, *, retry_after: str | None = None, body: bytes = b"") -> Mode:
        """Answer `code` (500, 410, 429, …), with `Retry-After` when given."""
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls("status", code=code, body=body, headers=headers)

    @classmethod
    def redirect(cls, code: int = 302, location: str = "/moved") -> Mode:
        """A redirect that a webhook sender must not follow."""
        return cls("redirect", code=code, headers=(("Location", location),))

    @classmethod
    def hang(cls) -> Mode:
        """Read the request, never answer (until the receiver closes, or MAX_HANG)."""
        return cls("hang")

    @classmethod
    def trickle(cls, interval: float = 1.0, size: int = 60) -> Mode:
        """200 headers at once, then one body byte every `interval` seconds."""
        return cls("trickle", interval=interval, size=size)

    @classmethod
    def huge(cls, size: int = 10 * 1024 * 1024) -> Mode:
        """200 with a `size`-byte body, written as fast as the client reads."""
        return cls("huge", size=size)

    @classmethod
    def reset(cls, partial_body: bool = True) -> Mode:
        """TCP RST after the headers and part of the body (or before any response)."""
        return cls("reset", size=1000 if partial_body else 0)

    @classmethod
    def garbage(cls) -> Mode:
        """Answer with bytes that are not HTTP, then close."""
        return cls("garbage")


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived."""

    method: str
    path: str
    query_string: str
    headers: CIMultiDictProxy[str]
    body: bytes
    received_at: float  # time.time()
    received_monotonic: float  # time.monotonic(), for measuring gaps
    peer: tuple[str, int]


class HostileReceiver:
    """An HTTP/1.1 server on 127.0.0.1 (random port) that records and misbehaves."""

    def __init__(self, mode: Mode | None = None, *, host: str = "127.0.0.1") -> None:
        self.mode: Mode = mode or Mode.ok()
        self.host = host
        self.port = 0
        self.requests: list[ReceivedRequest] = []
        self.connections_accepted = 0
        self._routes: dict[str, deque[Mode]] = {}
        self._sequence: deque[Mode] = deque()
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._web: web.Server | None = None
        self._listener: asyncio.Server | None = None

    def url(self, path: str = "/hook", *, scheme: str = "http") -> str:
        """Absolute URL of `path` on this receiver."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{path}"

    def route(self, path: str, mode: Mode, *then: Mode) -> None:
        """Answer requests to `path` with `mode`, then each of `then` (the last one sticks)."""
        self._routes[path] = deque((mode, *then))

    def play(self, *modes: Mode) -> None:
        """Answer the next requests to any unrouted path with `modes` in turn, then `mode`."""
        self._sequence = deque(modes)

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[ReceivedRequest]:
        """Wait (at most `within` seconds) until `count` requests have arrived; return them all."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return list(self.requests)

    async def __aenter__(self) -> HostileReceiver:
        self._web = web.Server(self._handle, access_log=None)
        web_server = self._web

        def accept() -> web.RequestHandler:
            self.connections_accepted += 1
            return web_server()

        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(accept, self.host, 0)
        self.port = self._listener.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.close()
        if self._web is not None:
            await self._web.shutdown(0.5)
        if self._listener is not None:
            await self._listener.wait_closed()

    def _next_mode(self, path: str) -> Mode:
        route = self._routes.get(path)
        if route is not None:
            return route.popleft() if len(route) > 1 else route[0]
        if self._sequence:
            return self._sequence.popleft()
        return self.mode

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        async with self._arrived:
            self.requests.append(
                ReceivedRequest(
                    method=request.method,
                    path=request.path,
                    query_string=request.query_string,
                    headers=CIMultiDictProxy(CIMultiDict(request.headers)),
                    body=body,
                    received_at=time.time(),
                    received_monotonic=time.monotonic(),
                    peer=(peer[0], peer[1]) if peer else ("", 0),
                )
            )
            self._arrived.notify_all()
        mode = self._next_mode(request.path)
        return await _ANSWERS[mode.kind](self, request, mode)

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the receiver is closing; False if it is."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
        return not self._closing.is_set()

    async def _simple(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        return web.Response(status=mode.code, body=mode.body, headers=dict(mode.headers))

    async def _hang(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        await self._sleep(MAX_HANG)
        return web.Response(status=503, body=b"gave up hanging")

    async def _trickle(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = mode.size
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(mode.size):
                if not await self._sleep(mode.interval):
                    break
                await response.write(b".")
        return response

    async def _huge(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = mode.size
        await response.prepare(request)
        chunk = b"x" * 65536
        with contextlib.suppress(ConnectionError):
            for offset in range(0, mode.size, len(chunk)):
                if self._closing.is_set():
                    break
                await response.write(chunk[: mode.size - offset])
        return response

    async def _reset(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = mode.size * 10
        if mode.size:
            await response.prepare(request)
            await response.write(b"y" * mode.size)
        _abort_with_rst(request)
        return response

    async def _garbage(self, request: web.BaseRequest, mode: Mode) -> web.StreamResponse:
        transport = request.transport
        if transport is not None:
            transport.write(GARBAGE)
            transport.close()
        return web.Response()


_ANSWERS = {
    "ok": HostileReceiver._simple,
    "status": HostileReceiver._simple,
    "redirect": HostileReceiver._simple,
    "hang": HostileReceiver._hang,
    "trickle": HostileReceiver._trickle,
    "huge": HostileReceiver._huge,
    "reset": HostileReceiver._reset,
    "garbage": HostileReceiver._garbage,
}


def _abort_with_rst(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    # linger on with a zero timeout turns close() into a RST instead of a FIN
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


@contextlib.asynccontextmanager
async def not_tls_server(
    reply: bytes = b"HTTP/1.1 400 Bad Request\r\n\r\nnot TLS\r\n",
) -> AsyncIterator[int]:
    """A raw TCP server on 127.0.0.1 answering anything (a TLS ClientHello) with `reply`.

    Yields its port.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.read(4096), 5.0)
            writer.write(reply)
            await writer.drain()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A 127.0.0.1 port where connections are refused (bound, so nobody takes it; not listening)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
