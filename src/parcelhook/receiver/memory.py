"""Bounded in-memory helpers: de-duplicate on `webhook-id`, order a parcel's events by time.

Both forget the least recently used entries beyond `maxsize`: a duplicate or a stale event
older than that window goes unnoticed, so keep a database constraint where it matters.
They are thread-safe, for threaded WSGI servers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class Deduplicator:
    """Remembers the last `maxsize` webhook ids."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def seen(self, webhook_id: str) -> bool:
        """Record `webhook_id`; True when it had already been recorded (a duplicate)."""
        with self._lock:
            if webhook_id in self._ids:
                self._ids.move_to_end(webhook_id)
                return True
            self._ids[webhook_id] = None
            if len(self._ids) > self.maxsize:
                self._ids.popitem(last=False)
            return False

    def forget(self, webhook_id: str) -> None:
        """Un-record an id whose handling failed, so that the sender's retry is processed."""
        with self._lock:
            self._ids.pop(webhook_id, None)

    def __contains__(self, webhook_id: object) -> bool:
        return webhook_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


class ParcelOrdering:
    """Remembers the latest event timestamp of the last `maxsize` parcels."""

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._latest: OrderedDict[int, int] = OrderedDict()
        self._lock = threading.Lock()

    def is_newer(self, parcel_id: int, timestamp_ms: int) -> bool:
        """True (and recorded) when this event is later than any seen for the parcel.

        Retries arrive out of order: an older status must not overwrite a newer one.
        parcelhook's timestamps are strictly increasing per parcel in commit order.
        """
        with self._lock:
            latest = self._latest.get(parcel_id)
            if latest is not None and timestamp_ms <= latest:
                self._latest.move_to_end(parcel_id)
                return False
            self._latest[parcel_id] = timestamp_ms
            self._latest.move_to_end(parcel_id)
            if len(self._latest) > self.maxsize:
                self._latest.popitem(last=False)
            return True

    def latest(self, parcel_id: int) -> int | None:
        """The timestamp of the newest event seen for the parcel, if remembered."""
        return self._latest.get(parcel_id)
