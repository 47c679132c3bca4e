"""Which webhook URLs are acceptable targets: the save-time half of the SSRF guard.

The connect-time half lives in `parcelhook.delivery.sender`; both share
`forbidden_reason`, so "forbidden" means the same thing in both places.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2048


class BadURL(ValueError):
    """Why a URL cannot be a webhook target; `kind` names the problem for each caller's words."""

    def __init__(self, kind: str, hint: str = "") -> None:
        super().__init__(kind)
        self.kind = kind  # syntax, relative, scheme, credentials, port, host
        self.hint = hint  # the host as far as it could be read, for messages


@dataclass(frozen=True, slots=True)
class WebhookURL:
    """A webhook URL as both halves of the SSRF guard and the HTTP client read it."""

    scheme: str  # http or https
    host: str  # ASCII: names IDNA 2008 (UTS 46) encoded, IP literals without brackets
    port: int  # the explicit port or the scheme's default
    default_port: bool
    path: str
    query: str
    ip: IPAddress | None  # the address the host spells, in any spelling libc accepts


def parse_webhook_url(url: str) -> WebhookURL:
    """The one reading of a webhook URL, shared by the save-time check and the connection,
    so the two never disagree about where a URL goes."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadURL("syntax", _hostname(url)) from exc
    scheme = parts.scheme.lower()
    if not scheme or not parts.netloc:
        raise BadURL("relative")
    if scheme not in ("http", "https"):
        raise BadURL("scheme")
    raw = parts.hostname
    if "@" in parts.netloc:
        raise BadURL("credentials", raw or "")
    if port == 0:
        raise BadURL("port", raw or "")
    if not raw:
        raise BadURL("host")
    if "%" in raw:
        # an IPv6 zone id goes (for both readers: there is only this one); anywhere else a
        # percent sign is an encoded name, which clients read differently
        literal = parse_host_ip(raw) if ":" in raw else None
        if literal is None:
            raise BadURL("syntax", raw)
        raw = str(literal)
    if raw.isascii():
        host = raw.lower()
    else:
        try:
            # as browsers, aiohttp and httpx do: faß.test is xn--fa-hia.test, not fass.test
            host = idna.encode(raw, uts46=True, transitional=False).decode("ascii")
        except idna.IDNAError as exc:
            raise BadURL("syntax", raw) from exc
    default = 443 if scheme == "https" else 80
    return WebhookURL(
        scheme,
        host,
        port or default,
        port in (None, default),
        parts.path,
        parts.query,
        parse_host_ip(host),
    )


def _hostname(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def _v4(net: str, reason: str) -> tuple[int, int, str]:
    n = ipaddress.IPv4Network(net)
    return int(n.network_address), int(n.netmask), reason


def _v6(net: str, reason: str) -> tuple[int, int, str]:
    n = ipaddress.IPv6Network(net)
    return int(n.network_address), int(n.netmask), reason


# Our own tables rather than `ip.is_private` & co: their meaning changed between
# Python releases, and a security boundary should not move with the interpreter.
_FORBIDDEN_V4 = (
    _v4("0.0.0.0/8", "unspecified"),
    _v4("10.0.0.0/8", "private"),
    _v4("100.64.0.0/10", "shared (carrier-grade NAT)"),
    _v4("127.0.0.0/8", "loopback"),
    _v4("169.254.0.0/16", "link-local"),
    _v4("172.16.0.0/12", "private"),
    _v4("192.0.0.0/24", "reserved"),
    _v4("192.0.2.0/24", "documentation"),
    _v4("192.88.99.0/24", "reserved"),
    _v4("192.168.0.0/16", "private"),
    _v4("198.18.0.0/15", "benchmarking"),
    _v4("198.51.100.0/24", "documentation"),
    _v4("203.0.113.0/24", "documentation"),
    _v4("224.0.0.0/4", "multicast"),
    _v4("255.255.255.255/32", "broadcast"),
    _v4("240.0.0.0/4", "reserved"),
)

_FORBIDDEN_V6 = (
    _v6("::/128", "unspecified"),
    _v6("::1/128", "loopback"),
    _v6("64:ff9b:1::/48", "private"),
    _v6("100::/64", "reserved"),
    _v6("2001:2::/48", "benchmarking"),
    _v6("2001:10::/28", "reserved"),
    _v6("2001:db8::/32", "documentation"),
    _v6("3fff::/20", "documentation"),
    _v6("5f00::/16", "reserved"),
    _v6("fc00::/7", "unique-local"),
    _v6("fe80::/10", "link-local"),
    _v6("fec0::/10", "site-local"),
    _v6("ff00::/8", "multicast"),
)

# Prefixes whose low 32 bits are an IPv4 address the packet really goes to.
_EMBEDS_V4_LOW32 = (
    _v6("::ffff:0:0/96", "IPv4-mapped"),
    _v6("::ffff:0:0:0/96", "IPv4-translated"),
    _v6("64:ff9b::/96", "NAT64"),
    _v6("::/96", "IPv4-compatible"),
)
_SIXTOFOUR = _v6("2002::/16", "6to4")
_TEREDO = _v6("2001::/32", "Teredo")
_GLOBAL_UNICAST = _v6("2000::/3", "global")


def _matches(value: int, entry: tuple[int, int, str]) -> bool:
    return value & entry[1] == entry[0]


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why `ip` must not be a webhook target ("loopback", "private", …), or None if it may."""
    value = int(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        for entry in _FORBIDDEN_V4:
            if _matches(value, entry):
                return entry[2]
        return None
    for entry in _FORBIDDEN_V6:
        if _matches(value, entry):
            return entry[2]
    for entry in _EMBEDS_V4_LOW32:
        if _matches(value, entry):
            return forbidden_reason(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if _matches(value, _SIXTOFOUR):
        return forbidden_reason(ipaddress.IPv4Address((value >> 80) & 0xFFFFFFFF))
    if _matches(value, _TEREDO):
        server, client = ip.teredo or (None, None)
        for embedded in (server, client):
            if embedded is not None and (reason := forbidden_reason(embedded)):
                return reason
        return None
    if not _matches(value, _GLOBAL_UNICAST):
        # everything outside 2000::/3 is unassigned or special-purpose today
        return "reserved"
    return None


def is_forbidden_address(ip: IPAddress) -> bool:
    """True when `ip` is not a public unicast address (SSRF guard)."""
    return forbidden_reason(ip) is not None


def _inet_aton_part(part: str) -> int | None:
    if not part or not part.isascii() or not part[0].isdigit():
        return None
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
        if not digits or any(c not in "0123456789abcdef" for c in digits):
            return None
    elif lowered.startswith("0") and len(lowered) > 1:
        digits, base = lowered[1:], 8
        if any(c not in "01234567" for c in digits):
            return None
    else:
        digits, base = lowered, 10
        if not digits.isdigit():
            return None
    value = int(digits, base)
    return value if value <= 0xFFFFFFFF else None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    # libc accepts 1 to 4 parts (a, a.b, a.b.c, a.b.c.d), each decimal, octal
    # (leading 0) or hex (0x); the last part fills all the remaining bytes.
    parts = host.split(".")
    if len(parts) > 4:
        return None
    values = [_inet_aton_part(p) for p in parts]
    head, last = values[:-1], values[-1]
    if last is None or any(v is None or v > 0xFF for v in head):
        return None
    if last >= 1 << (8 * (5 - len(parts))):
        return None
    value = last
    for index, v in enumerate(head):
        value |= (v or 0) << (24 - 8 * index)
    return ipaddress.IPv4Address(value)


def parse_host_ip(host: str) -> IPAddress | None:
    """The address a URL host denotes if it is an IP literal in any spelling libc accepts."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        address = host.split("%", 1)[0]  # drop a zone id (`%25eth0` in URLs)
        try:
            return ipaddress.IPv6Address(address)
        except ValueError:
            return None
    return _inet_aton(host[:-1] if host.endswith(".") else host)


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


_SAVE_WORDS = {
    "syntax": "The webhook URL is not a valid URL (check the host and port).",
    "relative": "The webhook URL must be absolute, such as https://example.com/webhooks.",
    "scheme": "The webhook URL must use https://.",
    "credentials": "The webhook URL must not contain credentials (user:password@).",
    "port": "The webhook URL's port must be between 1 and 65535.",
    "host": "The webhook URL must include a host name.",
}


def check_webhook_url(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """None when `url` may be saved as a webhook target, else why not in a short sentence."""
    if not url:
        return "A webhook URL is required."
    if len(url) > MAX_URL_LENGTH:
        return f"The webhook URL must be at most {MAX_URL_LENGTH:,} characters."
    # parsers disagree about these (backslash above all), which is how SSRF filters get fooled
    if any(c.isspace() or c == "\\" or not c.isprintable() for c in url):
        return "The webhook URL must not contain spaces, control characters or backslashes."
    try:
        parsed = parse_webhook_url(url)
    except BadURL as exc:
        return _SAVE_WORDS[exc.kind]
    if parsed.scheme == "http" and not allow_http:
        return "The webhook URL must use https://; plain http:// is not allowed."
    host, ip = parsed.host, parsed.ip
    if ip is None:
        if _is_localhost(host) and not allow_private:
            return "The webhook URL must not point to localhost."
        return None
    reason = forbidden_reason(ip)
    if reason is not None and not allow_private:
        return f"The webhook URL must not point to {reason} address {ip}."
    if isinstance(ip, ipaddress.IPv4Address) and host != str(ip):
        # the HTTP client refuses legacy spellings such as 127.1 or 0x7f.0.0.1
        return f"Write the IP address in the webhook URL as four decimal numbers: {ip}."
    return None
