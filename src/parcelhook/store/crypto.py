"""Encryption at rest for every secret the store keeps (Fernet)."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class SecretBox:
    """Encrypts secrets before they reach the database and decrypts them on the way out."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode("utf-8")).decode("ascii")

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken:
            # never echo the token: it is the secret's ciphertext
            raise RuntimeError("a stored secret does not decrypt with this master key") from None

    def __repr__(self) -> str:
        return "SecretBox(<hidden>)"


def load_master_key(env_value: str | None, key_file: Path) -> bytes:
    """The master key from the environment, else from `key_file` (created with mode 0600)."""
    if env_value:
        return env_value.encode("ascii")
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key
