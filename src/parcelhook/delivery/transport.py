"""The seam between the sender and HTTP: one POST, as a small `Transport` protocol.

A transport sends `body` to a URL with the given headers by a deadline and returns the
answer's status, at most `EXCERPT_LIMIT` bytes of its body, its `Retry-After` and its first
`HEADERS_KEPT` headers (cut by `wire.kept_header`). It never follows redirects,
decompresses, or reads more than `READ_LIMIT` bytes of a body. The sender owns everything
around the call: the SSRF policy (it hands the transport a `Dial` whose resolver refuses
forbidden addresses, and a check for IP literals), the timing, and the words for every
failure. So a transport reports failures in one vocabulary:

- `InvalidURL` when the URL cannot be sent to;
- before the request was written: `OSError` (`socket.gaierror`, `ssl.SSLError`, the
  guard's `TargetRefused`, …) or `TimeoutError`;
- after: `ExchangeError(cause, status)`, with `status` once the answer's head had arrived
  and a cause of `TimedOut`, `Closed`, `InvalidResponse` or an `OSError`.

`WireTransport` (llhttp, `wire.py`) is the default; `AiohttpTransport` is the reference
implementation on the client the ecosystem trusts; `parcelhook.testing.MockTransport`
answers from a function, with no sockets. Model: httpx's `BaseTransport`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from aiohttp.abc import AbstractResolver

from parcelhook.delivery import wire
from parcelhook.delivery.proxy import ProxyError, refusal, shown
from parcelhook.delivery.wire import (
    EXCERPT_LIMIT,
    READ_LIMIT,
    Answer,
    Closed,
    ExchangeError,
    InvalidResponse,
    InvalidURL,
    TimedOut,
)
from parcelhook.domain.targets import IPAddress

__all__ = [
    "EXCERPT_LIMIT",
    "READ_LIMIT",
    "AiohttpTransport",
    "Answer",
    "Closed",
    "Dial",
    "ExchangeError",
    "InvalidResponse",
    "InvalidURL",
    "TimedOut",
    "Transport",
    "TransportFactory",
    "WireTransport",
]


@dataclass(frozen=True, slots=True)
class Dial:
    """How a transport reaches endpoints: what the sender's SSRF policy allows."""

    # resolves names, refusing forbidden addresses; connect to exactly what it returns
    resolver: AbstractResolver
    # called with every IP-literal host before connecting; raises to refuse it
    check_ip: Callable[[IPAddress], None] | None = None
    # whom https endpoints must prove they are (None: the system's CAs)
    ssl_context: ssl.SSLContext | None = None
    # monotonic seconds, for connections' idle times
    clock: Callable[[], float] = field(default=time.monotonic)
    # how to resolve the operator's outbound proxy (not guarded: it is the operator's own)
    proxy_resolver: AbstractResolver | None = None


class Transport(Protocol):
    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        """POST `body` to `url` once, answered by `deadline` (the running loop's clock)."""
        ...

    async def close(self) -> None:
        """Close every connection; the transport is not used afterwards."""
        ...


# a transport class, or anything else that builds one for a Dial
TransportFactory = Callable[[Dial], Transport]


class WireTransport:
    """The default: the llhttp client in `wire.py`, about 3× cheaper per request."""

    def __init__(self, dial: Dial) -> None:
        self._pool = wire.Pool(
            dial.resolver, check_ip=dial.check_ip, clock=dial.clock, ssl_context=dial.ssl_context
        )
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(wire.KEEPALIVE_S)
            self._pool.sweep()

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        return await self._pool.post(self._pool.target(url), body, headers, deadline)

    async def close(self) -> None:
        self._sweeper.cancel()
        self._pool.close()


def words(exc: aiohttp.ClientConnectorError) -> str:
    code = exc.os_error.errno
    return (os.strerror(code) if code else str(exc.os_error) or "failed").lower()


class AiohttpTransport:
    """The reference: aiohttp's client, through the same guarded resolver."""

    def __init__(self, dial: Dial) -> None:
        self._check_ip = dial.check_ip
        connector = aiohttp.TCPConnector(
            resolver=dial.resolver,
            # every new connection resolves (and so checks) the name again
            use_dns_cache=False,
            ssl=dial.ssl_context if dial.ssl_context is not None else True,
            limit=0,
            keepalive_timeout=wire.KEEPALIVE_S,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            # no compression was asked for, so none can be forced on the bounded read
            skip_auto_headers=("Accept-Encoding",),
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        host = wire.parse_target(url).host  # InvalidURL as wire.py words it
        literal = wire.ip_literal(host)
        if literal is not None and self._check_ip is not None:
            self._check_ip(literal)  # aiohttp never asks the resolver about IP literals
        return await self._post(url, body, headers, deadline, None)

    async def _post(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        deadline: float,
        proxy: str | None,
    ) -> Answer:
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session.post(
                    url, data=body, headers=dict(headers), allow_redirects=False, proxy=proxy
                )
        except aiohttp.ClientHttpProxyError as exc:  # the proxy answered CONNECT with no
            why = refusal(exc.status, exc.headers or {})
            raise ProxyError(why or f"refused by the proxy: {exc.status} {exc.message}") from None
        except aiohttp.ClientProxyConnectionError as exc:
            raise ProxyError(
                f"could not reach the proxy {shown(proxy or '')}: {words(exc)}"
            ) from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise exc.certificate_error from None
        except aiohttp.ClientConnectorError as exc:
            raise exc.os_error from None
        except aiohttp.ServerDisconnectedError:
            raise ExchangeError(Closed(), None) from None
        except aiohttp.ClientResponseError as exc:
            raise ExchangeError(InvalidResponse(exc.message), None) from None
        except aiohttp.ClientOSError as exc:
            raise ExchangeError(OSError(*exc.args), None) from None
        except TimeoutError:
            raise ExchangeError(TimedOut(), None) from None
        return await self._read(response, deadline)

    async def _read(self, response: aiohttp.ClientResponse, deadline: float) -> Answer:
        status = response.status
        retry_after = response.headers.get("Retry-After")
        excerpt = bytearray()
        size = 0
        complete = False
        try:
            async with asyncio.timeout_at(deadline):
                while size < READ_LIMIT:
                    chunk = await response.content.readany()
                    if not chunk:
                        complete = True
                        break
                    if len(excerpt) < EXCERPT_LIMIT:
                        excerpt += chunk[: EXCERPT_LIMIT - len(excerpt)]
                    size += len(chunk)
        except TimeoutError:
            raise ExchangeError(TimedOut(), status) from None
        except aiohttp.ClientPayloadError as exc:
            # aiohttp keeps why the connection went (a reset, or a plain close) only in
            # the words of its message
            reset = "ConnectionResetError" in str(exc)
            cause = ConnectionResetError(errno.ECONNRESET, "reset") if reset else Closed()
            raise ExchangeError(cause, status) from None
        except aiohttp.ClientError as exc:
            raise ExchangeError(exc, status) from None
        finally:
            if complete:
                response.release()  # back to the pool when keep-alive allows
            else:
                response.close()  # the rest stays unread: never reuse the connection
        headers = tuple(
            wire.kept_header(n.decode("utf-8", "replace"), v.decode("utf-8", "replace"))
            for n, v in response.raw_headers[: wire.HEADERS_KEPT]
        )
        return Answer(status, bytes(excerpt), retry_after, headers)

    async def close(self) -> None:
        await self._session.close()
