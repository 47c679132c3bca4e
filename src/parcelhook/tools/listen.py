"""`parcelhook listen`: a local receiver that verifies, prints and optionally forwards webhooks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

import click
from aiohttp import web

from parcelhook.delivery.sender import Sender
from parcelhook.receiver import (
    Event,
    IntegrationConnected,
    IntegrationDeleted,
    IntegrationUpdated,
    ParcelStatusChanged,
    RefundRequested,
    TestWebhook,
    WebhookPayloadError,
    WebhookVerificationError,
    check_webhook_secret,
    parse_event,
    verify_signature,
    verify_standard,
)

# what a real delivery carries besides the body; nothing else is forwarded
FORWARDED_HEADERS = (
    "Content-Type",
    "User-Agent",
    "Sendcloud-Signature",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)
MAX_BODY = 1 << 20

Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Listener:
    """A running listener: where it is bound, and how to stop it."""

    host: str
    port: int
    _runner: web.AppRunner
    _sender: Sender

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def stop(self) -> None:
        await self._runner.cleanup()
        await self._sender.close()


async def serve_listener(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    key: str | None = None,
    secret: str | None = None,
    forward_to: str | None = None,
    verbose: bool = False,
    echo: Echo = click.echo,
) -> Listener:
    """Start listening (port 0 picks a free one); every request gets one printed line."""
    if secret:
        check_webhook_secret(secret)
    # the developer's own app is usually on loopback and plain http
    sender = Sender(allow_private=True, allow_http=True)

    async def receive(request: web.Request) -> web.Response:
        if request.method != "POST":
            return web.json_response({"error": "use POST"}, status=405, headers={"Allow": "POST"})
        body = await request.read()
        sig, rejected = _check_signatures(body, request.headers, key, secret)
        webhook_id = request.headers.get("webhook-id", "-")
        stamp = datetime.now().strftime("%H:%M:%S")
        try:
            event = parse_event(body)
        except WebhookPayloadError as exc:
            echo(f"{stamp}  malformed body ({exc})  {webhook_id}  {sig}")
            status = 401 if rejected else 400
            return web.json_response({"error": "rejected" if rejected else str(exc)}, status=status)
        parts = (stamp, event.action, webhook_id, _subject(event), sig)
        echo("  ".join(part for part in parts if part))
        if verbose:
            echo(json.dumps(event.raw, indent=2))
        if rejected:
            return web.json_response({"error": "invalid signature"}, status=401)
        if not forward_to:
            return web.json_response({"ok": True})
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        result = await sender.send(forward_to, body, headers)
        if result.status_code is None:
            echo(f"  → {forward_to}: {result.error}")
            return web.json_response({"error": f"forwarding failed: {result.error}"}, status=502)
        excerpt = " ".join(result.response_excerpt.split())[:200]
        echo(f"  → {forward_to}: {result.status_code}  {result.duration_ms} ms  {excerpt}".rstrip())
        return web.Response(status=result.status_code, text=result.response_excerpt or None)

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{path:.*}", receive)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        await sender.start()
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(host, runner.addresses[0][1], runner, sender)


def _check_signatures(
    body: bytes, headers: Mapping[str, str], key: str | None, secret: str | None
) -> tuple[str, bool]:
    """Words for the printed line, and whether to answer 401."""
    checks: list[str] = []
    rejected = False
    if key:
        ok = verify_signature(body, headers.get("Sendcloud-Signature"), key)
        checks.append(f"signature {'ok' if ok else 'BAD'}")
        rejected = not ok
    if secret:
        try:
            verify_standard(headers, body, secret)
            checks.append("webhook-signature ok")
        except WebhookVerificationError as exc:
            checks.append(f"webhook-signature BAD ({exc})")
            rejected = True
    return ", ".join(checks) or "signature unchecked (no --key)", rejected


def _subject(event: Event) -> str:
    match event:
        case ParcelStatusChanged(parcel=p):
            return f"parcel {p.id} status {p.status_id} {p.status_message or ''}".rstrip()
        case RefundRequested(refund=r, parcel=p):
            return f"refund {r.id} for parcel {p.id}"
        case (
            IntegrationConnected(integration=i)
            | IntegrationUpdated(integration=i)
            | IntegrationDeleted(integration=i)
            | TestWebhook(integration=i)
        ):
            return f"integration {i.id} ({i.shop_name})"
    return ""


@click.command("listen")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--key", help="Sendcloud-Signature key: verify, and answer 401 when it fails.")
@click.option("--secret", help="whsec_ secret: verify webhook-signature, 401 when it fails.")
@click.option("--forward-to", help="Also POST each accepted event to this URL (your app).")
@click.option("--verbose", "-v", is_flag=True, help="Print each event's full JSON.")
def listen_command(
    port: int,
    host: str,
    key: str | None,
    secret: str | None,
    forward_to: str | None,
    verbose: bool,
) -> None:
    """Receive webhooks locally, verify and print each one, optionally forward them."""
    # without signal handlers (Windows) Ctrl-C still arrives as KeyboardInterrupt
    with contextlib.suppress(KeyboardInterrupt):
        try:
            asyncio.run(_run(host, port, key, secret, forward_to, verbose))
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        except ValueError as exc:
            raise click.ClickException(f"--secret: {exc}") from None


async def _run(
    host: str,
    port: int,
    key: str | None,
    secret: str | None,
    forward_to: str | None,
    verbose: bool,
) -> None:
    listener = await serve_listener(
        host=host, port=port, key=key, secret=secret, forward_to=forward_to, verbose=verbose
    )
    notes = [f"listening on {listener.url}"]
    notes.append("verifying Sendcloud-Signature" if key else "not verifying (no --key)")
    if secret:
        notes.append("verifying webhook-signature")
    if forward_to:
        notes.append(f"forwarding to {forward_to}")
    click.echo("; ".join(notes) + " — Ctrl-C to stop")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await listener.stop()
    click.echo("stopped")


if __name__ == "__main__":
    listen_command()
