"""Webhooks through the operator's outbound proxy (`proxy.Proxies`), on aiohttp's client.

`ProxyRouter` sends each URL either through the transport it wraps (the own llhttp client
or aiohttp, connecting directly) or, when a proxy applies to it, through
`ProxiedTransport`: aiohttp's proxy support (absolute-form for http://, CONNECT for
https://), the reference implementation the rest of the ecosystem relies on. Proxied
requests therefore cost what aiohttp costs, whichever transport is chosen.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Mapping
from dataclasses import replace

from multidict import CIMultiDict

from parcelhook.delivery import wire
from parcelhook.delivery.proxy import Proxies, ProxyError, refusal
from parcelhook.delivery.transport import AiohttpTransport, Answer, Dial, Transport


class ProxiedTransport(AiohttpTransport):
    """Every request through a proxy; the only host it connects to is the proxy."""

    def __init__(self, dial: Dial) -> None:
        # the guarded resolver checks the target below; connections go to the proxy, which
        # the operator chose and may be a private address, so they are resolved unguarded
        assert dial.proxy_resolver is not None
        super().__init__(replace(dial, resolver=dial.proxy_resolver))
        self._guard = dial.resolver

    async def send(
        self, url: str, proxy: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        target = wire.parse_target(url)  # InvalidURL as wire.py words it
        literal = wire.ip_literal(target.host)
        if self._check_ip is not None:
            if literal is not None:
                self._check_ip(literal)
            else:
                # the SSRF guard on what this host resolves the name to (a name only the
                # proxy can resolve passes); the proxy resolves it again, and its own
                # policy has the last word
                with contextlib.suppress(socket.gaierror):
                    await self._guard.resolve(target.host, target.port, socket.AF_UNSPEC)
        answer = await self._post(url, body, headers, deadline, proxy)
        why = refusal(answer.status, CIMultiDict(answer.headers))
        if why is not None:
            raise ProxyError(why)
        return answer


class ProxyRouter:
    """A `Transport` that sends what a proxy applies to through it, the rest directly."""

    def __init__(self, direct: Transport, proxied: ProxiedTransport, proxies: Proxies) -> None:
        self._direct = direct
        self._proxied = proxied
        self._proxies = proxies

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], deadline: float
    ) -> Answer:
        proxy = self._proxies.for_url(url)
        if proxy is None:
            return await self._direct.post(url, body, headers, deadline)
        return await self._proxied.send(url, proxy, body, headers, deadline)

    async def close(self) -> None:
        await self._proxied.close()
        await self._direct.close()
