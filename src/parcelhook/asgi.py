"""The app of one `parcelhook serve --workers N` process.

uvicorn starts each worker process afresh and imports the app by name, so the parent hands
its settings down through the environment and each worker builds its own runtime (store,
service and, unless turned off, a dispatcher: on PostgreSQL they share the queue safely).
"""

from __future__ import annotations

import base64
import os
import pickle
import signal

from fastapi import FastAPI

from parcelhook.config import Settings

SETTINGS_ENV = "PARCELHOOK_SERVE_SETTINGS"


def hand_down(settings: Settings, log_level: str) -> None:
    """Put the settings where the worker processes started after this will find them."""
    blob = pickle.dumps((settings, log_level))
    os.environ[SETTINGS_ENV] = base64.b64encode(blob).decode("ascii")


def app_from_environment() -> FastAPI:
    """uvicorn's app factory in each worker process."""
    from parcelhook.app import create_app
    from parcelhook.logs import configure
    from parcelhook.runtime import Runtime

    # written by this process's parent (hand_down), never read from anywhere else
    settings, log_level = pickle.loads(base64.b64decode(os.environ[SETTINGS_ENV]))
    configure(log_level, settings.log_format)
    runtime = Runtime(settings)
    # a loop that ended is a bug: end this worker process; uvicorn starts a new one
    runtime.on_fatal = lambda _name: os.kill(os.getpid(), signal.SIGTERM)
    return create_app(runtime)
