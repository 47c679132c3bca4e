"""HTTP Basic with an API integration's `public_key:secret_key`, as Sendcloud's API does."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from fastapi import HTTPException, Request

from parcelhook.domain.integrations import Integration
from parcelhook.service import Service

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="parcelhook"'}


@dataclass(frozen=True, slots=True)
class Caller:
    account_id: int
    integration: Integration


async def api_caller(request: Request) -> Caller:
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
            integration = await service.authenticate_api(public, secret)
            if integration is not None:
                return Caller(integration.account_id, integration)
    raise HTTPException(401, "Authenticate with your API public and secret key.", _CHALLENGE)
