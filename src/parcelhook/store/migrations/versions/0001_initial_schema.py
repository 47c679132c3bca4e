"""Initial schema (parcelhook 0.1.0's migration 1).

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# frozen copies of the column types as they were: later changes to schema.py must not
# change what this migration builds
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger


def _id() -> sa.Column[int]:
    return sa.Column("id", Id, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "accounts",
        _id(),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("created_ms", Ms, nullable=False),
    )
    op.create_table(
        "integrations",
        _id(),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("shop_name", sa.String(255), nullable=False),
        sa.Column("shop_url", sa.Text),
        sa.Column("system", sa.String(40), nullable=False),
        sa.Column("webhook_active", sa.Boolean, nullable=False),
        sa.Column("webhook_url", sa.Text),
        sa.Column("webhook_signature_key_enc", sa.Text),
        sa.Column("webhook_signature_key_last4", sa.String(4)),
        sa.Column("public_key", sa.String(64), nullable=False, unique=True),
        sa.Column("secret_key_enc", sa.Text, nullable=False),
        sa.Column("webhook_secret_enc", sa.Text, nullable=False),
        sa.Column("previous_webhook_secret_enc", sa.Text),
        sa.Column("previous_webhook_secret_until_ms", Ms),
        sa.Column("failing_since_ms", Ms),
        sa.Column("last_fetch_ms", Ms),
        sa.Column("last_updated_ms", Ms, nullable=False),
        sa.Column("created_ms", Ms, nullable=False),
        sa.Column("service_point_enabled", sa.Boolean, nullable=False),
        sa.Column("deleted_ms", Ms),
    )
    op.create_index("ix_integrations_account_id", "integrations", ["account_id"])
    op.create_table(
        "parcels",
        _id(),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("integration_id", Id, sa.ForeignKey("integrations.id"), nullable=False),
        *(
            sa.Column(name, sa.String(255), nullable=False)
            for name in ("name", "company_name", "address", "house_number", "city")
        ),
        sa.Column("postal_code", sa.String(255), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("telephone", sa.String(255), nullable=False),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("weight", sa.String(16), nullable=False),
        sa.Column("order_number", sa.String(255), nullable=False),
        sa.Column("external_order_id", sa.String(255), nullable=False),
        sa.Column("external_shipment_id", sa.String(255), nullable=False),
        sa.Column("shipment_id", sa.Integer, nullable=False),
        sa.Column("tracking_number", sa.String(64), nullable=False),
        sa.Column("is_return", sa.Boolean, nullable=False),
        sa.Column("status_id", sa.Integer, nullable=False),
        sa.Column("carrier_status_change_ms", Ms),
        sa.Column("created_ms", Ms, nullable=False),
        sa.Column("updated_ms", Ms, nullable=False),
    )
    op.create_index("parcels_account_updated", "parcels", ["account_id", "updated_ms", "id"])
    op.create_table(
        "refunds",
        _id(),
        sa.Column("parcel_id", Id, sa.ForeignKey("parcels.id"), nullable=False, unique=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(40), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("total_refund", sa.String(16), nullable=False),
        sa.Column("created_ms", Ms, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("timestamp_ms", Ms, nullable=False),
        sa.Column("body", sa.Text),
    )
    op.create_index("events_account", "events", ["account_id", "id"])
    op.create_index("events_time", "events", ["timestamp_ms"])
    op.create_table(
        "deliveries",
        _id(),
        sa.Column("event_id", sa.String(40), sa.ForeignKey("events.id"), nullable=False),
        sa.Column("integration_id", Id, sa.ForeignKey("integrations.id"), nullable=False),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt_count", sa.Integer, nullable=False),
        sa.Column("schedule_base", sa.Integer, nullable=False),
        sa.Column("next_attempt_ms", Ms, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_ms", Ms, nullable=False),
        sa.Column("updated_ms", Ms, nullable=False),
    )
    pending = sa.text("status = 'pending'")
    op.create_index(
        "deliveries_due",
        "deliveries",
        ["next_attempt_ms"],
        sqlite_where=pending,
        postgresql_where=pending,
    )
    op.create_index("deliveries_integration", "deliveries", ["integration_id", "id"])
    delivered = sa.text("status = 'delivered'")
    op.create_index(
        "deliveries_settled",
        "deliveries",
        ["updated_ms"],
        sqlite_where=delivered,
        postgresql_where=delivered,
    )
    op.create_index("deliveries_account_status", "deliveries", ["account_id", "status", "id"])
    op.create_index("deliveries_event", "deliveries", ["event_id"])
    op.create_table(
        "attempts",
        _id(),
        sa.Column("delivery_id", Id, sa.ForeignKey("deliveries.id"), nullable=False),
        sa.Column("at_ms", Ms, nullable=False),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("response_excerpt", sa.Text, nullable=False),
    )
    op.create_index("ix_attempts_delivery_id", "attempts", ["delivery_id"])


def downgrade() -> None:
    for table in ("attempts", "deliveries", "events", "refunds", "parcels", "integrations"):
        op.drop_table(table)
    op.drop_table("accounts")
