"""The benchmark's webhook endpoint, run in its own process (`python -m bench.receiver`).

`--mode ok` answers every POST with 200 "ok" and records `(webhook-id, time.time())` on
arrival; it verifies nothing, so it stays cheap and is not what the benchmark measures.
`GET /_stats`, `GET /_receipts` and `POST /_reset` let the benchmark read and clear it.
`--mode blackhole` accepts connections and reads requests but never answers.

The chosen port is printed as `PORT <n>` on stdout once the socket is listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

from aiohttp import web


class Recorder:
    """Arrival times of webhook POSTs, by `webhook-id`."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.times: list[float] = []

    async def hook(self, request: web.Request) -> web.Response:
        await request.read()
        self.ids.append(request.headers.get("webhook-id", ""))
        self.times.append(time.time())
        return web.Response(text="ok")

    async def stats(self, _request: web.Request) -> web.Response:
        first = self.times[0] if self.times else None
        last = self.times[-1] if self.times else None
        return web.json_response({"count": len(self.times), "first": first, "last": last})

    async def receipts(self, _request: web.Request) -> web.Response:
        body = json.dumps({"ids": self.ids, "times": self.times})
        return web.Response(text=body, content_type="application/json")

    async def reset(self, _request: web.Request) -> web.Response:
        self.ids, self.times = [], []
        return web.json_response({"count": 0})


async def serve_ok(stop: asyncio.Event) -> None:
    recorder = Recorder()
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/_stats", recorder.stats)
    app.router.add_get("/_receipts", recorder.receipts)
    app.router.add_post("/_reset", recorder.reset)
    app.router.add_post("/{tail:.*}", recorder.hook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    _announce(runner.addresses[0][1])
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def serve_blackhole(stop: asyncio.Event) -> None:
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0, backlog=4096)
    _announce(server.sockets[0].getsockname()[1])
    try:
        await stop.wait()
    finally:
        server.close()
        for w in writers:
            w.close()


def _announce(port: int) -> None:
    sys.stdout.write(f"PORT {port}\n")
    sys.stdout.flush()


async def _main(mode: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await (serve_ok(stop) if mode == "ok" else serve_blackhole(stop))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--mode", choices=("ok", "blackhole"), default="ok")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the receiver only has to be faster than what it measures
        asyncio.run(_main(args.mode))
    else:
        uvloop.run(_main(args.mode))


if __name__ == "__main__":
    main()
