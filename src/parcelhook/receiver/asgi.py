"""An ASGI endpoint for webhooks: plain ASGI, so Starlette and FastAPI are not required.

    app.router.routes.append(Route("/webhooks/parcelhook", webhook_app(handle, key=KEY)))

401 on a bad signature, 400 on a malformed body, 200 once `handle` returns, 500 when it
raises (the sender then retries).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any, TypeAlias

from parcelhook.receiver._gate import MAX_BODY, OK, Gate, HeaderItems, Reply, lower_headers
from parcelhook.receiver.events import Event
from parcelhook.receiver.memory import Deduplicator

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
# async handlers run on the event loop, plain functions in a worker thread
Handler: TypeAlias = Callable[[Event, Mapping[str, str]], Awaitable[None] | None]


class WebhookApp:
    """The ASGI app `webhook_app` builds; `respond` serves a framework's own view."""

    def __init__(
        self,
        handler: Handler,
        *,
        key: str | None = None,
        secret: str | None = None,
        tolerance: int = 300,
        deduplicator: Deduplicator | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.handler = handler
        self._is_async = inspect.iscoroutinefunction(handler)
        self._gate = Gate(
            key=key,
            secret=secret,
            tolerance=tolerance,
            deduplicator=deduplicator,
            max_body=max_body,
        )

    async def respond(self, body: bytes, headers: HeaderItems) -> tuple[int, bytes]:
        """Status and JSON body for one request given as raw body bytes and headers."""
        lowered = lower_headers(headers)
        admitted = self._gate.admit(body, lowered)
        if isinstance(admitted, Reply):
            return admitted.status, admitted.body
        try:
            if self._is_async:
                result = self.handler(admitted, lowered)
            else:
                result = await asyncio.to_thread(self.handler, admitted, lowered)
            if inspect.isawaitable(result):
                await result
        except Exception:
            reply = self._gate.failed(admitted, lowered)
        else:
            reply = OK
        return reply.status, reply.body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # a websocket is closed unaccepted
        if scope["method"] != "POST":
            await _send(send, 405, Reply.json(405, error="use POST").body, allow=b"POST")
            return
        body = await _read_body(receive, self._gate.max_body)
        if body is None:
            await _send(send, 413, Reply.json(413, error="body too large").body)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        status, payload = await self.respond(body, headers)
        await _send(send, status, payload)


def webhook_app(
    handler: Handler,
    *,
    key: str | None = None,
    secret: str | None = None,
    tolerance: int = 300,
    deduplicator: Deduplicator | None = None,
) -> WebhookApp:
    """An ASGI app that verifies with `key` (Sendcloud-Signature) and/or `secret` (whsec_)."""
    return WebhookApp(
        handler, key=key, secret=secret, tolerance=tolerance, deduplicator=deduplicator
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, *, allow: bytes | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    # so that the app also runs on its own under uvicorn
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
