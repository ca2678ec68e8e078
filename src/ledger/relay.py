"""The outbox relay: tails the event store by global position and publishes to Kafka.

PostgreSQL is the only source of truth; Kafka is a transport that can always be re-fed from it.
The relay reads events after its checkpoint, publishes them to `ledger.events` (key = tenant id, so a
tenant's events keep their order in one partition; CloudEvents binary mode: `ce_*` headers and the
payload as the value), waits until the broker has acknowledged every one (`acks=all`), and only then
moves its checkpoint in PostgreSQL. A crash at any point re-sends at most the unacknowledged tail;
consumers skip positions they have applied, so redelivery never applies an event twice.

A broker that lost data (the embedded one forgets everything on restart; a misconfigured cluster may
too) is noticed by reading back, per partition, the last message the relay wrote there (its offset
and position are kept with the checkpoint): a missing topic or a missing or different message, and the
relay re-publishes from the start of the store. (Counting messages by end offsets would be simpler,
but tansu 0.6 reports wrong end offsets: 1 after ten records.)

It sleeps on LISTEN ledger_events (every append NOTIFYs the new head) with a polling fallback, so it
reacts in milliseconds and still cannot miss a wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from ledger import metrics
from ledger.config import kafka_compression_default
from ledger.errors import StoreError
from ledger.store import RecordedEvent
from ledger.store.postgres import PostgresEventStore, notify_channel

logger = logging.getLogger(__name__)

events_topic = "ledger.events"
# One publish waits for the broker's acks on this many events: large enough to amortise the wait,
# small enough that a crash re-sends little.
relay_batch_events_max = 1000
# The fallback when a NOTIFY is missed (e.g. while reconnecting): an event is never later than this.
poll_interval_s = 1.0
# Checking the topic for lost data costs a metadata round trip; once per this many seconds of idling.
broker_check_interval_s = 10.0
# The relay's progress goes to the log at INFO when it has caught up after a (re)start, then at most
# once per this many seconds, as a summary of what it published since; each batch at DEBUG. A line
# per batch was four lines a second under `ledger up --demo`, scrolling its dashboard links away.
progress_log_interval_s = 60.0
# Reading back one marked message; a live broker answers in milliseconds.
read_back_timeout_s = 5.0
# The largest message the relay sends (and asks of the topic it creates). An event's data is at
# most `ledger.contract.event_bytes_max` (1 MiB), but its message also carries the ledger's
# decisions (a payment applied automatically to thousands of invoices lists them all) and the
# attributes: Kafka's default of 1 MiB once left a valid event unpublishable and the relay stuck
# on it, every later event with it.
message_bytes_max = 16 * 1024 * 1024
# Backoff between attempts when the broker or the database is down: doubling, capped.
retry_delay_initial_s = 0.2
retry_delay_max_s = 10.0


# partition -> [offset, position] of the last message the relay wrote to that partition.
Marks = dict[int, list[int]]


@dataclass(frozen=True, slots=True)
class Message:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


class Publisher(Protocol):
    """The relay's view of the broker: a seam with an aiokafka implementation and test fakes."""

    async def ensure_topic(self, topic: str, partitions: int) -> None: ...

    async def topic_exists(self, topic: str) -> bool: ...

    async def holds(self, topic: str, marks: Marks) -> bool:
        """Whether each partition still has, at the marked offset, the message of that position."""
        ...

    async def publish(self, topic: str, messages: list[Message]) -> list[tuple[int, int]]:
        """Return (partition, offset) per message once the broker acknowledged every one."""
        ...


def to_message(event: RecordedEvent) -> Message:
    """CloudEvents Kafka binary mode: attributes as `ce_` headers, the data as the value."""
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", event.event_id.encode()),
        ("ce_source", str(event.metadata.get("source", "")).encode()),
        ("ce_type", event.type.encode()),
        ("ce_subject", event.stream_id.encode()),
        ("ce_time", event.time.isoformat().replace("+00:00", "Z").encode()),
        ("ce_tenantid", event.tenant_id.encode()),
        ("ce_position", str(event.position).encode()),
        ("ce_streamversion", str(event.stream_version).encode()),
        ("ce_recordedat", event.recorded_at.isoformat().replace("+00:00", "Z").encode()),
        ("ce_hash", event.hash.encode()),
        # The rest of the stored metadata (tracing, dataschema, ...), so a consumer sees the whole
        # row: the audit chain hashes it. `ledger` travels on its own, as `ce_ledger`.
        ("ce_metadata", orjson.dumps(_without_ledger(event.metadata))),
        ("content-type", b"application/json"),
    ]
    if "ledger" in event.metadata:
        headers.append(("ce_ledger", orjson.dumps(event.metadata["ledger"])))
    return Message(event.tenant_id.encode(), orjson.dumps(event.data), headers)


def _without_ledger(metadata: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in metadata.items() if name != "ledger"}


class Relay:
    def __init__(
        self,
        store: PostgresEventStore,
        publisher: Publisher,
        *,
        topic: str = events_topic,
        partitions: int = 6,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.publisher = publisher
        self.topic = topic
        self.partitions = partitions
        self.name = name or f"relay:{topic}"
        self.checkpoint = 0
        self.marks: Marks = {}
        # The highest head seen: read when the checkpoint is loaded, then from each NOTIFY's
        # payload (the new head). `ledger_relay_lag_events` is how far the checkpoint is behind it.
        self.head_seen = 0
        self._wakeup = asyncio.Event()
        self._conn: AsyncConnection[Any] | None = None

    # --- checkpoint ------------------------------------------------------------------------

    async def _connection(self) -> AsyncConnection[Any]:
        """One connection for the checkpoint, reopened after a failure (not one per save)."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await AsyncConnection.connect(self.store.conninfo, autocommit=True)
        return self._conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def load_checkpoint(self) -> int:
        conn = await self._connection()
        cursor = await conn.execute(
            "SELECT position, marks FROM ledger_checkpoints WHERE name = %s", [self.name]
        )
        row = await cursor.fetchone()
        self.checkpoint = int(row[0]) if row else 0
        self.marks = {int(p): list(mark) for p, mark in (row[1] if row else {}).items()}
        self.head_seen = max(self.head_seen, await self.store.head())
        metrics.relay_lag_events.set(max(0, self.head_seen - self.checkpoint))
        return self.checkpoint

    async def save_checkpoint(self, position: int, marks: Marks) -> None:
        conn = await self._connection()
        await conn.execute(
            "INSERT INTO ledger_checkpoints (name, position, marks) VALUES (%s, %s, %s)"
            " ON CONFLICT (name) DO UPDATE SET position = excluded.position,"
            " marks = excluded.marks, updated_at = now()",
            [self.name, position, Jsonb({str(p): mark for p, mark in marks.items()})],
        )
        self.checkpoint = position
        self.marks = marks

    # --- the broker's state ----------------------------------------------------------------

    async def repair_broker(self) -> bool:
        """Re-publish from the start when the broker lost what the checkpoint says it has."""
        exists = await self.publisher.topic_exists(self.topic)
        if not exists:
            await self.publisher.ensure_topic(self.topic, self.partitions)
        if exists and await self.publisher.holds(self.topic, self.marks):
            return False
        if self.checkpoint > 0:
            logger.warning(
                "broker lost data on %s (topic %s; checkpoint %d): re-publishing from the store",
                self.topic,
                "present but missing messages" if exists else "missing",
                self.checkpoint,
            )
            await self.save_checkpoint(0, {})
        return True

    # --- the loop --------------------------------------------------------------------------

    async def publish_once(self) -> int:
        """Publish one batch after the checkpoint; return how many events were published."""
        events = await self.store.read(None, self.checkpoint + 1, relay_batch_events_max)
        if not events:
            metrics.relay_lag_events.set(0)
            return 0
        with metrics.relay_publish_seconds.time():
            placed = await self.publisher.publish(
                self.topic, [to_message(event) for event in events]
            )
        marks = dict(self.marks)
        for event, (partition, offset) in zip(events, placed, strict=True):
            marks[partition] = [offset, event.position]
        # Only now, with every message acknowledged, may the checkpoint move past them.
        await self.save_checkpoint(events[-1].position, marks)
        metrics.events_relayed.inc(len(events))
        self.head_seen = max(self.head_seen, self.checkpoint)
        metrics.relay_lag_events.set(self.head_seen - self.checkpoint)
        return len(events)

    async def catch_up(self) -> int:
        """Publish until the store's head is reached; return how many events were published."""
        published = 0
        while True:
            count = await self.publish_once()
            if count == 0:
                return published
            published += count

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set, retrying with backoff through broker and database outages."""
        delay = retry_delay_initial_s
        listener = asyncio.create_task(self._listen(stop), name="relay-listen")
        try:
            while not stop.is_set():
                try:
                    await self.load_checkpoint()
                    await self.repair_broker()
                    await self._relay_until(stop)
                except (StoreError, psycopg.Error, OSError, ConnectionError) as error:
                    logger.warning("relay interrupted (%s); retrying in %.1f s", error, delay)
                except Exception as error:  # broker client errors have no common base class
                    logger.warning("relay interrupted (%r); retrying in %.1f s", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, retry_delay_max_s)
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self.close()

    async def _relay_until(self, stop: asyncio.Event) -> None:
        idle_s = 0.0
        # Published since the last INFO line, and when that was (None: not since this start).
        unreported = 0
        reported_at: float | None = None
        while not stop.is_set():
            # Cleared before the store is read, not after: a NOTIFY that arrives while the read
            # finds nothing (its event committed just after) must still end the wait below.
            # Cleared after the read, it was lost, and that event waited for the next poll.
            self._wakeup.clear()
            published = await self.catch_up()
            if published:
                logger.debug("relayed %d events; checkpoint %d", published, self.checkpoint)
                unreported += published
                now = time.monotonic()
                if reported_at is None:
                    logger.info("relayed %d events; checkpoint %d", unreported, self.checkpoint)
                    unreported, reported_at = 0, now
                elif now - reported_at >= progress_log_interval_s:
                    logger.info(
                        "relayed %d events in the last %.0f s; checkpoint %d",
                        unreported,
                        now - reported_at,
                        self.checkpoint,
                    )
                    unreported, reported_at = 0, now
                idle_s = 0.0
                continue
            await _first_of(self._wakeup, stop, timeout_s=poll_interval_s)
            if not self._wakeup.is_set() and not stop.is_set():
                idle_s += poll_interval_s
                if idle_s >= broker_check_interval_s:
                    idle_s = 0.0
                    await self.repair_broker()

    async def _listen(self, stop: asyncio.Event) -> None:
        """Set the wake-up flag on every NOTIFY; reconnect with backoff when the database drops."""
        delay = retry_delay_initial_s
        while not stop.is_set():
            try:
                async with await AsyncConnection.connect(
                    self.store.conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {notify_channel}")
                    delay = retry_delay_initial_s
                    self._wakeup.set()  # anything appended while we were not listening
                    async for notice in conn.notifies():
                        with contextlib.suppress(ValueError):
                            self.head_seen = max(self.head_seen, int(notice.payload))
                        self._wakeup.set()
            except psycopg.Error as error:
                logger.warning("relay listener lost the database (%s); retrying", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, retry_delay_max_s)


async def _first_of(*events: asyncio.Event, timeout_s: float) -> None:
    """Wait until any of the events is set, or the timeout passes."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


class KafkaPublisher:
    """`Publisher` over aiokafka: acks=all; the idempotent producer where the broker supports it;
    batches compressed with `compression` (one of `ledger.config.kafka_compressions`; None: not)."""

    def __init__(
        self,
        bootstrap: str,
        *,
        idempotent: bool,
        compression: str | None = kafka_compression_default,
    ) -> None:
        self.bootstrap = bootstrap
        self.idempotent = idempotent
        self.compression = compression
        self._producer: object | None = None

    async def _started_producer(self) -> object:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import UnknownError

        while self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=self.idempotent,
                linger_ms=5,
                compression_type=self.compression,
                max_batch_size=1024 * 1024,
                max_request_size=message_bytes_max,
            )
            try:
                await producer.start()
            except Exception as error:
                await producer.stop()
                if not (self.idempotent and isinstance(error, UnknownError)):
                    raise
                # Brokers without InitProducerId (tansu 0.6) answer UnknownError to it. Correctness
                # never rests on idempotence (consumers skip positions they applied), so go on.
                logger.warning(
                    "the broker refused the idempotent producer (InitProducerId); "
                    "continuing without it"
                )
                self.idempotent = False
                continue
            self._producer = producer
        return self._producer

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import TopicAlreadyExistsError

        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [
                    NewTopic(
                        topic,
                        num_partitions=partitions,
                        replication_factor=1,
                        topic_configs={"max.message.bytes": str(message_bytes_max)},
                    )
                ]
            )
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()

    async def topic_exists(self, topic: str) -> bool:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            return topic in await consumer.topics()
        finally:
            await consumer.stop()

    async def holds(self, topic: str, marks: Marks) -> bool:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        if not marks:
            return True
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            for partition, (offset, position) in marks.items():
                assigned = TopicPartition(topic, partition)
                consumer.assign([assigned])
                consumer.seek(assigned, offset)
                batches = await consumer.getmany(
                    assigned, timeout_ms=int(read_back_timeout_s * 1000), max_records=1
                )
                records = batches.get(assigned, [])
                if not records or records[0].offset != offset:
                    return False
                if dict(records[0].headers).get("ce_position") != str(position).encode():
                    return False
            return True
        finally:
            await consumer.stop()

    async def publish(self, topic: str, messages: list[Message]) -> list[tuple[int, int]]:
        producer = await self._started_producer()
        send = producer.send  # type: ignore[attr-defined]
        try:
            pending = [
                await send(topic, value=message.value, key=message.key, headers=message.headers)
                for message in messages
            ]
            acknowledged = await asyncio.gather(*pending)
        except Exception:
            # A producer that failed is not trusted again: the next attempt starts a fresh one.
            await self.close()
            raise
        return [(int(meta.partition), int(meta.offset)) for meta in acknowledged]

    async def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()  # type: ignore[attr-defined]
