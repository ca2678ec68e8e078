"""The read models' Alembic migrations create exactly the tables the projectors' SQLAlchemy
definitions describe (no drift), with row-level security on every one of them."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from ledger.store.postgres import PostgresEventStore
from projections import registry
from projections.tables import metadata


async def test_migrations_match_the_table_definitions(new_database: Callable[[], str]) -> None:
    url = new_database()
    store = await PostgresEventStore.open(url)  # runs the store's and the read models' migrations
    await store.close()
    registry.all_projectors()  # every projector module's tables are defined on `metadata`
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=pool.NullPool
    )
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": lambda name, type_, _parent: (
                        type_ != "table" or name in metadata.tables
                    )
                },
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s)"
            " AND relrowsecurity AND relforcerowsecurity",
            [list(metadata.tables)],
        ).fetchall()
    assert sorted(row[0] for row in rows) == sorted(metadata.tables)
