"""Alembic's environment: run by `parcelhook.store.migrations`, never by the alembic command.

Online, the caller hands in a connection (it already holds the lock that makes concurrent
starters wait); offline (`parcelhook migrate --sql`) the SQL is written out for review.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo

from parcelhook.store.schema import metadata

config = context.config


def _applied(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    # Alembic passes these by keyword
    if step.is_upgrade and not step.is_stamp:
        config.attributes.setdefault("applied", []).append(step.up_revision_id)


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        literal_binds=True,
        transaction_per_migration=True,
    )
else:
    context.configure(
        connection=config.attributes["connection"],
        target_metadata=metadata,
        # each migration commits on its own: one may need to leave its transaction
        # (CREATE INDEX CONCURRENTLY) and a failure keeps the ones before it
        transaction_per_migration=True,
        on_version_apply=_applied,
    )

with context.begin_transaction():
    context.run_migrations()
