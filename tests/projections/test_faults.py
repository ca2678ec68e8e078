"""Faults, for real: while events are appended, the relay and the projection worker (real
processes, on PostgreSQL and the tansu broker) are killed with SIGKILL at random points and
restarted; at the end every event is in the read model exactly once, identical to the in-memory
runner over the store. The random points come from a seeded generator, printed on failure."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path

import orjson
import pytest

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections.core import read_states
from tests.ledger.events import customer, invoice, new_tenant
from tests.projections.test_runners import _connection, _expected, spawn_ledger

src_dir = Path(__file__).resolve().parents[2] / "src"
# The worker rejoins its consumer group on tansu in 5-10 s after each restart.
settle_timeout_s = 120.0
kills = 4


@pytest.fixture
async def store(new_database: Callable[[], str]) -> AsyncIterator[PostgresEventStore]:
    opened = await PostgresEventStore.open(new_database())
    yield opened
    await opened.close()


async def test_kill_9_of_relay_and_worker_loses_nothing_and_applies_nothing_twice(
    store: PostgresEventStore, kafka_environment: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"ledger.events.{suffix}", f"faults-{suffix}"
    logs = {role: tmp_path / f"{role}.log" for role in ("relay", "worker")}
    processes = {
        role: spawn_ledger(role, store, kafka_environment, redis_url, topic, group, logs[role])
        for role in logs
    }
    service = LedgerService(store)
    tenants = [new_tenant() for _ in range(3)]
    for tenant in tenants:
        assert not (await service.append([customer(tenant)])).rejected

    async def write() -> None:
        for round_number in range(40):
            batch = [invoice(tenant, f"INV-{round_number}") for tenant in tenants]
            assert not (await service.append(batch)).rejected
            await asyncio.sleep(chance.uniform(0.02, 0.15))

    async def chaos() -> None:
        for _ in range(kills):
            await asyncio.sleep(chance.uniform(0.5, 2.0))
            role = chance.choice(sorted(processes))
            processes[role].send_signal(signal.SIGKILL)
            processes[role].wait()
            await asyncio.sleep(chance.uniform(0.0, 0.5))
            processes[role] = spawn_ledger(
                role, store, kafka_environment, redis_url, topic, group, logs[role]
            )

    conn = await _connection(store)
    try:
        await asyncio.gather(write(), chaos())
        expected = await _expected(store)
        deadline = time.monotonic() + settle_timeout_s
        while (states := await read_states(conn, "event_counts")) != expected:
            for role, process in processes.items():
                assert process.poll() is None, (seed, role, logs[role].read_text()[-3000:])
            assert time.monotonic() < deadline, (
                seed,
                states,
                expected,
                logs["worker"].read_text()[-3000:],
            )
            await asyncio.sleep(0.3)
        assert {state["events"] for _, state in states.values()} == {41}, seed
    finally:
        _stop(processes.values())
        await conn.close()


async def test_kill_9_of_ingest_appends_every_message_once(
    store: PostgresEventStore, kafka_environment: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    from aiokafka import AIOKafkaProducer

    seed = random.randrange(1_000_000)
    chance = random.Random(seed)
    topic = f"ledger.ingest.{uuid.uuid4().hex[:8]}"
    tenant = new_tenant()
    good = [customer(tenant)] + [invoice(tenant, f"INV-{i}") for i in range(60)]
    bad = invoice(tenant, "INV-bad", customer_id="NOBODY")
    messages = [*good[:30], bad, *good[30:]]
    environment_topic = {"LEDGER_INGEST_TOPIC": topic}
    log = tmp_path / "ingest.log"

    def spawn() -> subprocess.Popen[bytes]:
        process = spawn_ledger(
            "ingest",
            store,
            kafka_environment,
            redis_url,
            "unused",
            "unused",
            log,
            environment_topic,
        )
        return process

    process = spawn()
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_environment["LEDGER_KAFKA_BOOTSTRAP"], acks="all"
    )
    await producer.start()
    try:
        for number, message in enumerate(messages):
            await producer.send_and_wait(topic, value=orjson.dumps(message), key=tenant.encode())
            if number in (15, 40):  # kill in the middle of the flow, twice
                await asyncio.sleep(chance.uniform(0.0, 1.0))
                process.send_signal(signal.SIGKILL)
                process.wait()
                process = spawn()
        deadline = time.monotonic() + settle_timeout_s
        while len(stored := await store.read(tenant, 1, 1000)) < len(good):
            assert process.poll() is None, (seed, log.read_text()[-3000:])
            assert time.monotonic() < deadline, (seed, len(stored), log.read_text()[-3000:])
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)  # anything re-read after the last restart has had time to land
        stored = await store.read(tenant, 1, 1000)
        assert [event.event_id for event in stored] == [event["id"] for event in good], seed
    finally:
        await producer.stop()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


async def test_broker_restart_losing_everything_ends_identical(
    store: PostgresEventStore, redis_url: str, tmp_path: Path
) -> None:
    from ledger.embedded import EmbeddedKafka, tansu_fetch_max_wait_ms, tansu_session_timeout_ms

    broker = EmbeddedKafka.start(tmp_path / "broker1")
    port = broker.port
    kafka = {
        "LEDGER_KAFKA_BOOTSTRAP": broker.bootstrap,
        "LEDGER_KAFKA_IDEMPOTENT": "false",
        "LEDGER_KAFKA_FETCH_MAX_WAIT_MS": str(tansu_fetch_max_wait_ms),
        "LEDGER_KAFKA_SESSION_TIMEOUT_MS": str(tansu_session_timeout_ms),
    }
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"ledger.events.{suffix}", f"restart-{suffix}"
    logs = {role: tmp_path / f"{role}.log" for role in ("relay", "worker")}
    processes = {
        role: spawn_ledger(role, store, kafka, redis_url, topic, group, logs[role]) for role in logs
    }
    service = LedgerService(store)
    tenants = [new_tenant() for _ in range(2)]
    conn = await _connection(store)

    async def settle() -> None:
        expected = await _expected(store)
        deadline = time.monotonic() + settle_timeout_s
        while await read_states(conn, "event_counts") != expected:
            for role, process in processes.items():
                assert process.poll() is None, (role, logs[role].read_text()[-3000:])
            assert time.monotonic() < deadline, logs["worker"].read_text()[-3000:]
            await asyncio.sleep(0.3)

    try:
        for tenant in tenants:
            assert not (await service.append([customer(tenant), invoice(tenant, "INV-1")])).rejected
        await settle()
        broker.stop()  # memory storage: topics, messages and committed offsets are gone
        broker = EmbeddedKafka.start(tmp_path / "broker2", port=port)
        for tenant in tenants:
            assert not (await service.append([invoice(tenant, "INV-2")])).rejected
        await settle()
        assert {
            state["events"] for _, state in (await read_states(conn, "event_counts")).values()
        } == {3}
    finally:
        _stop(processes.values())
        broker.stop()
        await conn.close()


async def test_database_restart_with_relay_and_worker_running(
    kafka_environment: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    import shutil
    import tempfile

    from ledger.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="ledger-outage-"))
    server = EmbeddedPostgres.start(folder / "data")
    private = await PostgresEventStore.open(server.url)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"ledger.events.{suffix}", f"outage-{suffix}"
    logs = {role: tmp_path / f"{role}.log" for role in ("relay", "worker")}
    processes = {
        role: spawn_ledger(role, private, kafka_environment, redis_url, topic, group, logs[role])
        for role in logs
    }
    tenant = new_tenant()

    async def settle(store: PostgresEventStore) -> None:
        expected = await _expected(store)
        deadline = time.monotonic() + settle_timeout_s
        conn = await _connection(store)
        try:
            while await read_states(conn, "event_counts") != expected:
                for role, process in processes.items():
                    assert process.poll() is None, (role, logs[role].read_text()[-3000:])
                assert time.monotonic() < deadline, logs["worker"].read_text()[-3000:]
                await asyncio.sleep(0.3)
        finally:
            await conn.close()

    try:
        assert not (
            await LedgerService(private).append([customer(tenant), invoice(tenant, "INV-1")])
        ).rejected
        await settle(private)
        await private.close()
        server.stop()
        await asyncio.sleep(2.0)  # relay and worker see the database gone
        server = EmbeddedPostgres.start(folder / "data")
        private = await PostgresEventStore.open(server.url)
        assert not (await LedgerService(private).append([invoice(tenant, "INV-2")])).rejected
        await settle(private)
        assert {state["events"] for _, state in (await _expected(private)).values()} == {3}
    finally:
        _stop(processes.values())
        await private.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_services_started_while_the_database_is_down_wait_for_it(
    kafka_environment: dict[str, str], redis_url: str, tmp_path: Path
) -> None:
    """The worker's migrations and the relay's store at start-up meet a database that is down (or
    restarting): each retries, the worker projects nothing until its migrations are in, and once
    the database is up the relay publishes and the worker catches up. Before, the failed
    migration crashed the worker's faust app and the worker exited (seen in CI, when the database
    restarted while a slow start-up was still migrating), and the relay exited with "cannot reach
    the event store database" (as `ledger api`, `ingest` and `up` did: they share its start)."""
    import shutil
    import tempfile

    from ledger.embedded import EmbeddedPostgres

    folder = Path(tempfile.mkdtemp(prefix="ledger-down-"))
    server = EmbeddedPostgres.start(folder / "data")
    private = await PostgresEventStore.open(server.url)
    tenant = new_tenant()
    assert not (await LedgerService(private).append([customer(tenant)])).rejected
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"ledger.events.{suffix}", f"down-{suffix}"
    log, relay_log = tmp_path / "worker.log", tmp_path / "relay.log"
    await private.close()
    server.stop()
    data_dir = tmp_path / "data"
    worker = spawn_ledger(
        "worker",
        private,
        kafka_environment,
        redis_url,
        topic,
        group,
        log,
        {"LEDGER_DATA_DIR": str(data_dir)},
    )
    relay = spawn_ledger("relay", private, kafka_environment, redis_url, topic, group, relay_log)
    processes = {worker: log, relay: relay_log}
    try:
        deadline = time.monotonic() + settle_timeout_s
        for process, retried in (
            (worker, "migrations not applied"),
            (relay, "cannot reach the event store database"),
        ):
            while retried not in processes[process].read_text():
                assert process.poll() is None, processes[process].read_text()[-3000:]
                assert time.monotonic() < deadline, processes[process].read_text()[-3000:]
                await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # a retry or two more
        for process, process_log in processes.items():
            assert process.poll() is None, process_log.read_text()[-3000:]
        server = EmbeddedPostgres.start(folder / "data")
        private = await PostgresEventStore.open(server.url)
        assert not (await LedgerService(private).append([invoice(tenant, "INV-1")])).rejected
        expected = await _expected(private)
        conn = await _connection(private)
        try:
            while await read_states(conn, "event_counts") != expected:
                for process, process_log in processes.items():
                    assert process.poll() is None, process_log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                await asyncio.sleep(0.3)
        finally:
            await conn.close()
        assert {state["events"] for _, state in expected.values()} == {2}
        # faust's data folder is the ledger's, not one left where the worker was started.
        assert (data_dir / "worker" / group).is_dir()
        assert not Path(f"{group}-data").exists()
    finally:
        _stop(processes)
        await private.close()
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _stop(processes: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each, then wait for each (30 s, then SIGKILL)."""
    running = list(processes)
    for process in running:
        process.send_signal(signal.SIGTERM)
    for process in running:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
