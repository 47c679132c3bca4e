"""The API's routes sit on the app's own router, the hot ones first, and the OpenAPI
document is the one the routers give when included the ordinary way."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute

from parcelhook import __version__
from parcelhook.api import account, integrations, labels, parcels, returns, tracking, webhooks
from parcelhook.app import HOT_ROUTES, create_app
from parcelhook.config import Settings
from parcelhook.runtime import Runtime

ROUTERS = (
    integrations.router,
    parcels.router,
    labels.router,
    account.router,
    tracking.router,
    webhooks.router,
    returns.router,
)


def _app(tmp_path: Path) -> FastAPI:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/r.db", key_file=tmp_path / "r.key")
    return create_app(Runtime(settings))


def test_hot_routes_are_matched_first(tmp_path: Path) -> None:
    api = [r for r in _app(tmp_path).router.routes if isinstance(r, APIRoute)]
    assert [(sorted(r.methods or ())[0], r.path) for r in api[: len(HOT_ROUTES)]] == list(
        HOT_ROUTES
    )
    # every route of every API router is there once, on the app's own router
    assert {id(r) for r in api} >= {id(r) for router in ROUTERS for r in router.routes}


def test_openapi_document_is_the_included_routers_one(tmp_path: Path) -> None:
    ours = _app(tmp_path).openapi()
    plain = FastAPI(
        title="parcelhook", version=__version__, description=ours["info"]["description"]
    )
    for router in ROUTERS:
        plain.include_router(router)
    theirs = plain.openapi()
    api_paths = {p: v for p, v in ours["paths"].items() if p.startswith("/api/")}
    assert api_paths == theirs["paths"]
    for name, schema in theirs["components"]["schemas"].items():
        assert ours["components"]["schemas"][name] == schema
