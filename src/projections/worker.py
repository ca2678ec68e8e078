"""The live projection worker: a faust-streaming app on `ledger.events`.

Workers share the consumer group `ledger-projections` and so split the partitions between them;
a tenant's events are in one partition (the relay keys by tenant), so one worker at a time owns a
tenant. Each batch (up to `projection_batch_max` events: what arrived during the previous batch's
apply and within `projection_batch_window_s` after it) is applied in one transaction by
`ProjectionWriter`, which skips what was applied before; then the tenants that moved are announced
on Redis, and their KPI states are recomputed and published for the gateways beside the projecting
(`projections.live`). Faust commits the offsets after the agent has processed the events, so a crash
re-delivers the uncommitted tail, which the writer skips.

A database outage, or a database that refuses writes for reasons of its own (read-only, grants,
schema: `_not_the_events`), blocks the batch (retried with backoff) rather than skipping it; a
message that is not a ledger event (no `ce_position`, bad JSON) is logged and skipped: nothing on
the topic can stop the worker.

Beside the stream, every `LEDGER_PROJECTION_SWEEP_S` the store sweep (`projections.sweep`) applies
from the store what Kafka left undelivered for a whole interval, and then lengthens the consumer's
fetch wait a step (`widen_fetch_wait`): nothing the store holds is left out of the read models
because a broker did not deliver it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger import metrics
from ledger.config import Settings, group_timeouts, kafka_fetch_max_wait_ms_default
from ledger.errors import StoreUnavailableError
from ledger.runtime import retry_until_up
from ledger.store.postgres import PostgresEventStore, configure_connection, migrate
from projections.core import ProjectedEvent, ProjectionWriter, Projector, Touched
from projections.live import KpiPublisher
from projections.notify import Notifier, Notifiers, RedisNotifier

if TYPE_CHECKING:
    import faust

logger = logging.getLogger(__name__)

# A batch is what arrived while the previous one was applied plus what arrives within this window
# (faust's take_events flushes the buffer every window): 5 ms bounds the wait of an event that finds
# the worker idle; under load batches grow by themselves, as events queue during each apply.
projection_batch_window_s = 0.005
projection_batch_max = 1000
retry_delay_initial_s = 0.2
retry_delay_max_s = 10.0


def _not_the_events(error: BaseException) -> bool:
    """Whether an error that stopped a batch is the database's doing, not the events': the
    database gone or refusing (connection, resources, operator, lock and serialisation errors:
    OperationalError), in the wrong state for writing (read-only after a failover: InternalError),
    or with a schema or grants other than the writer expects (a table missing, permission denied:
    ProgrammingError), as the server says (a SQLSTATE: psycopg's own ProgrammingError, "cannot
    adapt type", comes from an event's values). Such errors block the batch, retried, instead of
    having its events skipped as poison; what an event can cause (a value the tables refuse:
    DataError, IntegrityError; a projector's exception) is still found event by event and
    skipped."""
    if isinstance(error, psycopg.OperationalError | OSError):
        return True
    return (
        isinstance(error, psycopg.InternalError | psycopg.ProgrammingError)
        and error.sqlstate is not None
    )


class _Projecting:
    """The worker's I/O around the pure projectors: one connection, retried; the notifier."""

    def __init__(
        self, database_url: str, projectors: Sequence[Projector], notifier: Notifier | None
    ) -> None:
        self.database_url = database_url
        self.projectors = projectors
        self.notifier = notifier
        self._conn: AsyncConnection[TupleRow] | None = None

    async def _connection(self) -> AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await AsyncConnection.connect(self.database_url, autocommit=True)
            await configure_connection(self._conn)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _apply_retrying(
        self, events: list[ProjectedEvent]
    ) -> tuple[dict[str, int], dict[str, Touched]]:
        """The tenants moved (tenant -> highest position) and what the batch did to each."""
        delay = retry_delay_initial_s
        while True:
            try:
                writer = ProjectionWriter(await self._connection(), self.projectors)
                applied = await writer.apply(events)
                return applied, writer.touched
            except Exception as error:
                if not _not_the_events(error):
                    raise
                logger.warning(
                    "projection batch not applied (%s: %s); retrying in %.1f s",
                    type(error).__name__,
                    error,
                    delay,
                )
                # A fresh connection for the next try: one left on a read-only standby after a
                # failover, or with a role changed since, would fail the same way for ever.
                if self._conn is not None:
                    await self._conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry_delay_max_s)

    async def apply(self, events: list[ProjectedEvent]) -> None:
        touched: dict[str, list[Touched]] = {}
        try:
            applied, batch_touched = await self._apply_retrying(events)
            for tenant, note in batch_touched.items():
                touched[tenant] = [note]
        except Exception:
            # A message a projector cannot apply (not a real ledger event, or a projector bug):
            # the batch's transaction rolled back whole. Apply event by event, skip the culprit,
            # and say so loudly: the worker keeps going and nothing is half applied.
            applied = {}
            for event in events:
                try:
                    part, part_touched = await self._apply_retrying([event])
                except Exception:
                    logger.exception(
                        "skipping the event at position %s (tenant %s, id %s): it cannot be "
                        "projected; replay the read models once the cause is fixed",
                        event.position,
                        event.tenant_id,
                        event.event_id,
                    )
                    metrics.events_skipped.inc()
                    continue
                for tenant, position in part.items():
                    applied[tenant] = max(position, applied.get(tenant, 0))
                for tenant, note in part_touched.items():
                    touched.setdefault(tenant, []).append(note)
        now = datetime.now(UTC)
        for event in events:
            if event.recorded_at:
                recorded = datetime.fromisoformat(event.recorded_at)
                metrics.projection_latency_seconds.observe((now - recorded).total_seconds())
        if applied and self.notifier is not None:
            await self.notifier.changed(
                applied, [projector.name for projector in self.projectors], touched
            )


async def sweep_forever(
    database_url: str,
    projectors: Sequence[Projector],
    notifier: Notifier | None,
    interval_s: float,
    undelivered: Callable[[], None] | None = None,
) -> None:
    """Every `interval_s`, a `StoreSweep` with a `_Projecting` of its own (its own connection: a
    transaction at a time per connection) sharing the notifier; `undelivered` is called after a
    sweep that had to apply events Kafka did not deliver. A sweep that fails (the database away)
    is logged and tried again at the next interval: it never stops the worker."""
    from projections.sweep import StoreSweep

    store = await retry_until_up(
        lambda: PostgresEventStore.open(database_url, run_migrations=False),
        (psycopg.OperationalError, OSError, StoreUnavailableError),
        "store sweep not started",
    )
    projecting = _Projecting(database_url, projectors, notifier)
    sweep = StoreSweep(store, [projector.name for projector in projectors], projecting.apply)
    try:
        while True:
            await asyncio.sleep(interval_s)
            try:
                if await sweep.run_once() and undelivered is not None:
                    undelivered()
            except Exception as error:
                logger.warning(
                    "store sweep failed (%s: %s); next in %.0f s",
                    type(error).__name__,
                    error,
                    interval_s,
                )
    finally:
        await projecting.close()
        await store.close()


def decode_batch(messages: Sequence[Any]) -> list[ProjectedEvent]:
    events = []
    for message in messages:
        try:
            events.append(ProjectedEvent.from_kafka(message.value, message.headers or []))
        except (KeyError, ValueError) as error:
            logger.warning(
                "skipping a message that is not a ledger event (partition %s offset %s): %r",
                message.partition,
                message.offset,
                error,
            )
    return events


def _app_class(fetch_max_wait_ms: int) -> type[faust.App]:
    """faust.App whose Kafka consumer waits at most `fetch_max_wait_ms` for a fetch: faust builds
    its aiokafka consumer with a hard-coded 1,500 ms and has no setting for it. On Apache Kafka
    the wait only bounds idle polling; on the embedded tansu broker it is the delivery latency
    (see `ledger.embedded.tansu_fetch_max_wait_ms`)."""
    import faust
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        created: Any = None  # the aiokafka consumer, for `widen_fetch_wait`

        def _create_worker_consumer(self, transport: Any) -> Any:
            consumer = super()._create_worker_consumer(transport)
            # aiokafka hands this to its Fetcher in start(); fail loudly should it be renamed.
            if not hasattr(consumer, "_fetch_max_wait_ms"):
                raise RuntimeError("aiokafka's consumer has no _fetch_max_wait_ms to set")
            consumer._fetch_max_wait_ms = fetch_max_wait_ms
            self.created = consumer
            return consumer

    class FetchWaitConsumer(driver.Consumer):
        def _new_consumer_thread(self) -> Any:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        Consumer = FetchWaitConsumer

    class App(faust.App):
        def _new_transport(self) -> Any:
            return Transport(self.conf.broker_consumer, self)

    return App


def widen_fetch_wait(app: Any) -> int | None:
    """Raise the worker consumer's fetch wait a step (x4, up to Kafka's default 500 ms); return
    the new wait, or None when it was at the top already or there is no consumer yet.

    Why: the embedded tansu broker answers a fetch with nothing for a partition whose in-memory
    log it cannot read within the fetch's wait, and that read grows with the partition (~40-120 ms
    per fetch once a partition held 64,000 messages, stop 21): with the 10 ms wait `ledger up`
    gives the worker for latency, a busy partition stopped being delivered after ~32,000 messages
    while the others went on, faust logging "Stream stopped processing". The store sweep finds
    such events undelivered and calls this; a longer wait lets the broker answer again (applied
    by hand to a stalled worker, 100 ms resumed its partition within a second). On Apache Kafka
    the wait is 500 ms already and this changes nothing."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "created", None)
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return None
    current = int(fetcher._fetch_max_wait_ms)
    if current >= kafka_fetch_max_wait_ms_default:
        return None
    fetcher._fetch_max_wait_ms = min(current * 4, kafka_fetch_max_wait_ms_default)
    return int(fetcher._fetch_max_wait_ms)


def _widened(app: Any) -> None:
    wait_ms = widen_fetch_wait(app)
    if wait_ms is not None:
        logger.warning(
            "Kafka did not deliver events the store holds; the consumer's fetch wait is now"
            " %d ms (a broker that answers slow reads with nothing, as the embedded tansu does,"
            " answers again)",
            wait_ms,
        )


def _group_settings(session_timeout_ms: int | None) -> tuple[float | None, float | None]:
    """faust's session timeout and heartbeat interval in seconds (None: faust's defaults)."""
    timeouts = group_timeouts(session_timeout_ms)
    if not timeouts:
        return None, None
    return timeouts["session_timeout_ms"] / 1000, timeouts["heartbeat_interval_ms"] / 1000


async def migrate_retrying(database_url: str) -> None:
    """Apply the migrations once the database answers. A worker started while the database is
    down or restarting waits for it, as its batches do (before: the app crashed with the
    connection error and the worker exited)."""
    from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

    await retry_until_up(
        lambda: migrate(database_url),
        (psycopg.OperationalError, SQLAlchemyOperationalError, OSError),
        "migrations not applied",
    )


def make_app(settings: Settings, database_url: str, projectors: Sequence[Projector]) -> Any:
    if not settings.kafka_bootstrap:
        raise ValueError("the worker needs LEDGER_KAFKA_BOOTSTRAP")
    session_timeout_s, heartbeat_interval_s = _group_settings(settings.kafka_session_timeout_ms)
    (settings.data_dir / "worker").mkdir(parents=True, exist_ok=True)  # faust makes one level
    app = _app_class(settings.fetch_max_wait_ms)(
        settings.worker_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # faust makes a data folder even with memory tables: under the ledger's data folder, not
        # `<group>-data` in whatever directory the worker was started from.
        datadir=str(settings.data_dir / "worker" / "{conf.name}"),
        web_enabled=False,
        producer_acks=-1,
        broker_commit_every=projection_batch_max,
        broker_session_timeout=session_timeout_s,
        broker_heartbeat_interval=heartbeat_interval_s,
    )
    topic = app.topic(settings.events_topic, value_type=bytes, key_type=bytes)
    notifier: Notifier | None = None
    if settings.redis_url:
        # Change notices for whoever listens, and the live KPI states the gateways fan out.
        notifier = Notifiers(
            [RedisNotifier(settings.redis_url), KpiPublisher(database_url, settings.redis_url)]
        )
    projecting = _Projecting(database_url, projectors, notifier)
    migrated = asyncio.Event()

    @app.task  # type: ignore[untyped-decorator]
    async def prepare() -> None:
        await migrate_retrying(database_url)
        migrated.set()

    @app.task  # type: ignore[untyped-decorator]
    async def sweep() -> None:
        await migrated.wait()
        await sweep_forever(
            database_url,
            projectors,
            notifier,
            float(settings.projection_sweep_s),
            undelivered=lambda: _widened(app),
        )

    @app.agent(topic)
    async def project(stream: Any) -> None:
        # Not a batch before the read models' tables are there: a batch that met a missing table
        # would be taken for poison and its events skipped.
        await migrated.wait()
        async for batch in stream.take_events(
            projection_batch_max, within=projection_batch_window_s
        ):
            events = decode_batch([event.message for event in batch])
            if events:
                await projecting.apply(events)

    return app


def run_worker(settings: Settings, database_url: str, projectors: Sequence[Projector]) -> None:
    """Run until SIGINT or SIGTERM (faust's worker owns the event loop and the signals)."""
    import faust

    metrics.serve(settings.metrics_port)
    app = make_app(settings, database_url, projectors)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    # Faust's progress spinner writes terminal escape codes to stdout, a file or not: a worker
    # logs JSON lines, and `ledger up` shares its stdout with the worker child.
    worker.spinner = None
    worker.execute_from_commandline()
