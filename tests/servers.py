"""Test databases and servers: the configured ones (LEDGER_* URLs) or embedded ones."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# A test database that a crashed run left behind is easy to spot (and drop) by its prefix.
test_database_prefix = "ledger_test_"


def with_database(conninfo: str, database: str) -> str:
    return make_conninfo(conninfo, dbname=database)


def create_database(server_url: str) -> str:
    """Create a fresh database on the server of `server_url`; return its conninfo."""
    name = f"{test_database_prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(with_database(server_url, "postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(conninfo: str) -> None:
    name = str(conninfo_to_dict(conninfo)["dbname"])
    with psycopg.connect(with_database(conninfo, "postgres"), autocommit=True) as conn:
        # FORCE: a store that a failing test did not close must not keep the database alive.
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
