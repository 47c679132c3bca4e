"""SQLite's write-ahead log copied back into the database file on a thread of its own.

By default the connection whose commit takes the WAL past 1,000 pages copies it back (a
checkpoint) and syncs the database file before that commit returns. parcelhook's commits
run on the event loop's thread (sqlite_loop.py), which then stood still: with the copying
done here instead, `serve` took 6–9 % more status changes per second (docs/performance.md,
"Checkpoints off the loop"). sqlite3 lets go of the GIL while SQLite works, so the copying
runs on the other core.

The connections keep a threshold of their own (WAL_BOUND_PAGES in engine.py) as the WAL's
bound. A checkpoint here runs beside commits, and SQLite only rewinds the WAL for a write
that begins when all of it has been copied, which a steady stream of commits may never
allow; past the bound the committing connection copies what is left (little, this thread
having copied the rest) and the next write rewinds the file.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("parcelhook.store")

# how often the WAL is copied back: a tenth of a second of commits is a few MB at most
CHECKPOINT_EVERY_S = 0.1


class Checkpointer:
    """A daemon thread that runs `PRAGMA wal_checkpoint(PASSIVE)` every `every_s` seconds
    (never waiting for a lock: a pass that meets one copies what it can) until stopped."""

    def __init__(self, path: str, every_s: float = CHECKPOINT_EVERY_S) -> None:
        self._path = path
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the last pass's (busy, frames in the WAL, frames copied), and passes made
        self.last: tuple[int, int, int] | None = None
        self.passes = 0

    def start(self) -> None:
        """Start the thread (again: nothing; a store drops it at close)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="sqlite-checkpoints", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=10)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        try:
            while not self._stop.wait(self._every_s):
                try:
                    if conn is None:
                        conn = _open(self._path)
                    row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last = (int(row[0]), int(row[1]), int(row[2]))
                    self.passes += 1
                    failing = False
                    if self.last[1] < 0:
                        # not a WAL database (yet): a connection learns the journal mode
                        # when it first reads the file, and one that found none would never
                        # checkpoint the WAL the file has later; a fresh one next pass
                        conn.close()
                        conn = None
                except Exception as exc:
                    # the database away (a full disk, a removed file, a working directory
                    # that is gone) or anything else: the connections' own threshold still
                    # bounds the WAL; said once, then tried again on a fresh connection. A
                    # thread that ended here would stop checkpoints silently for good
                    if not failing:
                        if isinstance(exc, sqlite3.Error):
                            log.warning("the WAL could not be checkpointed: %s", exc)
                        else:
                            log.exception("the WAL could not be checkpointed")
                    failing = True
                    if conn is not None:
                        conn.close()
                        conn = None
        finally:
            if conn is not None:
                conn.close()


def _open(path: str) -> sqlite3.Connection:
    # read-write, never create: a database removed meanwhile is an error, not a new file
    uri = Path(path).absolute().as_uri() + "?mode=rw"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    # a checkpoint that meets a lock copies what it can and returns at once
    conn.execute("PRAGMA busy_timeout=0")
    return conn
