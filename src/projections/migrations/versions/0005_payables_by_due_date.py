"""Payables by due date, for the cash alert's "payables due within 30 days" (DESIGN section 7).

`gl_payables` keeps each expense's due date (its own, else the day it was incurred);
`gl_payables_by_due_date` the payable amounts recorded (+ amount and tax) and paid (-) per due date
and business day (`projections.general_ledger`). Until now the alert took every payable, however
far off its due date.

Existing rows are filled here from the stored events the general ledger has applied per tenant
(its position in `projection_state`), as the projector would have written them.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
from sqlalchemy import text

from projections.migrations.helpers import isolate_tenants

revision = "0005"
down_revision = "0004"

tables = {
    "gl_payables": """
        tenant_id text NOT NULL, expense_id text NOT NULL, due_date date NOT NULL,
        PRIMARY KEY (tenant_id, expense_id)""",
    "gl_payables_by_due_date": """
        tenant_id text NOT NULL, due_date date NOT NULL, day date NOT NULL,
        amount numeric NOT NULL, PRIMARY KEY (tenant_id, due_date, day)""",
}

# The events the general ledger has applied, per tenant.
_applied = """
SELECT e.tenant_id, e.position, e.type, e.data FROM events e
JOIN projection_state s ON s.projection = 'general_ledger' AND s.tenant_id = e.tenant_id
WHERE e.position <= s.position AND e.type = ANY(ARRAY[
    'ledger.expense.recorded.v1', 'ledger.expense.paid.v1', 'ledger.journal.posted.v1'])
"""

_fill_payables = f"""
INSERT INTO gl_payables (tenant_id, expense_id, due_date)
SELECT tenant_id, data ->> 'expense_id',
    coalesce((data ->> 'due_date')::date, (data ->> 'incurred_date')::date)
FROM ({_applied}) applied WHERE type = 'ledger.expense.recorded.v1'
"""

# Recorded: + amount and tax on the day incurred; paid: - amount on the day paid, at the due date
# of its expense (a payment whose expense is unknown falls due on its own day, as the projector);
# a journal entry's lines on accounts_payable: credit - debit, due the day posted.
_fill_by_due_date = f"""
INSERT INTO gl_payables_by_due_date (tenant_id, due_date, day, amount)
SELECT tenant_id, due_date, day, sum(amount) FROM (
    SELECT tenant_id, coalesce((data ->> 'due_date')::date, (data ->> 'incurred_date')::date)
            AS due_date,
        (data ->> 'incurred_date')::date AS day,
        (data ->> 'amount')::numeric + coalesce((data ->> 'tax_amount')::numeric, 0) AS amount
    FROM ({_applied}) applied WHERE type = 'ledger.expense.recorded.v1'
    UNION ALL
    SELECT a.tenant_id, coalesce(p.due_date, (a.data ->> 'date')::date),
        (a.data ->> 'date')::date, -(a.data ->> 'amount')::numeric
    FROM ({_applied}) a
    LEFT JOIN gl_payables p ON p.tenant_id = a.tenant_id AND p.expense_id = a.data ->> 'expense_id'
    WHERE a.type = 'ledger.expense.paid.v1'
    UNION ALL
    SELECT tenant_id, day, day, net FROM (
        SELECT j.tenant_id, j.position, (j.data ->> 'date')::date AS day,
            sum(coalesce((line ->> 'credit')::numeric, 0)
                - coalesce((line ->> 'debit')::numeric, 0)) AS net
        FROM ({_applied}) j CROSS JOIN LATERAL jsonb_array_elements(j.data -> 'lines') AS line
        WHERE j.type = 'ledger.journal.posted.v1' AND line ->> 'account' = 'accounts_payable'
        GROUP BY j.tenant_id, j.position, day
    ) journal WHERE net <> 0
) changes
GROUP BY tenant_id, due_date, day
"""


def upgrade() -> None:
    for name, columns in tables.items():
        op.execute(f"CREATE TABLE {name} ({columns})")
        isolate_tenants(name)
    bind = op.get_bind()
    # The migration runs as the owner with every tenant in scope (row security is forced).
    bind.execute(text("SELECT set_config('ledger.tenants', '*', true)"))
    bind.execute(text(_fill_payables))
    bind.execute(text(_fill_by_due_date))


def downgrade() -> None:
    for name in tables:
        op.execute(f"DROP TABLE {name}")
