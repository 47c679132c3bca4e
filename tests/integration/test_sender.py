"""The sender against a real, misbehaving endpoint on loopback."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from parcelhook import __version__
from parcelhook.delivery.sender import Sender, check_target_resolves
from parcelhook.delivery.transport import AiohttpTransport, TransportFactory, WireTransport
from support.dns import StaticResolver
from support.hostile_receiver import HostileReceiver, Mode, not_tls_server, refused_port

BODY = b'{"action": "test_webhook", "timestamp": 1700000000000}'
SIGNATURE = "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a"
HEADERS = {"Content-Type": "application/json", "Sendcloud-Signature": SIGNATURE}


@pytest.fixture(params=[WireTransport, AiohttpTransport], ids=["wire", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> TransportFactory:
    """Every sender here runs on each transport: what it reports must not depend on it."""
    factory: TransportFactory = request.param
    return factory


@pytest.fixture
async def receiver() -> AsyncIterator[HostileReceiver]:
    async with HostileReceiver() as r:
        yield r


@pytest.fixture
async def sender(transport: TransportFactory) -> AsyncIterator[Sender]:
    async with Sender(timeout=1.0, allow_private=True, allow_http=True, transport=transport) as s:
        yield s


@pytest.fixture
async def quick_sender(transport: TransportFactory) -> AsyncIterator[Sender]:
    async with Sender(timeout=0.5, allow_private=True, allow_http=True, transport=transport) as s:
        yield s


async def test_delivers_the_exact_bytes_and_headers(
    receiver: HostileReceiver, sender: Sender
) -> None:
    result = await sender.send(receiver.url("/hooks?x=1"), BODY, HEADERS)

    assert result.succeeded
    assert (result.status_code, result.response_excerpt, result.error) == (200, "ok", None)
    assert 0 <= result.duration_ms < 1000
    [request] = receiver.requests
    assert (request.method, request.path, request.query_string) == ("POST", "/hooks", "x=1")
    assert request.body == BODY
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Sendcloud-Signature"] == SIGNATURE
    assert request.headers["User-Agent"] == f"parcelhook/{__version__}"
    assert request.headers["Content-Length"] == str(len(BODY))
    # no compression was asked for, so none can be forced on the bounded read
    assert "Accept-Encoding" not in request.headers


@pytest.mark.parametrize("code", [400, 404, 410, 500, 502])
async def test_error_statuses_are_reported_as_statuses(
    receiver: HostileReceiver, sender: Sender, code: int
) -> None:
    receiver.mode = Mode.status(code, body=b"nope")
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error, result.response_excerpt) == (code, None, "nope")
    assert not result.succeeded


@pytest.mark.parametrize("code", [429, 503])
async def test_retry_after_in_seconds(receiver: HostileReceiver, sender: Sender, code: int) -> None:
    receiver.mode = Mode.status(code, retry_after="120")
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.retry_after) == (code, 120.0)


async def test_retry_after_as_an_http_date(receiver: HostileReceiver, sender: Sender) -> None:
    receiver.mode = Mode.status(
        503, retry_after=email.utils.formatdate(time.time() + 90, usegmt=True)
    )
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert result.retry_after is not None
    assert 85 <= result.retry_after <= 91


@pytest.mark.parametrize("value", ["soon", "-5", "1.5e3", ""])
async def test_unreadable_retry_after_is_ignored(
    receiver: HostileReceiver, sender: Sender, value: str
) -> None:
    receiver.mode = Mode.status(429, retry_after=value)
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.retry_after) == (429, None)


async def test_no_retry_after_header(receiver: HostileReceiver, sender: Sender) -> None:
    receiver.mode = Mode.status(503)
    assert (await sender.send(receiver.url(), BODY, HEADERS)).retry_after is None


@pytest.mark.parametrize("code", [301, 302, 307, 308])
async def test_redirects_are_not_followed(
    receiver: HostileReceiver, sender: Sender, code: int
) -> None:
    receiver.mode = Mode.redirect(code, location=receiver.url("/moved"))
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (code, None)
    assert not result.succeeded
    await asyncio.sleep(0.05)
    assert [r.path for r in receiver.requests] == ["/hook"]


async def test_an_endpoint_that_never_answers_times_out(
    receiver: HostileReceiver, quick_sender: Sender
) -> None:
    receiver.mode = Mode.hang()
    result = await quick_sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "timed out after 0.5 s")
    assert 450 <= result.duration_ms < 900


async def test_a_trickling_body_ends_at_the_total_timeout(
    receiver: HostileReceiver, quick_sender: Sender
) -> None:
    # a byte every 0.1 s would satisfy any per-read timeout; only a total deadline stops it
    receiver.mode = Mode.trickle(interval=0.1, size=100)
    result = await quick_sender.send(receiver.url(), BODY, HEADERS)
    assert result.status_code == 200
    assert result.error == "timed out after 0.5 s while reading the response"
    assert not result.succeeded
    assert 450 <= result.duration_ms < 900


async def test_a_huge_body_is_read_only_up_to_the_limit(
    receiver: HostileReceiver, sender: Sender
) -> None:
    receiver.mode = Mode.huge(10 * 1024 * 1024)
    tracemalloc.start()
    try:
        result = await sender.send(receiver.url(), BODY, HEADERS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (result.status_code, result.error) == (200, None)
    assert result.response_excerpt == "x" * 1024
    assert result.duration_ms < 500
    assert peak < 3 * 1024 * 1024  # the receiver's 10 MiB never sat in our memory


async def test_a_body_far_beyond_the_limit_is_not_read_to_the_end(
    receiver: HostileReceiver, sender: Sender
) -> None:
    receiver.mode = Mode.huge(1024**3)  # reading a GiB would not fit in the 1 s timeout
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (200, None)
    assert result.duration_ms < 500


async def test_a_truncated_read_does_not_put_the_connection_back(
    receiver: HostileReceiver, sender: Sender
) -> None:
    receiver.play(Mode.huge(1024 * 1024))
    await sender.send(receiver.url(), BODY, HEADERS)
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (200, None)
    # the unread rest of the first body would otherwise be parsed as the next response
    assert receiver.connections_accepted == 2


async def test_a_reset_mid_body_keeps_the_status(receiver: HostileReceiver, sender: Sender) -> None:
    receiver.mode = Mode.reset()
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert result.status_code == 200
    assert result.error == "connection reset by peer while reading the response"
    assert not result.succeeded


async def test_a_reset_before_any_answer(receiver: HostileReceiver, sender: Sender) -> None:
    receiver.mode = Mode.reset(partial_body=False)
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "connection reset by peer")


async def test_an_answer_that_is_not_http(receiver: HostileReceiver, sender: Sender) -> None:
    receiver.mode = Mode.garbage()
    result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "invalid HTTP response from endpoint")


async def test_tls_handshake_failure(sender: Sender) -> None:
    async with not_tls_server() as port:
        result = await sender.send(f"https://127.0.0.1:{port}/hook", BODY, HEADERS)
    assert result.status_code is None
    assert result.error == "TLS handshake failed: wrong version number"


async def test_connection_refused(sender: Sender) -> None:
    with refused_port() as port:
        result = await sender.send(f"http://127.0.0.1:{port}/hook", BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "connection refused")


async def test_unknown_host(transport: TransportFactory) -> None:
    resolver = StaticResolver({})
    async with Sender(
        timeout=1.0, allow_private=True, resolver=resolver, transport=transport
    ) as sender:
        result = await sender.send("https://example.invalid/hook", BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "could not resolve host example.invalid")
    assert resolver.lookups == ["example.invalid"]


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "https:///hook", "https://[::1/x"])
async def test_unusable_urls_are_errors_not_exceptions(sender: Sender, url: str) -> None:
    result = await sender.send(url, BODY, HEADERS)
    assert result.status_code is None
    assert result.error


async def test_plain_http_is_refused_unless_allowed(
    receiver: HostileReceiver, transport: TransportFactory
) -> None:
    async with Sender(
        timeout=1.0, allow_private=True, allow_http=False, transport=transport
    ) as sender:
        result = await sender.send(receiver.url(), BODY, HEADERS)
    assert (result.status_code, result.error) == (None, "plain http:// targets are not allowed")
    assert receiver.connections_accepted == 0


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ("127.0.0.1", "refused by SSRF guard: loopback address 127.0.0.1"),
        ("localhost", "refused by SSRF guard: localhost resolves to loopback address "),
        ("0x7f.0.0.1", "refused by SSRF guard: 0x7f.0.0.1 resolves to loopback address 127.0.0.1"),
        ("[::ffff:127.0.0.1]", "refused by SSRF guard: loopback address ::ffff:7f00:1"),
        ("[::1]", "refused by SSRF guard: loopback address ::1"),
    ],
)
async def test_the_ssrf_guard_refuses_at_connect_time(
    receiver: HostileReceiver, host: str, error: str, transport: TransportFactory
) -> None:
    async with Sender(
        timeout=1.0, allow_private=False, allow_http=True, transport=transport
    ) as sender:
        result = await sender.send(f"http://{host}:{receiver.port}/hook", BODY, HEADERS)
    assert result.status_code is None
    assert result.error is not None
    assert result.error.startswith(error)
    assert receiver.connections_accepted == 0


@pytest.mark.parametrize("host", ["127.1", "2130706433", "0177.0.0.1"])
async def test_legacy_ipv4_spellings_never_connect(
    receiver: HostileReceiver, host: str, transport: TransportFactory
) -> None:
    async with Sender(
        timeout=1.0, allow_private=False, allow_http=True, transport=transport
    ) as sender:
        result = await sender.send(f"http://{host}:{receiver.port}/hook", BODY, HEADERS)
    assert result.status_code is None
    assert result.error
    assert receiver.connections_accepted == 0


async def test_dns_rebinding_is_caught_at_connect_time(
    receiver: HostileReceiver, transport: TransportFactory
) -> None:
    # the name passed the save-time check; now it points inside the network
    resolver = StaticResolver({"hooks.example.com": ["93.184.216.34", "10.0.0.1"]})
    async with Sender(
        timeout=1.0, allow_http=True, resolver=resolver, transport=transport
    ) as sender:
        result = await sender.send(f"http://hooks.example.com:{receiver.port}/", BODY, HEADERS)
    assert result.error == (
        "refused by SSRF guard: hooks.example.com resolves to private address 10.0.0.1"
    )


async def test_private_targets_connect_when_allowed(
    receiver: HostileReceiver, transport: TransportFactory
) -> None:
    resolver = StaticResolver({"hooks.internal": ["127.0.0.1"]})
    async with Sender(
        allow_private=True, allow_http=True, resolver=resolver, transport=transport
    ) as sender:
        result = await sender.send(f"http://hooks.internal:{receiver.port}/", BODY, HEADERS)
    assert (result.status_code, result.error) == (200, None)


async def test_keep_alive_reuses_one_connection(receiver: HostileReceiver, sender: Sender) -> None:
    for _ in range(50):
        assert (await sender.send(receiver.url(), BODY, HEADERS)).succeeded
    assert len(receiver.requests) == 50
    assert receiver.connections_accepted == 1


async def test_concurrent_sends_share_the_pool(receiver: HostileReceiver, sender: Sender) -> None:
    results = await asyncio.gather(*(sender.send(receiver.url(), BODY, HEADERS) for _ in range(50)))
    assert all(r.succeeded for r in results)
    opened = receiver.connections_accepted
    await asyncio.gather(*(sender.send(receiver.url(), BODY, HEADERS) for _ in range(50)))
    assert receiver.connections_accepted == opened


async def test_sequence_of_modes_fail_twice_then_ok(
    receiver: HostileReceiver, sender: Sender
) -> None:
    receiver.route("/flaky", Mode.status(500), Mode.reset(partial_body=False), Mode.ok())
    codes = [
        (await sender.send(receiver.url("/flaky"), BODY, HEADERS)).status_code for _ in range(4)
    ]
    assert codes == [500, None, 200, 200]
    assert (await sender.send(receiver.url("/other"), BODY, HEADERS)).status_code == 200


async def test_no_secret_reaches_the_logs(
    receiver: HostileReceiver, quick_sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for mode in (Mode.ok(), Mode.status(500), Mode.garbage(), Mode.reset(), Mode.hang()):
        receiver.mode = mode
        await quick_sender.send(receiver.url(), BODY, HEADERS)
    logged = caplog.text + "".join(repr(r.args) for r in caplog.records)
    assert SIGNATURE not in logged
    assert BODY.decode() not in logged


async def test_a_closed_sender_refuses_to_reopen(
    receiver: HostileReceiver, transport: TransportFactory
) -> None:
    sender = Sender(allow_private=True, allow_http=True, transport=transport)
    assert (await sender.send(receiver.url(), BODY, HEADERS)).succeeded  # opens lazily
    await sender.close()
    await sender.close()
    with pytest.raises(RuntimeError):
        await sender.send(receiver.url(), BODY, HEADERS)


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://localhost/hook", True),
        ("https://127.0.0.1/hook", True),
        ("https://0x7f.1/hook", True),
        ("https://[::1]/hook", True),
        ("https://example.invalid/hook", False),  # may be a transient DNS failure
        ("https://93.184.216.34/hook", False),
    ],
)
async def test_check_target_resolves(url: str, refused: bool) -> None:
    problem = await check_target_resolves(url, allow_private=False)
    assert (problem is not None) == refused
    assert await check_target_resolves(url, allow_private=True) is None


async def test_check_target_resolves_names_the_address() -> None:
    problem = await check_target_resolves("https://localhost:8443/", allow_private=False)
    assert problem is not None
    # 127.0.0.1 or ::1, whichever the system's resolver lists first
    assert problem.startswith("The webhook URL's host localhost resolves to loopback address ")
