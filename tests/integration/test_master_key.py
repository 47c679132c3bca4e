"""The master key: recorded by fingerprint, refused when it is not the database's, rotated
under a running server without a request failing, and resumable when interrupted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from parcelhook.config import Settings
from parcelhook.runtime import Runtime
from parcelhook.store import masterkey, meta
from parcelhook.store import schema as s
from parcelhook.store.crypto import MasterKeyError, SecretBox, fingerprint
from support.harness import Harness


async def _sealed(rt: Runtime) -> list[str]:
    i = s.integrations
    cols = [getattr(i.c, c) for c in masterkey.SEALED]
    async with rt.store.reading() as r:
        rows = (await r.conn.execute(select(*cols))).all()
    return [v for row in rows for v in row if v is not None]


def _settings(database_url: str, **kw: object) -> Settings:
    return Settings(database_url=database_url, allow_private_targets=True, **kw)  # type: ignore[arg-type]


async def test_keys_rotate_under_a_running_server(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "master.key"
    h = Harness(Runtime(_settings(database_url, key_file=key_file)))
    await h.start()
    try:
        accounts = [await h.account() for _ in range(3)]
        old = key_file.read_bytes().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PARCELHOOK_")}
        command = ["keys", "rotate", "--database-url", database_url, "--key-file", str(key_file)]
        # in a thread: this loop must keep serving the API while the command runs
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "parcelhook.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        new, kept = masterkey.read_key_file(key_file)
        assert kept == old and new != old
        assert fingerprint(new).encode() not in key_file.read_bytes()
        # every secret is now sealed with the new key alone
        tokens = await _sealed(h.runtime)
        assert len(tokens) >= 6 and all(SecretBox(new).opens(t) for t in tokens)
        assert await meta.get(h.store, masterkey.FINGERPRINT) == fingerprint(new)
        # the running server, which started with the old key only, still serves every account
        for a in accounts:
            r = await a.call("GET", f"/api/v2/integrations/{a.api.id}")
            assert r.status_code == 200, r.text
            assert a.api.webhook_secret in r.text
    finally:
        await h.close()
    # a process holding only the old key is refused, naming the setting
    stale = Runtime(_settings(database_url, master_key=old.decode()))
    try:
        with pytest.raises(MasterKeyError, match="PARCELHOOK_MASTER_KEY"):
            await stale.prepare()
    finally:
        await stale.stop()


async def test_an_interrupted_rotation_finishes_when_run_again(
    database_url: str, tmp_path: Path
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    h = Harness(Runtime(_settings(database_url, master_key=old.decode())))
    await h.start()
    try:
        for _ in range(4):
            await h.account()
    finally:
        await h.close()
    both = Runtime(
        _settings(database_url, master_key=new.decode(), previous_master_keys=old.decode())
    )
    try:
        await both.prepare()

        class Interrupted(Exception):
            pass

        def stop_after_first(done: int, _total: int) -> None:
            if done >= 1:
                raise Interrupted

        with pytest.raises(Interrupted):
            await masterkey.rotate(both.store, both.keys, batch=1, progress=stop_after_first)
        tokens = await _sealed(both)
        assert any(SecretBox(new).opens(t) for t in tokens)
        assert not all(SecretBox(new).opens(t) for t in tokens)
        assert await meta.get(both.store, masterkey.FINGERPRINT) == fingerprint(old)
        # and the second run changes only what the first left
        changed = await masterkey.rotate(both.store, both.keys, batch=1)
        assert 0 < changed < 4
        assert all(SecretBox(new).opens(t) for t in await _sealed(both))
        assert await meta.get(both.store, masterkey.FINGERPRINT) == fingerprint(new)
    finally:
        await both.stop()
    # the new key alone now starts
    alone = Runtime(_settings(database_url, master_key=new.decode()))
    try:
        await alone.prepare()
    finally:
        await alone.stop()


async def test_a_database_made_before_fingerprints_adopts_the_key_that_opens_it(
    database_url: str,
) -> None:
    key = Fernet.generate_key()
    h = Harness(Runtime(_settings(database_url, master_key=key.decode())))
    await h.start()
    try:
        await h.account()
        await meta.put(h.store, masterkey.FINGERPRINT, None)
    finally:
        await h.close()
    wrong = Runtime(_settings(database_url, master_key=Fernet.generate_key().decode()))
    try:
        with pytest.raises(MasterKeyError, match="do not open"):
            await wrong.prepare()
    finally:
        await wrong.stop()
    right = Runtime(_settings(database_url, master_key=key.decode()))
    try:
        await right.prepare()
        assert await meta.get(right.store, masterkey.FINGERPRINT) == fingerprint(key)
    finally:
        await right.stop()
