"""The read models' schema: SQLAlchemy Core tables (`projections.tables.metadata`), migrated by
Alembic (`projections/migrations`). `upgrade` is safe to run from several processes at once."""

from __future__ import annotations

from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool, text

migrations_dir = Path(__file__).resolve().parent / "migrations"
version_table = "read_model_migrations"
# Distinct from the event store's migration lock (ledger.store.postgres.migration_lock_id).
upgrade_lock_id = 7_231_509_114


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    return config


def upgrade(conninfo: str, revision: str = "head") -> None:
    """Bring the read model tables to `revision` (blocking; callers in a loop use a thread)."""
    engine = create_engine(
        "postgresql+psycopg://",
        creator=lambda: psycopg.connect(conninfo),
        poolclass=pool.NullPool,
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": upgrade_lock_id})
            connection.commit()
            try:
                config = alembic_config()
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
                connection.commit()
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": upgrade_lock_id})
                connection.commit()
    finally:
        engine.dispose()
