"""A fast path for the hottest calls: well-formed requests skip FastAPI's dependency solving.

A status change is the call a shop platform makes per carrier scan. Through FastAPI's
request handler it paid, before any of parcelhook's own work, for solving three dependants
(each a walk over its parameters, cache keys and annotations), parsing the content type
with `email.message`, decoding the body with `json.loads` and validating the resulting dict
(docs/performance.md, "The request layer's fast path"): about a third of the request.

`FastPathRoute` is an `APIRoute` like any other (it is matched, documented in OpenAPI and
guarded by the middlewares as before) whose handler first offers the request to a
hand-written `FastHandler`. That handler answers only the plain, valid case; for anything
else it returns None and FastAPI's own handler answers, so every error, including each
validation message, stays exactly what it was. Authentication is the one check both make:
a wrong key is refused by the fast handler with the very same 401.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

# a response, or None: "not the plain case, let FastAPI's handler answer"
FastHandler = Callable[[Request], Awaitable[Response | None]]


def fast_route(fast: FastHandler) -> type[APIRoute]:
    """An `APIRoute` class whose requests are offered to `fast` first (for
    `APIRouter.add_api_route(..., route_class_override=fast_route(handler))`)."""

    class FastPathRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            slow = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response = await fast(request)
                return response if response is not None else await slow(request)

            return handler

    return FastPathRoute


def is_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters: what FastAPI parses as JSON too
    (the rarer `+json` types and a missing header take FastAPI's own path)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


def path_id(value: str, maximum: int) -> int | None:
    """A path segment as a positive id no larger than `maximum`, or None (FastAPI's path
    validation then gives the error)."""
    if not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return number if 1 <= number <= maximum else None
