"""Dispatcher heartbeats: each dispatching process says it is alive every few seconds, and
the deliveries leased by one that fell silent are given back long before their leases end.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dispatchers",
        sa.Column("owner", sa.String(255), primary_key=True),
        sa.Column("heartbeat_ms", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("dispatchers")
