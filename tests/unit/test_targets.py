"""The save-time SSRF guard and URL rules of the webhook settings form."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from parcelhook.domain.targets import (
    check_webhook_url,
    forbidden_reason,
    is_forbidden_address,
    parse_host_ip,
)


def strict(url: str) -> str | None:
    return check_webhook_url(url, allow_http=False, allow_private=False)


def relaxed(url: str) -> str | None:
    return check_webhook_url(url, allow_http=True, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/hook",
        "https://EXAMPLE.com:8443/hooks/sendcloud?token=abc#frag",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "https://[::ffff:93.184.216.34]/hook",
        "https://bücher.example/hook",
        "https://example.com./hook",
    ],
)
def test_public_https_targets_are_accepted(url: str) -> None:
    assert strict(url) is None


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0177.0.0.1",
        "0177.0.0.01",
        "017700000001",
        "0x7f.0.0.1",
        "0X7F.0x0.0x0.0x1",
        "0x7f000001",
        "0x7f.1",
        "127.000.000.001",
        "127.0.0.1.",
        "10.0.0.1",
        "10.1",
        "167772161",
        "012.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "0xc0.0xa8.1.1",
        "169.254.169.254",
        "2852039166",
        "100.64.0.1",
        "0.0.0.0",
        "0",
        "224.0.0.1",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "198.18.0.1",
        "[::1]",
        "[0:0:0:0:0:0:0:1]",
        "[::]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:10.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[::127.0.0.1]",
        "[::ffff:0:127.0.0.1]",
        "[64:ff9b::127.0.0.1]",
        "[64:ff9b::a9fe:a9fe]",
        "[2002:7f00:1::]",
        "[2002:a00:1::1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",  # Teredo, client 127.0.0.1
        "[fe80::1]",
        "[fe80::1%25eth0]",
        "[fc00::1]",
        "[fd12:3456:789a::1]",
        "[fec0::1]",
        "[ff02::1]",
        "[2001:db8::1]",
        "[100::1]",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "api.localhost",
    ],
)
def test_private_hosts_are_refused_in_every_spelling(host: str) -> None:
    problem = strict(f"https://{host}/hook")
    assert problem is not None
    assert "localhost" in problem or "address" in problem


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "localhost", "api.localhost"]
)
def test_private_hosts_are_accepted_when_the_operator_allows_them(host: str) -> None:
    assert check_webhook_url(f"https://{host}/hook", allow_http=False, allow_private=True) is None


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0x7f.0.0.1", "1572395042"])
def test_legacy_ipv4_spellings_are_refused_even_when_private_targets_are_allowed(
    host: str,
) -> None:
    # the HTTP client would refuse to connect to them, so saving them would only fail later
    problem = relaxed(f"https://{host}/hook")
    assert problem is not None
    assert "four decimal numbers" in problem


def test_error_names_the_address_it_refuses() -> None:
    assert strict("https://0x7f.1/hook") == (
        "The webhook URL must not point to loopback address 127.0.0.1."
    )
    assert strict("https://169.254.169.254/latest/meta-data") == (
        "The webhook URL must not point to link-local address 169.254.169.254."
    )


def test_plain_http_only_when_allowed() -> None:
    assert strict("http://example.com/hook") == (
        "The webhook URL must use https://; plain http:// is not allowed."
    )
    assert (
        check_webhook_url("http://example.com/hook", allow_http=True, allow_private=False) is None
    )
    assert (
        check_webhook_url("HTTP://example.com/hook", allow_http=True, allow_private=False) is None
    )


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "ws://x.io/"]
)
def test_other_schemes_are_refused(url: str) -> None:
    assert relaxed(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://user:pass@example.com/hook",
        "https://user@example.com/hook",
        "https://:secret@example.com/hook",
        "https://example.com@127.0.0.1/hook",
    ],
)
def test_credentials_are_refused(url: str) -> None:
    assert relaxed(url) == "The webhook URL must not contain credentials (user:password@)."


def test_length_limit_is_2048_characters() -> None:
    base = "https://example.com/"
    assert strict(base + "a" * (2048 - len(base))) is None
    assert strict(base + "a" * (2049 - len(base))) == (
        "The webhook URL must be at most 2,048 characters."
    )


@pytest.mark.parametrize(
    "url",
    [
        "",
        "example.com/hook",
        "/hook",
        "https://",
        "https:///hook",
        "https://:443/hook",
        "https://example.com:0/hook",
        "https://example.com:65536/hook",
        "https://example.com:http/hook",
        "https://[::1/hook",
        "https://exa mple.com/hook",
        "https://example.com/ho\nok",
        "https://evil.example\\@127.0.0.1/",
        "https://example.com/\x00",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    assert relaxed(url) is not None


# Every spelling libc's inet_aton() understands must be read as the same address,
# or a filter that misses one lets the HTTP client's resolver connect to it anyway.
SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "017700000001",
    "0x7f000001",
    "0x7F.0X0.0.01",
    "0177.0.0.1",
    "00000177.0.0.1",
    "1.2.3.4",
    "1.2.65535",
    "1.16777215",
    "4294967295",
    "0",
    "0x0",
    "00",
    "255.255.255.255",
    "256.0.0.1",
    "1.2.65536",
    "1.16777216",
    "4294967296",
    "0x100000000",
    "08.0.0.1",
    "09",
    "0x.1",
    "0xg.1",
    "1.2.3.4.5",
    "1..2",
    ".1.2.3",
    "",
    "example.com",
    "1e3",
    "+1.2.3.4",
    "-1",
    "١٢٣.0.0.1",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_ipv4_spellings_match_libc_inet_aton(spelling: str) -> None:
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(spelling))
    except (OSError, UnicodeError):
        expected = None
    assert parse_host_ip(spelling) == expected


def test_a_trailing_dot_does_not_hide_an_address() -> None:
    # some resolvers read "127.0.0.1." as the address itself, so judge it as one
    assert parse_host_ip("127.0.0.1.") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_host_ip("127.1.") == ipaddress.IPv4Address("127.0.0.1")


def test_parse_host_ip_reads_bracketed_ipv6_and_zone_ids() -> None:
    assert parse_host_ip("[::1]") == ipaddress.IPv6Address("::1")
    assert parse_host_ip("fe80::1%25eth0") == ipaddress.IPv6Address("fe80::1")
    assert parse_host_ip("::ffff:127.0.0.1") == ipaddress.IPv6Address("::ffff:7f00:1")
    assert parse_host_ip("[not:an:address") is None
    assert parse_host_ip("example.com") is None


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("100.127.255.255", "shared (carrier-grade NAT)"),
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.251", "multicast"),
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "broadcast"),
        ("192.0.2.10", "documentation"),
        ("198.51.100.10", "documentation"),
        ("203.0.113.10", "documentation"),
        ("198.19.0.1", "benchmarking"),
        ("192.0.0.8", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("fd00::1", "unique-local"),
        ("ff05::2", "multicast"),
        ("2001:db8::1", "documentation"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("::ffff:0:a00:1", "private"),
        ("::10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),
        ("64:ff9b::c0a8:101", "private"),
        ("2002:c0a8:101::1", "private"),
        ("2002:a9fe:a9fe::", "link-local"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "documentation"),  # RFC 4380 example
        ("2001:0:7f00:1:8000:63bf:3fff:fdd2", "loopback"),  # Teredo server 127.0.0.1
        ("4000::1", "reserved"),
    ],
)
def test_forbidden_addresses_and_why(address: str, reason: str) -> None:
    ip = ipaddress.ip_address(address)
    assert forbidden_reason(ip) == reason
    assert is_forbidden_address(ip)


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",
        "100.128.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.169.0.1",
        "223.255.255.255",
        "2606:2800:220:1:248:1893:25c8:1946",
        "2a00:1450:4001:80b::200e",
        "::ffff:93.184.216.34",
        "64:ff9b::5db8:d822",
        "2002:5db8:d822::1",
    ],
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert not is_forbidden_address(ipaddress.ip_address(address))
