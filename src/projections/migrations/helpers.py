"""SQL that every read model table gets: row-level security by tenant, and the app role's grants."""

from __future__ import annotations

from alembic import op


def isolate_tenants(table: str) -> None:
    """The same policy as the event store's tables: `ledger.tenants` lists what a session may see."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    scope = (
        "current_setting('ledger.tenants', true) = '*' OR tenant_id = ANY "
        "(string_to_array(current_setting('ledger.tenants', true), ','))"
    )
    op.execute(
        f"CREATE POLICY {table}_tenant_isolation ON {table} USING ({scope}) WITH CHECK ({scope})"
    )
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO ledger_app; END IF; END $$"
    )
