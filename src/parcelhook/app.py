"""The ASGI application: API, panel and (unless turned off) the dispatcher, in one process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from parcelhook import __version__, heap
from parcelhook.api import account, integrations, labels, parcels, returns, tracking, webhooks
from parcelhook.api.errors import BodyLimit, install_error_handlers
from parcelhook.api.json_answer import JSONAnswer
from parcelhook.metrics import RequestMetrics
from parcelhook.ops_http import health_response, metrics_response
from parcelhook.panel import install_panel
from parcelhook.runtime import Runtime

# matched first: the calls a shop platform makes most (a tracking update per carrier scan)
HOT_ROUTES = (("POST", "/api/v2/parcels/{parcel_id}/status"), ("POST", "/api/v2/parcels"))


def add_api_routes(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """The routers' routes straight on the app's own router, the hot ones first.

    `include_router` (FastAPI 0.165) wraps a router in a route of its own, whose routes
    are matched again, each through a context of its own, when a request arrives: for a
    status change, ~25 route matches and a quarter of the framework's CPU. Its routes
    added to the app directly are matched once each, as the app's own routes are, and
    the hot ones are found at the first try. Moving a route ahead changes no answer: no
    other route takes the same method and path (test_sendcloud_api checks that the OpenAPI
    document is unchanged). The routers prefix their own paths and set their tags and
    `include_in_schema` on each route already, so nothing is lost.
    """
    routes = [route for router in routers for route in router.routes]
    rank = {key: n for n, key in enumerate(HOT_ROUTES)}

    def hot(route: BaseRoute) -> int:
        if isinstance(route, APIRoute):
            for method in route.methods or ():
                if (method, route.path) in rank:
                    return rank[(method, route.path)]
        return len(rank)

    # sorted() is stable: the others keep their declared order; the hot ones go ahead of
    # FastAPI's own four (the OpenAPI document and its viewers), which are matched first
    ordered = sorted(routes, key=hot)
    first = sum(1 for route in ordered if hot(route) < len(rank))
    app.router.routes[0:0] = ordered[:first]
    app.router.routes.extend(ordered[first:])


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
        default_response_class=JSONAnswer,
        # parcelhook traces and counts its own requests (RequestMetrics, on its own tracer
        # provider); FastAPI's native telemetry would add a second span to each when some
        # library sets a global provider, and asks for the providers on every request
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.runtime = runtime
    app.state.service = runtime.service
    install_error_handlers(app)
    app.add_middleware(BodyLimit)
    add_api_routes(
        app,
        (
            integrations.router,
            parcels.router,
            labels.router,
            account.router,
            tracking.router,
            webhooks.router,
            returns.router,
        ),
    )

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
