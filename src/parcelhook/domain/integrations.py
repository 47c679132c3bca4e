"""Integrations and the validation of their webhook settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from parcelhook.domain import keys, systems, targets
from parcelhook.domain.errors import InvalidInput
from parcelhook.domain.text import check_text

SHOP_NAME_MAX = 255


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What authenticating an API call needs of an integration: who it is and its secret."""

    integration_id: int
    account_id: int
    system: str
    secret_key: str


@dataclass(frozen=True, slots=True)
class Integration:
    """One integration with its secrets in clear (they are encrypted only at rest)."""

    id: int
    account_id: int
    shop_name: str
    shop_url: str | None
    system: str
    webhook_active: bool
    webhook_url: str | None
    webhook_signature_key: str | None
    public_key: str
    secret_key: str
    webhook_secret: str
    previous_webhook_secret: str | None
    previous_webhook_secret_until_ms: int | None
    failing_since_ms: int | None
    last_fetch_ms: int | None
    last_updated_ms: int
    created_ms: int
    service_point_enabled: bool = False
    deleted_ms: int | None = None
    service_point_carriers: tuple[str, ...] = ()
    # set when parcelhook turned the webhook off itself (its endpoint failed too long)
    disabled_reason: str | None = None
    disabled_ms: int | None = None

    @property
    def receives_webhooks(self) -> bool:
        return self.webhook_active and bool(self.webhook_url)

    @property
    def signing_key(self) -> str:
        """The Sendcloud-Signature key: the signature key when set, else the API secret."""
        return self.webhook_signature_key or self.secret_key

    def webhook_secrets(self, now_ms: int) -> tuple[str, ...]:
        """Current `whsec_` secret first; the previous one too while its grace period lasts."""
        prev, until = self.previous_webhook_secret, self.previous_webhook_secret_until_ms
        if prev and until is not None and now_ms < until:
            return (self.webhook_secret, prev)
        return (self.webhook_secret,)


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """What the operator allows webhook URLs to point at."""

    allow_http: bool = False
    allow_private: bool = False


@dataclass(frozen=True, slots=True)
class IntegrationChanges:
    """Validated fields of a create or update; None means "not given"."""

    shop_name: str | None = None
    shop_url: str | None = None
    system: str | None = None
    webhook_active: bool | None = None
    webhook_url: str | None = None
    webhook_signature_key: str | None = None
    service_point_enabled: bool | None = None
    service_point_carriers: tuple[str, ...] | None = None
    # True when the request cleared the key (an empty string or null)
    clear_signature_key: bool = False
    clear_webhook_url: bool = False


_FIELDS = {
    "shop_name",
    "shop_url",
    "system",
    "webhook_active",
    "webhook_url",
    "webhook_signature_key",
    "service_point_enabled",
    "service_point_carriers",
}
# what a read returns and a client may send back unchanged (GET, modify, PUT): ignored
READ_ONLY = frozenset(
    {
        "id",
        "failing_since",
        "last_fetch",
        "last_updated_at",
        "webhook_signature_key_set",
        "webhook_signature_key_last4",
        "public_key",
        "secret_key",
        "webhook_secret",
    }
)


def _str_field(data: dict[str, Any], name: str, max_len: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string.", field=name)
    if len(value) > max_len:
        raise InvalidInput(f"{name} must be at most {max_len} characters.", field=name)
    return check_text(value, name)


def parse_changes(data: Any, *, creating: bool, replacing: bool = False) -> IntegrationChanges:
    """Validate a create (`creating`), a full update (`replacing`, PUT) or a partial one.

    Updates accept the read-only fields of a read and ignore them; a create refuses them.
    """
    if not isinstance(data, dict):
        raise InvalidInput("integration must be an object.", field="integration")
    allowed = _FIELDS if creating else _FIELDS | READ_ONLY
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise InvalidInput(f"Unknown field {unknown[0]}.", field=unknown[0], code="unknown_field")
    shop_name = _str_field(data, "shop_name", SHOP_NAME_MAX)
    if shop_name is not None and not shop_name.strip():
        raise InvalidInput("shop_name must not be empty.", field="shop_name")
    if (creating or replacing) and shop_name is None:
        raise InvalidInput("shop_name is required.", field="shop_name", code="required")
    shop_url = _str_field(data, "shop_url", 2048)
    if shop_url and _scheme(shop_url) not in ("http", "https"):
        # shown as a link in the panel: javascript: and data: URLs would run there
        raise InvalidInput(
            "shop_url must be an http:// or https:// URL.", field="shop_url", code="invalid_url"
        )
    system = data.get("system")
    if (system is not None or creating) and (
        not isinstance(system, str) or not systems.is_known_system(system)
    ):
        accepted = ", ".join(systems.SYSTEMS)
        raise InvalidInput(
            f"system must be one of: {accepted}.",
            field="system",
            code="unknown_system",
            accepted=list(systems.SYSTEMS),
        )
    active = data.get("webhook_active")
    if active is not None and not isinstance(active, bool):
        raise InvalidInput("webhook_active must be true or false.", field="webhook_active")
    service_point = data.get("service_point_enabled")
    if service_point is not None and not isinstance(service_point, bool):
        raise InvalidInput(
            "service_point_enabled must be true or false.", field="service_point_enabled"
        )
    carriers = data.get("service_point_carriers")
    if carriers is not None and (
        not isinstance(carriers, list)
        or len(carriers) > 50
        or not all(isinstance(c, str) and 0 < len(c) <= 50 for c in carriers)
    ):
        raise InvalidInput(
            "service_point_carriers must be a list of carrier codes.",
            field="service_point_carriers",
        )
    url = _str_field(data, "webhook_url", 100_000)
    key = _str_field(data, "webhook_signature_key", 10_000)
    if key:
        keys.check_signature_key(key)
    return IntegrationChanges(
        shop_name=shop_name.strip() if shop_name else None,
        shop_url=shop_url,
        system=system,
        webhook_active=active,
        webhook_url=url or None,
        webhook_signature_key=key or None,
        service_point_enabled=service_point,
        service_point_carriers=tuple(carriers) if carriers is not None else None,
        clear_signature_key="webhook_signature_key" in data and not key,
        clear_webhook_url="webhook_url" in data and not url,
    )


def check_webhook_settings(active: bool, url: str | None, policy: TargetPolicy) -> None:
    """The URL rules of the Configure form, given the operator's target policy."""
    if active and not url:
        raise InvalidInput(
            "A webhook URL is required when webhook feedback is enabled.",
            field="webhook_url",
            code="required",
        )
    if url:
        problem = targets.check_webhook_url(
            url, allow_http=policy.allow_http, allow_private=policy.allow_private
        )
        if problem:
            raise InvalidInput(problem, field="webhook_url", code="invalid_url")


def _scheme(url: str) -> str:
    try:
        return urlsplit(url.strip()).scheme.lower()
    except ValueError:
        return ""
