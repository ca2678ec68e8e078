"""Aggregates the reports read instead of every invoice and contract line; cheaper row security.

- AR aging: open receivables and open invoice counts per due date, per customer, and per customer
  and due date, kept by increments (`projections.ar_aging`); the open invoices' index in listing
  order (due date, position); invoices by issue date, for a report as of an earlier date.
- Deferred revenue: every recognition segment as a row (`dr_segments`), what the lines' current
  schedules recognise per month (`dr_schedule_months`), what every line recognised per month
  (`dr_recognised_months`), the contract's currency.
- SQL functions with which the reports round exactly as Python's `decimal` does (half to even).
- Every read model table's tenant policy in the form that reads `ledger.tenants` once per statement.

A database migrated from 0002 has empty aggregate tables: rebuild the two read models with
`ledger replay --projection ar_aging --projection deferred_revenue`.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from projections.migrations.helpers import isolate_tenants, tenant_scope

revision = "0003"
down_revision = "0002"

earlier_tables = [
    "gl_lines",
    "gl_daily",
    "gl_invoices",
    "gl_tenants",
    "ar_invoices",
    "ar_changes",
    "ar_credits",
    "ar_payments",
    "dr_contracts",
    "dr_billing",
    "dr_invoices",
    "mrr_contracts",
    "mrr_segments",
    "audit_links",
    "audit_heads",
]

tables = {
    "ar_open_by_due_date": """
        tenant_id text NOT NULL, due_date date NOT NULL, open numeric NOT NULL,
        invoices integer NOT NULL, PRIMARY KEY (tenant_id, due_date)""",
    "ar_open_by_customer": """
        tenant_id text NOT NULL, customer_id text NOT NULL, open numeric NOT NULL,
        invoices integer NOT NULL, PRIMARY KEY (tenant_id, customer_id)""",
    "ar_open_by_customer_and_due_date": """
        tenant_id text NOT NULL, customer_id text NOT NULL, due_date date NOT NULL,
        open numeric NOT NULL, invoices integer NOT NULL,
        PRIMARY KEY (tenant_id, customer_id, due_date)""",
    "dr_segments": """
        tenant_id text NOT NULL, contract_id text NOT NULL, line_id text NOT NULL,
        seg_start date NOT NULL, seg_end date NOT NULL, recognition text NOT NULL,
        base numeric NOT NULL, amount numeric NOT NULL, recognised_when_complete numeric NOT NULL,
        satisfied_on date, next_start date,
        PRIMARY KEY (tenant_id, contract_id, line_id, seg_start)""",
    "dr_schedule_months": """
        tenant_id text NOT NULL, seg_start date NOT NULL, month date NOT NULL,
        amount numeric NOT NULL, PRIMARY KEY (tenant_id, seg_start, month)""",
    "dr_recognised_months": """
        tenant_id text NOT NULL, month date NOT NULL, amount numeric NOT NULL,
        PRIMARY KEY (tenant_id, month)""",
}

statements = [
    "ALTER TABLE dr_contracts ADD COLUMN currency text",
    "DROP INDEX ar_invoices_open_by_due_date",
    "CREATE INDEX ar_invoices_open_by_due_date ON ar_invoices (tenant_id, due_date, position)"
    " WHERE open <> 0",
    "CREATE INDEX ar_invoices_by_issue_date ON ar_invoices (tenant_id, issue_date)",
    # Python's quantize(ROUND_HALF_EVEN) of an exact value. round() takes a tie away from zero;
    # a tie (twice what trunc() cuts off is the whole step round() takes) whose kept part is even
    # (halving it loses nothing) is truncated instead. Plain SQL without power() and not STRICT,
    # so PostgreSQL inlines it where its argument is a column: ~0.4 us a value instead of ~7.
    """
    CREATE OR REPLACE FUNCTION ledger_round_half_even(amount numeric, digits integer)
    RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE
        WHEN round(amount, digits) <> trunc(amount, digits)
            AND 2 * (amount - trunc(amount, digits)) = round(amount, digits) - trunc(amount, digits)
            AND trunc(trunc(amount, digits) / 2, digits) * 2 = trunc(amount, digits)
        THEN trunc(amount, digits)
        ELSE round(amount, digits)
    END
    """,
    # amount x elapsed / days to 30 decimals (a division keeps its dividend's scale): for days <
    # 10^7, ledger_round_half_even of it is the exact quotient rounded (see `projections.reports`).
    """
    CREATE OR REPLACE FUNCTION ledger_spread(amount numeric, elapsed integer, days integer)
    RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN round(amount * elapsed, 30) / days
    """,
]


def upgrade() -> None:
    for name in earlier_tables:
        op.execute(f"DROP POLICY IF EXISTS {name}_tenant_isolation ON {name}")
        op.execute(
            f"CREATE POLICY {name}_tenant_isolation ON {name}"
            f" USING ({tenant_scope}) WITH CHECK ({tenant_scope})"
        )
    for name, columns in tables.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
        isolate_tenants(name)
    for statement in statements:
        op.execute(statement)
