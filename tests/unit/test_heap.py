"""A served app freezes what starting made and collects the young generation less often."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# in a process of its own: freezing the test runner's heap would keep every later test's
# garbage cycles made before it alive
PROGRAM = """
import asyncio, gc, sys
from parcelhook.app import create_app
from parcelhook.config import Settings
from parcelhook.runtime import Runtime

async def main():
    d = sys.argv[1]
    settings = Settings(
        database_url=f"sqlite:///{d}/heap.db", key_file=f"{d}/heap.key", dispatcher=False
    )
    runtime = Runtime(settings)
    await runtime.prepare()
    app = create_app(runtime)
    before = gc.get_freeze_count()
    async with app.router.lifespan_context(app):
        print(before, gc.get_freeze_count(), gc.get_threshold()[0])

asyncio.run(main())
"""


def test_serving_app_freezes_its_startup_heap(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, after, young = (int(x) for x in done.stdout.split())
    assert before == 0
    assert after > 100_000  # modules, routes, models, tables: all of it frozen
    assert young == 5_000
