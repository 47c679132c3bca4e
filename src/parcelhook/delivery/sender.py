"""The one module that talks to webhook endpoints: POST, read a bounded answer, report.

`Sender.send` never raises for a network problem; every failure comes back as an
`AttemptResult` whose `error` says what went wrong in plain words. The SSRF guard is
enforced at connect time (resolver and socket factory), so DNS rebinding and IP
literals in any spelling are caught on every new connection, not just when saving.
"""

from __future__ import annotations

import asyncio
import email.utils
import errno
import ipaddress
import socket
import ssl
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from parcelhook import __version__
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.targets import IPAddress, forbidden_reason, parse_host_ip

READ_LIMIT = 64 * 1024
EXCERPT_LIMIT = 1024
DEFAULT_USER_AGENT = f"parcelhook/{__version__}"
SAVE_TIME_DNS_TIMEOUT = 5.0

# CPython leaked TLS transports that were aborted mid-shutdown until 3.12.8 / 3.13.1
# (python/cpython#118960); a hostile endpoint could exploit that, so have aiohttp reap them.
_REAP_ABORTED_TLS = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)

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


def _numeric_ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and refuses names that resolve to any forbidden address."""

    def __init__(self, inner: AbstractResolver) -> None:
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            ip = _numeric_ip(result["host"])
            reason = forbidden_reason(ip)
            if reason is not None:
                raise TargetRefused(_refusal(ip, reason, host))
        return results

    async def close(self) -> None:
        await self._inner.close()


def _guarded_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    # The last gate: aiohttp hands IP-literal hosts straight to connect() without
    # asking the resolver, so every address is checked here once more.
    family, type_, proto, _, sockaddr = addr_info
    ip = _numeric_ip(sockaddr[0])
    reason = forbidden_reason(ip)
    if reason is not None:
        raise TargetRefused(_refusal(ip, reason))
    return socket.socket(family=family, type=type_, proto=proto)


class Sender:
    """POSTs webhook bodies over one shared keep-alive connection pool."""

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        allow_http: bool = False,
        user_agent: str = DEFAULT_USER_AGENT,
        max_connections: int = 1000,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        self.allow_http = allow_http
        self.max_connections = max_connections
        self._user_agent = user_agent
        self._resolver = resolver
        self._client_timeout = aiohttp.ClientTimeout(total=timeout)
        self._timeout_words = f"timed out after {timeout:g} s"
        self._session: aiohttp.ClientSession | None = None
        self._owned_resolver: AbstractResolver | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        # Synchronous on purpose: concurrent first calls cannot create two sessions.
        if self._closed:
            raise RuntimeError("this Sender is closed")
        inner = self._resolver or DefaultResolver()
        resolver = inner if self.allow_private else GuardedResolver(inner)
        # the connector never closes a resolver it was given, so we close ours
        self._owned_resolver = resolver if self._resolver is None else None
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            resolver=resolver,
            socket_factory=None if self.allow_private else _guarded_socket,
            enable_cleanup_closed=_REAP_ABORTED_TLS,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._client_timeout,
            headers={"User-Agent": self._user_agent},
            # no compression: the body is only glanced at, and a gzip bomb stays a small read
            skip_auto_headers=("Accept", "Accept-Encoding"),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            raise_for_status=False,
            # proxies from the environment would make the SSRF guard check the proxy, not the target
            trust_env=False,
        )
        return self._session

    async def start(self) -> None:
        """Open the connection pool now rather than on the first send."""
        if self._session is None:
            self._open()

    async def close(self) -> None:
        """Close every pooled connection; the sender cannot be used afterwards."""
        self._closed = True
        session, self._session = self._session, None
        resolver, self._owned_resolver = self._owned_resolver, None
        if session is not None:
            await session.close()
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
        session = self._session or self._open()
        started = time.perf_counter()
        status: int | None = None
        try:
            async with session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                head = await _read_head(response)
                retry_after = response.headers.get("Retry-After")
        except TimeoutError:
            error = self._timeout_words
            if status is not None:
                error += " while reading the response"
            return AttemptResult(status, _elapsed_ms(started), error=error)
        except (aiohttp.ClientError, OSError) as exc:
            error = _describe(exc, url)
            if status is not None:
                error += " while reading the response"
            return AttemptResult(status, _elapsed_ms(started), error=error)
        return AttemptResult(
            status,
            _elapsed_ms(started),
            response_excerpt=head.decode("utf-8", errors="replace"),
            retry_after=parse_retry_after(retry_after) if retry_after is not None else None,
        )


async def _read_head(response: aiohttp.ClientResponse) -> bytes:
    """Read at most READ_LIMIT bytes of the body; return the first EXCERPT_LIMIT of them."""
    content = response.content
    head = b""
    size = 0
    while size < READ_LIMIT and not content.at_eof():
        chunk = await content.read(READ_LIMIT - size)
        if not chunk:
            break
        if len(head) < EXCERPT_LIMIT:
            head += chunk[: EXCERPT_LIMIT - len(head)]
        size += len(chunk)
    if not content.at_eof():
        # the rest stays unread, so this connection must not go back to the pool
        response.close()
    return head


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def _describe(exc: BaseException, url: str) -> str:
    """Plain words for a failed attempt; never includes headers or the body."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or str(cert_error)
        return f"TLS handshake failed: certificate verify failed ({reason})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | ssl.SSLError):
        return f"TLS handshake failed: {_ssl_reason(exc)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, TargetRefused):
            return str(exc.os_error)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            return f"could not resolve host {exc.host}"
        if isinstance(exc.os_error, ssl.SSLError):
            return f"TLS handshake failed: {_ssl_reason(exc.os_error)}"
        return _os_words(exc.os_error)
    if isinstance(exc, aiohttp.ClientPayloadError):
        # aiohttp only keeps the underlying socket error in the message text
        if "ConnectionResetError" in str(exc):
            return "connection reset by peer"
        return "connection closed before the response was complete"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed by endpoint without a response"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "invalid HTTP response from endpoint"
    if isinstance(exc, aiohttp.NonHttpUrlClientError):
        return "only http:// and https:// URLs can receive webhooks"
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid URL: {_host_of(url) or url[:100]}"
    if isinstance(exc, OSError):
        return _os_words(exc)
    return f"request failed: {type(exc).__name__}"


def _os_words(exc: OSError) -> str:
    words = _ERRNO_WORDS.get(exc.errno or 0)
    if words:
        return words
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def _ssl_reason(exc: OSError) -> str:
    source = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else exc
    reason = getattr(source, "reason", None)
    if isinstance(reason, str) and reason:
        return reason.lower().replace("_", " ")
    return str(source) or type(source).__name__


def _host_of(url: str) -> str | None:
    try:
        return urlsplit(url).hostname
    except ValueError:
        return None


def parse_retry_after(value: str) -> float | None:
    """Seconds from now that a `Retry-After` value (delta-seconds or HTTP-date) asks for."""
    value = value.strip()
    if value.isdigit() and value.isascii():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def check_target_resolves(url: str, *, allow_private: bool) -> str | None:
    """At save time: a message if the URL's host resolves to a forbidden address, else None.

    A host that does not resolve (or not in time) passes: it is checked again at connect time.
    """
    if allow_private:
        return None
    host = _host_of(url)
    if not host:
        return None
    literal = parse_host_ip(host)
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
        ip = _numeric_ip(str(sockaddr[0]))
        reason = forbidden_reason(ip)
        if reason is not None:
            return f"The webhook URL's host {host} resolves to {reason} address {ip}."
    return None
