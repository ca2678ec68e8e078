"""Finance read models: general ledger, AR aging, deferred revenue, MRR.

Revision ID: 0001
Revises:
"""

from alembic import op

from projections.migrations.helpers import isolate_tenants

revision = "0001"
down_revision = None

tables = {
    "gl_lines": """
        tenant_id text NOT NULL, position bigint NOT NULL, line_no integer NOT NULL,
        entry_date date NOT NULL, account text NOT NULL, debit numeric NOT NULL,
        credit numeric NOT NULL, source text NOT NULL, customer_id text, contract_id text,
        document_id text, PRIMARY KEY (tenant_id, position, line_no)""",
    "gl_daily": """
        tenant_id text NOT NULL, account text NOT NULL, day date NOT NULL, source text NOT NULL,
        debit numeric NOT NULL, credit numeric NOT NULL,
        PRIMARY KEY (tenant_id, account, day, source)""",
    "gl_invoices": """
        tenant_id text NOT NULL, invoice_id text NOT NULL, customer_id text NOT NULL,
        contract_id text, revenue numeric NOT NULL, deferred numeric NOT NULL, tax numeric NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id)""",
    "gl_tenants": """
        tenant_id text NOT NULL, currency text NOT NULL, PRIMARY KEY (tenant_id)""",
    "ar_invoices": """
        tenant_id text NOT NULL, invoice_id text NOT NULL, customer_id text NOT NULL,
        contract_id text, issue_date date NOT NULL, due_date date NOT NULL, total numeric NOT NULL,
        open numeric NOT NULL, voided_on date, position bigint NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id)""",
    "ar_changes": """
        tenant_id text NOT NULL, position bigint NOT NULL, seq integer NOT NULL,
        invoice_id text NOT NULL, day date NOT NULL, amount numeric NOT NULL, kind text NOT NULL,
        PRIMARY KEY (tenant_id, position, seq)""",
    "ar_credits": """
        tenant_id text NOT NULL, customer_id text NOT NULL, day date NOT NULL,
        amount numeric NOT NULL, PRIMARY KEY (tenant_id, customer_id, day)""",
    "ar_payments": """
        tenant_id text NOT NULL, payment_id text NOT NULL, customer_id text NOT NULL,
        PRIMARY KEY (tenant_id, payment_id)""",
    "dr_contracts": """
        tenant_id text NOT NULL, contract_id text NOT NULL, customer_id text NOT NULL,
        start_date date NOT NULL, end_date date NOT NULL, cancelled_on date, lines jsonb NOT NULL,
        position bigint NOT NULL, PRIMARY KEY (tenant_id, contract_id)""",
    "dr_billing": """
        tenant_id text NOT NULL, contract_id text NOT NULL, day date NOT NULL,
        amount numeric NOT NULL, PRIMARY KEY (tenant_id, contract_id, day)""",
    "dr_invoices": """
        tenant_id text NOT NULL, invoice_id text NOT NULL, contract_id text,
        revenue numeric NOT NULL, deferred numeric NOT NULL, tax numeric NOT NULL,
        PRIMARY KEY (tenant_id, invoice_id)""",
    "mrr_contracts": """
        tenant_id text NOT NULL, contract_id text NOT NULL, customer_id text NOT NULL,
        start_date date NOT NULL, end_date date NOT NULL, months integer NOT NULL,
        seg_start date NOT NULL, mrr numeric NOT NULL, PRIMARY KEY (tenant_id, contract_id)""",
    "mrr_segments": """
        tenant_id text NOT NULL, contract_id text NOT NULL, seg_start date NOT NULL,
        customer_id text NOT NULL, seg_end date NOT NULL, mrr numeric NOT NULL,
        PRIMARY KEY (tenant_id, contract_id, seg_start)""",
}

indexes = [
    "CREATE INDEX ar_invoices_open_by_due_date ON ar_invoices (tenant_id, due_date)"
    " WHERE open <> 0",
    "CREATE INDEX ar_changes_by_day ON ar_changes (tenant_id, day)",
    "CREATE INDEX mrr_segments_by_customer ON mrr_segments (tenant_id, customer_id)",
]


def upgrade() -> None:
    for name, columns in tables.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
        isolate_tenants(name)
    for statement in indexes:
        op.execute(statement)
