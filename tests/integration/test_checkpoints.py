"""SQLite's WAL is copied back into the database file by a thread of its own, not by the
commits on the event loop's thread (store/checkpoints.py), and the thread ends with the
store."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from parcelhook.store import checkpoints as checkpoints_module
from parcelhook.store.checkpoints import Checkpointer
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


async def test_a_database_that_is_away_is_said_once_and_checkpointed_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "later.db"
    checkpoints = Checkpointer(str(db), every_s=0.01)
    caplog.set_level(logging.WARNING, logger="parcelhook.store")
    checkpoints.start()
    try:

        def warned() -> int:
            return sum("could not be checkpointed" in r.getMessage() for r in caplog.records)

        # no such file (never created by the thread): one warning however many passes fail
        await eventually(lambda: warned() > 0, what="the warning")
        await asyncio.sleep(0.2)  # twenty passes more, on a machine that lets the thread run
        assert warned() == 1
        assert not db.exists()
        assert checkpoints.running and checkpoints.passes == 0
        # the database appears with a WAL holding a commit: a later pass copies it back
        await _copied_back(
            checkpoints,
            db,
            "CREATE TABLE t (x)",
            "INSERT INTO t VALUES (1)",
            what="a pass on the database that came back",
        )
    finally:
        checkpoints.stop()
    assert not checkpoints.running


async def test_a_database_that_becomes_a_wal_database_later_is_checkpointed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "rollback.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("CREATE TABLE t (x)")  # a rollback-journal database, no WAL
    conn.close()
    checkpoints = Checkpointer(str(db), every_s=0.01)
    checkpoints.start()
    try:
        # SQLite's answer for a database that is not in WAL mode
        await eventually(lambda: checkpoints.last == (0, -1, -1), what="a pass with no WAL")
        await _copied_back(
            checkpoints, db, "INSERT INTO t VALUES (1)", what="a pass on the database in WAL mode"
        )
    finally:
        checkpoints.stop()


async def test_an_unexpected_error_is_said_and_does_not_end_the_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "odd.db"
    with sqlite3.connect(db, isolation_level=None) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    real_open = checkpoints_module._open
    failures = [FileNotFoundError(2, "the working directory is gone")] * 3

    def flaky_open(path: str) -> sqlite3.Connection:
        # not an sqlite3.Error: what resolving a relative path raises once the
        # working directory has been removed
        if failures:
            raise failures.pop()
        return real_open(path)

    monkeypatch.setattr(checkpoints_module, "_open", flaky_open)
    caplog.set_level(logging.WARNING, logger="parcelhook.store")
    checkpoints = Checkpointer(str(db), every_s=0.01)
    checkpoints.start()
    try:
        await eventually(lambda: not failures, what="the three failing passes")
        await _copied_back(
            checkpoints, db, "INSERT INTO t VALUES (1)", what="a pass once the error has passed"
        )
        assert checkpoints.running
        warned = [r for r in caplog.records if "could not be checkpointed" in r.getMessage()]
        assert len(warned) == 1 and warned[0].exc_info is not None
    finally:
        checkpoints.stop()


async def _copied_back(checkpoints: Checkpointer, db: Path, *statements: str, what: str) -> None:
    """Commit `statements` to `db` in WAL mode and wait for a pass that copies frames back.

    The connection stays open meanwhile: the last one to close would copy the WAL back
    itself, and the thread would find nothing left to copy."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA wal_autocheckpoint={WAL_BOUND_PAGES}")
        for statement in statements:
            conn.execute(statement)
        await eventually(
            lambda: checkpoints.last is not None and checkpoints.last[2] > 0, what=what
        )
    finally:
        conn.close()
