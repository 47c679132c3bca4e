"""The webhook signature key policy: every rule a key breaks is named at once."""

from __future__ import annotations

import string
from typing import Final

from parcelhook.domain.errors import InvalidInput

MIN_LENGTH: Final = 16
_SPECIALS: Final = frozenset(string.punctuation)

# rule id → the words shown to the merchant, in the order the checklist shows them
RULES: Final[dict[str, str]] = {
    "length": f"at least {MIN_LENGTH} characters",
    "digit": "at least one digit",
    "uppercase": "at least one upper-case letter",
    "lowercase": "at least one lower-case letter",
    "special": "at least one special character (such as ! # % * or -)",
}


def failed_rules(key: str) -> list[str]:
    """The ids of the rules `key` breaks, in checklist order (empty when it is strong)."""
    checks = {
        "length": len(key) >= MIN_LENGTH,
        "digit": any(c in string.digits for c in key),
        "uppercase": any(c in string.ascii_uppercase for c in key),
        "lowercase": any(c in string.ascii_lowercase for c in key),
        "special": any(c in _SPECIALS for c in key),
    }
    return [rule for rule, ok in checks.items() if not ok]


class WeakSignatureKey(InvalidInput):
    code = "weak_signature_key"

    def __init__(self, rules: list[str]) -> None:
        words = "; ".join(RULES[r] for r in rules)
        super().__init__(
            f"The webhook signature key must have {words}.",
            field="webhook_signature_key",
            rules=rules,
        )


def check_signature_key(key: str) -> None:
    """Raise `WeakSignatureKey` naming every failed rule."""
    rules = failed_rules(key)
    if rules:
        raise WeakSignatureKey(rules)


def last4(key: str) -> str:
    """The only part of a stored key that is ever shown again."""
    return key[-4:]
