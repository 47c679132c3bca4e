"""Webhooks through the operator's outbound proxy (`HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY`),
on both transports, with a real proxy on loopback (tests/support/forward_proxy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from parcelhook.config import Settings
from parcelhook.delivery.proxy import Proxies
from parcelhook.delivery.sender import Sender
from parcelhook.delivery.transport import AiohttpTransport, TransportFactory, WireTransport
from parcelhook.runtime import tls_context
from support.forward_proxy import DENIED, ForwardProxy
from support.hostile_receiver import HostileReceiver, refused_port
from support.tls_endpoint import mutual_tls_endpoint

BODY = b'{"action": "integration_connected"}'
HEADERS = {"Content-Type": "application/json", "webhook-id": "msg_1"}

transports = pytest.mark.parametrize(
    "transport", [WireTransport, AiohttpTransport], ids=["wire", "aiohttp"]
)


@transports
async def test_a_webhook_goes_through_the_proxy(transport: TransportFactory) -> None:
    async with HostileReceiver() as rx, ForwardProxy() as proxy:
        proxies = Proxies(http=proxy.url, https=proxy.url)
        async with Sender(
            allow_private=True, allow_http=True, transport=transport, proxies=proxies
        ) as sender:
            result = await sender.send(rx.url("/hook"), BODY, HEADERS)
        assert result.status_code == 200, result.error
        assert proxy.seen == [("POST", rx.url("/hook"))]  # absolute form
        [request] = rx.requests
        assert request.body == BODY and request.headers["webhook-id"] == "msg_1"


@transports
async def test_no_proxy_hosts_are_reached_directly(transport: TransportFactory) -> None:
    async with HostileReceiver() as rx, ForwardProxy() as proxy:
        for no_proxy in ("127.0.0.1", f"127.0.0.1:{rx.port}", "example.com,127.0.0.1", "*"):
            proxies = Proxies(http=proxy.url, no_proxy=no_proxy)
            async with Sender(
                allow_private=True, allow_http=True, transport=transport, proxies=proxies
            ) as sender:
                result = await sender.send(rx.url("/hook"), BODY, HEADERS)
            assert result.status_code == 200, (no_proxy, result.error)
        assert proxy.seen == []
        assert len(rx.requests) == 4


@transports
async def test_the_proxys_refusal_is_explained(transport: TransportFactory) -> None:
    async with HostileReceiver() as rx, ForwardProxy(deny=frozenset({"127.0.0.1"})) as proxy:
        proxies = Proxies(http=proxy.url, https=proxy.url)
        async with Sender(
            allow_private=True, allow_http=True, transport=transport, proxies=proxies
        ) as sender:
            plain = await sender.send(rx.url("/hook"), BODY, HEADERS)
            tunnel = await sender.send(rx.url("/hook", scheme="https"), BODY, HEADERS)
    words = f"refused by the proxy: 403 ({DENIED.decode()})"
    assert (plain.status_code, plain.error) == (None, words)  # retried like any failure
    assert (tunnel.status_code, tunnel.error) == (None, words)
    assert proxy.seen == [("POST", rx.url("/hook")), ("CONNECT", f"127.0.0.1:{rx.port}")]
    assert rx.requests == []


@transports
async def test_a_proxy_that_is_down_is_a_clear_retried_failure(
    transport: TransportFactory,
) -> None:
    with refused_port() as port:
        proxies = Proxies(http=f"http://127.0.0.1:{port}")
        async with Sender(
            allow_private=True, allow_http=True, transport=transport, proxies=proxies
        ) as sender:
            result = await sender.send("http://shop.example/hook", BODY, HEADERS)
    assert result.status_code is None
    assert result.error == f"could not reach the proxy 127.0.0.1:{port}: connection refused"


@transports
async def test_the_ssrf_guard_still_checks_the_target_but_not_the_proxy(
    transport: TransportFactory,
) -> None:
    """The proxy is the operator's (here on loopback, a private address, allowed); the
    target is still refused when it is internal, and never reaches the proxy."""
    async with HostileReceiver() as rx:
        routes = {"shop.invalid": rx.port}
        async with ForwardProxy(routes=routes) as proxy:
            proxies = Proxies(http=proxy.url)
            async with Sender(allow_http=True, transport=transport, proxies=proxies) as sender:
                literal = await sender.send(rx.url("/hook"), BODY, HEADERS)
                named = await sender.send(f"http://localhost:{rx.port}/hook", BODY, HEADERS)
                # a name only the proxy can resolve goes to it (and its policy decides)
                remote = await sender.send("http://shop.invalid/hook", BODY, HEADERS)
    assert literal.error == "refused by SSRF guard: loopback address 127.0.0.1"
    assert named.error is not None and named.error.startswith(
        "refused by SSRF guard: localhost resolves to loopback address"
    )
    assert remote.status_code == 200, remote.error
    assert proxy.seen == [("POST", "http://shop.invalid/hook")]
    assert len(rx.requests) == 1


def test_proxies_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert Proxies.from_environment() is None
    monkeypatch.setenv("HTTPS_PROXY", "proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", ".example.com,hooks.test:8443")
    proxies = Proxies.from_environment()
    assert proxies is not None
    assert proxies.for_url("https://shop.test/hook") == "http://proxy.internal:3128"
    assert proxies.for_url("http://shop.test/hook") is None  # no HTTP_PROXY
    assert proxies.for_url("https://a.example.com/hook") is None
    assert proxies.for_url("https://example.com/hook") is None
    assert proxies.for_url("https://hooks.test:8443/x") is None
    assert proxies.for_url("https://hooks.test/x") == "http://proxy.internal:3128"
    monkeypatch.setenv("NO_PROXY", "::1,[2001:db8::5]")
    proxies = Proxies.from_environment()
    assert proxies is not None
    assert proxies.for_url("https://[::1]:8443/x") is None
    assert proxies.for_url("https://[2001:db8::5]/x") is None
    assert proxies.for_url("https://[2001:db8::6]/x") == "http://proxy.internal:3128"


@transports
async def test_an_https_webhook_goes_through_a_connect_tunnel(
    transport: TransportFactory, tmp_path: Path
) -> None:
    """TLS ends at the endpoint, not the proxy: the endpoint proves its name to the
    operator's CA and asks for the client certificate, through the tunnel."""
    async with mutual_tls_endpoint(tmp_path) as (url, bundle, client), ForwardProxy() as proxy:
        context = tls_context(Settings(ca_bundle=bundle, client_cert=client))
        proxies = Proxies(https=proxy.url)
        async with Sender(
            allow_private=True, ssl_context=context, transport=transport, proxies=proxies
        ) as sender:
            result = await sender.send(url, BODY, HEADERS)
    assert (result.status_code, result.error) == (200, None)
    assert proxy.seen == [("CONNECT", url.removeprefix("https://").removesuffix("/hook"))]
