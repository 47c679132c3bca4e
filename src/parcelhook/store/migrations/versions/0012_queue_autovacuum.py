"""PostgreSQL vacuums and analyzes the queue's tables early, where autovacuum runs.

Each webhook rewrites its `deliveries` row twice (claimed, then settled) and each status
change rewrites a `parcels` row, and neither update can be HOT (an indexed column
changes). PostgreSQL's defaults vacuum a table once a fifth of it is dead and analyze it
once a tenth has changed. A queue of ten million deliveries would then carry two million
dead versions in each of its nine indexes, and the claim's index scans would step over
them. A bulk-loaded backlog is not vacuumed for its inserts until a fifth of the table
has been added, so its first drain pays for hint bits and an unset visibility map
(docs/performance.md, "Known limits"). These storage parameters make it 1 % for `deliveries`
(and 2 % for `events`' inserts and `parcels`' updates), as queue tables are usually tuned.

They only change when autovacuum starts. Where autovacuum is off, as on this project's test
server, they change nothing, and `VACUUM (ANALYZE)` after a mass import remains the remedy.
SQLite has no vacuum to tune; nothing changes there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# table → storage parameters; the *_insert_* ones exist from PostgreSQL 13 on
SETTINGS = {
    "deliveries": {
        "autovacuum_vacuum_scale_factor": "0.01",
        "autovacuum_analyze_scale_factor": "0.01",
        "autovacuum_vacuum_insert_scale_factor": "0.01",
    },
    "events": {"autovacuum_vacuum_insert_scale_factor": "0.02"},
    "parcels": {
        "autovacuum_vacuum_scale_factor": "0.02",
        "autovacuum_analyze_scale_factor": "0.02",
    },
}


def _settings(table: str) -> dict[str, str]:
    # unknown when the SQL is only printed (`parcelhook migrate --sql`): a supported server
    server = op.get_bind().dialect.server_version_info
    old = server is not None and server < (13,)
    return {
        name: value for name, value in SETTINGS[table].items() if not (old and "_insert_" in name)
    }


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in SETTINGS:
        if settings := _settings(table):
            pairs = ", ".join(f"{name} = {value}" for name, value in settings.items())
            op.execute(f"ALTER TABLE {table} SET ({pairs})")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for table in SETTINGS:
        if settings := _settings(table):
            op.execute(f"ALTER TABLE {table} RESET ({', '.join(settings)})")
