"""Encryption at rest for every secret the store keeps (Fernet, several keys during a
rotation: the first seals, any opens)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_FINGERPRINT_LABEL = b"parcelhook master key fingerprint v1"


class MasterKeyError(ValueError):
    """The master key is missing, malformed or not this database's; says what to fix."""


def fingerprint(key: bytes) -> str:
    """A short public name for a key, from which nothing of the key can be learnt."""
    return hmac.new(key, _FINGERPRINT_LABEL, hashlib.sha256).hexdigest()[:16]


def fernet(key: bytes, where: str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise MasterKeyError(
            f"the master key in {where} is not a Fernet key (32 url-safe base64-encoded "
            "bytes; `parcelhook keys generate` makes one)"
        ) from None


# decrypted tokens kept per box (a few per integration)
_OPENED_MAX = 4096


class SecretBox:
    """Encrypts secrets before they reach the database and decrypts them on the way out.

    With `reload`, a token no key opens makes it read the keys again (at most once a
    second): a rotation that added a key to the key file is picked up while serving."""

    def __init__(
        self,
        keys: bytes | Sequence[bytes],
        *,
        where: str = "the master key",
        reload: Callable[[], Sequence[bytes]] | None = None,
    ) -> None:
        self.keys: list[bytes] = [keys] if isinstance(keys, bytes) else list(keys)
        self._where = where
        self._fernet = MultiFernet([fernet(k, where) for k in self.keys]) if self.keys else None
        self._reload = reload
        self._reloaded = 0.0
        # decrypting is ~15 µs and every API call read 3–6 secrets (docs/performance.md); a
        # token is never reused for another secret (each seal has a fresh IV), so a token's
        # plaintext can be kept: a changed secret arrives as a new token
        self._opened: dict[str, str] = {}

    @classmethod
    def locked(cls) -> SecretBox:
        """A box without keys, for work that never touches a secret (migrations)."""
        return cls([])

    @property
    def fingerprints(self) -> list[str]:
        return [fingerprint(k) for k in self.keys]

    def _box(self) -> MultiFernet:
        if self._fernet is None:
            raise MasterKeyError(f"no master key: set {self._where}")
        return self._fernet

    def seal(self, secret: str) -> str:
        return self._box().encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        secret = self._opened.get(token)
        if secret is not None:
            return secret
        try:
            secret = self._box().decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            if self._try_reload():
                return self.open(token)
            # never echo the token: it is the secret's ciphertext
            raise RuntimeError("a stored secret does not decrypt with this master key") from None
        if len(self._opened) >= _OPENED_MAX:
            self._opened.clear()
        self._opened[token] = secret
        return secret

    def opens(self, token: str) -> bool:
        try:
            self._box().decrypt(token.encode("ascii"))
        except InvalidToken:
            return False
        return True

    def reseal(self, token: str) -> str:
        """The same secret sealed with the first key (MultiFernet.rotate)."""
        return self._box().rotate(token.encode("ascii")).decode("ascii")

    def _try_reload(self) -> bool:
        if self._reload is None or time.monotonic() - self._reloaded < 1.0:
            return False
        self._reloaded = time.monotonic()
        keys = list(self._reload())
        if keys == self.keys:
            return False
        self.keys = keys
        self._fernet = MultiFernet([fernet(k, self._where) for k in keys])
        self._opened.clear()  # a retired key opens nothing any more
        return True

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"
