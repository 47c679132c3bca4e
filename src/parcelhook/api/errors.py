"""Error bodies: Sendcloud's on the endpoints parcelhook shares with it, ours on our own.

Sendcloud's API v2 answers `{"error": {"code": <HTTP status>, "request": <path>, "message"}}`;
parcelhook's own endpoints (adding integrations, webhook tests, the webhook log, tracking
updates, refunds) answer `{"error": {"code": <slug>, "message", "field"?}}`. Both name the
field at fault in `field` where there is one. One style per endpoint, decided by its path.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parcelhook.api.json_answer import JSONAnswer
from parcelhook.domain.errors import DomainError
from parcelhook.store.faults import UNAVAILABLE_TYPES, is_unavailable

# what a 503 asks clients to wait while the database is away
RETRY_AFTER_S = 2
log = logging.getLogger("parcelhook.api")
MAX_BODY = 1024 * 1024
_TOO_LARGE = "The request body is larger than 1 MiB."


# parcelhook's own endpoints under /api/v2 (everything else there is Sendcloud's)
_OWN_PREFIXES = ("webhook-events", "webhook-deliveries", "tracking-updates")
_OWN_SUFFIXES = ("/webhook-test", "/rotate-webhook-secret", "/status", "/refund")


def sendcloud_style(method: str, path: str) -> bool:
    """Whether the endpoint at `path` is one Sendcloud publishes (and so uses its errors)."""
    if not path.startswith("/api/v2/"):
        return False
    rest = path.removeprefix("/api/v2/").rstrip("/")
    if rest.startswith(_OWN_PREFIXES) or rest.endswith(_OWN_SUFFIXES):
        return False
    # adding an integration through the API is parcelhook's; listing them is Sendcloud's
    return not (method == "POST" and rest == "integrations")


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    *,
    scope: Scope | None = None,
    **extra: Any,
) -> JSONAnswer:
    """The error body in the style of the endpoint `scope` addresses."""
    body: dict[str, Any]
    if scope is not None and sendcloud_style(scope["method"], scope["path"]):
        # Sendcloud refuses invalid input with 400 where parcelhook's own endpoints say 422
        status = 400 if status == 422 else status
        body = {"code": status, "request": scope["path"].lstrip("/"), "message": message}
    else:
        body = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONAnswer({"error": body}, status_code=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONAnswer:
        return error_response(
            exc.status, exc.code, exc.message, exc.field, scope=request.scope, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONAnswer:
        scope = request.scope
        first = exc.errors()[0] if exc.errors() else {}
        kind = str(first.get("type", ""))
        loc = [str(x) for x in first.get("loc", ()) if not isinstance(x, int)]
        field = loc[-1] if len(loc) > 1 else (loc[0] if loc else None)
        if field == "body":
            field = None
        if kind == "json_invalid":
            return error_response(
                400, "malformed_json", "The request body is not valid JSON.", scope=scope
            )
        if kind == "missing" and loc == ["body"]:
            return error_response(
                400, "missing_body", "A JSON request body is required.", scope=scope
            )
        if loc == ["body"]:
            # the body as a whole is the wrong shape (an array, a string, a form): no field to name
            return error_response(
                400, "invalid_body", "The request body must be a JSON object.", scope=scope
            )
        code = {"missing": "required", "extra_forbidden": "unknown_field"}.get(kind, "invalid")
        words = {"missing": "is required", "extra_forbidden": "is not a known field"}.get(
            kind, str(first.get("msg", "is invalid")).lower()
        )
        return error_response(422, code, f"{field or 'body'} {words}.", field, scope=scope)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # a browser lost outside the API gets the panel's page, when there is a panel
        html_not_found = getattr(request.app.state, "html_not_found", None)
        if (
            exc.status_code == 404
            and html_not_found is not None
            and not request.url.path.startswith("/api/")
            and "text/html" in request.headers.get("accept", "")
        ):
            page: Response = html_not_found(request)
            return page
        if exc.status_code == 400 and isinstance(exc.__cause__, (UnicodeError, RecursionError)):
            # FastAPI's own 400 for a JSON body that is not UTF-8 or nests too deep
            return error_response(
                400, "malformed_json", "The request body is not valid JSON.", scope=request.scope
            )
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail), scope=request.scope)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    def unavailable(request: Request, exc: Exception) -> JSONAnswer:
        # the database is away (a failover, a restart, a network cut, a full disk): not a
        # bug, and the client may try again shortly; logged in one line, not a traceback each
        log.warning(
            "database unavailable: %s", str(exc).splitlines()[0][:200] or type(exc).__name__
        )
        response = error_response(
            503,
            "unavailable",
            "The database is unavailable right now; try again in a few seconds.",
            scope=request.scope,
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    async def database_error(request: Request, exc: Exception) -> JSONAnswer:
        if is_unavailable(exc):
            return unavailable(request, exc)
        raise exc  # a bug: on to `bug` below

    # by type, not only under Exception: Starlette re-raises what its catch-all handler
    # answered, and the server then logs a traceback for every 503 of an outage
    for kind in UNAVAILABLE_TYPES:
        app.add_exception_handler(kind, database_error)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONAnswer:
        if is_unavailable(exc):
            return unavailable(request, exc)
        # a 5xx is a bug: log it (never the request body, it may hold secrets)
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return error_response(
            500, "internal", "Internal error; it has been logged.", scope=request.scope
        )


class _TooLarge(StarletteHTTPException):
    # an HTTPException, so that FastAPI's body parsing passes it on instead of making it a 400
    def __init__(self) -> None:
        super().__init__(413, _TOO_LARGE)


class BodyLimit:
    """413 for request bodies over 1 MiB, whether announced or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await _send_413(scope, receive, send)
                return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _send_413(scope, receive, send)


async def _send_413(scope: Scope, receive: Receive, send: Send) -> None:
    response = error_response(413, "too_large", _TOO_LARGE, scope=scope)
    await response(scope, receive, send)
