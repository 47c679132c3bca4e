"""Each attempt keeps its response's headers (a JSON list of [name, value] pairs; NULL for
attempts recorded before, and for those with no answer).

Adding a nullable column without a default rewrites no rows on either engine.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("response_headers", sa.Text()))


def downgrade() -> None:
    op.drop_column("attempts", "response_headers")
