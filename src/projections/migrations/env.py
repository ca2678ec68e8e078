"""Alembic environment for the read model tables: always run through `projections.schema.upgrade`,
which hands over an open connection (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from projections.schema import version_table

connection = context.config.attributes["connection"]
context.configure(
    connection=connection, version_table=version_table, transaction_per_migration=True
)
with context.begin_transaction():
    context.run_migrations()
