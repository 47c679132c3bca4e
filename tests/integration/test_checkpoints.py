"""SQLite's WAL is copied back into the database file by a thread of its own, not by the
commits on the event loop's thread (store/checkpoints.py), and the thread ends with the
store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from parcelhook.store.engine import WAL_BOUND_PAGES
from parcelhook.store.sqlite import SqliteQueue
from support.harness import HarnessFactory, eventually
from support.parcels import PARCEL


async def test_the_wal_is_copied_back_off_the_loop_and_the_thread_ends_with_the_store(
    tmp_path: Path,
) -> None:
    db = tmp_path / "checkpoints.db"
    factory = HarnessFactory(f"sqlite:///{db}", tmp_path)
    try:
        h = await factory(dispatcher=False)
        queue = h.runtime.store.queue
        assert isinstance(queue, SqliteQueue)
        checkpoints = queue.checkpoints
        assert checkpoints is not None
        acct = await h.account()
        shop = await acct.shop("https://example.com/hook")
        for _ in range(20):
            r = await acct.call(
                "POST", "/api/v2/parcels", {"parcel": {**PARCEL, "integration_id": shop}}
            )
            assert r.status_code == 200, r.text
        await eventually(
            lambda: checkpoints.last is not None and checkpoints.last[2] > 0,
            what="a checkpoint pass to copy the WAL back",
        )
        # far below the connections' own threshold: only the thread copied these pages back
        assert checkpoints.last is not None and checkpoints.last[1] < WAL_BOUND_PAGES
        assert checkpoints.running
        # every frame written is copied back by a later pass
        await eventually(
            lambda: (
                checkpoints.last is not None
                and checkpoints.last[0] == 0
                and checkpoints.last[1] == checkpoints.last[2]
            ),
            what="the whole WAL copied back",
        )
    finally:
        await factory.close()
    assert not checkpoints.running
    # the file is a sound database afterwards
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
