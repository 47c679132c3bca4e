"""The operator's outbound proxy: `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY`, read as curl,
requests and urllib read them.

An egress proxy (smokescreen, squid) is the usual SSRF control in production: when one is
set, webhooks to http:// targets go to it in absolute form and https:// targets through a
CONNECT tunnel (TLS still ends at the endpoint, which must prove its name). The proxy
itself is the operator's and may be a private address; the *target* is still checked by
the SSRF guard, at save time and before each send, as far as this host can resolve it
(the proxy resolves it again, and should enforce its own policy: the last word is its).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

# how a proxy marks an answer as its own refusal (smokescreen, squid)
_REFUSAL_HEADERS = ("X-Smokescreen-Error", "X-Squid-Error")


class ProxyError(OSError):
    """The proxy refused the request or could not be reached; the message is for the user."""


@dataclass(frozen=True, slots=True)
class Proxies:
    """Which proxy (if any) a webhook URL goes through."""

    http: str | None = None
    https: str | None = None
    no_proxy: str = ""

    @classmethod
    def from_environment(cls) -> Proxies | None:
        """`HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` (either case, lower case first, as urllib
        reads them); None when no proxy is set."""
        found = urllib.request.getproxies_environment()
        http, https = found.get("http"), found.get("https")
        if not http and not https:
            return None
        return cls(http or None, https or None, found.get("no", ""))

    def for_url(self, url: str) -> str | None:
        """The proxy URL `url` goes through, or None to connect directly."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme.lower() == "https" else self.http
        if not proxy:
            return None
        host = parts.hostname or ""
        if ":" in host:  # IPv6: urllib would split the address at its last colon
            entries = {e.strip().strip("[]").lower() for e in self.no_proxy.split(",")}
            return None if "*" in entries or host in entries else _with_scheme(proxy)
        netloc = f"{host}:{parts.port}" if parts.port else host
        # urllib's rules: `*`, exact names, domain suffixes (with or without a leading dot),
        # host:port entries; no CIDR ranges (curl and requests differ there)
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if self.no_proxy and bypass(netloc, {"no": self.no_proxy}):
            return None
        return _with_scheme(proxy)


def _with_scheme(proxy: str) -> str:
    return proxy if "://" in proxy else "http://" + proxy


def shown(proxy: str) -> str:
    """`proxy` as it may appear in a log (no credentials)."""
    parts = urlsplit(proxy)
    host = parts.hostname or "?"
    return f"{host}:{parts.port}" if parts.port else host


def refusal(status: int, headers: Mapping[str, str]) -> str | None:
    """Words for an answer that the proxy gave itself, else None (the endpoint's answer).
    `headers` must look names up case-insensitively."""
    for name in _REFUSAL_HEADERS:
        why = headers.get(name)
        if why:
            return f"refused by the proxy: {status} ({why.strip()[:200]})"
    if status == 407:
        return "refused by the proxy: 407 Proxy Authentication Required"
    return None
