"""Test databases and servers: the configured ones (LEDGER_* URLs) or embedded ones."""

from __future__ import annotations

import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

# A test database that a crashed run left behind is easy to spot (and drop) by its prefix.
test_database_prefix = "ledger_test_"
# DROP DATABASE ... WITH (FORCE) exists from PostgreSQL 13 on (server_version_num).
drop_force_server_version_min = 130000


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
        # A pool or store that a failing test did not close must not keep the database alive.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        if conn.info.server_version >= drop_force_server_version_min:
            # FORCE also covers a client that reconnects between the terminate and the drop.
            drop = sql.SQL("{} WITH (FORCE)").format(drop)
        conn.execute(drop)
