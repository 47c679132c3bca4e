"""HTTP/1.1 on the wire: one POST exchange over a pool of kept-alive connections.

Why not a general-purpose client: a webhook POST needs none of cookies, redirects,
proxies, compression, streaming uploads or tracing, and a general client pays for them on
every request. This one builds the request head from a prefix cached per URL, writes head
and body in one call, and parses the answer with llhttp (httptools), the parser uvicorn
uses. It is about 3× cheaper per request than aiohttp's client (docs/performance.md).

What it guarantees: the connection goes back to the pool only after a complete answer that
allows keep-alive; at most `READ_LIMIT` bytes of a body are read (then the connection is
dropped); an answer's head is capped at `HEAD_LIMIT` bytes; every address a name resolves
to is checked by the caller's resolver before connecting, and the connection is made to
exactly the checked address, so DNS rebinding cannot slip in between check and connect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import chain
from typing import cast
from urllib.parse import quote

import aiohappyeyeballs
import httptools
from aiohttp.abc import AbstractResolver

from parcelhook.domain.targets import BadURL, IPAddress, parse_webhook_url

READ_LIMIT = 64 * 1024
EXCERPT_LIMIT = 1024
# an answer's headers as the delivery log keeps them: the first HEADERS_KEPT, each name and
# value cut to its limit in characters (the head itself is bounded by HEAD_LIMIT)
HEADERS_KEPT = 32
HEADER_NAME_KEPT = 64
HEADER_VALUE_KEPT = 256
# an answer's status line and headers together; a hostile endpoint cannot grow it further
HEAD_LIMIT = 64 * 1024
# every byte of one exchange (head, body with its chunk framing, trailers): past it the
# answer is what arrived so far, and the connection is dropped
EXCHANGE_LIMIT = HEAD_LIMIT + 2 * READ_LIMIT + HEAD_LIMIT
# idle connections older than this are closed rather than reused: many servers drop idle
# keep-alive connections after 5–75 s, and a request on a dropped one fails for nothing
KEEPALIVE_S = 15.0
# a request on a connection idle this long that dies before any answer is sent again once,
# on a fresh connection: the server most likely closed it as idle and never saw the request
STALE_AFTER_S = 1.0
# how long a connection attempt may go unanswered before the next address is tried too
# (RFC 8305's recommended 250 ms, as aiohttp's connector uses)
HAPPY_EYEBALLS_S = 0.25
# characters a request target may carry as they are; anything else is percent-encoded
_TARGET_SAFE = "/:@!$&'()*+,;=-._~%?[]"


class InvalidURL(ValueError):
    """The URL cannot be sent to; the message is meant for the user."""


class InvalidResponse(Exception):
    """The endpoint's answer is not HTTP/1.x (or its head is too large)."""


class Closed(ConnectionError):
    """The endpoint closed the connection before its answer was complete."""


class TimedOut(Exception):
    """The deadline passed during the exchange."""


class ExchangeError(Exception):
    """A request was written but no complete answer came back.

    `status` is the answer's status when its head had arrived, so the caller can say
    "… while reading the response".
    """

    def __init__(self, cause: BaseException, status: int | None) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
        self.status = status


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed webhook URL, cached: everything about it that does not change per request."""

    key: tuple[str, str, int]  # the pool's key: scheme, host, port
    host: str  # for resolution, IP checks and TLS (IDNA-encoded, no brackets)
    port: int
    tls: bool
    head: bytes  # "POST /path HTTP/1.1\r\nHost: …\r\n"


def parse_target(url: str) -> Target:
    try:
        parsed = parse_webhook_url(url)
    except BadURL as exc:
        if exc.kind == "scheme":
            raise InvalidURL("only http:// and https:// URLs can receive webhooks") from exc
        raise InvalidURL(f"invalid URL: {exc.hint or url[:100]}") from exc
    host, port = parsed.host, parsed.port
    shown = f"[{host}]" if ":" in host else host
    authority = shown if parsed.default_port else f"{shown}:{port}"
    target = quote(parsed.path or "/", safe=_TARGET_SAFE)
    if parsed.query:
        target += "?" + quote(parsed.query, safe=_TARGET_SAFE)
    head = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
    return Target((parsed.scheme, host, port), host, port, parsed.scheme == "https", head)


def ip_literal(text: str) -> IPAddress | None:
    """The address `text` spells in canonical form (an IPv6 zone id dropped), else None."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def kept_header(name: str, value: str) -> tuple[str, str]:
    """One answer header as the log keeps it: cut to HEADER_NAME_KEPT / HEADER_VALUE_KEPT."""
    if len(value) > HEADER_VALUE_KEPT:
        value = value[: HEADER_VALUE_KEPT - 1] + "…"
    return name[:HEADER_NAME_KEPT], value


@dataclass(slots=True)
class Answer:
    status: int
    excerpt: bytes
    retry_after: str | None
    # the answer's first HEADERS_KEPT headers, in order, cut by `kept_header`
    headers: tuple[tuple[str, str], ...] = ()


class Connection(asyncio.Protocol):
    """One kept-alive connection and the parser state of the answer it is waiting for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # kept: asyncio.get_running_loop() is a getpid() system call on CPython 3.11 (231 ns
        # against 57 ns for this attribute, under uvloop), and every exchange needs the loop
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        # what aiohttp's own llhttp parser allows (aiohttp/_http_parser.pyx): bare-LF line
        # ends, obs-fold and odd header bytes, spaces after a chunk size; strict, these
        # real servers' answers were failures, retried and delivered twice
        self._parser.set_dangerous_leniencies(
            lenient_headers=True,
            lenient_optional_cr_before_lf=True,
            lenient_spaces_after_chunk_size=True,
        )
        self._waiter: asyncio.Future[Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self._status = 0
        self._head_size = 0
        self._headers_done = False
        self._framed = False  # Content-Length or chunked: the body's end is known
        self._encoded: bool | None = None  # Transfer-Encoding seen: does it end in chunked
        self._received = 0
        self._retry_after: str | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._excerpt = bytearray()
        self._size = 0
        self._reusable = False

    # -- the exchange ---------------------------------------------------------------------

    def exchange(self, request: bytes, deadline: float) -> asyncio.Future[Answer]:
        """Write one request; the future resolves with the complete answer by `deadline`
        (the loop's clock) or fails with ExchangeError."""
        assert self.transport is not None and self._waiter is None
        self._reset()
        waiter = self._waiter = self._loop.create_future()
        self._timer = self._loop.call_at(deadline, self._fail, TimedOut())
        self.transport.write(request)
        return waiter

    @property
    def reusable(self) -> bool:
        return self._reusable and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            # abort, not close: a TLS close waits for the peer's close_notify, which a
            # hostile endpoint never sends (and older CPythons then leak the socket)
            self.transport.abort()

    def _finish(self, answer: Answer) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _fail(self, cause: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._reusable = False
        if waiter is not None and not waiter.done():
            waiter.set_exception(ExchangeError(cause, self._status if self._headers_done else None))

    def _answer(self) -> Answer:
        return Answer(self._status, bytes(self._excerpt), self._retry_after, self._kept())

    def _kept(self) -> tuple[tuple[str, str], ...]:
        raw = self._headers
        if not raw:
            return ()
        # one decode for the whole head rather than one per name and value (each answer of
        # every delivery comes here): decoding across a line feed replaces exactly what
        # decoding each piece would, and a piece holding a line feed itself shows in the count
        flat = b"\n".join(chain.from_iterable(raw)).decode("utf-8", "replace").split("\n")
        names, values = flat[::2], flat[1::2]
        if (
            len(flat) == 2 * len(raw)
            and max(map(len, names)) <= HEADER_NAME_KEPT
            and max(map(len, values)) <= HEADER_VALUE_KEPT
        ):
            return tuple(zip(names, values, strict=True))
        return tuple(
            kept_header(n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in raw
        )

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack like one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection's state is unknown
            return
        self._received += len(data)
        if self._received > EXCHANGE_LIMIT:
            # an endless chunked trailer, or a body in one-byte chunks: enough was read
            if self._headers_done:
                self._finish(self._answer())
            else:
                self._fail(InvalidResponse("response head too large"))
            self.close()
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(self._answer())  # 101 Switching Protocols: the answer, but no reuse
            self.close()
            return
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(str(exc)))
            self.close()
            return
        if not self._headers_done and self._waiter is not None:
            # still in the head: a hostile endpoint must not make it grow without end
            self._head_size += len(data)
            if self._head_size > HEAD_LIMIT:
                self._fail(InvalidResponse("response head too large"))
                self.close()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is None:
            return
        if exc is not None:
            self._fail(exc)
        elif self._headers_done and not self._framed:
            self._finish(self._answer())  # a body delimited by the end of the connection
        else:
            self._fail(Closed())

    # -- httptools callbacks (never raise: the parser would wrap it) --------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        # decoded only once the answer is complete; a trailer is not the answer's header
        if len(self._headers) < HEADERS_KEPT and not self._headers_done:
            self._headers.append((name, value))
        lower = name.lower()
        if lower == b"retry-after":
            self._retry_after = value.decode("latin-1")
        elif lower == b"content-length":
            self._framed = True
        elif lower == b"transfer-encoding":
            # only a final `chunked` frames the body; otherwise it ends with the connection
            # (RFC 9112 6.3), as llhttp reads it too
            last = value.rsplit(b",", 1)[-1].strip().lower()
            self._encoded = last == b"chunked"

    def on_headers_complete(self) -> None:
        self._headers_done = True
        if self._encoded is not None:  # Transfer-Encoding overrides Content-Length
            self._framed = self._encoded
        self._status = self._parser.get_status_code()
        if self._status < 200 or self._status in (204, 304):
            self._framed = True  # no body

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:
            return
        if len(self._excerpt) < EXCERPT_LIMIT:
            self._excerpt += body[: EXCERPT_LIMIT - len(self._excerpt)]
        self._size += len(body)
        if self._size >= READ_LIMIT:
            # enough read: the rest stays unread, so the connection cannot be reused
            self._finish(self._answer())
            self.close()

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if self._status < 200 and self._status != 101:
            # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._reset()
            return
        self._reusable = self._parser.should_keep_alive()
        self._finish(self._answer())


def _sockaddr(
    ip: str, family: socket.AddressFamily, port: int
) -> tuple[str, int] | tuple[str, int, int, int]:
    return (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)


def _fresh(conn: Connection, now: float) -> bool:
    """Whether an idle connection may still be used."""
    return not conn.closed and now - conn.idle_since < KEEPALIVE_S


# how a connection the server dropped while idle fails when it is used again
_STALE_SIGNS = (Closed, ConnectionResetError, BrokenPipeError)


class Pool:
    """Kept-alive connections by (scheme, host, port); opens new ones through `resolver`."""

    def __init__(
        self,
        resolver: AbstractResolver,
        *,
        check_ip: Callable[[IPAddress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._resolver = resolver
        # called with each IP literal before connecting; raises to refuse it
        self._check_ip = check_ip
        self._clock = clock
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._all: set[Connection] = set()
        self._targets: dict[str, Target] = {}
        self._ssl = ssl_context

    def target(self, url: str) -> Target:
        target = self._targets.get(url)
        if target is None:
            target = parse_target(url)
            if len(self._targets) >= 10_000:
                self._targets.clear()  # a crude bound; URLs rarely change
            self._targets[url] = target
        return target

    async def post(
        self, target: Target, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        """One POST, answered by `deadline` (the loop's clock).

        Raises ExchangeError once the request was written, and before that what connecting
        raises: OSError (socket.gaierror when the name does not resolve, ssl.SSLError) or
        TimeoutError.
        """
        # the head in one string, checked and encoded once (per delivery, every byte counts)
        head = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
        if head.count("\n") != len(headers) or head.count("\r") != len(headers):
            for name, value in headers.items():
                if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
                    raise ValueError(f"header {name} holds a line break")
        request = b"".join(
            (target.head, head.encode("latin-1"), b"Content-Length: %d\r\n\r\n" % len(body), body)
        )
        conn = self._take_idle(target.key)
        if conn is not None:
            stale = self._clock() - conn.idle_since >= STALE_AFTER_S
            try:
                return await self._exchange(conn, target, request, deadline)
            except ExchangeError as exc:
                if not (stale and exc.status is None and isinstance(exc.cause, _STALE_SIGNS)):
                    raise
        async with asyncio.timeout_at(deadline):
            conn = await self._connect(target)
        return await self._exchange(conn, target, request, deadline)

    async def _exchange(
        self, conn: Connection, target: Target, request: bytes, deadline: float
    ) -> Answer:
        try:
            answer = await conn.exchange(request, deadline)
        except BaseException:
            self._drop(conn)  # failed, timed out or cancelled mid-exchange: never reuse
            raise
        if conn.reusable:
            conn.idle_since = self._clock()
            self._idle.setdefault(target.key, []).append(conn)
        else:
            self._drop(conn)
        return answer

    def _take_idle(self, key: tuple[str, str, int]) -> Connection | None:
        idle = self._idle.get(key)
        now = self._clock()
        while idle:
            conn = idle.pop()
            if _fresh(conn, now):
                return conn
            self._drop(conn)
        return None

    def _drop(self, conn: Connection) -> None:
        conn.close()
        self._all.discard(conn)

    async def _connect(self, target: Target) -> Connection:
        loop = asyncio.get_running_loop()
        literal = ip_literal(target.host)
        if literal is not None:
            if self._check_ip is not None:
                self._check_ip(literal)
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            addresses = [(str(literal), family)]
        else:
            # any other spelling (`127.1`, `0x7f.0.0.1`) goes to the resolver, whose guard
            # then names the host it was given
            found = await self._resolver.resolve(target.host, target.port, socket.AF_UNSPEC)
            addresses = [(r["host"], socket.AddressFamily(r["family"])) for r in found]
        if not addresses:
            raise OSError(f"no address for {target.host}")
        # Happy Eyeballs (RFC 8305) over exactly the checked addresses: families
        # interleaved, the next attempt started after HAPPY_EYEBALLS_S without waiting for a
        # black-holed one to time out
        infos = [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", _sockaddr(ip, family, target.port))
            for ip, family in addresses
        ]
        sock = await aiohappyeyeballs.start_connection(
            infos, happy_eyeballs_delay=HAPPY_EYEBALLS_S, interleave=1, loop=loop
        )
        conn = Connection(loop)
        try:
            await loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=self._ssl_context() if target.tls else None,
                server_hostname=target.host if target.tls else None,
            )
        except BaseException:
            sock.close()
            raise
        self._all.add(conn)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def sweep(self) -> None:
        """Close connections idle longer than the keep-alive time."""
        now = self._clock()
        for key, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if _fresh(conn, now):
                    keep.append(conn)
                else:
                    self._drop(conn)
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]

    def close(self) -> None:
        for conn in list(self._all):
            conn.close()
        self._all.clear()
        self._idle.clear()
