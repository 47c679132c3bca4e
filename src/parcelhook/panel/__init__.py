"""The control panel: server-rendered pages on top of the service, under `/`."""

from __future__ import annotations

from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.staticfiles import StaticFiles

from parcelhook.panel import auth, integrations, language, log, senders
from parcelhook.panel.sessions import SessionCodec, signing_secret
from parcelhook.panel.throttle import SignInThrottle
from parcelhook.panel.web import Panel, install_error_pages, panel_of
from parcelhook.runtime import Runtime

__all__ = ["install_panel"]


async def verify_session(request: Request) -> None:
    await panel_of(request).verify_session(request)


def install_panel(app: FastAPI, runtime: Runtime) -> None:
    """Mount the panel's pages and its static files (`/static`) on `app`."""
    settings = runtime.settings
    app.state.panel = Panel(
        runtime.service,
        SessionCodec(signing_secret(runtime.master_key)),
        SignInThrottle(runtime.clock.now_ms),
        secure_cookies=settings.secure_cookies,
    )
    install_error_pages(app)
    verified = [Depends(verify_session)]
    for router in (auth.router, integrations.router, log.router, senders.router, language.router):
        app.include_router(router, dependencies=verified)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
