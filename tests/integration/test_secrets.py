"""Secrets stay secret, on SQLite and PostgreSQL.

A full scenario (integrations with signature keys, deliveries, the Test button, failures,
redelivery, rotation, the panel) runs with every logger at DEBUG and uvicorn's access log
on. Afterwards: no secret of any kind is in any log line; no signature key is in any
response; API keys and `whsec_` secrets reach only their owner; and at rest every secret is
a Fernet token, in the rows and in the SQLite files.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.fernet import Fernet
from sqlalchemy import select

from parcelhook.app import create_app
from parcelhook.config import Settings
from parcelhook.domain.clock import FakeClock
from parcelhook.domain.retry import RetryPolicy
from parcelhook.panel.sessions import signing_secret
from parcelhook.runtime import Runtime
from parcelhook.store import masterkey, schema
from parcelhook.store.tx import integration_from_row
from support.harness import MASTER_KEY, Harness, HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode
from support.panel_client import PanelSession, sign_in

PASSWORD = "password123"  # what the harness gives every account
KEYS = {
    "api": "Api-Signature-Key#1",
    "api_rotated": "Api-Signature-Key#2",
    "shop": "Shop/Signature-Key9",
    "typed": "Typed+Only-Key-42",
    "panel_typed": "Panel+Typed-Key-77",
    "weak": "weak-but-still-secret-value",
    "too_long": "L0ng!" + "k" * 1100,
}
PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
# aiosqlite's DEBUG log prints every statement with its parameters: a known leak, set
# aside here and pinned by test_debug_logging_does_not_echo_sql_parameters
SQL_ECHO = ("aiosqlite",)
# where an integration's API keys and whsec_ secret may be shown: to its owner, on the
# integration's own object (API) or its Configure page (panel)
OWNER_PAGES = re.compile(
    r"^(GET|POST|PUT|PATCH) (/api/v2/integrations(/\d+(/rotate-webhook-secret)?)?"
    r"|/settings/integrations/\d+(/test)?)$"
)


@dataclass
class Seen:
    """Every HTTP answer of the scenario, by the account that asked."""

    responses: list[tuple[str, str, str]] = field(default_factory=list)  # who, what, text

    def hook(self, who: str) -> Any:
        async def record(response: httpx.Response) -> None:
            await response.aread()
            head = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
            what = f"{response.request.method} {response.request.url.path}"
            self.responses.append((who, what, head + "\n\n" + response.text))

        return record


@pytest.fixture
def restore_uvicorn_loggers() -> Iterator[None]:
    names = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    saved = {
        n: (
            logging.getLogger(n).level,
            logging.getLogger(n).propagate,
            logging.getLogger(n).handlers[:],
        )
        for n in names
    }
    yield
    for n, (level, propagate, handlers) in saved.items():
        logger = logging.getLogger(n)
        logger.setLevel(level)
        logger.propagate = propagate
        logger.handlers[:] = handlers


async def debug_server(runtime: Runtime) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    """The app on loopback with uvicorn at DEBUG and its access log going to the root logger."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        create_app(runtime, manage_runtime=False),
        log_level="debug",
        access_log=True,
        log_config=None,
        lifespan="off",
    )
    # uvicorn's own configuration (applied by earlier servers) stops propagation at "uvicorn"
    for name in ("uvicorn", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: server.started, what="the debug server")
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server, task


@pytest.fixture
async def receiver() -> AsyncIterator[HostileReceiver]:
    async with HostileReceiver() as rx:
        yield rx


async def settle(h: Harness, account_id: int) -> None:
    async def none_pending() -> bool:
        return not await h.service.list_deliveries(account_id, status="pending")

    await eventually(none_pending, what="every delivery to settle")


async def scenario(
    h: Harness, clock: FakeClock, base_url: str, rx: HostileReceiver, seen: Seen
) -> dict[str, Any]:
    a = await h.account("owner-a@example.com")
    b = await h.account("owner-b@example.com")
    api_a = httpx.AsyncClient(
        base_url=base_url,
        auth=(a.api.public_key, a.api.secret_key),
        event_hooks={"response": [seen.hook("a")]},
    )
    api_b = httpx.AsyncClient(
        base_url=base_url,
        auth=(b.api.public_key, b.api.secret_key),
        event_hooks={"response": [seen.hook("b")]},
    )
    panels: list[PanelSession] = []
    try:
        rx.route("/flaky", Mode.status(500, body=b"try later"), Mode.ok())
        rx.route("/down", Mode.status(503, body=b"down"))
        rx.route("/fail", Mode.status(500))

        async def call(client: httpx.AsyncClient, method: str, path: str, body: Any = None) -> Any:
            r = await client.request(method, path, json=body)
            return r

        r = await call(
            api_a,
            "PATCH",
            f"/api/v2/integrations/{a.api.id}",
            {
                "webhook_active": True,
                "webhook_url": rx.url("/a"),
                "webhook_signature_key": KEYS["api"],
            },
        )
        assert r.status_code == 200, r.text
        r = await call(
            api_a,
            "POST",
            "/api/v2/integrations",
            {
                "shop_name": "Shop",
                "system": "shopify",
                "webhook_active": True,
                "webhook_url": rx.url("/flaky"),
                "webhook_signature_key": KEYS["shop"],
            },
        )
        assert r.status_code == 201, r.text
        shop = r.json()["id"]
        assert "secret_key" not in r.json()
        r = await call(
            api_a,
            "POST",
            "/api/v2/integrations",
            {
                "shop_name": "Down",
                "system": "bol",
                "webhook_active": True,
                "webhook_url": rx.url("/down"),
            },
        )
        down = r.json()["id"]
        r = await call(
            api_a,
            "POST",
            "/api/v2/integrations",
            {
                "shop_name": "Second app",
                "system": "api",
                "webhook_active": True,
                "webhook_url": rx.url("/second"),
            },
        )
        assert r.status_code == 201 and r.json()["webhook_secret"].startswith("whsec_")
        second = r.json()["id"]

        # the Test button, with keys typed and never saved
        r = await call(
            api_a,
            "POST",
            f"/api/v2/integrations/{shop}/webhook-test",
            {
                "integration": {
                    "webhook_url": rx.url("/typed"),
                    "webhook_signature_key": KEYS["typed"],
                }
            },
        )
        assert r.json()["delivered"] is True
        r = await call(
            api_a,
            "POST",
            f"/api/v2/integrations/{shop}/webhook-test",
            {
                "integration": {
                    "webhook_url": rx.url("/fail"),
                    "webhook_signature_key": KEYS["typed"],
                }
            },
        )
        assert r.json()["delivered"] is False
        # refused keys are not echoed in the error
        for key in (KEYS["weak"], KEYS["too_long"]):
            r = await call(
                api_a,
                "PATCH",
                f"/api/v2/integrations/{shop}",
                {"webhook_signature_key": key},
            )
            assert r.status_code == 400 and r.json()["error"]["field"] == "webhook_signature_key"
            r = await call(
                api_a,
                "POST",
                f"/api/v2/integrations/{shop}/webhook-test",
                {"integration": {"webhook_url": rx.url("/typed"), "webhook_signature_key": key}},
            )
            assert r.status_code == 422

        # deliveries: one fails then succeeds, one fails for good and is redelivered
        for shop_id in (shop, down):
            r = await call(
                api_a, "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop_id}}
            )
            assert r.status_code == 200
        parcel = r.json()["parcel"]["id"]

        async def attempted() -> bool:
            for shop_id in (shop, down):
                found = await h.service.list_deliveries(a.account_id, integration_id=shop_id)
                if not found or found[0].attempt_count < 1:
                    return False
            return True

        await eventually(attempted, what="the first attempts")
        await clock.advance(61)
        await settle(h, a.account_id)
        rx.route("/down", Mode.ok())
        r = await call(api_a, "POST", "/api/v2/webhook-deliveries/redeliver", {"status": "failed"})
        assert r.json()["redelivered"] >= 1
        await settle(h, a.account_id)

        # rotation of both secrets; the old whsec_ keeps signing during the grace period
        r = await call(api_a, "POST", f"/api/v2/integrations/{a.api.id}/rotate-webhook-secret")
        assert r.status_code == 200
        r = await call(
            api_a,
            "PATCH",
            f"/api/v2/integrations/{a.api.id}",
            {"webhook_signature_key": KEYS["api_rotated"]},
        )
        assert r.status_code == 200
        await call(api_a, "POST", f"/api/v2/parcels/{parcel}/status", {"status_id": 11})
        await call(api_a, "POST", "/api/v2/parcels", {"parcel": PARCEL})
        await settle(h, a.account_id)

        # every read the owner has
        for path in (
            "/api/v2/integrations",
            f"/api/v2/integrations/{a.api.id}",
            f"/api/v2/integrations/{shop}",
            "/api/v2/webhook-events",
            "/api/v2/webhook-deliveries",
            "/api/v2/parcels",
        ):
            assert (await call(api_a, "GET", path)).status_code == 200
        for d in (await call(api_a, "GET", "/api/v2/webhook-deliveries")).json()["deliveries"]:
            await call(api_a, "GET", f"/api/v2/webhook-deliveries/{d['id']}")
        # the other account, trying its luck
        await call(api_b, "GET", "/api/v2/integrations")
        for path in (f"/api/v2/integrations/{a.api.id}", f"/api/v2/integrations/{shop}"):
            assert (await call(api_b, "GET", path)).status_code == 404
        assert (
            await call(api_b, "POST", f"/api/v2/integrations/{a.api.id}/rotate-webhook-secret")
        ).status_code == 404

        # the panel, as the owner and as the other account
        pa = await sign_in(
            base_url, "owner-a@example.com", PASSWORD, event_hooks={"response": [seen.hook("a")]}
        )
        panels.append(pa)
        pb = await sign_in(
            base_url, "owner-b@example.com", PASSWORD, event_hooks={"response": [seen.hook("b")]}
        )
        panels.append(pb)
        for integration_id in (a.api.id, shop, second):
            assert (await pa.get(f"/settings/integrations/{integration_id}")).status_code == 200
            assert (await pa.get(f"/settings/integrations/{integration_id}/log")).status_code == 200
            assert (await pb.get(f"/settings/integrations/{integration_id}")).status_code == 404
        for d in (
            await call(api_a, "GET", f"/api/v2/webhook-deliveries?integration_id={shop}")
        ).json()["deliveries"]:
            await pa.get(f"/settings/integrations/{shop}/log/{d['id']}")
        r = await pa.post(
            f"/settings/integrations/{shop}/test",
            {"webhook_url": rx.url("/typed"), "webhook_signature_key": KEYS["panel_typed"]},
        )
        assert r.status_code == 200
        r = await pa.post(
            f"/settings/integrations/{shop}",
            {
                "webhook_active": "on",
                "webhook_url": rx.url("/flaky"),
                "webhook_signature_key": KEYS["weak"],
            },
        )
        assert r.status_code == 422

        # and a deletion, whose integration_deleted still goes out
        assert (await call(api_a, "DELETE", f"/api/v2/integrations/{second}")).status_code == 204
        await settle(h, a.account_id)
        return {"a": a, "b": b, "shop": shop, "second": second}
    finally:
        await api_a.aclose()
        await api_b.aclose()
        for p in panels:
            await p.aclose()


async def every_secret(h: Harness) -> dict[str, tuple[int | None, str]]:
    """name → (owning account or None for "nobody may see it", clear value)."""
    found: dict[str, tuple[int | None, str]] = {
        f"signature key {name}": (None, key) for name, key in KEYS.items()
    }
    found["master key"] = (None, MASTER_KEY)
    found["cookie signing key (hex)"] = (None, signing_secret(MASTER_KEY.encode()).hex())
    found["cookie signing key (b64)"] = (
        None,
        base64.urlsafe_b64encode(signing_secret(MASTER_KEY.encode())).decode().rstrip("="),
    )
    found["account password"] = (None, PASSWORD)
    async with h.store.reading() as r:
        rows = list(await r.conn.execute(select(schema.integrations)))
        accounts = list(await r.conn.execute(select(schema.accounts)))
    for row in accounts:
        found[f"password hash of account {row.id}"] = (None, row.password_hash)
    for row in rows:
        i = integration_from_row(row, h.store.box)
        # API integrations show their keys to their owner; shop integrations to nobody
        owner = i.account_id if i.system == "api" else None
        found[f"secret_key of {i.id}"] = (owner, i.secret_key)
        # the base64 part too, in case something shows the whsec_ secret without its prefix
        found[f"webhook_secret of {i.id}"] = (owner, i.webhook_secret.removeprefix("whsec_"))
        if i.previous_webhook_secret:
            previous = i.previous_webhook_secret.removeprefix("whsec_")
            found[f"previous webhook_secret of {i.id}"] = (owner, previous)
        for column in row._mapping:
            value = row._mapping[column]
            if column.endswith("_enc") and value:
                found[f"Fernet token {column} of {i.id}"] = (None, value)
    return found


async def test_no_secret_leaks_anywhere(
    harness: HarnessFactory,
    receiver: HostileReceiver,
    caplog: pytest.LogCaptureFixture,
    restore_uvicorn_loggers: None,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    h = await harness(clock=clock, timeout=1.0, retry=RetryPolicy(delays=(60.0,), jitter=0))
    base_url, server, task = await debug_server(h.runtime)
    seen = Seen()
    try:
        ids = await scenario(h, clock, base_url, receiver, seen)
    finally:
        server.should_exit = True
        await task
    secrets = await every_secret(h)
    a, b = ids["a"], ids["b"]

    # 1. logs: every record of every logger, formatted with its arguments and traceback
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [(rec.name, formatter.format(rec)) for rec in caplog.records]
    assert sum(name == "uvicorn.access" for name, _ in lines) > 50  # the access log was on
    assert any(rec.levelno == logging.DEBUG for rec in caplog.records)  # and DEBUG was on
    leaks = [
        f"{what} in a {name} record"
        for what, (_, value) in secrets.items()
        for name, line in lines
        if value in line and not name.startswith(SQL_ECHO)
    ]
    assert leaks == [], "\n".join(sorted(set(leaks)))

    # 2. responses: no signature key anywhere; API secrets only to their owner, and only
    # in the integration objects that carry them
    owners = {"a": a.account_id, "b": b.account_id}
    leaks = []
    for who, what, text in seen.responses:
        for name, (owner, value) in secrets.items():
            if value not in text:
                continue
            shown_to_owner = owner == owners[who] and OWNER_PAGES.match(what) is not None
            if not shown_to_owner:
                leaks.append(f"{name} in the answer to {who}: {what}")
    assert leaks == [], "\n".join(sorted(set(leaks)))
    assert len(seen.responses) > 40

    # 3. what went over the wire to endpoints carries signatures, never a secret
    assert len(receiver.requests) >= 10
    for request in receiver.requests:
        sent = (
            request.body.decode()
            + "\n"
            + "\n".join(f"{k}: {v}" for k, v in request.headers.items())
        )
        found = [name for name, (_, value) in secrets.items() if value in sent]
        assert found == [], (request.path, found)

    # 4. at rest: no clear secret in any row of any table, and the tokens are their seals
    clear = {
        name: value
        for name, (_, value) in secrets.items()
        if not name.startswith(("Fernet token", "password hash"))
    }
    async with h.store.reading() as r:
        for table in schema.metadata.sorted_tables:
            for row in await r.conn.execute(select(table)):
                text = json.dumps([str(v) for v in row])
                found = [name for name, value in clear.items() if value in text]
                assert found == [], (table.name, found)
    fernet = Fernet(MASTER_KEY.encode())
    for name, (_, token) in secrets.items():
        if name.startswith("Fernet token"):
            sealed = fernet.decrypt(token.encode()).decode().removeprefix("whsec_")
            assert sealed in clear.values(), name
    if h.runtime.settings.database_url.startswith("sqlite"):
        database = Path(h.runtime.settings.database_url.removeprefix("sqlite:///"))
        files = [p for p in database.parent.iterdir() if p.name.startswith(database.name)]
        assert database in files
        for path in files:
            raw = path.read_bytes()
            found = [name for name, value in clear.items() if value.encode() in raw]
            assert found == [], (path.name, found)


def load_master_key(env_value: str | None, key_file: Path) -> bytes:
    settings = Settings(master_key=env_value, key_file=key_file)  # type: ignore[arg-type]
    return masterkey.key_source(settings).keys[0]


def test_a_generated_master_key_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    key_file = tmp_path / "etc" / "parcelhook.key"
    old = os.umask(0)  # the most permissive umask an operator could have
    try:
        key = load_master_key(None, key_file)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    Fernet(key)  # a usable key
    assert load_master_key(None, key_file) == key  # read back, not regenerated
    assert load_master_key(MASTER_KEY, key_file) == MASTER_KEY.encode()  # the variable wins


def test_the_secret_box_never_shows_its_key() -> None:
    from parcelhook.store.crypto import SecretBox

    box = SecretBox(MASTER_KEY.encode())
    token = box.seal("whsec_abc")
    assert MASTER_KEY not in repr(box) and MASTER_KEY not in str(box)
    with pytest.raises(RuntimeError) as raised:
        SecretBox(Fernet.generate_key()).open(token)
    assert token not in str(raised.value)


async def test_debug_logging_does_not_echo_sql_parameters(
    harness: HarnessFactory, caplog: pytest.LogCaptureFixture
) -> None:
    from parcelhook.logs import configure

    caplog.set_level(logging.DEBUG)
    configure("debug")  # the product's own logging set-up, as `--log-level debug` runs it
    h = await harness(dispatcher=False)
    acct = await h.account()
    r = await acct.call(
        "PATCH",
        f"/api/v2/integrations/{acct.api.id}",
        {"webhook_signature_key": KEYS["api"]},
    )
    assert r.status_code == 200
    secrets = await every_secret(h)
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    leaked = [name for name, (_, value) in secrets.items() if value in logged]
    assert leaked == []


async def test_json_delivery_logs_carry_ids_and_never_a_secret(
    harness: HarnessFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--log-format json --log-level debug`: a line per attempt, and no secret in any."""
    from parcelhook.logs import configure

    configure("debug", "json")
    try:
        h = await harness()
        acct = await h.account()
        async with HostileReceiver() as rx:
            rx.route("/down", Mode.status(500, body=b"nope"))
            for path, key in (("/ok", KEYS["api"]), ("/down", KEYS["shop"])):
                shop = await acct.shop(rx.url(path), webhook_signature_key=key)
                r = await acct.call(
                    "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
                )
                assert r.status_code == 200, r.text

            async def attempted() -> bool:
                found = await h.service.list_deliveries(acct.account_id)
                return len(found) >= 2 and all(d.attempt_count >= 1 for d in found)

            await eventually(attempted, what="both deliveries to be attempted")
        secrets = await every_secret(h)
    finally:
        configure("warning", "text")
    logged = capsys.readouterr().err
    lines = [json.loads(x) for x in logged.splitlines() if x.startswith("{")]
    attempts = [
        x for x in lines if x.get("event") in ("delivery attempt", "delivery attempt failed")
    ]
    assert {x["status"] for x in attempts} >= {200, 500}
    assert all(x["event_id"].startswith("evt_") and x["integration_id"] for x in attempts)
    leaked = [name for name, (_, value) in secrets.items() if value in logged]
    assert leaked == []
