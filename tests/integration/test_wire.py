"""The HTTP/1.1 client against scripted endpoints on loopback, on both event loops
(conftest.py runs this module and test_sender.py on asyncio's loop and on uvloop).

Each endpoint answers with exact bytes, so framing cases that a well-behaved server never
produces (interim answers, bodies ended by closing, oversized heads, stray bytes) are
covered; the sender's other tests use a real aiohttp server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from parcelhook.delivery import wire
from parcelhook.delivery.sender import Sender
from parcelhook.delivery.transport import AiohttpTransport, TransportFactory, WireTransport

BODY = b'{"action": "test_webhook"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Scripted:
    """A TCP endpoint that reads one request at a time and answers from a script."""

    def __init__(self, *answers: bytes | Callable[[asyncio.StreamWriter], object]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                answer = self.answers.pop(0)
                if callable(answer):
                    answer(writer)
                    return
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield f"http://127.0.0.1:{self.port}/hook?a=1"
        finally:
            server.close()


def close_after(data: bytes) -> Callable[[asyncio.StreamWriter], object]:
    def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(data)

    return answer


async def send(url: str) -> tuple[int | None, str, str | None]:
    async with Sender(timeout=1.0, allow_private=True, allow_http=True) as sender:
        r = await sender.send(url, BODY, {"Content-Type": "application/json"})
    return r.status_code, r.response_excerpt, r.error


async def test_the_request_on_the_wire() -> None:
    endpoint = Scripted(OK)
    async with endpoint.running() as url:
        assert await send(url) == (200, "ok", None)
    [request] = endpoint.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /hook?a=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{endpoint.port}".encode() in lines
    assert b"Content-Type: application/json" in lines
    assert f"Content-Length: {len(BODY)}".encode() in lines
    assert body == BODY


async def test_interim_answers_are_skipped() -> None:
    endpoint = Scripted(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + OK)
    async with endpoint.running() as url:
        assert await send(url) == (200, "ok", None)


@pytest.mark.parametrize("transport", [WireTransport, AiohttpTransport])
async def test_an_answers_headers_are_kept_capped_in_count_and_length(
    transport: TransportFactory,
) -> None:
    many = b"".join(b"X-N%d: %d\r\n" % (n, n) for n in range(40))
    endpoint = Scripted(
        b"HTTP/1.1 201 Created\r\nX-Trace: caf\xc3\xa9 \xff\r\nX-Long: "
        + b"y" * 1000
        + b"\r\n"
        + many
        + b"Content-Length: 2\r\n\r\nok"
    )
    async with (
        endpoint.running() as url,
        Sender(allow_private=True, allow_http=True, transport=transport) as sender,
    ):
        result = await sender.send(url, BODY, {})
    assert result.status_code == 201
    headers = result.response_headers
    assert len(headers) == wire.HEADERS_KEPT == 32
    # in order; invalid UTF-8 replaced; a long value cut to 256 characters, marked as cut
    assert headers[0] == ("X-Trace", "café \ufffd")
    assert headers[1] == ("X-Long", "y" * 255 + "…")
    assert headers[2:] == tuple((f"X-N{n}", str(n)) for n in range(30))


@pytest.mark.parametrize("transport", [WireTransport, AiohttpTransport])
async def test_invalid_utf8_at_the_edges_of_short_headers_is_replaced_in_each(
    transport: TransportFactory,
) -> None:
    # the common short answer is decoded in one piece: a sequence cut at the end of one
    # header must not swallow the next one's first byte, nor the line between them
    endpoint = Scripted(
        b"HTTP/1.1 200 OK\r\nX-End: caf\xc3\r\nX-Start: \xa9x\r\nX-Both: \xe2\x82\xf0\x9f\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    async with (
        endpoint.running() as url,
        Sender(allow_private=True, allow_http=True, transport=transport) as sender,
    ):
        result = await sender.send(url, BODY, {})
    assert result.response_headers[:3] == (
        ("X-End", "caf\ufffd"),
        ("X-Start", "\ufffdx"),
        ("X-Both", "\ufffd\ufffd"),
    )


async def test_interim_answers_and_trailers_add_no_header() -> None:
    endpoint = Scripted(
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n"
        b"2\r\nok\r\n0\r\nX-Trailer: late\r\n\r\n"
    )
    async with endpoint.running() as url, Sender(allow_private=True, allow_http=True) as sender:
        result = await sender.send(url, BODY, {})
    assert result.response_headers == (("Transfer-Encoding", "chunked"), ("X-Ok", "1"))


async def test_chunked_answer() -> None:
    chunked = (
        b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    endpoint = Scripted(chunked, OK)
    async with endpoint.running() as url, Sender(allow_private=True, allow_http=True) as sender:
        first = await sender.send(url, BODY, {})
        second = await sender.send(url, BODY, {})
    assert (first.status_code, first.response_excerpt) == (202, "abcde")
    assert second.status_code == 200
    assert endpoint.connections == 1  # a chunked answer leaves the connection reusable


async def test_a_body_ended_by_closing_the_connection() -> None:
    endpoint = Scripted(close_after(b"HTTP/1.0 200 OK\r\n\r\nall of it"))
    async with endpoint.running() as url:
        assert await send(url) == (200, "all of it", None)


async def test_connection_close_is_honoured() -> None:
    endpoint = Scripted(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", OK)
    async with endpoint.running() as url, Sender(allow_private=True, allow_http=True) as sender:
        assert (await sender.send(url, BODY, {})).status_code == 200
        assert (await sender.send(url, BODY, {})).status_code == 200
    assert endpoint.connections == 2


async def test_a_cut_off_body_keeps_the_status() -> None:
    endpoint = Scripted(close_after(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"))
    async with endpoint.running() as url:
        status, _, error = await send(url)
    assert (status, error) == (200, "connection closed by endpoint while reading the response")


async def test_closed_without_an_answer() -> None:
    endpoint = Scripted(close_after(b""))
    async with endpoint.running() as url:
        assert await send(url) == (None, "", "connection closed by endpoint without a response")


async def test_an_endless_head_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * (wire.HEAD_LIMIT + 10) + b"\r\n"
    endpoint = Scripted(head)
    async with endpoint.running() as url:
        assert await send(url) == (None, "", "invalid HTTP response from endpoint")


async def two_sends(url: str, apart: float) -> tuple[int | None, int | None]:
    """Two sends `apart` seconds apart on the sender's clock (nothing really waits)."""
    now = 1000.0
    async with Sender(allow_private=True, allow_http=True, clock=lambda: now) as sender:
        first = await sender.send(url, BODY, {})
        now += apart
        second = await sender.send(url, BODY, {})
    return first.status_code, second.status_code


async def test_a_stale_idle_connection_is_replaced_once() -> None:
    endpoint = Scripted(OK, close_after(b""))  # the first connection dies after one answer
    async with endpoint.running() as url:
        endpoint.answers.append(OK)  # ...and a new connection is answered
        assert await two_sends(url, wire.STALE_AFTER_S) == (200, 200)
    assert endpoint.connections == 2


async def test_a_fresh_connection_that_dies_is_not_sent_again() -> None:
    endpoint = Scripted(OK, close_after(b""), OK)
    async with endpoint.running() as url:
        # reused at once: the endpoint saw the request, so this attempt fails as it is
        assert await two_sends(url, 0.0) == (200, None)
    assert len(endpoint.requests) == 2


async def test_idle_connections_are_closed_after_the_keepalive_time() -> None:
    endpoint = Scripted(OK, OK)
    async with endpoint.running() as url:
        assert await two_sends(url, wire.KEEPALIVE_S) == (200, 200)
    assert endpoint.connections == 2


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("ftp://example.com/hook", "only http:// and https:// URLs can receive webhooks"),
        ("https:///hook", "invalid URL: https:///hook"),
        ("https://user:pw@example.com/hook", "invalid URL: example.com"),
        ("https://example.com:99999/hook", "invalid URL: example.com"),
    ],
)
def test_unusable_urls(url: str, error: str) -> None:
    with pytest.raises(wire.InvalidURL) as caught:
        wire.parse_target(url)
    assert str(caught.value) == error


def test_the_request_target_is_encoded_and_the_host_bracketed() -> None:
    target = wire.parse_target("https://[::1]:8443/a b/ü?q=x y")
    assert target.head == b"POST /a%20b/%C3%BC?q=x%20y HTTP/1.1\r\nHost: [::1]:8443\r\n"
    assert (target.host, target.port, target.tls) == ("::1", 8443, True)
    assert wire.parse_target("http://Example.COM/").head.endswith(b"Host: example.com\r\n")


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parcelhook test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def tls_endpoint(tmp_path: Path, endpoint: Scripted) -> AsyncIterator[tuple[str, Path]]:
    cert_file, key_file = _certificate(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    server = await asyncio.start_server(endpoint.serve, "127.0.0.1", 0, ssl=server_ctx)
    try:
        yield f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook", cert_file
    finally:
        server.close()


async def test_https_with_a_trusted_certificate_keeps_the_connection(tmp_path: Path) -> None:
    endpoint = Scripted(OK, OK)
    async with (
        tls_endpoint(tmp_path, endpoint) as (url, cert_file),
        Sender(
            allow_private=True, ssl_context=ssl.create_default_context(cafile=str(cert_file))
        ) as sender,
    ):
        first = await sender.send(url, BODY, {})
        second = await sender.send(url, BODY, {})
    assert (first.status_code, first.response_excerpt, first.error) == (200, "ok", None)
    assert second.status_code == 200
    assert endpoint.connections == 1


async def test_https_with_an_untrusted_certificate(tmp_path: Path) -> None:
    endpoint = Scripted(OK)
    async with tls_endpoint(tmp_path, endpoint) as (url, _):
        status, _, error = await send(url)
    assert status is None
    assert error is not None
    assert error.startswith("TLS handshake failed: certificate verify failed (self")
    assert endpoint.requests == []
