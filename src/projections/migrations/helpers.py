"""SQL that every read model table gets: row-level security by tenant, and the app role's grants."""

from __future__ import annotations

from alembic import op

# The same rule as the event store's tables: `ledger.tenants` lists what a session may see ('*':
# every tenant). Each `current_setting` sits in a scalar subquery, so PostgreSQL evaluates it once
# per statement (an InitPlan) instead of once per row: over the 100,000 open invoices of a tenant
# the per-row form cost ~70 ms of a ~100 ms scan (bench/RESULTS.md, reports).
tenant_scope = (
    "(SELECT current_setting('ledger.tenants', true)) = '*' OR tenant_id = ANY "
    "((SELECT string_to_array(current_setting('ledger.tenants', true), ','))::text[])"
)


def isolate_tenants(table: str) -> None:
    """Row-level security on `table`, forced on its owner too, and the app role's grants."""
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY {table}_tenant_isolation ON {table}"
        f" USING ({tenant_scope}) WITH CHECK ({tenant_scope})"
    )
    op.execute(
        "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO ledger_app; END IF; END $$"
    )
