"""The ASGI and WSGI adapters behind real frameworks: FastAPI, bare ASGI, Flask, bare WSGI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import flask
import httpx
import pytest
import uvicorn
import werkzeug.test
from click.testing import CliRunner
from fastapi import FastAPI
from starlette.routing import Route

from parcelhook.domain import signing
from parcelhook.receiver import (
    Deduplicator,
    Event,
    ParcelStatus,
    ParcelStatusChanged,
    RefundRequested,
    webhook_app,
    webhook_wsgi_app,
)
from parcelhook.tools.trigger import sample_payload, signed_request, trigger_command

KEY = "Signature-Key-2024!"
SECRET = signing.new_webhook_secret()
PATH = "/webhooks/parcelhook"


def signed(
    action: str = "parcel_status_changed", *, key: str = KEY, timestamp: float | None = None
) -> tuple[bytes, dict[str, str]]:
    now_ms = int((time.time() if timestamp is None else timestamp) * 1000)
    payload = sample_payload(
        action, now_ms=now_ms, status_id=11, url="https://example.com", key=key, secret=SECRET
    )
    return signed_request(payload, key=key, secret=SECRET, now_ms=now_ms)


@dataclass
class Endpoint:
    """One adapter mounted in one framework, with the calls its handler received."""

    post: Callable[[bytes, Mapping[str, str]], Any]
    get: Callable[[], Any]
    calls: list[tuple[Event, Mapping[str, str]]] = field(default_factory=list)
    fail: bool = False

    def record(self, event: Event, headers: Mapping[str, str]) -> None:
        if self.fail:
            raise RuntimeError("database is down")
        self.calls.append((event, headers))


Factory = Callable[..., Endpoint]


async def _status(response: Any) -> tuple[int, Any]:
    """Status and decoded JSON body of an httpx (awaitable) or Werkzeug response."""
    if asyncio.iscoroutine(response):
        response = await response
    if isinstance(response, httpx.Response):
        return response.status_code, response.json()
    return response.status_code, response.get_json(force=True, silent=True)


def _asgi(kind: str, stack: contextlib.AsyncExitStack, options: dict[str, Any]) -> Endpoint:
    endpoint = Endpoint(post=lambda b, h: None, get=lambda: None)

    async def handle(event: Event, headers: Mapping[str, str]) -> None:
        endpoint.record(event, headers)

    app: Any = webhook_app(handle, **options)
    if kind == "fastapi":
        route = Route(PATH, app, methods=["POST"])
        app = FastAPI()
        app.router.routes.append(route)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")
    stack.push_async_callback(client.aclose)
    endpoint.post = lambda body, headers: client.post(PATH, content=body, headers=dict(headers))
    endpoint.get = lambda: client.get(PATH)
    return endpoint


def _wsgi(kind: str, options: dict[str, Any]) -> Endpoint:
    endpoint = Endpoint(post=lambda b, h: None, get=lambda: None)
    hook = webhook_wsgi_app(endpoint.record, **options)
    client: Any = werkzeug.test.Client(hook)
    if kind == "flask":
        app = flask.Flask(__name__)

        @app.post(PATH)
        def view() -> tuple[bytes, int]:
            status, body = hook.respond(flask.request.get_data(), flask.request.headers)
            return body, status

        client = app.test_client()
    endpoint.post = lambda body, headers: client.post(PATH, data=body, headers=dict(headers))
    endpoint.get = lambda: client.get(PATH)
    return endpoint


@pytest.fixture(params=["fastapi", "asgi", "flask", "wsgi"])
async def make_endpoint(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    """Builds the endpoint under test with the given `webhook_app` options."""
    kind: str = request.param
    async with contextlib.AsyncExitStack() as stack:
        yield (
            lambda **options: (
                _asgi(kind, stack, options) if kind in ("fastapi", "asgi") else _wsgi(kind, options)
            )
        )


async def test_a_signed_event_reaches_the_handler_typed(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(key=KEY)
    body, headers = signed()
    assert await _status(endpoint.post(body, headers)) == (200, {"ok": True})
    [(event, seen_headers)] = endpoint.calls
    assert isinstance(event, ParcelStatusChanged)
    assert event.parcel.status is ParcelStatus.DELIVERED
    assert seen_headers["webhook-id"] == headers["webhook-id"]


async def test_bad_or_missing_signature_is_401_and_never_handled(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(key=KEY)
    body, headers = signed(key="Another-Key-2024!")
    assert (await _status(endpoint.post(body, headers)))[0] == 401
    del headers["Sendcloud-Signature"]
    assert (await _status(endpoint.post(body, headers)))[0] == 401
    assert endpoint.calls == []


async def test_malformed_json_is_400(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(key=KEY)
    body = b'{"action": "parcel_status_changed", '
    headers = {"Sendcloud-Signature": signing.sendcloud_signature(body, KEY)}
    status, answer = await _status(endpoint.post(body, headers))
    assert status == 400 and "JSON" in answer["error"]
    assert endpoint.calls == []


async def test_a_failing_handler_is_500_and_its_retry_is_handled(
    make_endpoint: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = make_endpoint(key=KEY, deduplicator=Deduplicator())
    body, headers = signed("refund_requested")
    endpoint.fail = True
    with caplog.at_level(logging.ERROR, logger="parcelhook.receiver"):
        assert (await _status(endpoint.post(body, headers)))[0] == 500
    assert "database is down" in caplog.text
    endpoint.fail = False
    assert (await _status(endpoint.post(body, headers)))[0] == 200
    [(event, _)] = endpoint.calls
    assert isinstance(event, RefundRequested)


async def test_duplicates_are_acknowledged_but_handled_once(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(key=KEY, deduplicator=Deduplicator())
    body, headers = signed()
    assert await _status(endpoint.post(body, headers)) == (200, {"ok": True})
    assert await _status(endpoint.post(body, headers)) == (200, {"ok": True, "duplicate": True})
    assert len(endpoint.calls) == 1


async def test_standard_webhooks_verification(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(secret=SECRET)
    body, headers = signed()
    assert (await _status(endpoint.post(body, headers)))[0] == 200
    stale_body, stale = signed(timestamp=time.time() - 600)
    status, answer = await _status(endpoint.post(stale_body, stale))
    assert (status, answer["error"]) == (401, "webhook-timestamp is too old")
    forged = headers | {
        "webhook-signature": signing.standard_signature(
            headers["webhook-id"],
            int(headers["webhook-timestamp"]),
            body,
            signing.new_webhook_secret(),
        )
    }
    assert (await _status(endpoint.post(body, forged)))[0] == 401
    assert len(endpoint.calls) == 1


async def test_only_post_is_accepted(make_endpoint: Factory) -> None:
    endpoint = make_endpoint(key=KEY)
    assert (await _status(endpoint.get()))[0] == 405


def test_an_endpoint_without_a_usable_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        webhook_app(lambda event, headers: None)
    with pytest.raises(ValueError, match="key"):
        webhook_wsgi_app(lambda event, headers: None)
    for typo in ("whsec_abc", "whsec_", "whsec_%%"):
        with pytest.raises(ValueError, match="whsec_"):
            webhook_app(lambda event, headers: None, key=KEY, secret=typo)


async def test_sync_handlers_run_off_the_event_loop() -> None:
    threads: list[threading.Thread] = []

    def handle(event: Event, headers: Mapping[str, str]) -> None:
        threads.append(threading.current_thread())

    app = webhook_app(handle, key=KEY)
    body, headers = signed()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        assert (await client.post("/", content=body, headers=headers)).status_code == 200
    assert len(threads) == 1 and threads[0] is not threading.main_thread()


async def test_oversized_bodies_are_413() -> None:
    app = webhook_app(lambda e, h: None, key=KEY)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
        response = await client.post("/", content=b"x" * (2 << 20))
    assert response.status_code == 413


async def test_trigger_reaches_the_app_served_by_uvicorn() -> None:
    received: list[Event] = []

    async def handle(event: Event, headers: Mapping[str, str]) -> None:
        received.append(event)

    config = uvicorn.Config(
        webhook_app(handle, key=KEY, secret=SECRET),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    # listening before uvicorn starts: requests queue in the backlog, no need to poll for readiness
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        url = f"http://127.0.0.1:{port}/"
        args = f"integration_connected --url {url} --key {KEY} --secret {SECRET} --count 2"
        result = await asyncio.to_thread(CliRunner().invoke, trigger_command, args.split())
    finally:
        server.should_exit = True
        await serving
        sock.close()
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.output.splitlines()] == ["200", "200"]
    assert [e.action for e in received] == ["integration_connected"] * 2
