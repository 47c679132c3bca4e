"""Errors a caller can act on: each names what is wrong and, where it applies, the field."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error that maps to a 4xx answer."""

    status = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, field: str | None = None, code: str | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code is not None:
            self.code = code
        self.extra = extra

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        body.update(self.extra)
        return body


class InvalidInput(DomainError):
    status = 422
    code = "invalid"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"
