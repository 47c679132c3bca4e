"""Slowing down password guessing: failed sign-ins per e-mail and per client address."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Record:
    failures: int
    last_ms: int


class SignInThrottle:
    """After `free` failures in a row a key is locked out, twice as long after each further one.

    Every attempt counts as a failure before the password is checked, and a success takes
    it back: parallel guesses cannot slip through while the hash is being computed.
    Per process, in memory, on purpose: in the database every guess would cost a write
    (docs/security.md says what that means with several processes).
    """

    def __init__(
        self,
        now_ms: Callable[[], int],
        *,
        free_per_email: int = 5,
        # higher: many honest people can share one address behind a NAT
        free_per_address: int = 20,
        first_lockout_s: float = 30,
        max_lockout_s: float = 900,
        forget_after_s: float = 3600,
        max_entries: int = 10_000,
    ) -> None:
        self._now_ms = now_ms
        self._free = {"email": free_per_email, "ip": free_per_address}
        self._first_ms = int(first_lockout_s * 1000)
        self._max_ms = int(max_lockout_s * 1000)
        self._forget_ms = int(forget_after_s * 1000)
        self._max_entries = max_entries
        self._records: dict[tuple[str, str], _Record] = {}

    def attempt(self, email: str, address: str) -> int:
        """Seconds to wait before trying again (the attempt is refused), or 0 (it is counted)."""
        now = self._now_ms()
        keys = self._keys(email, address)
        wait_ms = max(self._locked_for(key, now) for key in keys)
        if wait_ms > 0:
            return -(-wait_ms // 1000)
        for key in keys:
            record = self._live(key, now)
            self._records[key] = _Record((record.failures if record else 0) + 1, now)
        self._prune(now)
        return 0

    def succeeded(self, email: str, address: str) -> None:
        """Take back the attempt: the e-mail starts afresh, the address loses one failure."""
        email_key, address_key = self._keys(email, address)
        self._records.pop(email_key, None)
        record = self._records.get(address_key)
        if record is not None:
            record.failures = max(0, record.failures - 1)

    @staticmethod
    def _keys(email: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("email", email.strip().lower()), ("ip", address)

    def _live(self, key: tuple[str, str], now: int) -> _Record | None:
        record = self._records.get(key)
        if record is not None and now - record.last_ms > self._forget_ms:
            del self._records[key]
            return None
        return record

    def _locked_for(self, key: tuple[str, str], now: int) -> int:
        record = self._live(key, now)
        free = self._free[key[0]]
        if record is None or record.failures < free:
            return 0
        lockout = min(self._first_ms << min(record.failures - free, 30), self._max_ms)
        return max(0, record.last_ms + lockout - now)

    def _prune(self, now: int) -> None:
        if len(self._records) <= self._max_entries:
            return
        for key in [k for k, r in self._records.items() if now - r.last_ms > self._forget_ms]:
            del self._records[key]
        # still full (a flood of fresh e-mails): forget the oldest first
        while len(self._records) > self._max_entries:
            del self._records[next(iter(self._records))]
