"""A log people can search: each delivery knows its parcel, and the log's filters have
indexes to walk (newest first, by id) instead of tables to scan.

Existing deliveries get their parcel from their event's body, once; on PostgreSQL the
indexes are built CONCURRENTLY.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
INDEXES = {
    "deliveries_account": ("deliveries", ["account_id", "id"]),
    "deliveries_integration_status": ("deliveries", ["integration_id", "status", "id"]),
    "deliveries_parcel": ("deliveries", ["parcel_id", "id"]),
    "parcels_order_number": ("parcels", ["account_id", "order_number"]),
    "parcels_tracking_number": ("parcels", ["account_id", "tracking_number"]),
}


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("parcel_id", Id))
    sqlite = op.get_context().dialect.name == "sqlite"
    parcel_of_body = (
        "json_extract(e.body, '$.parcel.id')"
        if sqlite
        else "CAST(CAST(e.body AS json) -> 'parcel' ->> 'id' AS bigint)"
    )
    op.execute(
        f"UPDATE deliveries SET parcel_id = (SELECT {parcel_of_body} FROM events AS e"
        " WHERE e.id = deliveries.event_id AND e.body IS NOT NULL)"
        " WHERE action IN ('parcel_status_changed', 'refund_requested')"
    )
    if sqlite:
        for name, (table, columns) in INDEXES.items():
            op.create_index(name, table, columns)
        return
    # built CONCURRENTLY, outside the transaction: writes to deliveries go on meanwhile
    with op.get_context().autocommit_block():
        for name, (table, columns) in INDEXES.items():
            op.create_index(name, table, columns, postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    for name, (table, _columns) in INDEXES.items():
        op.drop_index(name, table)
    op.drop_column("deliveries", "parcel_id")
