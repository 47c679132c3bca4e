"""Bulk tracking updates: `POST /api/v2/tracking-updates` and `parcelhook import-tracking`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from parcelhook.domain.parcels import parse_new_parcel
from parcelhook.domain.statuses import ParcelStatus
from support.db_snapshot import changed_tables, snapshot
from support.harness import MASTER_KEY, Account, Harness, HarnessFactory

PARCEL = {"name": "A", "address": "B 1", "city": "C", "postal_code": "1234", "country": "NL"}
MISSING = 9_000_000
IMPORT = [sys.executable, "-m", "parcelhook.cli", "import-tracking"]


async def _parcels(acct: Account, owner: int, n: int) -> list[int]:
    ids = []
    for _ in range(n):
        r = await acct.call(
            "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": owner}}
        )
        assert r.status_code == 200, r.text
        ids.append(int(r.json()["parcel"]["id"]))
    return ids


async def _status_events(h: Harness, account_id: int) -> list[dict[str, Any]]:
    events = await h.service.list_events(account_id, "", 5000)
    return [
        json.loads(e.body)["parcel"]
        | {"_carrier": json.loads(e.body)["carrier_status_change_timestamp"]}
        for e in events
        if e.action == "parcel_status_changed"
    ]


async def test_each_item_is_applied_or_reported_in_its_place(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    a, b = await h.account(), await h.account()
    shop = await a.shop("http://127.0.0.1:9/hook")
    mine = await _parcels(a, shop, 3)
    [theirs] = await _parcels(b, b.api.id, 1)
    events_before = len(await _status_events(h, a.account_id))
    items: list[Any] = [
        {
            "parcel_id": mine[0],
            "status_id": 3,
            "carrier_status_change_timestamp": 1_700_000_000_000,
        },
        {"parcel_id": mine[1], "status_id": int(ParcelStatus.READY_TO_SEND)},
        {"parcel_id": mine[2], "status_id": 424242},
        {"parcel_id": theirs, "status_id": 11},
        {"parcel_id": MISSING, "status_id": 11},
        "not an object",
        {"parcel_id": mine[2], "status_id": 11, "colour": "red"},
        {"parcel_id": mine[2], "status_id": 11},
        {"parcel_id": mine[0], "status_id": 5},
    ]
    r = await a.call("POST", "/api/v2/tracking-updates", {"tracking_updates": items})
    assert r.status_code == 200, r.text
    body = r.json()
    got = [(x["parcel_id"], x["result"], x.get("error", {}).get("code")) for x in body["results"]]
    assert got == [
        (mine[0], "changed", None),
        (mine[1], "unchanged", None),
        (mine[2], "failed", "unknown_status"),
        (theirs, "failed", "not_found"),
        (MISSING, "failed", "not_found"),
        (None, "failed", "invalid"),
        (mine[2], "failed", "unknown_field"),
        (mine[2], "changed", None),
        (mine[0], "changed", None),
    ]
    assert (body["changed"], body["unchanged"], body["failed"]) == (3, 1, 5)
    # another tenant's parcel answers exactly like one that does not exist
    assert body["results"][3]["error"] == body["results"][4]["error"]
    assert body["results"][0]["status"] == {"id": 3, "message": "En route to sorting center"}
    for pid, status in ((mine[0], 5), (mine[1], 1000), (mine[2], 11)):
        r = await a.call("GET", f"/api/v2/parcels/{pid}")
        assert r.json()["parcel"]["status"]["id"] == status
    r = await b.call("GET", f"/api/v2/parcels/{theirs}")
    assert r.json()["parcel"]["status"]["id"] == int(ParcelStatus.READY_TO_SEND)
    # one event per change, each queued for the shop (ids within one millisecond are random,
    # so the log's order among them is too)
    new = (await _status_events(h, a.account_id))[events_before:]
    assert sorted((p["id"], p["status"]["id"], p["_carrier"] or 0) for p in new) == sorted(
        [(mine[0], 3, 1_700_000_000_000), (mine[2], 11, 0), (mine[0], 5, 0)]
    )
    pending = await h.service.list_deliveries(a.account_id, status="pending", limit=100)
    assert len([d for d in pending if d.action == "parcel_status_changed"]) == len(new) + 3


async def test_a_malformed_request_changes_nothing(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    a = await h.account()
    [pid] = await _parcels(a, a.api.id, 1)
    before = await snapshot(h.store)
    one = {"parcel_id": pid, "status_id": 11}
    for body, status in (
        ({"tracking_updates": [one] * 1001}, 422),
        ({"tracking_updates": []}, 422),
        ({"tracking_updates": one}, 422),
        ({"updates": [one]}, 422),
        ([one], 400),
    ):
        r = await a.call("POST", "/api/v2/tracking-updates", body)
        assert r.status_code == status, (body if len(str(body)) < 200 else "1001", r.text)
        assert "error" in r.json()
    r = await a.client.post("/api/v2/tracking-updates", content=b"{not json")
    assert r.status_code == 400
    assert changed_tables(before, await snapshot(h.store)) == []


async def test_a_thousand_updates_in_one_call(harness: HarnessFactory) -> None:
    h = await harness(dispatcher=False)
    a = await h.account()
    shop = await a.shop("http://127.0.0.1:9/hook")
    ids = await _parcels(a, shop, 10)
    statuses = (3, 5, 7, 91, 92, 11, 1, 1001, 1000)
    items = [{"parcel_id": ids[k % 10], "status_id": statuses[(k // 10) % 9]} for k in range(1000)]
    r = await a.call("POST", "/api/v2/tracking-updates", {"tracking_updates": items})
    assert r.status_code == 200, r.text
    assert (r.json()["changed"], r.json()["failed"]) == (1000, 0)
    assert len(await _status_events(h, a.account_id)) == 10 + 1000


def _import(path: Path, email: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*IMPORT, str(path), "--account", email, "--database-url", db],
        env={**os.environ, "PARCELHOOK_MASTER_KEY": MASTER_KEY},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_tracking_from_csv_and_json_lines(tmp_path: Path) -> None:
    import asyncio

    from parcelhook.config import Settings
    from parcelhook.runtime import Runtime

    db = f"sqlite:///{tmp_path / 'x.db'}"

    async def setup() -> tuple[int, list[int]]:
        rt = Runtime(Settings(database_url=db, master_key=MASTER_KEY, dispatcher=False))
        try:
            await rt.store.migrate(rt.clock.now_ms())
            created = await rt.service.create_account("importer@example.com", "password123")
            ids = []
            for _ in range(3):
                p = await rt.service.create_parcel(
                    created.account_id, created.integration, parse_new_parcel(PARCEL)
                )
                ids.append(p.id)
            return created.account_id, ids
        finally:
            await rt.stop()

    account_id, ids = asyncio.run(setup())
    csv_file = tmp_path / "scans.csv"
    csv_file.write_text(
        "parcel_id,status_id,carrier_status_change_timestamp\n"
        f"{ids[0]},3,1700000000000\n"
        f"{ids[1]},91,\n"
        f"{MISSING},11,\n"
    )
    jsonl_file = tmp_path / "scans.jsonl"
    jsonl_file.write_text(
        json.dumps({"parcel_id": ids[2], "status_id": 11})
        + "\n\n"
        + json.dumps({"parcel_id": ids[0], "status_id": "eleven"})
        + "\n"
    )
    csv_run = _import(csv_file, "Importer@example.com", db)
    jsonl_run = _import(jsonl_file, "Importer@example.com", db)
    assert csv_run.returncode == 1, csv_run.stderr
    assert "2 changed, 0 unchanged, 1 failed" in csv_run.stdout
    assert "line 4: No such parcel." in csv_run.stderr
    assert jsonl_run.returncode == 1
    assert "1 changed, 0 unchanged, 1 failed" in jsonl_run.stdout
    assert "line 3: status_id must be an integer." in jsonl_run.stderr

    async def statuses() -> list[int]:
        rt = Runtime(Settings(database_url=db, master_key=MASTER_KEY, dispatcher=False))
        try:
            return [(await rt.service.get_parcel(account_id, i)).status_id for i in ids]
        finally:
            await rt.stop()

    assert asyncio.run(statuses()) == [3, 91, 11]
    missing = _import(csv_file, "nobody@example.com", db)
    assert missing.returncode == 1
    assert (
        missing.stderr.strip().splitlines()[-1]
        == "Error: No account has the e-mail nobody@example.com."
    )
