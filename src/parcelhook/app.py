"""The ASGI application: API, panel and (unless turned off) the dispatcher, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from parcelhook import __version__
from parcelhook.api import integrations, parcels, tracking, webhooks
from parcelhook.api.errors import BodyLimit, install_error_handlers
from parcelhook.panel import install_panel
from parcelhook.runtime import Runtime


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> FastAPI:
    """The app; with `manage_runtime` its lifespan starts and stops the runtime."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if manage_runtime:
            await runtime.start()
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
    for router in (integrations.router, parcels.router, tracking.router, webhooks.router):
        app.include_router(router)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, Any]:
        await runtime.store.ping()
        return {
            "status": "ok",
            "version": __version__,
            "dispatcher": runtime.dispatcher is not None,
        }

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics(_request: Request) -> str:
        counts = await runtime.store.delivery_counts()
        lines = [
            "# HELP parcelhook_deliveries Deliveries by status.",
            "# TYPE parcelhook_deliveries gauge",
            *(
                f'parcelhook_deliveries{{status="{s}"}} {counts.get(s, 0)}'
                for s in ("pending", "delivered", "failed")
            ),
        ]
        if runtime.dispatcher is not None:
            lines += [
                "# HELP parcelhook_dispatcher_in_flight Deliveries claimed and not yet settled.",
                "# TYPE parcelhook_dispatcher_in_flight gauge",
                f"parcelhook_dispatcher_in_flight {runtime.dispatcher.in_flight}",
                "# HELP parcelhook_dispatcher_delivered_total Deliveries accepted by endpoints.",
                "# TYPE parcelhook_dispatcher_delivered_total counter",
                f"parcelhook_dispatcher_delivered_total {runtime.dispatcher.delivered}",
            ]
        return "\n".join(lines) + "\n"

    install_panel(app, runtime)
    return app
