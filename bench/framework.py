"""The API's hot calls in-process: CPU per call without uvicorn, sockets or a load generator.

`python -m bench.framework [-n N] [--fake] [--profile FILE] [--engine E]` builds the real
app on a fresh SQLite (or PostgreSQL) database, no dispatcher, creates parcels through the
service, then makes N `POST /api/v2/parcels/{id}/status` calls straight through the ASGI
interface, 32 at a time (so group commit batches them as it does under load), and prints
the CPU per call beside the bare FastAPI app's (`bench/bare_api.py`) driven the same way.
`--fake` answers from a service that does no database work, so what is left is the
framework's and parcelhook's request handling alone. `--profile FILE` writes a cProfile
of the parcelhook phase.

Not a benchmark of the product (that is `python -m bench`): a repeatable microscope for the
request layer, whose figures do not depend on how busy the load generator's core is.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import json
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import fixtures
from parcelhook.app import create_app
from parcelhook.domain.parcels import parse_new_parcel
from parcelhook.runtime import Runtime

ASGI = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
CONCURRENCY = 32
STATUSES = (1001, 1, 3, 5, 7, 91, 92, 11, 1000)
PARCEL = {
    "name": "Ada Lovelace",
    "address": "Stationsplein",
    "house_number": "1",
    "city": "Eindhoven",
    "postal_code": "5611 AB",
    "country": "NL",
    "order_number": "ORD-1",
}


async def call(app: ASGI, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """One HTTP/1.1 POST through the ASGI interface; the answer's status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def drive(
    app: ASGI, calls: list[tuple[str, bytes]], headers: list[tuple[bytes, bytes]]
) -> float:
    """CPU seconds per call for `calls`, CONCURRENCY at a time; every answer must be 200."""
    queue = list(reversed(calls))

    async def client() -> None:
        while queue:
            path, body = queue.pop()
            status = await call(app, path, body, headers)
            if status != 200:
                raise SystemExit(f"{path}: HTTP {status}")

    start = time.process_time()
    await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
    return (time.process_time() - start) / len(calls)


class FakeService:
    """Answers as the real service would, with no database: the request layer alone."""

    def __init__(self, real: Any, key: Any, parcel: Any) -> None:
        self._real = real
        self._key = key
        self._parcel = parcel

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def authenticate_api(self, public_key: str, secret_key: str) -> Any:
        return self._key

    async def change_status(self, *args: Any, **kw: Any) -> Any:
        return self._parcel


async def main(n: int, fake: bool, profile: Path | None, engine: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with fixtures.database(engine, Path(tmp)) as url:
            await _ours(url, n, fake, profile)
    await _bare(n, fake)


async def _ours(url: str, n: int, fake: bool, profile: Path | None) -> None:
    runtime = Runtime(fixtures.settings(url, dispatcher=False, concurrency=32))
    await runtime.start()
    try:
        app = create_app(runtime, manage_runtime=False)
        service = runtime.service
        account = await service.create_account("bench@example.com", "password123")
        api = account.integration
        parcels = []
        for i in range(200):
            new = parse_new_parcel({**PARCEL, "order_number": f"ORD-{i}"})
            parcels.append(await service.create_parcel(account.account_id, api, new))
        auth = base64.b64encode(f"{api.public_key}:{api.secret_key}".encode())
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"authorization", b"Basic " + auth),
        ]
        if fake:
            key = await service.authenticate_api(api.public_key, api.secret_key)
            app.state.service = FakeService(service, key, parcels[0])
        calls = [
            (
                f"/api/v2/parcels/{parcels[i % len(parcels)].id}/status",
                json.dumps({"status_id": STATUSES[(i // len(parcels)) % len(STATUSES)]}).encode(),
            )
            for i in range(n)
        ]
        await drive(app, calls[: n // 10], headers)  # warm up: caches, statements
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        wall = time.perf_counter()
        ours = await drive(app, calls, headers)
        wall = time.perf_counter() - wall
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
    finally:
        await runtime.stop()
    what = "request layer (service faked)" if fake else f"request + {url.split(':')[0]} transaction"
    print(f"status change, {what}: {ours * 1e6:,.0f} µs CPU per call, {n / wall:,.0f} calls/s")
    _OURS.append(ours)


_OURS: list[float] = []


async def _bare(n: int, fake: bool) -> None:
    from bench.bare_api import app as bare

    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json")]
    bare_calls = [(f"/api/v2/parcels/{i}/status", b'{"status_id": 3}') for i in range(n)]
    await drive(bare, bare_calls[: n // 10], headers)
    bare_cpu = await drive(bare, bare_calls, headers)
    print(f"bare FastAPI app: {bare_cpu * 1e6:,.0f} µs CPU per call")
    print(f"ratio: {_OURS[-1] / bare_cpu:.2f} × the bare app")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.framework")
    parser.add_argument("-n", type=int, default=5000, help="status changes")
    parser.add_argument("--fake", action="store_true", help="a service with no database")
    parser.add_argument("--profile", type=Path, help="cProfile of parcelhook's phase")
    parser.add_argument("--engine", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    import uvloop  # as `parcelhook serve` runs

    uvloop.run(main(args.n, args.fake, args.profile, args.engine))
