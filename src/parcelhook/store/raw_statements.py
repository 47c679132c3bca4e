"""Who wants to see the statements sent straight to a driver (sqlite3, asyncpg), bypassing
SQLAlchemy and so its `before_cursor_execute` event: the statement-count guard in the
test suite (tests/support/statements.py) watches both."""

from __future__ import annotations

from collections.abc import Callable

_watchers: list[Callable[[str], None]] = []


def watch(callback: Callable[[str], None]) -> None:
    _watchers.append(callback)


def unwatch(callback: Callable[[str], None]) -> None:
    _watchers.remove(callback)


def sent(statement: str) -> None:
    """Tell the watchers, if any, that `statement` is being sent."""
    for callback in _watchers:
        callback(statement)
