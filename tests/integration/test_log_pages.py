"""The panel's webhook log pages back by keyset on both engines: 50 a page, newest first,
the filters kept on every page, and a link to older deliveries only while there are some."""

from __future__ import annotations

import re

from support.harness import HarnessFactory
from support.panel_client import sign_in

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
ROW = re.compile(r'<tr data-delivery="(\d+)">')
OLDER = re.compile(r'<a href="([^"]+)">Older deliveries</a>')


async def test_the_log_pages_back_fifty_at_a_time_keeping_its_filters(
    harness: HarnessFactory,
) -> None:
    h = await harness(dispatcher=False)  # every delivery stays pending
    acct = await h.account("pages@example.com")
    shop = await acct.shop("http://127.0.0.1:9/hook", name="Busy shop")
    batch = [{**PARCEL, "integration_id": shop, "order_number": f"O-{n}"} for n in range(100)]
    r = await acct.call("POST", "/api/v2/parcels", {"parcels": batch})
    assert r.status_code == 200, r.text
    panel = await sign_in(h.base_url, "pages@example.com", "password123")
    try:
        for base in (f"/settings/integrations/{shop}/log", "/settings/log"):
            pages: list[list[int]] = []
            url: str | None = f"{base}?status=pending"
            while url is not None:
                page = await panel.get(url.replace("&amp;", "&"))
                assert page.status_code == 200
                pages.append([int(i) for i in ROW.findall(page.text)])
                older = OLDER.search(page.text)
                url = older.group(1) if older else None
                if url is not None:
                    assert "status=pending" in url and "before=" in url
            # 100 parcels: two full pages and no third, empty one
            assert [len(p) for p in pages] == [50, 50], base
            ids = [i for p in pages for i in p]
            assert ids == sorted(ids, reverse=True) and len(set(ids)) == 100
    finally:
        await panel.aclose()
