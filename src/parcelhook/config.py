"""Settings, built once (from flags and PARCELHOOK_* variables) and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from parcelhook.domain.integrations import TargetPolicy
from parcelhook.domain.retry import RetryPolicy

DEFAULT_DATABASE_URL = "sqlite:///parcelhook.db"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8000
    allow_private_targets: bool = False
    allow_http_targets: bool = False
    # seconds a delivery attempt may take before it counts as failed
    timeout: float = 10.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    endpoint_concurrency: int = 16
    # how long a claimed delivery stays leased: a crashed worker's work is retaken after it
    lease_seconds: float = 120.0
    poll_seconds: float = 1.0
    # the Fernet master key; when absent it is read from (or generated into) key_file
    master_key: str | None = None
    key_file: Path = Path("parcelhook.key")
    retention_days: float = 30.0
    secret_grace_hours: float = 24.0
    dispatcher: bool = True
    secure_cookies: bool = False

    @property
    def target_policy(self) -> TargetPolicy:
        return TargetPolicy(
            allow_http=self.allow_http_targets, allow_private=self.allow_private_targets
        )

    def __repr__(self) -> str:
        # the URL may carry a database password
        return f"Settings(host={self.host!r}, port={self.port}, dispatcher={self.dispatcher})"
