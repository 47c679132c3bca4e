"""Panel sessions that mean it: sign-out and a new password end them in the database, so
every process refuses them, also after a restart; anonymous sign-out costs nothing."""

from __future__ import annotations

import httpx

from parcelhook.panel.sessions import SessionCodec
from support.db_snapshot import changed_tables, snapshot
from support.harness import Harness, HarnessFactory
from support.panel_client import PanelSession, sign_in

EMAIL = "sessions@example.com"
PASSWORD = "password123"
HOME = "/settings/integrations"


async def _signed_in(h: Harness) -> PanelSession:
    return await sign_in(h.base_url, EMAIL, PASSWORD)


async def _works(h: Harness, cookie: str) -> bool:
    """Whether a request carrying this session cookie is served as signed in."""
    async with httpx.AsyncClient(base_url=h.base_url) as client:
        client.cookies.set("parcelhook_session", cookie)
        r = await client.get(HOME)
    return r.status_code == 200


async def test_sign_out_ends_the_accounts_sessions_in_every_process_and_after_restarts(
    harness: HarnessFactory,
) -> None:
    one = await harness(dispatcher=False)
    two = await harness(dispatcher=False)  # another process on the same database
    acct = await one.account(EMAIL)
    await one.service.set_password(acct.account_id, PASSWORD)
    here, there = await _signed_in(one), await _signed_in(two)
    try:
        stolen = here.client.cookies["parcelhook_session"]
        other = there.client.cookies["parcelhook_session"]
        assert await _works(two, stolen) and await _works(one, other)
        signed_out = await here.post("/logout")
        assert signed_out.status_code == 303
        for h in (one, two):
            assert not await _works(h, stolen)
            assert not await _works(h, other)
        three = await harness(dispatcher=False)  # a restart: nothing was kept in memory
        assert not await _works(three, stolen)
        # signing in again works, with a new session
        again = await _signed_in(three)
        assert await _works(one, again.client.cookies["parcelhook_session"])
        await again.aclose()
    finally:
        await here.aclose()
        await there.aclose()


async def test_a_new_password_ends_every_session(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    acct = await h.account(EMAIL)
    await h.service.set_password(acct.account_id, PASSWORD)
    session = await _signed_in(h)
    try:
        cookie = session.client.cookies["parcelhook_session"]
        assert await _works(h, cookie)
        await h.service.set_password(acct.account_id, "another-password")
        assert not await _works(h, cookie)
    finally:
        await session.aclose()


async def test_anonymous_sign_out_writes_nothing_and_keeps_nothing(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    await h.account(EMAIL)
    before = await snapshot(h.store)
    anonymous = PanelSession(httpx.AsyncClient(base_url=h.base_url))
    try:
        await anonymous.get("/login")
        for _ in range(200):
            r = await anonymous.post("/logout")
            assert r.status_code == 303 and r.headers["location"] == "/login"
            await anonymous.get("/login")  # the fresh session's CSRF token
    finally:
        await anonymous.aclose()
    assert changed_tables(before, await snapshot(h.store)) == []
    # and no process keeps a list of signed-out sessions: the codec holds only its key
    assert set(vars(SessionCodec(b"k"))) == {"_serializer"}
