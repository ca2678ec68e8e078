"""Ingest from Kafka: other services publish CloudEvents to `ledger.ingest`; the ledger appends them.

Each message goes through exactly the validation and append path of the HTTP API (`LedgerService`),
one unit per message, so one bad message never holds back the others. A rejected message is
forwarded to `ledger.ingest.dlq` with the rejection's code, field and message in headers
(`ledger_rejection_code`, `ledger_rejection_field`, `ledger_rejection_message`) next to its own.
The consumer offset is committed only after the append committed and the dead letters were
acknowledged, so a crash re-reads at most the uncommitted tail, and re-reading is harmless: appends
are idempotent by event id. A message that cannot even be decoded is a rejection like any other:
nothing a publisher sends can stop the consumer.

Both CloudEvents Kafka modes are accepted: binary (`ce_*` headers, the data as the value) and
structured (the whole event as the value, content type `application/cloudevents+json`), in batches
compressed with any of Kafka's codecs (gzip, snappy, lz4, zstd: a publisher's producer chooses; a
codec the client could not decode would stop the consumer at that batch for good). Dead letters go
out compressed with `LEDGER_KAFKA_COMPRESSION`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from ledger import metrics
from ledger.config import (
    group_timeouts,
    kafka_compression_default,
    kafka_fetch_max_wait_ms_default,
)
from ledger.relay import message_bytes_max
from ledger.service import AppendReport, LedgerService

logger = logging.getLogger(__name__)

ingest_topic = "ledger.ingest"
dead_letter_topic = "ledger.ingest.dlq"
ingest_group = "ledger-ingest"
# Messages taken per poll and appended in one group-committed call.
ingest_batch_max = 500
poll_timeout_s = 0.5
retry_delay_initial_s = 0.2
retry_delay_max_s = 10.0

# CloudEvents binary mode: attribute headers carry the `ce_` prefix; values are UTF-8 strings.
_header_prefix = "ce_"
_integer_attributes = frozenset({"expectedversion"})


@dataclass(frozen=True, slots=True)
class IngestMessage:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def decode(message: IngestMessage) -> Any:
    """The CloudEvent a message carries (binary or structured mode), or its raw bytes when the
    value is not JSON (the append path then rejects it as malformed_json)."""
    headers = dict(message.headers)
    if f"{_header_prefix}specversion" in headers:
        event: dict[str, Any] = {}
        for name, raw in headers.items():
            if not name.startswith(_header_prefix):
                continue
            attribute = name[len(_header_prefix) :]
            text = raw.decode("utf-8", errors="replace")
            event[attribute] = (
                int(text) if attribute in _integer_attributes and text.isdigit() else text
            )
        try:
            event["data"] = orjson.loads(message.value or b"")
        except orjson.JSONDecodeError:
            return message.value or b""
        return event
    return message.value or b""


def dead_letter_headers(
    message: IngestMessage, rejection: dict[str, Any]
) -> list[tuple[str, bytes]]:
    return [
        *message.headers,
        ("ledger_rejection_code", str(rejection["code"]).encode()),
        ("ledger_rejection_field", str(rejection["field"]).encode()),
        ("ledger_rejection_message", str(rejection["message"]).encode()[:1000]),
        ("ledger_source_partition", str(message.partition).encode()),
        ("ledger_source_offset", str(message.offset).encode()),
    ]


async def ingest_batch(
    service: LedgerService, messages: list[IngestMessage]
) -> tuple[AppendReport, list[tuple[IngestMessage, dict[str, Any]]]]:
    """Append the batch (one unit per message); return the report and the dead letters to send."""
    raw_events = []
    for message in messages:
        try:
            raw_events.append(decode(message))
        except Exception:  # undecodable headers: let the append path reject the raw value
            raw_events.append(message.value or b"")
    report = await service.append(raw_events, atomic=False)
    first_rejection: dict[int, dict[str, Any]] = {}
    for rejection in report.rejected:
        first_rejection.setdefault(rejection["index"], rejection)
    dead_letters = [
        (messages[index], rejection) for index, rejection in sorted(first_rejection.items())
    ]
    return report, dead_letters


class Ingest:
    """The `ledger ingest` consumer over aiokafka (consumer group `ledger-ingest`)."""

    def __init__(
        self,
        service: LedgerService,
        bootstrap: str,
        *,
        topic: str = ingest_topic,
        dead_letters: str = dead_letter_topic,
        group: str = ingest_group,
        fetch_max_wait_ms: int = kafka_fetch_max_wait_ms_default,
        session_timeout_ms: int | None = None,
        compression: str | None = kafka_compression_default,
    ) -> None:
        self.service = service
        self.compression = compression
        self.bootstrap = bootstrap
        self.topic = topic
        self.dead_letters = dead_letters
        self.group = group
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.session_timeout_ms = session_timeout_ms
        self.appended = 0
        self.rejected = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set, reconnecting with backoff through outages."""
        delay = retry_delay_initial_s
        while not stop.is_set():
            try:
                await self._consume(stop)
            except Exception as error:  # broker and database errors share no base class
                logger.warning("ingest interrupted (%r); retrying in %.1f s", error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, retry_delay_max_s)

    async def _consume(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            **group_timeouts(self.session_timeout_ms),
        )
        # Dead letters are the messages as they came, however large the broker let them be.
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            max_request_size=message_bytes_max,
            compression_type=self.compression,
        )
        await consumer.start()
        try:
            await producer.start()
            try:
                while not stop.is_set():
                    batches = await consumer.getmany(
                        timeout_ms=int(poll_timeout_s * 1000), max_records=ingest_batch_max
                    )
                    for partition, records in batches.items():
                        await self._handle(consumer, producer, partition, records)
            finally:
                await producer.stop()
        finally:
            await consumer.stop()

    async def _handle(
        self, consumer: Any, producer: Any, partition: Any, records: list[Any]
    ) -> None:
        messages = [
            IngestMessage(r.partition, r.offset, r.key, r.value, list(r.headers)) for r in records
        ]
        try:
            report, dead_letters = await ingest_batch(self.service, messages)
            pending = [
                await producer.send(
                    self.dead_letters,
                    value=message.value,
                    key=message.key,
                    headers=dead_letter_headers(message, rejection),
                )
                for message, rejection in dead_letters
            ]
            await asyncio.gather(*pending)
        except Exception:
            # Nothing is committed: the batch is read again from the last commit (appends are
            # idempotent, so what did get appended answers "duplicate" the second time).
            consumer.seek(partition, records[0].offset)
            raise
        await consumer.commit({partition: records[-1].offset + 1})
        self.appended += len(report.appended)
        self.rejected += len(dead_letters)
        metrics.ingest_messages.labels(outcome="appended").inc(len(report.appended))
        metrics.ingest_messages.labels(outcome="duplicate").inc(len(report.duplicates))
        metrics.ingest_messages.labels(outcome="dead_letter").inc(len(dead_letters))
        highwater = consumer.highwater(partition)
        if highwater is not None:
            metrics.consumer_lag_messages.labels(
                role="ingest", partition=str(partition.partition)
            ).set(max(0, highwater - records[-1].offset - 1))
        if dead_letters:
            logger.info("ingest: %d rejected to %s", len(dead_letters), self.dead_letters)
