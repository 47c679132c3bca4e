"""Shared pytest setup: databases on both engines, a running parcelhook, waiting helpers.

Being here (with no `tests/__init__.py`) puts `tests/` on `sys.path`, which is how
test modules import the helpers in `tests/support` (`from support.hostile_receiver import …`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from support.harness import HarnessFactory, drop_pg_database, make_pg_database, pg_reachable


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
