"""Counting the SQL statements a piece of work executes (every engine, every connection)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

from parcelhook.store import raw_statements


@contextmanager
def statements() -> Iterator[list[str]]:
    """The text of every statement sent to a database inside the block: through
    SQLAlchemy, or straight to the driver by the store's hot paths."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        seen.append(" ".join(statement.split()))

    def raw(statement: str) -> None:
        seen.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", record)
    raw_statements.watch(raw)
    try:
        yield seen
    finally:
        raw_statements.unwatch(raw)
        event.remove(Engine, "before_cursor_execute", record)
