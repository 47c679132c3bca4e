"""A WSGI endpoint for webhooks, and `respond` for a Flask (or any WSGI framework) view.

hook = webhook_wsgi_app(handle, key=KEY)

@app.post("/webhooks/parcelhook")
def parcelhook_webhook():
    status, body = hook.respond(request.get_data(), request.headers)
    return body, status, {"Content-Type": "application/json"}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from http import HTTPStatus
from typing import TypeAlias
from wsgiref.types import StartResponse, WSGIEnvironment

from parcelhook.receiver._gate import MAX_BODY, OK, Gate, HeaderItems, Reply, lower_headers
from parcelhook.receiver.events import Event
from parcelhook.receiver.memory import Deduplicator

SyncHandler: TypeAlias = Callable[[Event, Mapping[str, str]], None]


class WebhookWSGIApp:
    """The WSGI app `webhook_wsgi_app` builds."""

    def __init__(
        self,
        handler: SyncHandler,
        *,
        key: str | None = None,
        secret: str | None = None,
        tolerance: int = 300,
        deduplicator: Deduplicator | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.handler = handler
        self._gate = Gate(
            key=key,
            secret=secret,
            tolerance=tolerance,
            deduplicator=deduplicator,
            max_body=max_body,
        )

    def respond(self, body: bytes, headers: HeaderItems) -> tuple[int, bytes]:
        """Status and JSON body for one request given as raw body bytes and headers."""
        lowered = lower_headers(headers)
        admitted = self._gate.admit(body, lowered)
        if isinstance(admitted, Reply):
            return admitted.status, admitted.body
        try:
            self.handler(admitted, lowered)
        except Exception:
            reply = self._gate.failed(admitted, lowered)
        else:
            reply = OK
        return reply.status, reply.body

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        extra: list[tuple[str, str]] = []
        if environ.get("REQUEST_METHOD") != "POST":
            status, body = 405, Reply.json(405, error="use POST").body
            extra.append(("Allow", "POST"))
        else:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            if length > self._gate.max_body:
                status, body = 413, Reply.json(413, error="body too large").body
            else:
                status, body = self.respond(environ["wsgi.input"].read(length), _headers(environ))
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra],
        )
        return [body]


def webhook_wsgi_app(
    handler: SyncHandler,
    *,
    key: str | None = None,
    secret: str | None = None,
    tolerance: int = 300,
    deduplicator: Deduplicator | None = None,
) -> WebhookWSGIApp:
    """A WSGI app that verifies with `key` (Sendcloud-Signature) and/or `secret` (whsec_)."""
    return WebhookWSGIApp(
        handler, key=key, secret=secret, tolerance=tolerance, deduplicator=deduplicator
    )


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    headers = {
        name[5:].replace("_", "-").lower(): value
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    if "CONTENT_TYPE" in environ:
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers
