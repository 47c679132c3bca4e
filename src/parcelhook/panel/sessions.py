"""Panel sessions: a signed cookie carrying the CSRF token and, once signed in, the account.

A signed cookie cannot be taken back, so a signed-in one also carries its account's session
generation, which sign-out and a new password raise in the database: older cookies are then
refused by every process, also after a restart (`Panel.verify_session`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
    # the account's session generation when it signed in
    generation: int = 0

    @classmethod
    def fresh(cls, account_id: int | None = None, generation: int = 0) -> Session:
        """A new session id and CSRF token (new on sign-in, so a planted cookie is useless)."""
        return cls(secrets.token_urlsafe(16), secrets.token_urlsafe(32), account_id, generation)

    def csrf_matches(self, token: object) -> bool:
        return isinstance(token, str) and secrets.compare_digest(
            token.encode("utf-8", "replace"), self.csrf.encode()
        )


class SessionCodec:
    """Signs sessions into cookie values and back (it keeps no state)."""

    def __init__(self, secret: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="parcelhook.panel.session")

    def dumps(self, session: Session) -> str:
        return self._serializer.dumps(
            [session.sid, session.csrf, session.account_id, session.generation]
        )

    def loads(self, value: str | None) -> Session | None:
        if not value:
            return None
        try:
            data: Any = self._serializer.loads(value, max_age=MAX_AGE_S)
            sid, csrf, account_id, generation = data
        except (BadSignature, ValueError, TypeError):
            return None
        if not (isinstance(sid, str) and isinstance(csrf, str) and type(generation) is int):
            return None
        if account_id is not None and type(account_id) is not int:
            return None
        return Session(sid, csrf, account_id, generation)
