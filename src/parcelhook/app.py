"""The ASGI application: API, panel and (unless turned off) the dispatcher, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from parcelhook import __version__, heap
from parcelhook.api import account, integrations, labels, parcels, returns, tracking, webhooks
from parcelhook.api.errors import BodyLimit, install_error_handlers
from parcelhook.metrics import RequestMetrics
from parcelhook.ops_http import health_response, metrics_response
from parcelhook.panel import install_panel
from parcelhook.runtime import Runtime


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The app; with `manage_runtime` its lifespan starts and stops the runtime."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
            heap.settle()
        try:
            yield
        finally:
            if manage_runtime:
                await runtime.stop()

    app = FastAPI(
        title="parcelhook",
        version=__version__,
        lifespan=lifespan,
        description="Webhook feedback for shipping platforms, wire-compatible with Sendcloud.",
    )
    app.state.runtime = runtime
    app.state.service = runtime.service
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    for router in (
        integrations.router,
        parcels.router,
        labels.router,
        account.router,
        tracking.router,
        webhooks.router,
        returns.router,
    ):
        app.include_router(router)

    @app.get("/healthz", tags=["operations"])
    async def healthz(request: Request) -> Response:
        """200 when the database answers and every loop turns; else 503, saying which not
        (each loop's last error too, with the metrics token)."""
        return await health_response(runtime, request)

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics(request: Request) -> Response:
        """Prometheus text format; with a metrics token set, needs `Authorization: Bearer`."""
        return await metrics_response(runtime, request)

    install_panel(app, runtime)
    app.add_middleware(RequestMetrics, metrics=runtime.metrics, tracer=runtime.tracer)
    return app
