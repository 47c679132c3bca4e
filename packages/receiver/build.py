"""Build the parcelhook-receiver wheel and sdist from the repository's own sources.

    python packages/receiver/build.py [--outdir dist]

Stages the receiver kit (and the two standard-library-only domain modules it uses) with this
directory's pyproject.toml, then runs `python -m build` there without network access.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
SRC = ROOT / "src" / "parcelhook"
# every module the kit imports, and nothing else
MODULES = ["receiver/*.py", "domain/__init__.py", "domain/statuses.py", "domain/signing.py"]


def version() -> str:
    text = (SRC / "__init__.py").read_text()
    found = re.search(r'__version__ = "([^"]+)"', text)
    assert found, "no __version__ in src/parcelhook/__init__.py"
    return found.group(1)


def stage(into: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(HERE / name, into / name)
    shutil.copy(ROOT / "LICENSE", into / "LICENSE")
    (into / "VERSION").write_text(version() + "\n")
    for pattern in MODULES:
        for path in SRC.glob(pattern):
            target = into / "parcelhook" / path.relative_to(SRC)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outdir", type=Path, default=ROOT / "dist")
    outdir = parser.parse_args().outdir.resolve()
    with tempfile.TemporaryDirectory(prefix="parcelhook-receiver-") as tmp:
        stage(Path(tmp))
        subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), tmp],
            check=True,
        )


if __name__ == "__main__":
    main()
