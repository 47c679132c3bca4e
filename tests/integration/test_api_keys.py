"""An API key stops working the moment its integration is deleted: the key is looked up at
every call (concurrent calls share the lookup, never an answer from before they arrived)."""

from __future__ import annotations

import asyncio
from collections import Counter

from support.harness import HarnessFactory


async def test_a_deleted_integrations_key_is_refused_at_the_next_call(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)
    acct, other = await h.account(), await h.account()
    calls = [acct.call("GET", "/api/v2/integrations") for _ in range(10)]
    assert Counter(r.status_code for r in await asyncio.gather(*calls)) == {200: 10}
    await h.service.delete_integration(acct.account_id, acct.api.id)
    calls = [acct.call("GET", "/api/v2/integrations") for _ in range(10)]
    calls += [other.call("GET", "/api/v2/integrations") for _ in range(10)]
    answers = [r.status_code for r in await asyncio.gather(*calls)]
    assert answers == [401] * 10 + [200] * 10
