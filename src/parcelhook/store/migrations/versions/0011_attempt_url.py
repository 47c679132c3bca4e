"""Each attempt keeps the URL it was sent to (the webhook URL then, or the URL typed for a
test), so the log shows where every attempt went after the webhook URL changes. NULL for
attempts recorded before.

Adding a nullable column without a default rewrites no rows on either engine.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("url", sa.Text()))


def downgrade() -> None:
    op.drop_column("attempts", "url")
