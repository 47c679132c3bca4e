"""The SSRF guard, end to end on SQLite and PostgreSQL: webhook URLs that point inside the
network are refused when saved (422 on `webhook_url`) and again at connect time, where a
host name that resolves to a private address (DNS rebinding) never gets a request."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver

from parcelhook.config import Settings
from parcelhook.delivery.transport import AiohttpTransport, TransportFactory, WireTransport
from parcelhook.domain import deliveries as dl
from parcelhook.domain.retry import RetryPolicy
from parcelhook.domain.targets import forbidden_reason, parse_host_ip
from parcelhook.runtime import Runtime
from support.db_snapshot import changed_tables, snapshot
from support.dns import StaticResolver
from support.harness import MASTER_KEY, Account, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
REBOUND = "rebind.parcelhook.test"  # unresolvable when saved; the test's resolver says 127.0.0.1


async def strict_harness(
    factory: HarnessFactory,
    *,
    allow_http: bool = False,
    dispatcher: bool = True,
    transport: TransportFactory = WireTransport,
    resolver: AbstractResolver | None = None,
) -> Harness:
    """A parcelhook with the production target policy: no private targets, https only.

    HarnessFactory always turns both allowances on (passing them again is a TypeError).
    """
    settings = Settings(
        database_url=factory.database_url,
        master_key=MASTER_KEY,
        key_file=factory.tmp_path / "unused.key",
        allow_private_targets=False,
        allow_http_targets=allow_http,
        timeout=1.0,
        retry=RetryPolicy(delays=()),
        dispatcher=dispatcher,
    )
    h = Harness(Runtime(settings, transport=transport, resolver=resolver))
    factory.harnesses.append(h)
    await h.start()
    return h


@pytest.fixture(params=[WireTransport, AiohttpTransport], ids=["wire", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> TransportFactory:
    """The connect-time guard runs on each transport: both go through the same resolver."""
    factory: TransportFactory = request.param
    return factory


def _hostname_resolving_inside() -> list[str]:
    """This machine's own name when the system resolver maps it to a forbidden address
    (`/etc/hosts` usually says loopback or the container's private address)."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)
    except OSError:
        return []
    ips = [parse_host_ip(str(info[4][0])) for info in infos]
    return [f"https://{name}/hook"] if all(ip and forbidden_reason(ip) for ip in ips) else []


REFUSED = [
    # private, shared, loopback, link-local (the cloud metadata service), multicast,
    # reserved, broadcast, unspecified: IPv4
    "https://10.0.0.1/hook",
    "https://172.16.5.4/hook",
    "https://192.168.1.1:8443/hook",
    "https://100.64.0.1/hook",
    "https://127.0.0.1/hook",
    "https://127.255.255.254/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://224.0.0.1/hook",
    "https://239.255.255.250/hook",
    "https://240.0.0.1/hook",
    "https://192.0.0.8/hook",
    "https://198.18.0.1/hook",
    "https://255.255.255.255/hook",
    "https://0.0.0.0/hook",
    "https://0.1.2.3/hook",
    "https://127.0.0.1./hook",
    # IPv6, IPv4-mapped/compatible/NAT64/6to4 wrappings of private addresses, zone ids
    "https://[::1]/hook",
    "https://[::]/hook",
    "https://[fe80::1]/hook",
    "https://[fe80::1%25eth0]/hook",
    "https://[fc00::1]/hook",
    "https://[fd12:3456::1]/hook",
    "https://[ff02::1]/hook",
    "https://[fec0::1]/hook",
    "https://[::ffff:127.0.0.1]/hook",
    "https://[::ffff:7f00:1]/hook",
    "https://[::ffff:10.0.0.1]/hook",
    "https://[::ffff:169.254.169.254]/hook",
    "https://[::127.0.0.1]/hook",
    "https://[64:ff9b::7f00:1]/hook",
    "https://[2002:7f00:1::]/hook",
    "https://[2001:db8::1]/hook",
    # decimal, octal, hex and short spellings of 127.0.0.1 (all of which libc accepts)
    "https://2130706433/hook",
    "https://0177.0.0.1/hook",
    "https://017700000001/hook",
    "https://0x7f000001/hook",
    "https://0x7f.0.0.1/hook",
    "https://0x7F.1/hook",
    "https://127.1/hook",
    "https://127.0.1/hook",
    "https://0/hook",
    # localhost by name, however written
    "https://localhost/hook",
    "https://LOCALHOST/hook",
    "https://localhost./hook",
    "https://api.localhost/hook",
    "https://localhost:443/hook",
    # full-width dots that IDNA turns into 127.0.0.1
    "https://127\u30020\u30020\u30021/hook",
    # plain http is refused when not allowed, however public the host
    "http://93.184.216.34/hook",
    "HTTP://example.com/hook",
    # parser confusion
    "https://example.com\\@127.0.0.1/hook",
    "https://user:pw@example.com/hook",
    *_hostname_resolving_inside(),
]


async def test_internal_targets_are_refused_when_saved(harness: HarnessFactory) -> None:
    h = await strict_harness(harness)
    acct = await h.account()
    before = await snapshot(h.store)
    wrong = []
    for url in REFUSED:
        answers = [
            await acct.call(
                "POST",
                "/api/v2/integrations",
                {"shop_name": "S", "system": "bol", "webhook_url": url},
            ),
            await acct.call(
                "PATCH",
                f"/api/v2/integrations/{acct.api.id}",
                {"webhook_active": True, "webhook_url": url},
            ),
            await acct.call(
                "POST",
                f"/api/v2/integrations/{acct.api.id}/webhook-test",
                {"integration": {"webhook_url": url}},
            ),
        ]
        for r in answers:
            error = r.json().get("error", {})
            # Sendcloud's own endpoint (the PATCH) says 400, parcelhook's own ones 422
            status = 400 if r.request.method == "PATCH" else 422
            if r.status_code != status or error.get("field") != "webhook_url":
                wrong.append(f"{r.request.method} {r.request.url.path} {url!r} -> {r.text}")
    assert wrong == [], "\n".join(wrong)
    assert changed_tables(before, await snapshot(h.store)) == []
    # the words say what is wrong, in the user's terms
    r = await acct.call(
        "PATCH",
        f"/api/v2/integrations/{acct.api.id}",
        {"webhook_url": "https://[::ffff:169.254.169.254]/"},
    )
    assert "link-local" in r.json()["error"]["message"]
    r = await acct.call(
        "PATCH",
        f"/api/v2/integrations/{acct.api.id}",
        {"webhook_url": "http://93.184.216.34/"},
    )
    assert "https://" in r.json()["error"]["message"]
    # public targets and names that do not resolve yet are accepted (checked at connect time)
    for url in ("https://93.184.216.34/hook", "https://hooks.example.invalid/hook"):
        r = await acct.call(
            "POST",
            "/api/v2/integrations",
            {"shop_name": "S", "system": "bol", "webhook_url": url},
        )
        assert r.status_code == 201, (url, r.text)


async def _only_attempt(h: Harness, acct: Account, shop_id: int) -> Any:
    async def settled() -> bool:
        found = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
        return len(found) == 1 and found[0].status != dl.PENDING

    await eventually(settled, within=10, what="the delivery to settle")
    (d,) = await h.service.list_deliveries(acct.account_id, integration_id=shop_id)
    (attempt,) = (await h.service.get_delivery(acct.account_id, d.id)).attempts
    return attempt


async def test_dns_rebinding_is_refused_at_connect_time(
    harness: HarnessFactory, transport: TransportFactory
) -> None:
    resolver = StaticResolver(
        {
            REBOUND: ["127.0.0.1"],
            # one public address is not enough: every address must be allowed
            "mixed.parcelhook.test": ["93.184.216.34", "10.1.2.3"],
        }
    )
    h = await strict_harness(harness, allow_http=True, transport=transport, resolver=resolver)
    acct = await h.account()
    async with HostileReceiver() as rx:
        rebound = await acct.shop(f"http://{REBOUND}:{rx.port}/hook")
        mixed = await acct.shop(f"http://mixed.parcelhook.test:{rx.port}/hook")
        for shop_id in (rebound, mixed):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
            )
            assert r.status_code == 200
        attempt = await _only_attempt(h, acct, rebound)
        assert attempt.status_code is None
        assert attempt.error == (
            f"refused by SSRF guard: {REBOUND} resolves to loopback address 127.0.0.1"
        )
        attempt = await _only_attempt(h, acct, mixed)
        assert attempt.error == (
            "refused by SSRF guard: mixed.parcelhook.test resolves to private address 10.1.2.3"
        )
        # the Test button goes through the same guard
        r = await acct.call(
            "POST",
            f"/api/v2/integrations/{rebound}/webhook-test",
            {"integration": {"webhook_url": f"http://{REBOUND}:{rx.port}/typed"}},
        )
        assert r.status_code == 200
        assert r.json()["delivered"] is False
        assert r.json()["error"].startswith(f"refused by SSRF guard: {REBOUND} resolves to")
        assert REBOUND in resolver.lookups  # the refusal came from resolving, not from luck
        assert rx.connections_accepted == 0 and rx.requests == []


async def test_the_same_name_is_delivered_when_private_targets_are_allowed(
    harness: HarnessFactory, transport: TransportFactory
) -> None:
    # allow_private_targets=True, as in the local quick start
    resolver = StaticResolver({REBOUND: ["127.0.0.1"]})
    h = await harness(timeout=1.0, transport=transport, resolver=resolver)
    acct = await h.account()
    async with HostileReceiver() as rx:
        shop_id = await acct.shop(f"http://{REBOUND}:{rx.port}/hook")
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
        )
        assert r.status_code == 200
        attempt = await _only_attempt(h, acct, shop_id)
        assert (attempt.status_code, attempt.error) == (200, None)
        (request,) = rx.requests
        assert request.headers["Host"] == f"{REBOUND}:{rx.port}"


async def test_targets_saved_under_a_looser_policy_are_refused_at_connect_time(
    harness: HarnessFactory, transport: TransportFactory
) -> None:
    # saved while the operator allowed private targets, delivered after they stopped
    loose = await harness(dispatcher=False)
    acct = await loose.account()
    async with HostileReceiver() as rx:
        literal = await acct.shop(rx.url("/hook"))
        mapped = await acct.shop(f"http://[::ffff:127.0.0.1]:{rx.port}/hook")
        named = await acct.shop(f"http://localhost:{rx.port}/hook")
        for shop_id in (literal, mapped, named):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
            )
            assert r.status_code == 200
        strict = await strict_harness(harness, allow_http=True, transport=transport)
        attempts = {
            shop_id: await _only_attempt(strict, acct, shop_id)
            for shop_id in (literal, mapped, named)
        }
        assert attempts[literal].error == "refused by SSRF guard: loopback address 127.0.0.1"
        assert attempts[mapped].error == "refused by SSRF guard: loopback address ::ffff:7f00:1"
        assert attempts[named].error.startswith(
            "refused by SSRF guard: localhost resolves to loopback address"
        )
        assert all(a.status_code is None for a in attempts.values())
        assert rx.connections_accepted == 0 and rx.requests == []
