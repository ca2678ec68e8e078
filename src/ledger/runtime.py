"""Where the servers come from: configured URLs in production, embedded servers otherwise."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from ledger.config import Settings
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore

logger = logging.getLogger(__name__)


@contextmanager
def database_url(settings: Settings) -> Iterator[str]:
    """The configured database, or the embedded PostgreSQL under the data folder."""
    if settings.database_url:
        yield settings.database_url
        return
    from ledger.embedded import EmbeddedPostgres

    server = EmbeddedPostgres.start(settings.data_dir / "postgres")
    try:
        yield server.url
    finally:
        server.stop()


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[PostgresEventStore]:
    with database_url(settings) as url:
        store = await PostgresEventStore.open(url)
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[LedgerService]:
    async with open_store(settings) as store:
        yield LedgerService(store)


@contextmanager
def kafka_bootstrap(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The configured Kafka cluster, or the embedded tansu broker; and whether to be idempotent."""
    if settings.kafka_bootstrap:
        yield settings.kafka_bootstrap, settings.kafka_idempotent
        return
    from ledger.embedded import EmbeddedKafka

    broker = EmbeddedKafka.start(settings.data_dir / "tansu")
    try:
        yield broker.bootstrap, False
    finally:
        broker.stop()


@contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """The configured Redis, or an embedded redis-server (no persistence: it carries notices)."""
    if settings.redis_url:
        yield settings.redis_url
        return
    from ledger.embedded import EmbeddedRedis

    server = EmbeddedRedis.start()
    try:
        yield server.url
    finally:
        server.stop()
