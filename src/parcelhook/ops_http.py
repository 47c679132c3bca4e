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


async def health(runtime: Runtime) -> dict[str, Any]:
    await runtime.store.ping()
    return {"status": "ok", "version": __version__, "dispatcher": runtime.dispatcher is not None}


async def metrics_response(runtime: Runtime, request: Request) -> Response:
    token = runtime.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return JSONResponse(
                {"error": {"code": "unauthorized", "message": "A metrics token is required."}},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
    await runtime.metrics.refresh(runtime.store, runtime.clock.now_ms())
    return Response(runtime.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def ops_app(runtime: Runtime) -> Starlette:
    async def healthz(_request: Request) -> Response:
        return JSONResponse(await health(runtime))

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
