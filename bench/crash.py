"""`python -m bench.crash [KILLS]`: the crash-safety scenario at a larger scale.

The same test as the suite's (tests/integration/test_crash_safety.py: kill -9 at random
moments under a steady load, then every event delivered at least once and duplicates only
for what was in flight), with KILLS kills per engine (default 10) instead of three.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    kills = sys.argv[1] if len(sys.argv) > 1 else "10"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PARCELHOOK_CRASH_KILLS": kills}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-v",
        "-s",  # the scenario prints its duplicates per kill
        "-o",
        "timeout=900",
        "tests/integration/test_crash_safety.py",
    ]
    print(f"crash run: {kills} SIGKILLs per engine", flush=True)
    return subprocess.call(command, cwd=root, env=env)


if __name__ == "__main__":
    raise SystemExit(main())
