"""Audit chain: the links of each tenant's hash chain and its head (`projections.audit_chain`).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from projections.migrations.helpers import isolate_tenants

revision = "0002"
down_revision = "0001"

tables = {
    "audit_links": """
        tenant_id text NOT NULL, position bigint NOT NULL, n bigint NOT NULL,
        event_id text NOT NULL, hash text NOT NULL, PRIMARY KEY (tenant_id, position)""",
    "audit_heads": """
        tenant_id text NOT NULL, n bigint NOT NULL, hash text NOT NULL, position bigint NOT NULL,
        PRIMARY KEY (tenant_id)""",
}


def upgrade() -> None:
    for name, columns in tables.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
        isolate_tenants(name)
