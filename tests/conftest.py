"""Shared pytest setup: databases on both engines, a running parcelhook, waiting helpers.

Being here (with no `tests/__init__.py`) puts `tests/` on `sys.path`, which is how
test modules import the helpers in `tests/support` (`from support.hostile_receiver import …`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import uvloop

from support.harness import HarnessFactory, drop_pg_database, make_pg_database, pg_reachable

# production runs on uvloop, whose transports differ from asyncio's in small ways: the
# HTTP client's own tests run on both loops
BOTH_LOOPS = ("test_wire.py", "test_sender.py")


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.path.name in BOTH_LOOPS:
        return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not postgres"` deselects every PostgreSQL variant
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("database_url") == "postgres":
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database on each engine."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parcelhook.db'}"
        return
    pg_reachable(required_reason="the store suite runs on PostgreSQL too")
    url = make_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture
async def harness(database_url: str, tmp_path: Path) -> AsyncIterator[HarnessFactory]:
    """Build running parcelhooks (store, service, dispatcher) on `database_url`."""
    factory = HarnessFactory(database_url, tmp_path)
    try:
        yield factory
    finally:
        await factory.close()
