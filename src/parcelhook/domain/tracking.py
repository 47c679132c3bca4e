"""Carrier tracking updates: one parcel's new status, alone or in a batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from parcelhook.domain.errors import DomainError, InvalidInput
from parcelhook.domain.statuses import is_known_status

# the most updates one bulk request may carry: one transaction, bounded in time and memory
MAX_BATCH: Final = 1000
# the largest id the database stores, and the last millisecond of the year 9999
_MAX_ID: Final = 2**63 - 1
_MAX_MS: Final = 253_402_300_799_999

CHANGED: Final = "changed"
UNCHANGED: Final = "unchanged"
FAILED: Final = "failed"


@dataclass(frozen=True, slots=True)
class TrackingUpdate:
    parcel_id: int
    status_id: int
    carrier_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One account's status change of one parcel (`POST /api/v2/parcels/{id}/status`)."""

    account_id: int
    parcel_id: int
    status_id: int
    carrier_ms: int | None = None


@dataclass(frozen=True, slots=True)
class TrackingResult:
    """What became of one update: changed, unchanged (already that status) or failed."""

    parcel_id: int | None
    outcome: str
    status_id: int | None = None
    error: DomainError | None = None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_status(status_id: Any, carrier_ms: Any) -> None:
    """The checks every status change passes, single or bulk."""
    if not _is_int(status_id):
        raise InvalidInput("status_id must be an integer.", field="status_id")
    if not is_known_status(status_id):
        raise InvalidInput(
            f"Unknown parcel status id {status_id}.", field="status_id", code="unknown_status"
        )
    if carrier_ms is not None and (not _is_int(carrier_ms) or not 0 <= carrier_ms <= _MAX_MS):
        raise InvalidInput(
            "carrier_status_change_timestamp must be milliseconds since the epoch.",
            field="carrier_status_change_timestamp",
        )


_FIELDS = frozenset({"parcel_id", "status_id", "carrier_status_change_timestamp"})


def parse_update(item: Any) -> TrackingUpdate:
    """One item of a bulk request; every error names its field."""
    if not isinstance(item, dict):
        raise InvalidInput("Each update must be an object.", field="tracking_updates")
    unknown = sorted(set(item) - _FIELDS)
    if unknown:
        raise InvalidInput(f"Unknown field {unknown[0]}.", field=unknown[0], code="unknown_field")
    parcel_id = item.get("parcel_id")
    if parcel_id is None:
        raise InvalidInput("parcel_id is required.", field="parcel_id", code="required")
    if not _is_int(parcel_id) or not 1 <= parcel_id <= _MAX_ID:
        raise InvalidInput("parcel_id must be a positive integer.", field="parcel_id")
    if "status_id" not in item:
        raise InvalidInput("status_id is required.", field="status_id", code="required")
    status_id, carrier_ms = item["status_id"], item.get("carrier_status_change_timestamp")
    check_status(status_id, carrier_ms)
    return TrackingUpdate(parcel_id, status_id, carrier_ms)


def item_parcel_id(item: Any) -> int | None:
    """The parcel an item names, if it names one at all (for reporting a failed item)."""
    pid = item.get("parcel_id") if isinstance(item, dict) else None
    return pid if _is_int(pid) else None
