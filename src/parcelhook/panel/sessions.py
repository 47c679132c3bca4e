"""Panel sessions: a signed cookie carrying the CSRF token and, once signed in, the account."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Final

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE: Final = "parcelhook_session"
MAX_AGE_S: Final = 12 * 3600
# a label of its own, so the cookie key can never sign or decrypt anything else
_LABEL: Final = b"parcelhook/panel/session-cookie/v1"


def signing_secret(master_key: bytes) -> bytes:
    """The cookie-signing key, derived from (and revealing nothing of) the master key."""
    return hmac.new(master_key, _LABEL, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Session:
    sid: str
    csrf: str
    account_id: int | None = None

    @classmethod
    def fresh(cls, account_id: int | None = None) -> Session:
        """A new session id and CSRF token (new on sign-in, so a planted cookie is useless)."""
        return cls(secrets.token_urlsafe(16), secrets.token_urlsafe(32), account_id)

    def csrf_matches(self, token: object) -> bool:
        return isinstance(token, str) and secrets.compare_digest(
            token.encode("utf-8", "replace"), self.csrf.encode()
        )


class SessionCodec:
    """Signs sessions into cookie values and back; remembers signed-out ones until they expire."""

    def __init__(self, secret: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="parcelhook.panel.session")
        # a signed cookie stays valid until it expires, so sign-out has to be remembered
        self._revoked: dict[str, float] = {}

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps([session.sid, session.csrf, session.account_id])

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=MAX_AGE_S)
            sid, csrf, account_id = data
        except (BadSignature, ValueError, TypeError):
            return None
        if not (isinstance(sid, str) and isinstance(csrf, str)) or sid in self._revoked:
            return None
        if account_id is not None and not isinstance(account_id, int):
            return None
        return Session(sid, csrf, account_id)

    def revoke(self, session: Session) -> None:
        now = time.time()
        self._revoked = {sid: until for sid, until in self._revoked.items() if until > now}
        self._revoked[session.sid] = now + MAX_AGE_S
