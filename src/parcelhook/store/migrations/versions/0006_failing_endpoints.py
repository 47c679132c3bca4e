"""Failing endpoints: why and when a webhook was turned off, when the account was told.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable columns without defaults: no table rewrite on either engine
    op.add_column("integrations", sa.Column("disabled_reason", sa.Text))
    op.add_column("integrations", sa.Column("disabled_ms", sa.BigInteger))
    op.add_column("integrations", sa.Column("failing_alerted_ms", sa.BigInteger))
    failing = sa.text("failing_since_ms IS NOT NULL")
    if op.get_context().dialect.name == "sqlite":
        op.create_index(
            "integrations_failing", "integrations", ["failing_since_ms"], sqlite_where=failing
        )
        return
    with op.get_context().autocommit_block():
        op.create_index(
            "integrations_failing",
            "integrations",
            ["failing_since_ms"],
            postgresql_where=failing,
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    op.drop_index("integrations_failing", "integrations")
    for column in ("failing_alerted_ms", "disabled_ms", "disabled_reason"):
        op.drop_column("integrations", column)
