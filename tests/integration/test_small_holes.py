"""Small holes found by trying parcelhook as a hostile user would, each closed."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet

from parcelhook.cli import proxy_trust
from parcelhook.store import Store
from parcelhook.store.crypto import SecretBox
from support.harness import HarnessFactory
from support.panel_client import sign_in


async def test_a_log_page_with_a_non_ascii_digit_cursor_is_not_an_error(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account("digits@example.com")
    await h.service.set_password(acct.account_id, "password123")
    panel = await sign_in(h.base_url, "digits@example.com", "password123")
    try:
        for before in ("²", "١٢", "𝟙", "12"):
            r = await panel.get(f"/settings/integrations/{acct.api.id}/log?before={before}")
            assert r.status_code == 200, (before, r.status_code)
        r = await panel.get(f"/settings/integrations/{acct.api.id}/log?notice=redelivered&count=²")
        assert r.status_code == 200
    finally:
        await panel.aclose()


@pytest.mark.parametrize("url", ["javascript:alert(1)", " JavaScript:x", "data:text/html,x", "//e"])
async def test_shop_url_must_be_http_or_https(harness: HarnessFactory, url: str) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    new = {"shop_name": "S", "system": "shopify", "shop_url": url}
    r = await acct.call("POST", "/api/v2/integrations", new)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "shop_url"
    r = await acct.call("PATCH", f"/api/v2/integrations/{acct.api.id}", {"shop_url": url})
    assert r.status_code == 400, r.text  # Sendcloud's endpoint: 400 for invalid input
    assert r.json()["error"]["field"] == "shop_url"
    r = await acct.call(
        "PATCH",
        f"/api/v2/integrations/{acct.api.id}",
        {"shop_url": "https://shop.example.com/"},
    )
    assert r.status_code == 200, r.text


async def test_bodies_that_are_not_utf8_or_nest_too_deep_are_malformed_json(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account()
    for body in (
        b'{"parcel": {"name": "\xff\xfe"}}',
        b'{"parcel": {"name": "\xc3"}}',
        b'{"parcel": ' * 20_000 + b"1" + b"}" * 20_000,
    ):
        r = await acct.client.post(
            "/api/v2/parcels", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        # POST /parcels is Sendcloud's endpoint: its error body has the status in `code`
        assert r.json()["error"]["code"] == 400, r.text
        assert r.json()["error"]["message"] == "The request body is not valid JSON.", r.text


async def test_sqlite_database_and_wal_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "private.db"
    store = Store.open(f"sqlite:///{db}", SecretBox(Fernet.generate_key()))
    try:
        await store.migrate(1_800_000_000_000)
        async with store.transaction() as tx:
            await tx.create_account("p@example.com", "hash", 1)
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            assert path.exists(), path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    finally:
        await store.close()


async def _client_address_seen(forwarded_allow_ips: str) -> str:
    """The client address an app sees through uvicorn when a loopback client sends
    X-Forwarded-For."""
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(scope["client"][0])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, log_level="warning", lifespan="off", **proxy_trust(forwarded_allow_ips)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:  # noqa: ASYNC110 (uvicorn offers no event)
            await asyncio.sleep(0.01)
        port = sock.getsockname()[1]
        async with httpx.AsyncClient() as client:
            r = await client.get(
                f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "203.0.113.9"}
            )
            assert r.status_code == 204
    finally:
        server.should_exit = True
        await task
    return seen[0]


async def test_forwarding_headers_are_trusted_only_from_configured_proxies() -> None:
    # uvicorn alone would trust a loopback client's X-Forwarded-For
    assert await _client_address_seen("") == "127.0.0.1"
    assert await _client_address_seen("192.0.2.1") == "127.0.0.1"
    assert await _client_address_seen("127.0.0.1") == "203.0.113.9"
