"""Ingest from Kafka appends exactly what the HTTP API would: binary and structured CloudEvents
are appended, bad and undecodable messages go to the dead-letter topic with the rejection's code,
field and message in headers, nothing stops the consumer, and offsets are committed only after the
append (a re-read is answered as duplicates). Decoding is tested alone; the rest for real against
PostgreSQL and the tansu broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledger.ingest import Ingest, IngestMessage, decode, ingest_batch
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from tests.kafka_batches import codec_ids, stored
from tests.ledger.events import customer, invoice, new_tenant

# A tansu consumer group takes about 5 s to form; delivery on loopback is milliseconds.
deliver_timeout_s = 60.0


def binary_headers(event: dict[str, object]) -> list[tuple[str, bytes]]:
    return [(f"ce_{key}", str(value).encode()) for key, value in event.items() if key != "data"]


def test_decode_binary_and_structured_modes() -> None:
    event = customer(new_tenant(), expectedversion=0)
    binary = IngestMessage(0, 0, None, orjson.dumps(event["data"]), binary_headers(event))
    assert decode(binary) == event
    structured = IngestMessage(
        0, 1, None, orjson.dumps(event), [("content-type", b"application/cloudevents+json")]
    )
    assert orjson.loads(decode(structured)) == event
    broken = IngestMessage(0, 2, None, b"\xff not json", binary_headers(event))
    assert decode(broken) == b"\xff not json"


@pytest.fixture
async def service(new_database: Callable[[], str]) -> AsyncIterator[LedgerService]:
    store = await PostgresEventStore.open(new_database())
    yield LedgerService(store)
    await store.close()


async def test_ingest_batch_reports_dead_letters_by_message(service: LedgerService) -> None:
    tenant = new_tenant()
    good = customer(tenant)
    bad = invoice(tenant, customer_id="NOBODY")
    messages = [
        IngestMessage(0, 10, None, orjson.dumps(good), []),
        IngestMessage(0, 11, None, b"{oops", []),
        IngestMessage(0, 12, None, orjson.dumps(bad["data"]), binary_headers(bad)),
    ]
    report, dead_letters = await ingest_batch(service, messages)
    assert [entry["id"] for entry in report.appended] == [good["id"]]
    assert [(message.offset, rejection["code"]) for message, rejection in dead_letters] == [
        (11, "malformed_json"),
        (12, "unknown_customer"),
    ]


async def _read_topic(
    bootstrap: str, topic: str, expected: int
) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + deliver_timeout_s
        received: list[tuple[bytes | None, dict[str, bytes]]] = []
        while len(received) < expected and time.monotonic() < deadline:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            if not partitions:
                await asyncio.sleep(0.2)
                continue
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            received = []
            while len(received) < expected and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    received.extend((r.value, dict(r.headers)) for r in records)
        return received
    finally:
        await consumer.stop()


def _names() -> tuple[str, str, str]:
    """A test's own ingest topic, dead-letter topic and consumer group."""
    suffix = uuid.uuid4().hex[:8]
    return f"ledger.ingest.{suffix}", f"ledger.ingest.dlq.{suffix}", f"ingest-{suffix}"


async def _ingest_until(
    service: LedgerService,
    bootstrap: str,
    topic: str,
    dead_letters: str,
    group: str,
    *,
    handled: int,
) -> Ingest:
    """Run ingest until it has appended or rejected `handled` messages; then stop it."""
    ingest = Ingest(service, bootstrap, topic=topic, dead_letters=dead_letters, group=group)
    stop = asyncio.Event()
    task = asyncio.create_task(ingest.run(stop))
    try:
        deadline = time.monotonic() + deliver_timeout_s
        while ingest.appended + ingest.rejected < handled:
            assert not task.done(), task
            assert time.monotonic() < deadline, (ingest.appended, ingest.rejected)
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    return ingest


async def test_ingest_appends_and_dead_letters_for_real(
    service: LedgerService, kafka_bootstrap: str
) -> None:
    tenant = new_tenant()
    topic, dead_letters, group = _names()
    first, second = customer(tenant, "C1"), customer(tenant, "C2")
    wrong_total = invoice(tenant, "INV-1")
    wrong_total["data"]["total"] = "1.00"
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for value, headers in (
            (orjson.dumps(first), [("content-type", b"application/cloudevents+json")]),
            (b"\x00poison", [("ce_specversion", b"\xff\xfe")]),
            (orjson.dumps(wrong_total["data"]), binary_headers(wrong_total)),
            (orjson.dumps(second["data"]), binary_headers(second)),
            (orjson.dumps(first), []),  # a re-send: a duplicate, not a rejection
        ):
            await producer.send_and_wait(topic, value=value, key=tenant.encode(), headers=headers)
    finally:
        await producer.stop()

    await _ingest_until(service, kafka_bootstrap, topic, dead_letters, group, handled=4)

    stored = await service.store.read(tenant, 1, 10)
    assert [event.event_id for event in stored] == [first["id"], second["id"]]
    letters = await _read_topic(kafka_bootstrap, dead_letters, 2)
    assert [(h["ledger_rejection_code"], h["ledger_rejection_field"]) for _, h in letters] == [
        (b"malformed_json", b""),
        (b"total_mismatch", b"data.total"),
    ]
    assert letters[0][0] == b"\x00poison"

    committed = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await committed.start()
    try:
        assert await committed.committed(TopicPartition(topic, _partition_of(letters))) == 5
    finally:
        await committed.stop()


async def test_ingest_reads_batches_compressed_with_every_kafka_codec(
    service: LedgerService, kafka_bootstrap: str
) -> None:
    """Another service's producer chooses the codec: ingest appends what arrives in gzip, snappy,
    lz4 and zstd batches (without aiokafka's codec libraries it stopped at the first such batch for
    good), and its dead letters go out compressed with the ledger's codec."""
    tenant = new_tenant()
    topic, dead_letters, group = _names()
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    events = [customer(tenant, f"C-{codec}") for codec in codecs]
    for codec, event in zip(codecs, events, strict=True):
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, acks="all", compression_type=codec
        )
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, value=orjson.dumps(event), key=tenant.encode(), headers=[]
            )
        finally:
            await producer.stop()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=b"{oops", key=tenant.encode())
    finally:
        await producer.stop()
    batches = (await stored(kafka_bootstrap, topic)).batches
    assert [codec for _, codec, _ in batches] == [codec_ids[c] for c in codecs] + [codec_ids[None]]

    ingest = await _ingest_until(
        service, kafka_bootstrap, topic, dead_letters, group, handled=len(codecs) + 1
    )
    appended = await service.store.read(tenant, 1, 10)
    assert [event.event_id for event in appended] == [event["id"] for event in events]
    assert ingest.rejected == 1
    letters = await _read_topic(kafka_bootstrap, dead_letters, 1)
    assert [value for value, _ in letters] == [b"{oops"]
    assert (await stored(kafka_bootstrap, dead_letters)).codecs == {codec_ids["zstd"]}


def _partition_of(letters: list[tuple[bytes | None, dict[str, bytes]]]) -> int:
    # Every message had the tenant as key, so all went to one partition; the dead letters say which.
    return int(letters[0][1]["ledger_source_partition"])
