"""`dr_schedule_months` without rows at zero.

A line amended or cancelled takes its old schedule off `dr_schedule_months`, and those months fell
to zero for good: a third of the table's rows in a store with amendments. The waterfall's sums read
a zero as no row, so the projector now deletes a row that falls to zero (`zero_is_absent`), live
and in replay alike; the rows already at zero are deleted here, so a database projected before
holds what a replay would build.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
from sqlalchemy import text

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    bind = op.get_bind()
    # The migration runs as the owner with every tenant in scope (row security is forced).
    bind.execute(text("SELECT set_config('ledger.tenants', '*', true)"))
    bind.execute(text("DELETE FROM dr_schedule_months WHERE amount = 0"))


def downgrade() -> None:
    pass  # the zero rows changed no report: nothing to put back
