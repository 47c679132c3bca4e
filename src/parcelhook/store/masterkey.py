"""Where the master key comes from, which database it belongs to, and rotating it.

The database records the fingerprint of the key its secrets are sealed with; a process
holding another key refuses to start and names the setting to fix. SQLite's default key file
is `NAME.key` next to `NAME.db`; PostgreSQL needs the key given (`PARCELHOOK_MASTER_KEY` or
`--key-file`), since no one file sits next to a server's database.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select, update

from parcelhook.config import Settings
from parcelhook.store import meta
from parcelhook.store import schema as s
from parcelhook.store.crypto import MasterKeyError, SecretBox, fernet, fingerprint
from parcelhook.store.store import Store

FINGERPRINT = "master_key_fingerprint"
ROTATING_TO = "master_key_rotating_to"
# the integrations' columns that hold Fernet tokens
SEALED = (
    "webhook_signature_key_enc",
    "secret_key_enc",
    "webhook_secret_enc",
    "previous_webhook_secret_enc",
)


@dataclass(frozen=True)
class KeySource:
    keys: list[bytes]
    # how an operator sets it, for error messages
    where: str
    file: Path | None = None


def _split(text: str) -> list[bytes]:
    return [k.strip().encode("ascii") for k in text.replace(",", "\n").split() if k.strip()]


def read_key_file(path: Path) -> list[bytes]:
    """A key file's keys: the first seals, the others (after a rotation) only open."""
    return _split(path.read_text("ascii"))


def write_key_file(path: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".parcelhook-key-")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b"\n".join(keys) + b"\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_source(settings: Settings, *, create: bool = True) -> KeySource:
    """The master keys from the settings; SQLite's key file is created when missing."""
    if settings.master_key is not None:
        keys = _split(settings.master_key.get_secret_value())
        where = "PARCELHOOK_MASTER_KEY"
    else:
        path = settings.effective_key_file
        if path is None:
            raise MasterKeyError(
                "PostgreSQL needs the master key given: set PARCELHOOK_MASTER_KEY or "
                "--key-file / PARCELHOOK_KEY_FILE (the key its secrets are sealed with; "
                "`parcelhook keys generate` makes a new one)"
            )
        where = f"--key-file / PARCELHOOK_KEY_FILE ({path})"
        if path.exists():
            keys = read_key_file(path)
        elif create:
            keys = [Fernet.generate_key()]
            write_key_file(path, keys)
        else:
            raise MasterKeyError(f"no key file at {path}: fix {where}")
        if not keys:
            raise MasterKeyError(f"the key file is empty: fix {where}")
        return _checked(KeySource(keys, where, path), settings)
    return _checked(KeySource(keys, where), settings)


def _checked(source: KeySource, settings: Settings) -> KeySource:
    previous = settings.previous_master_keys
    keys = source.keys + (_split(previous.get_secret_value()) if previous else [])
    for key in keys:
        fernet(key, source.where)
    return KeySource(keys, source.where, source.file)


def box_for(source: KeySource) -> SecretBox:
    reload: Callable[[], list[bytes]] | None = None
    if source.file is not None:
        path = source.file

        def reload() -> list[bytes]:
            return read_key_file(path)

    return SecretBox(source.keys, where=source.where, reload=reload)


async def check(store: Store, source: KeySource) -> None:
    """Refuse a key that is not this database's; record the key of a database that has
    none recorded yet (a new one, or one made before fingerprints)."""
    mine = [fingerprint(k) for k in source.keys]
    recorded = await meta.get(store, FINGERPRINT)
    if recorded is not None:
        if recorded in mine:
            return
        raise MasterKeyError(
            f"this database's secrets are sealed with master key {recorded}, and this process "
            f"has {mine[0]}: give it the database's key with {source.where}"
        )
    probe = await _any_sealed(store)
    if probe is not None:
        opener = next((k for k in source.keys if SecretBox(k).opens(probe)), None)
        if opener is None:
            raise MasterKeyError(
                f"this database's secrets do not open with the master key {mine[0]}: give it "
                f"the database's key with {source.where}"
            )
        await meta.put(store, FINGERPRINT, fingerprint(opener))
        return
    await meta.put(store, FINGERPRINT, mine[0])


async def _any_sealed(store: Store) -> str | None:
    i = s.integrations
    async with store.reading() as r:
        row = (await r.conn.execute(select(i.c.secret_key_enc).limit(1))).first()
    return None if row is None else str(row[0])


async def rotate(
    store: Store,
    source: KeySource,
    *,
    batch: int = 200,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Re-seal every secret with the first key; returns how many rows changed.

    Safe while serving: each row changes only if no one changed it since it was read, and
    every process opens secrets with any of the keys. Resumable: running it again finishes
    what an interrupted run left (rows already sealed with the first key stay as they are).
    """
    box = SecretBox(source.keys)
    newest = SecretBox(source.keys[0])
    i = s.integrations
    cols = [getattr(i.c, c) for c in SEALED]
    async with store.reading() as r:
        total = len((await r.conn.execute(select(i.c.id))).all())
    changed = 0
    seen = 0
    last = 0
    # a row a server re-sealed with an old key while this ran is caught by the next pass
    for _ in range(5):
        stale = 0
        last = 0
        while True:
            async with store.reading() as r:
                rows = (
                    await r.conn.execute(
                        select(i.c.id, *cols).where(i.c.id > last).order_by(i.c.id).limit(batch)
                    )
                ).all()
            if not rows:
                break
            for row in rows:
                last = row.id
                values = {
                    c: box.reseal(getattr(row, c))
                    for c in SEALED
                    if getattr(row, c) is not None and not newest.opens(getattr(row, c))
                }
                if not values:
                    continue
                stale += 1
                async with store.transaction() as tx:
                    unchanged = [getattr(i.c, c) == getattr(row, c) for c in values]
                    done = await tx.conn.execute(
                        update(i).where(i.c.id == row.id, *unchanged).values(**values)
                    )
                    changed += int(done.rowcount or 0)
            seen = min(total, seen + len(rows))
            if progress is not None:
                progress(seen, total)
        if stale == 0:
            await meta.put(store, FINGERPRINT, fingerprint(source.keys[0]))
            await meta.put(store, ROTATING_TO, None)
            return changed
        seen = 0
    raise MasterKeyError("secrets kept changing under the rotation; run it again")
