"""Settings, in one place: built once (flags over `PARCELHOOK_*` variables over a `.env` file
over defaults) and passed in. `parcelhook config` prints them; `--help` lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from parcelhook.domain.integrations import TargetPolicy
from parcelhook.domain.retry import RetryPolicy
from parcelhook.store import engine

DEFAULT_DATABASE_URL = "sqlite:///parcelhook.db"
ENV_PREFIX = "PARCELHOOK_"
SUPPORTED_URLS = "sqlite:///FILE or postgresql://USER:PASSWORD@HOST:PORT/DB"


class SettingsError(ValueError):
    """A setting's value is unusable; the message names the flag and the variable to fix."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def names(name: str) -> str:
    """How an operator sets `name`: `--flag / PARCELHOOK_VAR`."""
    if name in NO_FLAG:
        return env_name(name)
    return f"{flag(name)} / {env_name(name)}"


# secrets given on a command line would show in the process list: variables and .env only
NO_FLAG = frozenset({"master_key", "previous_master_keys", "smtp_password", "metrics_token"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        extra="ignore",
        frozen=True,
        arbitrary_types_allowed=True,
        # the derived retry policy starts as None (see _retry_policy)
        validate_default=False,
    )

    # -- storage ---------------------------------------------------------------------------
    database_url: str = Field(DEFAULT_DATABASE_URL, description=SUPPORTED_URLS + ".")
    master_key: SecretStr | None = Field(
        None,
        description="The Fernet key that encrypts stored secrets (else read from --key-file).",
    )
    previous_master_keys: SecretStr | None = Field(
        None,
        description="Comma-separated keys secrets may still be sealed with during a rotation.",
    )
    key_file: Path | None = Field(
        None,
        description="File holding the master key (SQLite: created next to the database "
        "file when missing).",
    )
    retention_days: float = Field(
        30.0, gt=0, description="Days settled deliveries' payloads and attempts are kept."
    )

    # -- HTTP --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    public_url: str | None = Field(
        None,
        max_length=2048,
        description="Where clients reach this server (label links in webhooks start with "
        "it); unset: http://HOST:PORT.",
    )
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Processes serving on the port (PostgreSQL only); each runs a "
        "dispatcher too unless --no-dispatcher.",
    )
    forwarded_allow_ips: str = Field(
        "",
        description="Comma-separated addresses of reverse proxies whose X-Forwarded-For/-Proto "
        "to trust (default: none, not even loopback).",
    )
    secure_cookies: bool = Field(
        False, description="Mark panel session cookies Secure (serve the panel over https)."
    )
    secret_grace_hours: float = Field(
        24.0, ge=0, description="Hours a rotated webhook secret keeps verifying."
    )
    shipping_methods_file: Path | None = Field(
        None,
        description="A JSON shipping-method catalogue (weights, countries, prices) instead "
        "of the built-in one.",
    )
    metrics_token: SecretStr | None = Field(
        None, description="When set, /metrics needs 'Authorization: Bearer TOKEN'."
    )
    metrics_token_file: Path | None = Field(
        None,
        description="File holding the /metrics token (instead of PARCELHOOK_METRICS_TOKEN).",
    )
    http_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="worker only: serve /metrics and /healthz on this port.",
    )

    # -- delivery ----------------------------------------------------------------------------
    dispatcher: bool = Field(True, description="Deliver webhooks in this process.")
    allow_private_targets: bool = Field(
        False, description="Let webhooks reach loopback and private addresses (local use only)."
    )
    allow_http_targets: bool = Field(
        False, description="Accept plain http:// webhook URLs (local use only)."
    )
    timeout: float = Field(10.0, ge=0.1, le=120, description="Seconds an endpoint has to answer.")
    retry_first: float = Field(
        300.0, gt=0, description="Seconds before the first retry; each retry doubles it."
    )
    retry_cap: float = Field(3600.0, gt=0, description="Longest wait between retries, seconds.")
    retries: int = Field(10, ge=0, le=100, description="Retries after the first attempt.")
    # an explicit policy (tests, benchmarks); else built from the three settings above
    retry: RetryPolicy = Field(None, exclude=True)  # type: ignore[assignment]
    endpoint_concurrency: int = Field(
        16, ge=1, le=1024, description="Requests one endpoint may have in flight at once."
    )
    lease_seconds: float = Field(
        120.0,
        ge=1,
        le=3600,
        description="How long a claimed delivery stays with this process; a crashed "
        "process's deliveries are taken over after it. Must exceed --timeout.",
    )
    poll_seconds: float = Field(
        1.0, ge=0.05, le=60, description="Fallback poll when no wake-up arrives."
    )
    ca_bundle: Path | None = Field(
        None,
        description="PEM file of CA certificates endpoints' TLS certificates may also chain "
        "to, in addition to the system's (an internal CA); SSL_CERT_FILE would replace them.",
    )
    client_cert: Path | None = Field(
        None,
        description="PEM client certificate (with its key, unless --client-key) shown to "
        "endpoints that ask for one (mutual TLS).",
    )
    client_key: Path | None = Field(None, description="PEM private key of --client-cert.")

    # -- failing endpoints ----------------------------------------------------------------
    alert_after_hours: float = Field(
        1.0, ge=0, description="E-mail the account once an endpoint has failed this long."
    )
    disable_after_days: float = Field(
        3.0,
        ge=0,
        description="Turn a webhook off once its endpoint has failed this long (0: never).",
    )
    smtp_host: str | None = Field(None, description="SMTP server for alerts (unset: no e-mail).")
    smtp_port: int = Field(587, ge=1, le=65535, description="SMTP port.")
    smtp_username: str | None = Field(None, description="SMTP user name, if it needs one.")
    smtp_password: SecretStr | None = Field(None, description="SMTP password.")
    smtp_from: str = Field("parcelhook@localhost", description="Sender address of alerts.")
    smtp_tls: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (port 587), tls (port 465) or none."
    )

    # -- observability -----------------------------------------------------------------------
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe log level shown."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text for people, json (one object a line) for collectors."
    )
    otlp_endpoint: str | None = Field(
        None,
        description="Send traces by OTLP/HTTP here (needs the parcelhook[otel] extra).",
    )

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        try:
            driver = make_url(url).get_backend_name()
        except ArgumentError:
            raise ValueError(f"not a database URL; use {SUPPORTED_URLS}") from None
        if driver not in ("sqlite", "postgresql"):
            raise ValueError(f"{driver} is not supported; use {SUPPORTED_URLS}")
        return url

    @model_validator(mode="after")
    def _lease_outlives_an_attempt(self) -> Settings:
        if self.lease_seconds <= self.timeout:
            raise ValueError(
                f"{names('lease_seconds')} ({self.lease_seconds:g}) must exceed "
                f"{names('timeout')} ({self.timeout:g}): a lease that ends mid-attempt lets "
                "another worker send the same delivery"
            )
        return self

    @model_validator(mode="after")
    def _metrics_token_from_file(self) -> Settings:
        if self.metrics_token_file is None:
            return self
        if self.metrics_token is not None:
            raise ValueError(
                f"{names('metrics_token_file')}: give the token once, in this file or in "
                f"{env_name('metrics_token')}, not both"
            )
        try:
            token = self.metrics_token_file.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not text"
            raise ValueError(
                f"{names('metrics_token_file')}: cannot read {self.metrics_token_file} ({why})"
            ) from None
        if not token:
            raise ValueError(f"{names('metrics_token_file')}: {self.metrics_token_file} is empty")
        # frozen: a validator is the one place the derived value may be set
        self.__dict__["metrics_token"] = SecretStr(token)
        return self

    @model_validator(mode="after")
    def _retry_policy(self) -> Settings:
        if self.retry is None:
            policy = RetryPolicy.exponential(
                first=self.retry_first, cap=self.retry_cap, retries=self.retries
            )
            # frozen: a validator is the one place the derived value may be set
            self.__dict__["retry"] = policy
        return self

    @property
    def target_policy(self) -> TargetPolicy:
        return TargetPolicy(
            allow_http=self.allow_http_targets, allow_private=self.allow_private_targets
        )

    @property
    def single_writer(self) -> bool:
        """One process writes at a time (SQLite): `serve --workers` is refused."""
        return engine.single_writer(self.database_url)

    @property
    def effective_key_file(self) -> Path | None:
        """The key file: the one given, else (SQLite) `NAME.key` next to the database file."""
        if self.key_file is not None:
            return self.key_file
        db = engine.database_file(self.database_url)
        return db.with_suffix(".key") if db is not None else None

    def shown(self) -> dict[str, Any]:
        """Every setting's effective value, secrets masked (for `parcelhook config`)."""
        out: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name == "retry":
                continue
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif name == "database_url":
                value = make_url(value).render_as_string(hide_password=True)
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["key_file"] = str(self.effective_key_file or "")
        return out

    def __repr__(self) -> str:
        # the URL may carry a database password
        return f"Settings(host={self.host!r}, port={self.port}, dispatcher={self.dispatcher})"

    __str__ = __repr__


def describe_error(exc: Exception) -> str:
    """A pydantic ValidationError as one line naming the flag and the variable to fix."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    first = exc.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{names(name)}: {message}" if name else message
