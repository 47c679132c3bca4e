"""Pending deliveries indexed by integration (parcelhook 0.1.0's migration 2).

On PostgreSQL the index is built CONCURRENTLY, outside any transaction, so writes to
deliveries go on while it reads the table; the index on next_attempt_ms alone goes (the
planner would walk it for the per-integration scans, and every write paid for it).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEX = "deliveries_pending_integration"


def upgrade() -> None:
    pending = sa.text("status = 'pending'")
    if op.get_context().dialect.name == "sqlite":
        op.create_index(
            INDEX, "deliveries", ["integration_id", "next_attempt_ms"], sqlite_where=pending
        )
        return
    with op.get_context().autocommit_block():
        # a concurrent build that failed half-way leaves an invalid index behind: rebuild it
        op.execute(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c"
            " ON c.oid = i.indexrelid WHERE c.relname = 'deliveries_pending_integration'"
            " AND NOT i.indisvalid) THEN DROP INDEX deliveries_pending_integration;"
            " END IF; END $$"
        )
        op.create_index(
            INDEX,
            "deliveries",
            ["integration_id", "next_attempt_ms"],
            postgresql_where=pending,
            postgresql_concurrently=True,
            if_not_exists=True,
        )
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS deliveries_due")


def downgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        pending = sa.text("status = 'pending'")
        op.create_index(
            "deliveries_due", "deliveries", ["next_attempt_ms"], postgresql_where=pending
        )
    op.drop_index(INDEX, "deliveries")
