"""The one module that talks to webhook endpoints: POST, read a bounded answer, report.

`Sender.send` never raises for a network problem; every failure comes back as an
`AttemptResult` whose `error` says what went wrong in plain words. The SSRF guard is
enforced at connect time (the resolver checks every address a name resolves to, and IP
literals are checked before connecting), so DNS rebinding and IP literals in any
spelling are caught on every new connection, not just when saving. The HTTP itself is
behind a `transport.Transport` (by default the llhttp client in `wire`).
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from parcelhook.delivery import transport as tr
from parcelhook.delivery import wire
from parcelhook.delivery.headers import USER_AGENT
from parcelhook.delivery.proxied import ProxiedTransport, ProxyRouter
from parcelhook.delivery.proxy import Proxies, ProxyError
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.targets import BadURL, IPAddress, forbidden_reason, parse_webhook_url

SAVE_TIME_DNS_TIMEOUT = 5.0

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset by peer",
    errno.ECONNABORTED: "connection aborted",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.EPIPE: "connection closed by endpoint while sending the request",
}


class TargetRefused(OSError):
    """The SSRF guard refused an address; its message is meant for the user."""


def _refusal(ip: IPAddress, reason: str, host: str | None = None) -> str:
    if host is None:
        return f"refused by SSRF guard: {reason} address {ip}"
    return f"refused by SSRF guard: {host} resolves to {reason} address {ip}"


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and refuses names that resolve to any forbidden address."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            ip = wire.ip_literal(result["host"])
            if ip is None:
                raise TargetRefused(f"refused by SSRF guard: {host} resolves to no IP address")
            reason = forbidden_reason(ip)
            if reason is not None:
                raise TargetRefused(_refusal(ip, reason, host))
        return results

    async def close(self) -> None:
        await self._inner.close()


def _not_open() -> float:
    raise RuntimeError("the Sender has no transport yet")


def _check_literal(ip: IPAddress) -> None:
    # IP-literal hosts never reach the resolver, so the guard checks them here
    reason = forbidden_reason(ip)
    if reason is not None:
        raise TargetRefused(_refusal(ip, reason))


class Sender:
    """POSTs webhook bodies through one transport (one shared pool of kept-alive
    connections), guarded against internal targets."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        allow_http: bool = False,
        user_agent: str = USER_AGENT,
        max_connections: int = 1000,
        resolver: AbstractResolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
        transport: tr.TransportFactory = tr.WireTransport,
        wall_clock: Callable[[], float] = time.time,
        proxies: Proxies | None = None,
    ) -> None:
        """`ssl_context`: whom https endpoints must prove they are (default: the system's
        CAs); `clock`: monotonic seconds, for connections' idle times; `transport`: what
        builds the transport (for the `Dial` that enforces this sender's target policy);
        `wall_clock`: seconds since the epoch, for a `Retry-After` given as a date;
        `proxies`: the operator's outbound proxy (`Proxies.from_environment()`)."""
        self.timeout = timeout
        self.allow_private = allow_private
        self.allow_http = allow_http
        self._user_agent = user_agent
        self._resolver = resolver
        self._ssl_context = ssl_context
        self._clock = clock
        self._wall_clock = wall_clock
        self._timeout_words = f"timed out after {timeout:g} s"
        self._make_transport = transport
        self._proxies = proxies
        self._transport: tr.Transport | None = None
        # the loop's clock, for deadlines: read from the loop once, when the transport is
        # opened, since asyncio.get_running_loop() is a getpid() system call on CPython 3.11
        self._loop_time: Callable[[], float] = _not_open
        # requests (so connections) at once across all endpoints; 0: no cap
        self._slots = asyncio.Semaphore(max_connections) if max_connections else None
        self._owned_resolver: AbstractResolver | None = None
        self._closed = False

    def _open(self) -> tr.Transport:
        # Synchronous on purpose: concurrent first calls cannot create two transports.
        if self._closed:
            raise RuntimeError("this Sender is closed")
        inner = self._resolver or DefaultResolver()
        # the transport never closes a resolver it was given, so we close ours
        self._owned_resolver = inner if self._resolver is None else None
        dial = tr.Dial(
            inner if self.allow_private else GuardedResolver(inner),
            check_ip=None if self.allow_private else _check_literal,
            ssl_context=self._ssl_context,
            clock=self._clock,
            proxy_resolver=inner,
        )
        self._loop_time = asyncio.get_running_loop().time
        direct = self._make_transport(dial)
        self._transport = (
            direct
            if self._proxies is None
            else ProxyRouter(direct, ProxiedTransport(dial), self._proxies)
        )
        return self._transport

    async def start(self) -> None:
        """Open the transport now rather than on the first send."""
        if self._transport is None:
            self._open()

    async def close(self) -> None:
        """Close every connection; the sender cannot be used afterwards."""
        self._closed = True
        transport, self._transport = self._transport, None
        resolver, self._owned_resolver = self._owned_resolver, None
        if transport is not None:
            await transport.close()
        if resolver is not None:
            await resolver.close()

    async def __aenter__(self) -> Sender:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, url: str, body: bytes, headers: Mapping[str, str]) -> AttemptResult:
        """POST `body` to `url` once; never raises for network problems."""
        if not self.allow_http and url[:7].lower() == "http://":
            return AttemptResult(None, 0, error="plain http:// targets are not allowed")
        transport = self._transport or self._open()
        started = time.perf_counter()
        if "User-Agent" not in headers:
            headers = {"User-Agent": self._user_agent, **headers}
        deadline = self._loop_time() + self.timeout
        try:
            if self._slots is None:
                answer = await transport.post(url, body, headers, deadline)
            else:
                # only the wait for a slot is bounded here: the exchange keeps its own
                # deadline, which knows whether the answer had begun
                async with asyncio.timeout_at(deadline):
                    await self._slots.acquire()
                try:
                    answer = await transport.post(url, body, headers, deadline)
                finally:
                    self._slots.release()
        except tr.InvalidURL as exc:
            return AttemptResult(None, 0, error=str(exc))
        except tr.ExchangeError as exc:
            error = self._describe(exc.cause, url)
            if exc.status is not None:
                error += " while reading the response"
            elif isinstance(exc.cause, tr.Closed):
                error += " without a response"
            return AttemptResult(exc.status, _elapsed_ms(started), error=error)
        except (OSError, TimeoutError, ValueError) as exc:
            return AttemptResult(None, _elapsed_ms(started), error=self._describe(exc, url))
        retry_after = answer.retry_after
        return AttemptResult(
            answer.status,
            _elapsed_ms(started),
            response_excerpt=answer.excerpt.decode("utf-8", errors="replace"),
            response_headers=answer.headers,
            retry_after=(
                None if retry_after is None else parse_retry_after(retry_after, self._wall_clock())
            ),
        )

    def _describe(self, exc: BaseException, url: str) -> str:
        """Plain words for a failed attempt; never includes headers or the body."""
        if isinstance(exc, tr.TimedOut | TimeoutError):
            return self._timeout_words
        if isinstance(exc, tr.InvalidResponse):
            return "invalid HTTP response from endpoint"
        if isinstance(exc, tr.Closed):
            return "connection closed by endpoint"
        if isinstance(exc, TargetRefused | ProxyError):
            return str(exc)
        if isinstance(exc, socket.gaierror):
            return f"could not resolve host {wire.parse_target(url).host}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS handshake failed: certificate verify failed ({exc.verify_message})"
        if isinstance(exc, ssl.SSLError):
            return f"TLS handshake failed: {_ssl_reason(exc)}"
        if isinstance(exc, OSError):
            return _os_words(exc)
        if isinstance(exc, ValueError):
            return f"request could not be built: {exc}"
        return f"request failed: {type(exc).__name__}"


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _os_words(exc: OSError) -> str:
    words = _ERRNO_WORDS.get(exc.errno or 0)
    if words:
        return words
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc.reason, str) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def parse_retry_after(value: str, now_s: float | None = None) -> float | None:
    """Seconds from `now_s` (default: now) that a `Retry-After` value (delta-seconds or
    HTTP-date) asks for."""
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = datetime.now(UTC) if now_s is None else datetime.fromtimestamp(now_s, UTC)
    return max(0.0, (when - now).total_seconds())


async def check_target_resolves(url: str, *, allow_private: bool) -> str | None:
    """At save time: a message if the URL's host resolves to a forbidden address, else None.

    A host that does not resolve (or not in time) passes: it is checked again at connect time.
    """
    if allow_private:
        return None
    try:
        parsed = parse_webhook_url(url)  # the reading the connection will use
    except BadURL:
        return None  # the URL check says what is wrong with it
    host, literal = parsed.host, parsed.ip
    if literal is not None:
        reason = forbidden_reason(literal)
        return f"The webhook URL must not point to {reason} address {literal}." if reason else None
    try:
        async with asyncio.timeout(SAVE_TIME_DNS_TIMEOUT):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
    except (OSError, UnicodeError):
        return None
    for *_, sockaddr in infos:
        ip = wire.ip_literal(str(sockaddr[0]))
        reason = forbidden_reason(ip) if ip is not None else None
        if reason is not None:
            return f"The webhook URL's host {host} resolves to {reason} address {ip}."
    return None
