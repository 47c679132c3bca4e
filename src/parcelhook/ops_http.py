"""/healthz and /metrics: answered by `serve`'s app, and by `worker --http-port` alone."""

from __future__ import annotations

import asyncio
import hmac
import socket
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from parcelhook import __version__
from parcelhook.metrics import CONTENT_TYPE_LATEST
from parcelhook.runtime import Runtime

# how long /healthz waits for the database to answer
HEALTH_PING_S = 5.0


async def health(runtime: Runtime, *, detail: bool = False) -> dict[str, Any]:
    """Whether the database answers and every loop of the process turns, and each loop's
    last good turn (`status` is "ok" or "unhealthy"). Each loop's last error only with
    `detail`: its text may name hosts, files or statements."""
    database = "ok"
    try:
        async with asyncio.timeout(HEALTH_PING_S):
            await runtime.store.ping()
    except Exception as exc:
        database = f"unreachable: {type(exc).__name__}"
    healthy = database == "ok" and runtime.health.healthy
    return {
        "status": "ok" if healthy else "unhealthy",
        "version": __version__,
        "dispatcher": runtime.dispatcher is not None,
        "database": database,
        "loops": runtime.health.report(errors=detail),
        "fatal": runtime.health.fatal,
    }


def _operator(runtime: Runtime, request: Request) -> bool | None:
    """Whether the request carries the metrics token; None when no token is set."""
    token = runtime.settings.metrics_token
    if token is None:
        return None
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    return hmac.compare_digest(given.encode(), expected.encode())


async def health_response(runtime: Runtime, request: Request) -> Response:
    """/healthz: 200 when healthy, else 503 with what is wrong; anyone may ask (a load
    balancer's check), the loops' error texts only the holder of the metrics token."""
    body = await health(runtime, detail=_operator(runtime, request) is True)
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def metrics_response(runtime: Runtime, request: Request) -> Response:
    if _operator(runtime, request) is False:
        return JSONResponse(
            {"error": {"code": "unauthorized", "message": "A metrics token is required."}},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    await runtime.metrics.refresh(runtime.store, runtime.clock.now_ms())
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def ops_app(runtime: Runtime) -> Starlette:
    async def healthz(request: Request) -> Response:
        return await health_response(runtime, request)

    async def metrics(request: Request) -> Response:
        return await metrics_response(runtime, request)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])


class OpsServer:
    """A worker's small HTTP server, on a socket bound before the worker started."""

    def __init__(self, runtime: Runtime, sock: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(ops_app(runtime), log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]))

    async def stop(self) -> None:
        self.server.should_exit = True
        await self._task


async def serve_ops(runtime: Runtime, sock: socket.socket) -> OpsServer:
    server = OpsServer(runtime, sock)
    while not server.server.started and not server._task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    return server
