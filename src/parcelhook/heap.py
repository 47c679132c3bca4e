"""The garbage collector, set for a long-running server once it has started.

Everything made while starting (modules, FastAPI's routes and models, SQLAlchemy's tables
and compiled statements, pydantic's validators: hundreds of thousands of objects) lives as
long as the process. Left as it is, the collector walks all of it again at every full
collection, and runs a young collection every 700 new containers, which is every request
or two (a request makes several hundred: frames, dicts, the ASGI scope, the answer).
py-spy put the collector at about 10 % of an API request's CPU (docs/performance.md).
"""

from __future__ import annotations

import gc

# new containers between young collections (CPython's default is 700): a request's garbage
# is mostly freed by reference counting, so fewer, larger young collections find the same
YOUNG_THRESHOLD = 5_000


def settle() -> None:
    """Collect what starting left behind, keep the survivors out of every later
    collection (`gc.freeze`), and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
