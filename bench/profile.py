"""Summarise a `py-spy record --format raw` profile: `python -m bench.profile FILE [TOP|--api]`.

Prints the share of samples spent inside (inclusive) and at the top of (self) the
hottest functions, and a coarse split by where the time goes (database, HTTP, signing…).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (label, pattern on a frame's "function (file:line)" text); first match wins, top-down
AREAS: tuple[tuple[str, str], ...] = (
    ("signing (HMAC, base64)", r"signing\.py"),
    ("outcome writing (record_outcomes)", r"record_outcomes"),
    ("claiming (claim_due, next_due_ms, release)", r"claim_due|next_due_ms|release \("),
    ("integration refresh", r"integrations_by_id|_refresh_integrations"),
    ("HTTP send (wire.py; aiohttp in the bare client)", r"sender\.py|wire\.py|aiohttp/client"),
    ("enqueueing (bench side)", r"enqueue"),
)


# the API's write path (`python -m bench.profile FILE --api`): samples inside a request
API_AREAS: tuple[tuple[str, str], ...] = (
    ("secret decryption (Fernet)", r"Fernet\."),
    ("hand-offs to aiosqlite's thread (sem_post)", r"SimpleQueue_put|sem_post"),
    ("socket writes (each PostgreSQL statement; the answer)", r"^write \(libc"),
    ("asyncpg protocol", r"asyncpg/"),
    ("SQLAlchemy: building statements", r"sql/(selectable|elements|dml|coercions|operators)\.py"),
    ("SQLAlchemy: compiling, executing, rows", r"sqlalchemy/"),
    ("event payload (JSON body)", r"make_event|parcel_object|body_bytes"),
    ("request parsing and validation", r"solve_dependencies|request_body_to_args|pydantic"),
    ("response building", r"serialize_response|jsonable_encoder|JSONResponse"),
    ("parcelhook's own code", r"parcelhook/"),
    ("garbage collector", r"gc_collect"),
)


def _frames(stack: str) -> list[str]:
    return [f for f in stack.split(";") if f]


def summarise_api(path: Path) -> str:
    """Where a request's samples go: each sample counts for the first area any frame hits."""
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = _frames(stack)
        if not count_text.isdigit() or not any("run_asgi" in f for f in frames):
            continue
        count = int(count_text)
        total += count
        for label, pattern in API_AREAS:
            if any(re.search(pattern, f) for f in frames):
                areas[label] += count
                break
        else:
            areas["other (uvicorn, Starlette, FastAPI routing, asyncio)"] += count
    out = [f"{path}: {total} samples inside requests"]
    out += [f"  {100 * n / max(total, 1):5.1f}%  {label}" for label, n in areas.most_common()]
    return "\n".join(out)


def summarise(path: Path, top: int = 25) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        total += count
        if frames and re.search(r"\(selectors\.py|select \(|epoll|_run_once", frames[-1]):
            idle += count
        own[_short(frames[-1])] += count if frames else 0
        for f in {_short(f) for f in frames}:
            inclusive[f] += count
        for label, pattern in AREAS:
            if any(re.search(pattern, f) for f in frames):
                areas[label] += count
                break
        else:
            areas["other (event loop, asyncio, SQLAlchemy glue…)"] += count
    if not total:
        return f"{path}: no samples"
    out = [f"{path}: {total} samples, {100 * idle / total:.0f}% waiting in the event loop"]
    out.append("\nwhere the time goes (first matching area, top-down):")
    out += [f"  {100 * n / total:5.1f}%  {label}" for label, n in areas.most_common()]
    out.append(f"\ntop {top} inclusive:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append(f"\ntop {top} self:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def _short(frame: str) -> str:
    # "name (path/to/site-packages/pkg/mod.py:123)" → "name (pkg/mod.py)"
    m = re.match(r"(.*) \((.*?):\d+\)$", frame)
    if not m:
        return frame
    name, file = m.groups()
    parts = file.split("/")
    if "site-packages" in parts:
        parts = parts[parts.index("site-packages") + 1 :]
    elif "src" in parts:
        parts = parts[parts.index("src") + 1 :]
    else:
        parts = parts[-2:]
    return f"{name} ({'/'.join(parts)})"


def main() -> None:
    if sys.argv[2:3] == ["--api"]:
        print(summarise_api(Path(sys.argv[1])))
        return
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    print(summarise(Path(sys.argv[1]), top))


if __name__ == "__main__":
    main()
