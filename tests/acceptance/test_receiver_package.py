"""parcelhook-receiver: the receiver kit built as its own distribution from the same sources,
installed alone into a fresh virtualenv, works with the standard library only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).parents[2]

CHECK = """
import sys
before = set(sys.modules)
from parcelhook.receiver import parse_event, verify_signature
assert verify_signature(
    b'{"key": "value"}',
    "1eed4b3d41f4653ac64fd56f1bf1cbfd349e4482cbc11dff7134bd93e5da4b0a",
    "secretkey",
)
event = parse_event(b'{"action": "test_webhook", "timestamp": 1, "integration": {"id": 1}}')
assert type(event).__name__ == "TestWebhook", event
stdlib = set(sys.stdlib_module_names)
foreign = sorted(
    m for m in set(sys.modules) - before
    if m.split(".")[0] not in stdlib and m.split(".")[0] != "parcelhook"
)
assert not foreign, foreign
print("ok")
"""


def test_the_receiver_kit_installs_and_works_alone(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, str(ROOT / "packages" / "receiver" / "build.py"), "--outdir", str(dist)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("parcelhook_receiver-*.whl")
    assert list(dist.glob("parcelhook_receiver-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "parcelhook/__init__.py" not in names  # the full distribution owns that
    assert {n.split("/")[1] for n in names if n.startswith("parcelhook/")} == {
        "receiver",
        "domain",
    }
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # from an empty directory: nothing may come from the source tree
    result = subprocess.run(
        [str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
