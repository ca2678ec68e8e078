"""Live, replay, catch-up and test runners give identical read models, and each event counts once:
the in-memory test runner, catch-up and replay are compared on the real store; then the relay and a
real `ledger worker` process (faust on the tansu broker) project the same events, announce them on
Redis, and a second worker in a fresh consumer group, which re-reads the whole topic, changes
nothing but what is new."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio
from psycopg import AsyncConnection

from ledger.relay import KafkaPublisher, Relay
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.core import ProjectedEvent, State, read_states, run_in_memory
from projections.notify import channel
from projections.registry import all_projectors
from projections.replay import catch_up, replay
from tests.ledger.events import customer, invoice, new_tenant, payment

# Every test on a database of its own (`store` in tests/conftest.py): they read every tenant
# of the store or change the database.
own_database = True

src_dir = Path(__file__).resolve().parents[2] / "src"
# A faust worker joins its consumer group on tansu in about 5-10 s; then batches land in ms.
worker_timeout_s = 90.0

States = dict[tuple[str, str], tuple[int, State]]


async def _connection(store: PostgresEventStore) -> AsyncConnection[Any]:
    conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
    await configure_connection(conn)
    return conn


async def _append(
    store: PostgresEventStore, tenants: list[str], invoices: int, tag: str = ""
) -> None:
    service = LedgerService(store)
    for tenant in tenants:
        batch = [customer(tenant, f"C{tag}")] + [
            invoice(tenant, f"INV{tag}-{i}", customer_id=f"C{tag}") for i in range(invoices)
        ]
        batch.append(payment(tenant, f"PAY{tag}", amount="150.00", customer_id=f"C{tag}"))
        report = await service.append(batch)
        assert not report.rejected, report.rejected


async def _expected(store: PostgresEventStore) -> States:
    events = await store.read(None, 1, 100_000)
    return run_in_memory(all_projectors(), [ProjectedEvent.from_recorded(e) for e in events])


async def test_catch_up_and_replay_equal_the_test_runner(store: PostgresEventStore) -> None:
    await _append(store, [new_tenant(), new_tenant()], invoices=12)
    expected = await _expected(store)
    assert {state["events"] for _, state in expected.values()} == {14}
    conn = await _connection(store)
    try:
        assert await catch_up(store, conn, all_projectors()) == await store.head()
        assert await read_states(conn, "event_counts") == expected
        await catch_up(store, conn, all_projectors())  # again: everything is skipped
        assert await read_states(conn, "event_counts") == expected
        await replay(store, conn, all_projectors())
        assert await read_states(conn, "event_counts") == expected
        await _append(store, [new_tenant()], invoices=3)
        await catch_up(store, conn, all_projectors())
        assert await read_states(conn, "event_counts") == await _expected(store)
    finally:
        await conn.close()


def spawn_ledger(
    role: str,
    store: PostgresEventStore,
    kafka: dict[str, str],
    redis_url: str,
    topic: str,
    group: str,
    log: Path,
    extra: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """`ledger ROLE` as a process on `store`'s database, `kafka`'s LEDGER_KAFKA_* settings, its
    output appended to `log`."""
    environment = dict(os.environ)
    environment.update(
        LEDGER_DATABASE_URL=store.conninfo,
        LEDGER_REDIS_URL=redis_url,
        LEDGER_EVENTS_TOPIC=topic,
        LEDGER_WORKER_GROUP=group,
        PYTHONPATH=os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")]),
    )
    environment.update(kafka)
    # Kafka's delivery alone: the worker's store sweep (`projections.sweep`) would otherwise mend
    # within seconds what these tests hold the broker path to; test_sweep.py tests the sweep.
    environment["LEDGER_PROJECTION_SWEEP_S"] = "3600"
    environment.update(extra or {})
    return subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", role],
        env=environment,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def _wait_for(
    conn: AsyncConnection[Any], expected: States, worker: subprocess.Popen[bytes], log: Path
) -> None:
    deadline = time.monotonic() + worker_timeout_s
    while True:
        states = await read_states(conn, "event_counts")
        if states == expected:
            return
        assert worker.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, (states, expected, log.read_text()[-3000:])
        await asyncio.sleep(0.2)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


async def test_live_worker_equals_replay_and_counts_each_event_once(
    store: PostgresEventStore,
    kafka_bootstrap: str,
    kafka_environment: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    tenants = [new_tenant(), new_tenant(), new_tenant()]
    await _append(store, tenants, invoices=10)
    suffix = uuid.uuid4().hex[:8]
    topic = f"ledger.events.{suffix}"
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False)
    relay = Relay(store, publisher, topic=topic, partitions=3)
    stop = asyncio.Event()
    relaying = asyncio.create_task(relay.run(stop))
    conn = await _connection(store)
    notices = redis.asyncio.Redis.from_url(redis_url)
    subscription = notices.pubsub()
    await subscription.subscribe(channel(tenants[0]))
    first_log, second_log = tmp_path / "worker1.log", tmp_path / "worker2.log"
    worker = spawn_ledger(
        "worker", store, kafka_environment, redis_url, topic, f"group-{suffix}", first_log
    )
    try:
        await _wait_for(conn, await _expected(store), worker, first_log)
        notice = None
        deadline = time.monotonic() + worker_timeout_s
        while notice is None and time.monotonic() < deadline:
            message = await subscription.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is not None:
                notice = orjson.loads(message["data"])
        assert notice is not None and notice["tenant"] == tenants[0]
        assert notice["projections"] == [projector.name for projector in all_projectors()]
        _stop(worker)

        # A fresh group re-reads the topic from the start: every old event is redelivered.
        worker = spawn_ledger(
            "worker", store, kafka_environment, redis_url, topic, f"group2-{suffix}", second_log
        )
        await _append(store, tenants, invoices=2, tag="b")
        expected = await _expected(store)
        await _wait_for(conn, expected, worker, second_log)
        await replay(store, conn, all_projectors())
        assert await read_states(conn, "event_counts") == expected
    finally:
        _stop(worker)
        stop.set()
        await relaying
        await publisher.close()
        await subscription.aclose()
        await notices.aclose()
        await conn.close()
