"""Failing endpoints: tell the account by e-mail when an endpoint has failed for a while,
and turn its webhook off (recording why) when it has failed for too long.

Runs beside the dispatcher (every process that dispatches checks; a conditional update
makes sure each integration is acted on once). No SMTP host configured: no e-mail, but
webhooks are still turned off and the reason recorded for the panel.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Protocol

import aiosmtplib

from parcelhook.config import Settings
from parcelhook.metrics import Metrics
from parcelhook.store import Store, endpoint_health
from parcelhook.store.endpoint_health import Failing

log = logging.getLogger("parcelhook.alerts")
HOUR_MS = 3_600_000


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """Sends through the configured SMTP server (aiosmtplib)."""

    def __init__(self, settings: Settings) -> None:
        assert settings.smtp_host is not None
        self.settings = settings

    async def send(self, message: EmailMessage) -> None:
        s = self.settings
        message["From"] = s.smtp_from
        await aiosmtplib.send(
            message,
            hostname=s.smtp_host,
            port=s.smtp_port,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
            use_tls=s.smtp_tls == "tls",
            start_tls=s.smtp_tls == "starttls",
            timeout=30,
        )


def mailer_from_settings(settings: Settings) -> Mailer | None:
    return SmtpMailer(settings) if settings.smtp_host else None


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _hours(hours: float) -> str:
    return f"{hours / 24:g} days" if hours >= 48 else f"{hours:g} hours" if hours != 1 else "1 hour"


def failing_message(f: Failing, after_hours: float, off_after_hours: float) -> EmailMessage:
    m = EmailMessage()
    m["To"] = f.email
    m["Subject"] = f"parcelhook: webhooks to {f.shop_name} are failing"
    off = (
        f"If it keeps failing, its webhook feedback is turned off after {_hours(off_after_hours)}."
        if off_after_hours > 0
        else ""
    )
    m.set_content(
        f"Deliveries to the webhook of your integration {f.shop_name} (id {f.integration_id}) "
        f"have failed since {_when(f.failing_since_ms)}, for more than {_hours(after_hours)}.\n"
        f"Last error: {f.last_error or 'the endpoint did not accept the request'}\n\n"
        "They are retried on schedule; nothing is lost while it recovers. "
        f"{off}\nThe integration's Webhook log shows every attempt.\n"
    )
    return m


def disabled_message(f: Failing, reason: str) -> EmailMessage:
    m = EmailMessage()
    m["To"] = f.email
    m["Subject"] = f"parcelhook: webhook feedback for {f.shop_name} was turned off"
    m.set_content(
        f"Webhook feedback for your integration {f.shop_name} (id {f.integration_id}) was "
        f"turned off: {reason}.\nLast error: {f.last_error or 'unknown'}\n\n"
        "Fix the endpoint, turn webhook feedback on again in the integration's settings, and "
        "redeliver what failed from its Webhook log.\n"
    )
    return m


class FailingEndpoints:
    def __init__(
        self, store: Store, settings: Settings, mailer: Mailer | None, metrics: Metrics
    ) -> None:
        self.store = store
        self.mailer = mailer
        self.metrics = metrics
        self.alert_after_hours = settings.alert_after_hours
        self.disable_after_hours = settings.disable_after_days * 24

    async def check_once(self, now_ms: int) -> None:
        """Turn off what failed too long, tell the accounts, then tell the others."""
        if self.disable_after_hours > 0:
            reason = (
                f"its endpoint kept failing for {_hours(self.disable_after_hours)}"
                f" (until {_when(now_ms)})"
            )
            cutoff = now_ms - int(self.disable_after_hours * HOUR_MS)
            for f in await endpoint_health.disable_failing(self.store, cutoff, now_ms, reason):
                log.warning(
                    "webhook turned off: its endpoint failed too long",
                    extra={"integration_id": f.integration_id, "failing_since": f.failing_since_ms},
                )
                self.metrics.alerts.labels("disabled").inc()
                await self._mail(disabled_message(f, reason))
        if self.mailer is not None:
            cutoff = now_ms - int(self.alert_after_hours * HOUR_MS)
            for f in await endpoint_health.failing_unannounced(self.store, cutoff, now_ms):
                sent = await self._mail(
                    failing_message(f, self.alert_after_hours, self.disable_after_hours)
                )
                if not sent:
                    # marked as told when claimed (one process mails it); untold, it is
                    # claimed again at the next check
                    await endpoint_health.unannounce(self.store, f.integration_id, now_ms)
        self.metrics.failing.set(await endpoint_health.count_failing(self.store))

    async def _mail(self, message: EmailMessage) -> bool:
        """Send `message`; whether it went (False without SMTP settings too)."""
        if self.mailer is None:
            return False
        try:
            await self.mailer.send(message)
        except Exception as exc:
            # the recipient address is the account's: name the failure, not the address
            log.warning("could not send a failing-endpoint e-mail: %s", type(exc).__name__)
            return False
        self.metrics.alerts.labels("mailed").inc()
        return True
