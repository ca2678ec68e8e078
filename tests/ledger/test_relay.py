"""The relay publishes every stored event exactly in position order per tenant, moves its checkpoint
only after the broker acknowledged, re-sends (never skips) after a failed publish, wakes on NOTIFY,
and re-publishes from the store when the broker lost its data: with a fake broker for the exact
bookkeeping, and for real against PostgreSQL and the tansu broker (restarted, losing everything)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ledger import relay as relay_module
from ledger.config import Settings
from ledger.embedded import EmbeddedKafka
from ledger.relay import KafkaPublisher, Marks, Message, Relay
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from tests.kafka_batches import codec_ids, stored
from tests.ledger.events import customer, invoice, new_tenant, payment

# A consumer on loopback sees a published message within milliseconds; tansu needs a few seconds
# for metadata after a restart. These bound the waits so a broken relay fails instead of hanging.
deliver_timeout_s = 30.0


class FakePublisher:
    def __init__(self) -> None:
        self.topics: dict[str, list[Message]] = {}
        self.failures_left = 0

    async def ensure_topic(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [])

    async def topic_exists(self, topic: str) -> bool:
        return topic in self.topics

    async def holds(self, topic: str, marks: Marks) -> bool:
        stored = self.topics.get(topic, [])
        return all(
            offset < len(stored) and _header(stored[offset], "ce_position") == str(position)
            for offset, position in marks.values()
        )

    async def publish(self, topic: str, messages: list[Message]) -> list[tuple[int, int]]:
        stored = self.topics.setdefault(topic, [])
        if self.failures_left:
            self.failures_left -= 1
            # Half the batch reached the broker before the connection broke.
            stored.extend(messages[: len(messages) // 2])
            raise ConnectionError("broker went away")
        first = len(stored)
        stored.extend(messages)
        return [(0, first + index) for index in range(len(messages))]


def _header(message: Message, name: str) -> str:
    return dict(message.headers)[name].decode()


async def _append_story(store: PostgresEventStore, tenants: list[str], invoices: int) -> int:
    service = LedgerService(store)
    for tenant in tenants:
        batch = [customer(tenant)] + [invoice(tenant, f"INV-{i}") for i in range(invoices)]
        batch.append(payment(tenant, amount="150.00"))
        report = await service.append(batch)
        assert not report.rejected, report.rejected
    return await store.head()


async def test_relay_publishes_each_event_once_in_order_with_checkpoint(
    fresh_store: PostgresEventStore,
) -> None:
    head = await _append_story(fresh_store, [new_tenant(), new_tenant()], invoices=30)
    broker = FakePublisher()
    relay = Relay(fresh_store, broker, topic="events")
    await relay.load_checkpoint()
    assert await relay.repair_broker() is True
    assert await relay.catch_up() == head
    assert relay.checkpoint == head
    assert await relay.load_checkpoint() == head

    messages = broker.topics["events"]
    assert [int(_header(m, "ce_position")) for m in messages] == list(range(1, head + 1))
    stored = await fresh_store.read(None, 1, head)
    for message, event in zip(messages, stored, strict=True):
        assert message.key == event.tenant_id.encode()
        assert _header(message, "ce_id") == event.event_id
        assert _header(message, "ce_type") == event.type
        assert _header(message, "ce_tenantid") == event.tenant_id
    assert '"oldest_due_first"' in _header(messages[-1], "ce_ledger")
    assert await relay.catch_up() == 0


async def test_relay_logs_its_progress_at_info_once_caught_up_then_at_most_per_interval(
    fresh_store: PostgresEventStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each batch at DEBUG; at INFO the catch-up after start, then a summary per interval (a line per
    batch was four a second under the demo, scrolling `ledger up`'s dashboard links away)."""
    tenant = new_tenant()
    head = await _append_story(fresh_store, [tenant], invoices=5)
    service = LedgerService(fresh_store)
    monkeypatch.setattr(relay_module, "progress_log_interval_s", 3600.0)
    caplog.set_level(logging.DEBUG, logger="ledger.relay")
    relay = Relay(fresh_store, FakePublisher(), topic="events")
    stop, task = await _run_until(relay, head)
    try:
        for number in range(3):  # three batches, each after the relay caught up
            await service.append([invoice(tenant, f"INV-later-{number}")])
            head += 1
            await _wait_for_checkpoint(relay, head)
        monkeypatch.setattr(relay_module, "progress_log_interval_s", 0.0)
        await service.append([invoice(tenant, f"INV-later-{number}") for number in (3, 4)])
        head += 2
        await _wait_for_checkpoint(relay, head)
    finally:
        stop.set()
        await task

    def lines(level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "ledger.relay" and r.levelno == level and "relayed" in r.getMessage()
        ]

    started = head - 5
    assert lines(logging.INFO)[0] == f"relayed {started} events; checkpoint {started}"
    assert re.fullmatch(
        rf"relayed 5 events in the last \d+ s; checkpoint {head}", lines(logging.INFO)[1]
    )
    assert len(lines(logging.INFO)) == 2
    assert lines(logging.DEBUG)[-4:] == [
        f"relayed 1 events; checkpoint {started + 1}",
        f"relayed 1 events; checkpoint {started + 2}",
        f"relayed 1 events; checkpoint {started + 3}",
        f"relayed 2 events; checkpoint {head}",
    ]


async def _wait_for_checkpoint(relay: Relay, position: int) -> None:
    deadline = time.monotonic() + deliver_timeout_s
    while relay.checkpoint < position:
        assert time.monotonic() < deadline, f"relay stuck at {relay.checkpoint} < {position}"
        await asyncio.sleep(0.02)


async def test_failed_publish_keeps_the_checkpoint_and_resends_the_tail(
    fresh_store: PostgresEventStore,
) -> None:
    head = await _append_story(fresh_store, [new_tenant()], invoices=10)
    broker = FakePublisher()
    relay = Relay(fresh_store, broker, topic="events")
    await relay.repair_broker()
    broker.failures_left = 1
    with pytest.raises(ConnectionError):
        await relay.publish_once()
    assert relay.checkpoint == 0
    assert await relay.load_checkpoint() == 0
    await relay.catch_up()
    positions = [int(_header(m, "ce_position")) for m in broker.topics["events"]]
    # At least once: the half-sent head is sent again, nothing is missing, the rest once each.
    assert sorted(set(positions)) == list(range(1, head + 1))
    assert positions[head // 2 :] == list(range(1, head + 1))


async def test_broker_that_lost_data_is_refed_from_the_store(
    fresh_store: PostgresEventStore,
) -> None:
    head = await _append_story(fresh_store, [new_tenant()], invoices=5)
    broker = FakePublisher()
    relay = Relay(fresh_store, broker, topic="events")
    await relay.repair_broker()
    await relay.catch_up()
    assert await relay.repair_broker() is False  # everything is where the marks say
    broker.topics["events"] = broker.topics["events"][:3]  # a broker that lost its tail
    assert await relay.repair_broker() is True
    assert relay.checkpoint == 0
    await relay.catch_up()
    broker.topics.clear()  # the embedded broker restarted with memory storage
    assert await relay.repair_broker() is True
    assert relay.checkpoint == 0
    await relay.catch_up()
    assert [int(_header(m, "ce_position")) for m in broker.topics["events"]] == list(
        range(1, head + 1)
    )


# --- against the real broker -----------------------------------------------------------------


async def _consume_all(
    bootstrap: str, topic: str, expected: int
) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
        deadline = time.monotonic() + deliver_timeout_s
        while not partitions and time.monotonic() < deadline:
            await consumer.topics()
            await asyncio.sleep(0.2)
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        received: list[tuple[bytes, dict[str, bytes]]] = []
        while len(received) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                received.extend((r.key or b"", dict(r.headers)) for r in records)
        return received
    finally:
        await consumer.stop()


async def _run_until(relay: Relay, position: int) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    deadline = time.monotonic() + deliver_timeout_s
    while relay.checkpoint < position:
        assert time.monotonic() < deadline, f"relay stuck at {relay.checkpoint} < {position}"
        await asyncio.sleep(0.05)
    return stop, task


async def test_relay_to_tansu_keeps_each_tenants_order(
    fresh_store: PostgresEventStore, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants = [new_tenant(), new_tenant(), new_tenant()]
    head = await _append_story(fresh_store, tenants, invoices=20)
    topic = f"ledger.events.{uuid.uuid4().hex[:8]}"
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False)
    relay = Relay(fresh_store, publisher, topic=topic, partitions=3)
    # A long poll interval proves the NOTIFY wakes the relay for the second batch.
    monkeypatch.setattr(relay_module, "poll_interval_s", 60.0)
    stop, task = await _run_until(relay, head)
    try:
        started = time.monotonic()
        await LedgerService(fresh_store).append([invoice(tenants[0], "INV-late")])
        deadline = time.monotonic() + deliver_timeout_s
        while relay.checkpoint < head + 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert time.monotonic() - started < 5.0, "the relay did not wake on NOTIFY"
        received = await _consume_all(kafka_bootstrap, topic, head + 1)
    finally:
        stop.set()
        await task
        await publisher.close()
    assert len(received) == head + 1
    by_tenant: dict[bytes, list[int]] = {}
    for key, headers in received:
        assert headers["ce_tenantid"] == key
        by_tenant.setdefault(key, []).append(int(headers["ce_position"]))
    assert set(by_tenant) == {tenant.encode() for tenant in tenants}
    for positions in by_tenant.values():
        assert positions == sorted(positions)
    assert sorted(p for positions in by_tenant.values() for p in positions) == list(
        range(1, head + 2)
    )
    # The publisher's default codec, as LEDGER_KAFKA_COMPRESSION's.
    assert Settings().kafka_compression == "zstd"
    assert (await stored(kafka_bootstrap, topic)).codecs == {codec_ids["zstd"]}


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
async def test_relay_compresses_its_batches_with_the_configured_codec(
    fresh_store: PostgresEventStore, kafka_bootstrap: str, codec: str | None
) -> None:
    """LEDGER_KAFKA_COMPRESSION reaches the broker: every batch the relay wrote is stored with the
    codec (none: uncompressed), and a consumer reads every event back."""
    tenants = [new_tenant(), new_tenant()]
    head = await _append_story(fresh_store, tenants, invoices=30)
    topic = f"ledger.events.{uuid.uuid4().hex[:8]}"
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False, compression=codec)
    relay = Relay(fresh_store, publisher, topic=topic, partitions=2)
    try:
        await relay.repair_broker()
        assert await relay.catch_up() == head
        # Each partition's marked message is read back from inside its compressed batch: the
        # broker is found to hold everything, nothing is published again.
        assert await relay.repair_broker() is False
        assert relay.checkpoint == head
    finally:
        await publisher.close()
    held = await stored(kafka_bootstrap, topic)
    assert held.codecs == {codec_ids[codec]}
    assert held.records == head
    received = await _consume_all(kafka_bootstrap, topic, head)
    assert sorted(int(headers["ce_position"]) for _, headers in received) == list(
        range(1, head + 1)
    )


async def test_restarted_broker_is_refed_by_the_running_relay(
    fresh_store: PostgresEventStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay_module, "broker_check_interval_s", 0.5)
    monkeypatch.setattr(relay_module, "poll_interval_s", 0.25)
    head = await _append_story(fresh_store, [new_tenant()], invoices=10)
    broker = EmbeddedKafka.start(tmp_path / "first")
    port = broker.port
    publisher = KafkaPublisher(broker.bootstrap, idempotent=False)
    relay = Relay(fresh_store, publisher, topic="ledger.events", partitions=2)
    saved: list[int] = []
    save_checkpoint = relay.save_checkpoint

    async def recording_save(position: int, marks: Marks) -> None:
        await save_checkpoint(position, marks)
        saved.append(position)

    monkeypatch.setattr(relay, "save_checkpoint", recording_save)
    stop, task = await _run_until(relay, head)
    try:
        broker.stop()  # memory storage: the topic and all its messages are gone
        saved.clear()
        broker = EmbeddedKafka.start(tmp_path / "second", port=port)
        deadline = time.monotonic() + deliver_timeout_s
        # The relay notices the loss on its own, resets its checkpoint and re-publishes everything.
        while not (0 in saved and saved[-1] == head):
            assert time.monotonic() < deadline, f"no re-publish; checkpoints saved: {saved}"
            await asyncio.sleep(0.05)
        received = await _consume_all(broker.bootstrap, "ledger.events", head)
        positions = sorted(int(headers["ce_position"]) for _, headers in received)
        assert positions == list(range(1, head + 1))
    finally:
        stop.set()
        await task
        await publisher.close()
        broker.stop()


async def test_an_event_over_kafkas_default_message_size_is_published(
    fresh_store: PostgresEventStore, kafka_bootstrap: str
) -> None:
    """A payment applied automatically to 3,000 invoices carries every allocation in its
    decisions: with long ids that is a message of ~1.5 MB, over Kafka's default 1 MiB. The relay
    once failed on it for good (MessageSizeTooLargeError), and on every event after it."""
    tenant = new_tenant()
    service = LedgerService(fresh_store)
    ids = [f"{index:05d}" + "\U0001d526" * 120 for index in range(3000)]  # ~485 bytes each
    assert not (await service.append([customer(tenant)])).rejected
    for start in range(0, len(ids), 1000):
        batch = [
            invoice(tenant, invoice_id, amount="1.00") for invoice_id in ids[start : start + 1000]
        ]
        assert not (await service.append(batch)).rejected
    paid = await service.append([payment(tenant, amount="3000.00"), invoice(tenant, "INV-AFTER")])
    assert not paid.rejected, paid.rejected
    head = await fresh_store.head()
    [stored] = [e for e in await fresh_store.read(tenant, head - 1, 1)]
    message = relay_module.to_message(stored)
    assert len(dict(message.headers)["ce_ledger"]) > 1024 * 1024
    topic = f"ledger.events.{uuid.uuid4().hex[:8]}"
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False)
    relay = Relay(fresh_store, publisher, topic=topic, partitions=1)
    try:
        await relay.repair_broker()
        await asyncio.wait_for(relay.catch_up(), deliver_timeout_s)
    finally:
        await publisher.close()
    assert relay.checkpoint == head
    received = await _consume_all(kafka_bootstrap, topic, head)
    assert [int(headers["ce_position"]) for _key, headers in received] == list(range(1, head + 1))


async def test_a_notify_while_the_relay_reads_nothing_is_not_lost(
    fresh_store: PostgresEventStore, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The NOTIFY of an event committed while the relay's read was finding nothing (the CI run
    where `test_relay_to_tansu_keeps_each_tenants_order` waited out its 30 s): the relay must not
    then sleep its poll interval. Made certain: the append and its NOTIFY land inside the read."""
    tenant = new_tenant()
    head = await _append_story(fresh_store, [tenant], invoices=2)
    topic = f"ledger.events.{uuid.uuid4().hex[:8]}"
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False)
    relay = Relay(fresh_store, publisher, topic=topic, partitions=3)
    monkeypatch.setattr(relay_module, "poll_interval_s", 60.0)
    stop, task = await _run_until(relay, head)
    read = fresh_store.read
    appended = asyncio.Event()

    async def read_then_append(tenant_id: str | None, start: int = 1, limit: int = 1000) -> Any:
        events = await read(tenant_id, start, limit)
        if not events and not appended.is_set():
            appended.set()  # the read found nothing; now the event commits, its NOTIFY follows
            await LedgerService(fresh_store).append([invoice(tenant, "INV-in-the-gap")])
            deadline = time.monotonic() + deliver_timeout_s
            while not relay._wakeup.is_set():  # the listener has the NOTIFY
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
        return events

    monkeypatch.setattr(fresh_store, "read", read_then_append)
    try:
        relay._wakeup.set()  # one more pass of the loop, through the patched read
        deadline = time.monotonic() + 10.0
        while relay.checkpoint < head + 1:
            assert time.monotonic() < deadline, "the relay slept through the NOTIFY"
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
        await publisher.close()
