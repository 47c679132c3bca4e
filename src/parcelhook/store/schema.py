"""Tables, one schema for SQLite and PostgreSQL. Instants are integer milliseconds (UTC).

This is the schema as of the latest migration (store/migrations/versions): change both.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid)
Id = BigInteger().with_variant(Integer(), "sqlite")
Ms = BigInteger

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("created_ms", Ms, nullable=False),
    # raised by sign-out and a new password: panel sessions of an older one are refused
    Column("session_generation", Integer, nullable=False, server_default="0"),
)

integrations = Table(
    "integrations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False, index=True),
    Column("shop_name", String(255), nullable=False),
    Column("shop_url", Text),
    Column("system", String(40), nullable=False),
    Column("webhook_active", Boolean, nullable=False, default=False),
    Column("webhook_url", Text),
    # secrets are Fernet tokens; only the last 4 characters of the signature key are clear
    Column("webhook_signature_key_enc", Text),
    Column("webhook_signature_key_last4", String(4)),
    Column("public_key", String(64), nullable=False, unique=True),
    Column("secret_key_enc", Text, nullable=False),
    Column("webhook_secret_enc", Text, nullable=False),
    Column("previous_webhook_secret_enc", Text),
    Column("previous_webhook_secret_until_ms", Ms),
    Column("failing_since_ms", Ms),
    Column("last_fetch_ms", Ms),
    Column("last_updated_ms", Ms, nullable=False),
    Column("created_ms", Ms, nullable=False),
    Column("service_point_enabled", Boolean, nullable=False, default=False),
    Column("deleted_ms", Ms),
    # JSON list of carrier codes
    Column("service_point_carriers", Text),
    # why and when parcelhook turned the webhook off (an endpoint failing too long)
    Column("disabled_reason", Text),
    Column("disabled_ms", Ms),
    # when the account was told its endpoint was failing (for the run since failing_since)
    Column("failing_alerted_ms", Ms),
    # the failing-endpoint check reads only the failing ones
    Index(
        "integrations_failing",
        "failing_since_ms",
        sqlite_where=text("failing_since_ms IS NOT NULL"),
        postgresql_where=text("failing_since_ms IS NOT NULL"),
    ),
)

parcels = Table(
    "parcels",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("integration_id", Id, ForeignKey("integrations.id"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("company_name", String(255), nullable=False),
    Column("address", String(255), nullable=False),
    Column("house_number", String(255), nullable=False),
    Column("city", String(255), nullable=False),
    Column("postal_code", String(255), nullable=False),
    Column("country", String(2), nullable=False),
    Column("telephone", String(255), nullable=False),
    Column("email", String(255), nullable=False),
    Column("weight", String(16), nullable=False),
    Column("order_number", String(255), nullable=False),
    Column("external_order_id", String(255), nullable=False),
    Column("external_shipment_id", String(255), nullable=False),
    Column("shipment_id", Integer, nullable=False),
    Column("tracking_number", String(64), nullable=False),
    Column("is_return", Boolean, nullable=False),
    Column("status_id", Integer, nullable=False),
    Column("carrier_status_change_ms", Ms),
    Column("created_ms", Ms, nullable=False),
    Column("updated_ms", Ms, nullable=False),
    # Sendcloud's other documented fields, JSON; when it got its label; its idempotence key
    Column("details", Text),
    Column("announced_ms", Ms),
    Column("external_reference", String(255)),
    Index("parcels_account_updated", "account_id", "updated_ms", "id"),
    Index("parcels_account_reference", "account_id", "external_reference"),
    # the log's search by order and tracking number
    Index("parcels_order_number", "account_id", "order_number"),
    Index("parcels_tracking_number", "account_id", "tracking_number"),
)

sender_addresses = Table(
    "sender_addresses",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    *(
        Column(name, String(255), nullable=False, server_default="")
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
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("created_ms", Ms, nullable=False),
    Index("sender_addresses_account", "account_id", "id"),
)

refunds = Table(
    "refunds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("parcel_id", Id, ForeignKey("parcels.id"), nullable=False, unique=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(40), nullable=False),
    Column("message", Text, nullable=False),
    Column("total_refund", String(16), nullable=False),
    Column("created_ms", Ms, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("action", String(40), nullable=False),
    Column("timestamp_ms", Ms, nullable=False),
    # the exact body bytes (ASCII JSON); NULL once pruned after the retention period
    Column("body", Text),
    Index("events_account", "account_id", "id"),
    Index("events_time", "timestamp_ms"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(40), ForeignKey("events.id"), nullable=False),
    Column("integration_id", Id, ForeignKey("integrations.id"), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("action", String(40), nullable=False),
    # pending | delivered | failed; a claimed delivery stays pending, its
    # next_attempt_ms pushed to the lease's end so a crashed worker's work comes due again
    Column("status", String(16), nullable=False),
    Column("attempt_count", Integer, nullable=False, default=0),
    # attempts counted before the latest redelivery: the retry schedule restarts there
    Column("schedule_base", Integer, nullable=False, default=0),
    Column("next_attempt_ms", Ms, nullable=False),
    Column("lease_owner", String(64)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_ms", Ms, nullable=False),
    Column("updated_ms", Ms, nullable=False),
    # the parcel a parcel or refund event is about, for the log's search
    Column("parcel_id", Id),
    # PostgreSQL's claim goes in here: which integrations have pending deliveries, and each
    # one's oldest, one index probe each, however long another integration's backlog is.
    # (It replaced an index on next_attempt_ms alone, which claims walked through the due
    # backlogs of endpoints whose lanes were full.)
    Index(
        "deliveries_pending_integration",
        "integration_id",
        "next_attempt_ms",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    # SQLite's one dispatcher claims in time order, a bounded read (store/sqlite.py)
    Index(
        "deliveries_due",
        "next_attempt_ms",
        sqlite_where=text("status = 'pending'"),
    ).ddl_if(dialect="sqlite"),
    Index("deliveries_integration", "integration_id", "id"),
    # pruning walks settled deliveries by age without scanning the table
    Index(
        "deliveries_settled",
        "updated_ms",
        sqlite_where=text("status = 'delivered'"),
        postgresql_where=text("status = 'delivered'"),
    ),
    Index("deliveries_account_status", "account_id", "status", "id"),
    # the log, newest first: account-wide, one integration by status, one parcel
    Index("deliveries_account", "account_id", "id"),
    Index("deliveries_integration_status", "integration_id", "status", "id"),
    Index("deliveries_parcel", "parcel_id", "id"),
    Index("deliveries_event", "event_id"),
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id"), nullable=False, index=True),
    Column("at_ms", Ms, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("response_excerpt", Text, nullable=False),
    # JSON [[name, value], ...] (store/answer_headers.py); NULL when none were kept
    Column("response_headers", Text),
    # where the attempt went (the webhook URL then, or the URL typed for a test)
    Column("url", Text),
)

# facts about the database itself, e.g. the fingerprint of the master key its secrets are
# sealed with (store/masterkey.py)
meta = Table(
    "parcelhook_meta",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# each dispatching process and its last heartbeat: the leases of one that fell silent are
# given back early (DeliveryQueue.heartbeat)
dispatchers = Table(
    "dispatchers",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("heartbeat_ms", Ms, nullable=False),
)
