"""Where the servers come from: configured URLs in production, embedded servers otherwise."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TypeVar

from ledger.config import Settings
from ledger.errors import StoreUnavailableError
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore

logger = logging.getLogger(__name__)

# The garbage collector's youngest generation is collected after this many net allocations
# (CPython's default: 700). Parsing and deciding an event allocates hundreds of objects, so at 700
# most of a request's temporaries are scanned once or twice and the survivors promoted, which
# brings on full collections sooner.
gc_young_threshold = 10_000

# A service (`ledger relay`, `api`, `ingest`, `up`, the worker's migrations) started before its
# database answers waits for it, retrying this often at first, doubling up to the most.
start_retry_delay_initial_s = 0.2
start_retry_delay_max_s = 10.0

_Result = TypeVar("_Result")


async def retry_until_up(
    attempt: Callable[[], Awaitable[_Result]],
    errors: tuple[type[BaseException], ...],
    what: str,
) -> _Result:
    """`attempt()` again until it does not fail with one of `errors` (the database down,
    restarting or failing over), with a warning naming the error each time: "`what` (error);
    retrying in N s"."""
    delay = start_retry_delay_initial_s
    while True:
        try:
            return await attempt()
        except errors as error:
            logger.warning("%s (%s); retrying in %.1f s", what, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, start_retry_delay_max_s)


def settle_memory() -> None:
    """Called once a command's modules are loaded: what is alive then (modules, pydantic's
    validators, the parsers' tables: ~90,000 objects) lives as long as the process, so the
    collector stops scanning it (a full collection of a loaded `ledger` process took 14-27 ms, now
    paid every time one runs), and the young generation is collected less often. Measured: batched
    appends 14,900 -> 20,400 events/s (bench/RESULTS.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gc_young_threshold, *gc.get_threshold()[1:])


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
async def open_store(
    settings: Settings, *, wait: bool = False
) -> AsyncIterator[PostgresEventStore]:
    """The event store, migrated. A database that cannot be reached fails a one-off command at
    once (`StoreUnavailableError`); with `wait` (a long-running service) it is retried, with a
    warning each time, until it answers: a service started before its database (a compose
    file's start order, a database restarting or failing over) comes up with it instead of
    exiting. A database that will never answer (a wrong address or password) is retried as
    long, each warning naming why."""
    with database_url(settings) as url:
        store = await (
            retry_until_up(
                lambda: PostgresEventStore.open(url),
                (StoreUnavailableError,),
                "event store not opened",
            )
            if wait
            else PostgresEventStore.open(url)
        )
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def open_service(settings: Settings, *, wait: bool = False) -> AsyncIterator[LedgerService]:
    async with open_store(settings, wait=wait) as store:
        yield LedgerService(store)


@contextmanager
def kafka_cluster(settings: Settings) -> Iterator[Settings]:
    """`settings` as they are when they name a Kafka cluster; else with the embedded tansu broker
    started and its Kafka settings: no idempotent producer (tansu has no InitProducerId) and,
    unless configured, a short fetch wait and session timeout (tansu holds a waiting fetch and a
    JoinGroup, see `tansu_fetch_max_wait_ms`, `tansu_session_timeout_ms`)."""
    if settings.kafka_bootstrap:
        yield settings
        return
    from ledger.embedded import EmbeddedKafka, tansu_fetch_max_wait_ms, tansu_session_timeout_ms

    broker = EmbeddedKafka.start(settings.data_dir / "tansu")
    try:
        yield dataclasses.replace(
            settings,
            kafka_bootstrap=broker.bootstrap,
            kafka_idempotent=False,
            kafka_fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms or tansu_fetch_max_wait_ms,
            kafka_session_timeout_ms=settings.kafka_session_timeout_ms or tansu_session_timeout_ms,
        )
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
