"""`parcelhook trigger`: send realistic signed events straight to a URL, no server needed.

The bodies and headers come from the same domain functions the server uses, so what
arrives is byte-for-byte what a real delivery would look like.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import click

from parcelhook.delivery.headers import USER_AGENT
from parcelhook.delivery.sender import Sender
from parcelhook.domain import events, signing, systems
from parcelhook.domain.clock import SystemClock
from parcelhook.domain.integrations import Integration
from parcelhook.domain.parcels import Parcel, Refund, tracking_number
from parcelhook.domain.retry import AttemptResult
from parcelhook.domain.statuses import STATUS_MESSAGES, is_known_status
from parcelhook.receiver import check_webhook_secret

# Satisfies the signature key policy, so the demo looks like a real configuration.
DEMO_KEY: Final = "parcelhook-Demo-key-1"
# status ids that successive parcel events walk through, as a real shipment would
LIFECYCLE: Final = (1000, 1, 3, 91, 11)
PARCEL_ACTIONS: Final = (systems.PARCEL_STATUS_CHANGED, systems.REFUND_REQUESTED)
_ACCOUNT_ID, _INTEGRATION_ID, _PARCEL_ID, _REFUND_ID = 1, 7, 1001, 501


def sample_parcel(
    *,
    status_id: int,
    now_ms: int,
    parcel_id: int = _PARCEL_ID,
    account_id: int = _ACCOUNT_ID,
    integration_id: int = _INTEGRATION_ID,
) -> Parcel:
    """A realistic parcel, as a merchant's shop would create it (also the benchmark's)."""
    return Parcel(
        id=parcel_id,
        account_id=account_id,
        integration_id=integration_id,
        name="Jan Jansen",
        company_name="Demo Webshop BV",
        address="Stationsweg",
        house_number="12",
        city="Eindhoven",
        postal_code="5611 AB",
        country="NL",
        telephone="+31612345678",
        email="jan.jansen@example.com",
        weight="2.000",
        order_number=f"ORD-{parcel_id}",
        external_order_id=str(parcel_id),
        external_shipment_id="",
        shipment_id=1343,
        tracking_number=tracking_number(parcel_id),
        is_return=False,
        status_id=status_id,
        created_ms=now_ms - 3_600_000,
        updated_ms=now_ms,
        carrier_status_change_ms=now_ms - 1_000,
    )


def sample_payload(
    action: str, *, now_ms: int, status_id: int, url: str, key: str, secret: str
) -> dict[str, Any]:
    """A realistic payload of `action`, about one demo parcel and one demo integration."""
    parcel = sample_parcel(status_id=status_id, now_ms=now_ms)
    integration = Integration(
        id=_INTEGRATION_ID,
        account_id=_ACCOUNT_ID,
        shop_name="Demo Webshop",
        shop_url="https://shop.example.com",
        system=systems.API,
        webhook_active=True,
        webhook_url=url,
        webhook_signature_key=key,
        public_key="",
        secret_key="",
        webhook_secret=secret,
        previous_webhook_secret=None,
        previous_webhook_secret_until_ms=None,
        failing_since_ms=None,
        last_fetch_ms=None,
        last_updated_ms=now_ms,
        created_ms=now_ms - 86_400_000,
    )
    if action == systems.PARCEL_STATUS_CHANGED:
        return events.parcel_status_changed(parcel, now_ms)
    if action == systems.REFUND_REQUESTED:
        refund = Refund(
            id=_REFUND_ID,
            parcel_id=parcel.id,
            reason="Parcel arrived damaged",
            status="requested",
            message="Refund requested",
            total_refund=parcel.price,
            created_ms=now_ms,
        )
        return events.refund_requested(refund, parcel, now_ms)
    if action == systems.TEST_WEBHOOK:
        return events.test_webhook(integration.id, integration.shop_name, systems.API, now_ms)
    return events.integration_changed(action, integration, now_ms)


def signed_request(
    payload: dict[str, Any], *, key: str, secret: str, now_ms: int
) -> tuple[bytes, dict[str, str]]:
    """Body bytes and every header of one delivery of `payload`, as the dispatcher signs them."""
    event = events.make_event(_ACCOUNT_ID, payload)
    headers = signing.webhook_headers(
        body=event.body,
        msg_id=event.id,
        timestamp=now_ms // 1000,
        signature_key=key,
        webhook_secrets=[secret],
        user_agent=USER_AGENT,
    )
    return event.body, headers


@click.command("trigger")
@click.argument("action")
@click.option("--url", required=True, help="Where to POST the events (loopback included).")
@click.option("--key", help=f"Sendcloud-Signature key.  [default: the demo key {DEMO_KEY}]")
@click.option("--secret", help="whsec_ secret for webhook-signature.  [default: a new one]")
@click.option("--status", "status_id", type=int, help="Parcel status id (parcel events).")
@click.option(
    "--count",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="How many events to send, one after the other.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for each answer.",
)
def trigger_command(
    action: str,
    url: str,
    key: str | None,
    secret: str | None,
    status_id: int | None,
    count: int,
    timeout: float,
) -> None:
    """Send ACTION events, signed like parcelhook's (and Sendcloud's) webhooks, to --url.

    ACTION is one of parcel_status_changed, integration_connected, integration_updated,
    integration_deleted, refund_requested, test_webhook.
    """
    if action not in systems.ACTIONS:
        raise click.ClickException(
            f"unknown action {action!r}; choose one of: {', '.join(systems.ACTIONS)}"
        )
    if status_id is not None and not is_known_status(status_id):
        known = ", ".join(str(s) for s in STATUS_MESSAGES)
        raise click.ClickException(f"unknown status id {status_id}; known ids: {known}")
    if status_id is not None and action not in PARCEL_ACTIONS:
        raise click.ClickException(f"--status applies only to {' and '.join(PARCEL_ACTIONS)}")
    if secret is not None:
        _check_secret(secret)
    if key is None:
        key = DEMO_KEY
        click.echo(f"Sendcloud-Signature key: {DEMO_KEY} (the demo key; pass --key)", err=True)
    if secret is None:
        secret = signing.new_webhook_secret()
        click.echo(f"webhook-signature secret: {secret} (new; pass --secret)", err=True)
    rejected = asyncio.run(
        _send_all(
            action, url, key=key, secret=secret, status_id=status_id, count=count, seconds=timeout
        )
    )
    if rejected:
        raise click.ClickException(f"{rejected} of {count} events were not accepted")


async def _send_all(
    action: str,
    url: str,
    *,
    key: str,
    secret: str,
    status_id: int | None,
    count: int,
    seconds: float,
) -> int:
    clock = SystemClock()
    last_ms = 0
    rejected = 0
    # a local tool: it sends wherever it is told, so the server's SSRF guard is off
    async with Sender(
        timeout=seconds, allow_private=True, allow_http=True, user_agent=USER_AGENT
    ) as sender:
        for n in range(count):
            # strictly increasing, so receivers that order by timestamp keep every event
            now_ms = last_ms = max(clock.now_ms(), last_ms + 1)
            status = status_id if status_id is not None else LIFECYCLE[n % len(LIFECYCLE)]
            payload = sample_payload(
                action, now_ms=now_ms, status_id=status, url=url, key=key, secret=secret
            )
            body, headers = signed_request(payload, key=key, secret=secret, now_ms=now_ms)
            result = await sender.send(url, body, headers)
            if result.status_code is None:
                raise click.ClickException(f"could not reach {url}: {result.error}")
            click.echo(_line(action, headers["webhook-id"], result))
            rejected += not result.succeeded
    return rejected


def _check_secret(secret: str) -> None:
    try:
        check_webhook_secret(secret)
    except ValueError as exc:
        raise click.ClickException(f"--secret: {exc}") from None


def _line(action: str, webhook_id: str, result: AttemptResult) -> str:
    excerpt = " ".join(result.response_excerpt.split())
    if len(excerpt) > 80:
        excerpt = excerpt[:79] + "…"
    outcome = f"{result.status_code}  {result.duration_ms} ms"
    return f"{outcome}  {action} {webhook_id}  {result.error or excerpt}".rstrip()


if __name__ == "__main__":
    trigger_command()
