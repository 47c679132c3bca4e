"""Where a webhook goes: a host whose IPv6 address is black-holed still gets its webhooks over
IPv4 at once (Happy Eyeballs over the addresses the SSRF guard checked); names are encoded
as browsers do; the save-time check and the connection read a URL the same way."""

from __future__ import annotations

import ipaddress
import time

import pytest

from parcelhook.delivery import wire
from parcelhook.delivery.sender import Sender
from parcelhook.domain.targets import BadURL, check_webhook_url, parse_webhook_url
from support.dns import StaticResolver, black_hole_v6
from support.hostile_receiver import HostileReceiver


async def test_a_black_holed_aaaa_record_still_delivers_over_ipv4_quickly() -> None:
    async with HostileReceiver() as receiver:
        resolver = StaticResolver({"dual.test": ["::1", "127.0.0.1"]})
        with black_hole_v6(receiver.port):
            async with Sender(
                timeout=5.0, allow_private=True, allow_http=True, resolver=resolver
            ) as sender:
                started = time.monotonic()
                result = await sender.send(f"http://dual.test:{receiver.port}/hook", b"{}", {})
                took = time.monotonic() - started
    assert result.status_code == 200, result
    assert len(receiver.requests) == 1
    # one Happy Eyeballs delay (0.25 s) and a loopback round trip, with room for a busy CI
    assert took < 1.0, took


async def test_the_guard_still_checks_every_address_before_connecting() -> None:
    async with HostileReceiver() as receiver:
        resolver = StaticResolver({"dual.test": ["2001:db8::1", "127.0.0.1"]})
        async with Sender(timeout=2.0, allow_http=True, resolver=resolver) as sender:
            result = await sender.send(f"http://dual.test:{receiver.port}/hook", b"{}", {})
    assert result.status_code is None and result.error is not None
    assert "refused by SSRF guard" in result.error
    assert receiver.requests == []


async def test_international_names_are_encoded_as_browsers_do() -> None:
    # IDNA 2008 / UTS 46: ß stays a letter of its own (IDNA 2003 made it "ss")
    async with HostileReceiver() as receiver:
        resolver = StaticResolver({"xn--fa-hia.test": ["127.0.0.1"], "fass.test": ["127.0.0.1"]})
        async with Sender(
            timeout=2.0, allow_private=True, allow_http=True, resolver=resolver
        ) as sender:
            result = await sender.send(f"http://faß.test:{receiver.port}/hook", b"{}", {})
    assert result.status_code == 200, result
    assert resolver.lookups == ["xn--fa-hia.test"]
    assert receiver.requests[0].headers["Host"] == f"xn--fa-hia.test:{receiver.port}"


def test_the_save_time_check_and_the_connection_read_a_url_the_same_way() -> None:
    for url in (
        "https://faß.test/hook",
        "https://EXAMPLE.com:443/a?b",
        "https://[::ffff:7f00:1]:8443/",
        "https://0x7f.1/",
        "https://127\u30020\u30020\u30021/hook",
    ):
        parsed = parse_webhook_url(url)
        target = wire.parse_target(url)
        assert (target.host, target.port) == (parsed.host, parsed.port), url
    assert parse_webhook_url("https://127\u30020\u30020\u30021/").ip == ipaddress.ip_address(
        "127.0.0.1"
    )
    # an IPv6 zone id is dropped by both alike (and the address refused at save)
    zoned = "https://[fe80::1%25eth0]/"
    assert parse_webhook_url(zoned).host == wire.parse_target(zoned).host == "fe80::1"
    assert "link-local" in (check_webhook_url(zoned, allow_http=True, allow_private=False) or "")
    # elsewhere a percent sign in a host (an encoded name) is refused by both alike
    for url in ("https://exa%6dple.com/", "https://a%00b.test/"):
        with pytest.raises(BadURL):
            parse_webhook_url(url)
        with pytest.raises(wire.InvalidURL):
            wire.parse_target(url)
        assert check_webhook_url(url, allow_http=True, allow_private=True) is not None
