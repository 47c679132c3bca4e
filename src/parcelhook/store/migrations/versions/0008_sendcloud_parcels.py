"""Sendcloud's parcel fields, labels, service-point carriers and sender addresses (issue 11).

Parcels keep Sendcloud's other documented fields as JSON (`details`), when they were
announced (`announced_ms`: a label exists) and their idempotence key
(`external_reference`, looked up and filtered on); integrations keep their service-point
carriers; accounts get sender addresses.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Ms = sa.BigInteger


def upgrade() -> None:
    # nullable columns without defaults: adding them rewrites no rows on either engine
    with op.batch_alter_table("parcels") as parcels:
        parcels.add_column(sa.Column("details", sa.Text()))
        parcels.add_column(sa.Column("announced_ms", Ms))
        parcels.add_column(sa.Column("external_reference", sa.String(255)))
    op.create_index("parcels_account_reference", "parcels", ["account_id", "external_reference"])
    with op.batch_alter_table("integrations") as integrations:
        integrations.add_column(sa.Column("service_point_carriers", sa.Text()))
    op.create_table(
        "sender_addresses",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("account_id", Id, sa.ForeignKey("accounts.id"), nullable=False),
        *(
            sa.Column(name, sa.String(255), nullable=False, server_default="")
            for name in (
                "company_name",
                "contact_name",
                "email",
                "telephone",
                "street",
                "house_number",
                "postal_box",
                "postal_code",
                "city",
                "country",
                "country_state",
                "vat_number",
                "eori_number",
                "label",
            )
        ),
        sa.Column("is_default", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_ms", Ms, nullable=False),
    )
    op.create_index("sender_addresses_account", "sender_addresses", ["account_id", "id"])


def downgrade() -> None:
    op.drop_table("sender_addresses")
    op.drop_index("parcels_account_reference", "parcels")
    with op.batch_alter_table("parcels") as parcels:
        parcels.drop_column("external_reference")
        parcels.drop_column("announced_ms")
        parcels.drop_column("details")
    with op.batch_alter_table("integrations") as integrations:
        integrations.drop_column("service_point_carriers")
