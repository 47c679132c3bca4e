"""Every attempt keeps its response's headers and the URL it went to, through a real
loopback receiver on both engines: the delivery page and the API's delivery show them, a
test send's too, and a cookie the receiver sets is never kept."""

from __future__ import annotations

import re

from support.harness import HarnessFactory, eventually
from support.hostile_receiver import HostileReceiver, Mode
from support.panel_client import sign_in

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
PASSWORD = "password123"  # what the harness gives every account
ANSWER = Mode(
    "status",
    code=202,
    body=b"queued",
    headers=(("X-Receiver-Trace", "trace-42"), ("Set-Cookie", "sid=s3cret-session; HttpOnly")),
)


async def test_a_receivers_headers_and_the_url_are_on_the_delivery_page_and_in_the_api(
    harness: HarnessFactory,
) -> None:
    h = await harness()
    async with HostileReceiver() as rx:
        rx.route("/traced", ANSWER)
        acct = await h.account("traced@example.com")
        shop = await acct.shop(rx.url("/traced"), name="Traced shop")
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
        )
        assert r.status_code == 200, r.text

        async def delivered() -> list[dict[str, object]]:
            found = await acct.call(
                "GET", "/api/v2/webhook-deliveries", params={"integration_id": shop}
            )
            return [d for d in found.json()["deliveries"] if d["status"] == "delivered"]

        await eventually(delivered, what="the delivery")
        [delivery] = await delivered()
        api = (await acct.call("GET", f"/api/v2/webhook-deliveries/{delivery['id']}")).json()
        [attempt] = api["delivery"]["attempts"]
        headers = {h["name"]: h["value"] for h in attempt["response_headers"]}
        assert headers["X-Receiver-Trace"] == "trace-42"
        assert headers["Set-Cookie"] == "…"
        assert attempt["url"] == rx.url("/traced")
        # the webhook URL changes afterwards: the attempt still says where it went
        moved = await acct.call(
            "PATCH", f"/api/v2/integrations/{shop}", {"webhook_url": rx.url("/moved")}
        )
        assert moved.status_code == 200, moved.text

        panel = await sign_in(h.base_url, "traced@example.com", PASSWORD)
        try:
            page = await panel.get(f"/settings/integrations/{shop}/log/{delivery['id']}")
            assert page.status_code == 200
            response_headers = page.text.split('class="response-headers"', 1)[1]
            assert "X-Receiver-Trace" in response_headers and "trace-42" in response_headers
            assert "s3cret" not in page.text
            sent_to = re.search(
                r'class="attempt-url">Sent to <span class="mono">([^<]+)<', page.text
            )
            assert sent_to is not None and sent_to.group(1) == rx.url("/traced")

            # a test send is logged with its answer's headers too
            typed = rx.url("/traced") + "?typed=1"
            await h.service.test_webhook(acct.account_id, shop, url=typed)
            log = await panel.get(f"/settings/integrations/{shop}/log")
            newest = max(int(i) for i in re.findall(rf"/integrations/{shop}/log/(\d+)", log.text))
            assert newest != delivery["id"]
            page = await panel.get(f"/settings/integrations/{shop}/log/{newest}")
            assert "test_webhook" in page.text
            assert "trace-42" in page.text.split('class="response-headers"', 1)[1]
            assert page.text.count(typed.replace("&", "&amp;")) == 2  # the target, the attempt
            assert "s3cret" not in page.text
        finally:
            await panel.aclose()
