"""Answers as `parcelhook serve` writes them (parcelhook/http_protocol.py), over a raw
loopback connection: the headers of a sized answer are held for its body, never an
interim 100 Continue, and kept-alive connections go on answering."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from support.harness import HarnessFactory

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


async def _answer(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One whole answer: its head, and its body by Content-Length."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    body = await asyncio.wait_for(reader.readexactly(length), 10)
    return head, body


async def test_a_client_that_expects_100_continue_gets_it_before_it_sends_the_body(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    created = await acct.call("POST", "/api/v2/parcels", {"parcel": _PARCEL})
    parcel_id = created.json()["parcel"]["id"]
    auth = base64.b64encode(f"{acct.api.public_key}:{acct.api.secret_key}".encode()).decode()
    body = json.dumps({"status_id": 3}).encode()
    port = int(h.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            (
                f"POST /api/v2/parcels/{parcel_id}/status HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n"
                f"Authorization: Basic {auth}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Expect: 100-continue\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        writer.write(body)
        head, answer = await _answer(reader)
        assert head.startswith(b"HTTP/1.1 200 "), head + answer
        assert json.loads(answer)["parcel"]["status"]["id"] == 3
        # the connection is kept alive and answers again, head and body whole
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head, answer = await _answer(reader)
        assert head.startswith(b"HTTP/1.1 200 ") and json.loads(answer)["status"] == "ok"
    finally:
        writer.close()


_PARCEL = {
    "name": "Ada Lovelace",
    "address": "Stationsplein 1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
}
