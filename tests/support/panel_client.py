"""A signed-in panel session over HTTP: cookies kept, the CSRF token read from the pages."""

from __future__ import annotations

import re
from typing import Any

import httpx

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class PanelSession:
    """One browser-like session on the panel; `post` adds the session's CSRF token."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.csrf = ""

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        response = await self.client.get(path, **kw)
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        return response

    async def post(
        self, path: str, data: dict[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        return await self.client.post(path, data={"csrf_token": self.csrf, **(data or {})}, **kw)

    async def aclose(self) -> None:
        await self.client.aclose()


async def sign_in(base_url: str, email: str, password: str, **client_options: Any) -> PanelSession:
    """A panel session signed in as `email` (asserts that signing in worked)."""
    session = PanelSession(httpx.AsyncClient(base_url=base_url, timeout=30, **client_options))
    await session.get("/login")
    signed = await session.post("/login", {"email": email, "password": password})
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/settings/integrations"
    # the CSRF token changes at sign-in: pick up the new one
    page = await session.get("/settings/integrations")
    assert page.status_code == 200, page.text
    return session
