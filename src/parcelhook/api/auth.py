"""HTTP Basic with an API integration's `public_key:secret_key`, as Sendcloud's API does."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBasic
from starlette.requests import HTTPConnection

from parcelhook.service import Service

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="parcelhook"'}


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: int
    integration_id: int


class _BasicScheme(HTTPBasic):
    """Declares HTTP Basic in the OpenAPI document; `api_caller` does the checking."""

    async def __call__(self, request: HTTPConnection) -> None:
        return None


basic_scheme = _BasicScheme(
    scheme_name="HTTPBasicAuth",
    description="An API integration's `public_key` as user name and `secret_key` as password.",
    auto_error=False,
)


async def api_caller(
    request: Request, _scheme: Annotated[None, Depends(basic_scheme)] = None
) -> Caller:
    """The authenticated caller, or 401 (the same answer whatever was wrong)."""
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "basic" and encoded:
        try:
            public, _, secret = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            public = secret = ""
        if public and secret:
            service: Service = request.app.state.service
            key = await service.authenticate_api(public, secret)
            if key is not None:
                return Caller(key.account_id, key.integration_id)
    raise HTTPException(401, "Authenticate with your API public and secret key.", _CHALLENGE)
