"""`ledger up` as a real process tree: an event POSTed to its HTTP API reaches the Kafka topic
through the relay (on the session's broker, embedded tansu unless LEDGER_KAFKA_BOOTSTRAP is set), an
event published to ledger.ingest is appended and readable over HTTP, the projection worker killed
with SIGKILL is started again and projects what comes next, and SIGTERM shuts everything down
cleanly. `ledger relay` and `ledger ingest` without a broker say so in one line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import psutil
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from ledger.embedded import free_loopback_port as free_port
from tests.ledger.events import customer, new_tenant

src_dir = Path(__file__).resolve().parents[2] / "src"
# `ledger up` starts in about a second; the first metadata exchange with tansu takes a few more.
startup_timeout_s = 30.0
deliver_timeout_s = 30.0
# The worker child joins its consumer group on tansu in about 5-10 s.
worker_timeout_s = 90.0


def _environment(**values: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(values)
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    return environment


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bytes(response.read())


def _post(url: str, body: bytes) -> bytes:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return bytes(response.read())


async def _find_on_topic(bootstrap: str, topic: str, event_id: str) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = time.monotonic() + deliver_timeout_s
        while time.monotonic() < deadline:
            await consumer.topics()
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []
            ]
            if partitions:
                consumer.assign(partitions)
                await consumer.seek_to_beginning(*partitions)
                while time.monotonic() < deadline:
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        for record in records:
                            headers = dict(record.headers)
                            if headers.get("ce_id") == event_id.encode():
                                return headers
            await asyncio.sleep(0.2)
        raise AssertionError(f"event {event_id} never reached {topic}")
    finally:
        await consumer.stop()


async def test_up_serves_the_api_and_relays_to_kafka(
    new_database: Callable[[], str],
    kafka_bootstrap: str,
    kafka_environment: dict[str, str],
    tmp_path: Path,
) -> None:
    port = free_port()
    database = new_database()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ledger.cli",
            "up",
            "--api-port",
            str(port),
            "--gateway-port",
            str(free_port()),
            "--data-dir",
            str(tmp_path),
        ],
        env=_environment(LEDGER_DATABASE_URL=database, **kafka_environment),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            try:
                assert orjson.loads(_get(f"http://127.0.0.1:{port}/healthz"))["status"] == "ok"
                break
            except OSError:
                assert time.monotonic() < deadline, "ledger up did not answer /healthz"
                await asyncio.sleep(0.2)
        event = customer(new_tenant())
        answer = orjson.loads(_post(f"http://127.0.0.1:{port}/v1/events", orjson.dumps(event)))
        position = answer["appended"][0]["position"]
        headers = await _find_on_topic(kafka_bootstrap, "ledger.events", event["id"])
        assert headers["ce_position"] == str(position).encode()
        assert headers["ce_tenantid"] == event["tenantid"].encode()

        # The other way in: a service publishes to ledger.ingest, and the event is appended.
        published = customer(event["tenantid"], "C2")
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait("ledger.ingest", value=orjson.dumps(published))
        finally:
            await producer.stop()
        deadline = time.monotonic() + deliver_timeout_s
        listed: list[str] = []
        while published["id"] not in listed:
            assert time.monotonic() < deadline, (
                "the event published to ledger.ingest was not appended"
            )
            await asyncio.sleep(0.2)
            answer = orjson.loads(
                _get(f"http://127.0.0.1:{port}/v1/events?tenant={event['tenantid']}")
            )
            listed = [stored["id"] for stored in answer["events"]]

        # The projection worker (a child process) has both events in its read model.
        await _wait_counted(database, event["tenantid"], 2)

        # Killed (the OOM killer, kill -9), the worker is started again and projects what comes.
        os.kill(first_worker_pid := _child_worker(process.pid), signal.SIGKILL)
        _post(
            f"http://127.0.0.1:{port}/v1/events",
            orjson.dumps(customer(event["tenantid"], "C3")),
        )
        await _wait_counted(database, event["tenantid"], 3)
        second_worker_pid = _child_worker(process.pid)
        assert second_worker_pid != first_worker_pid
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr.decode()
    assert b"ledger is up." in stdout
    assert int(stdout.split(b"worker:    pid ")[1].split()[0]) == first_worker_pid
    assert f"the projection worker (pid {first_worker_pid}) exited with code -9".encode() in stderr
    with pytest.raises(ProcessLookupError):
        os.kill(second_worker_pid, 0)  # the restarted worker was stopped with its parent
    assert b"Traceback" not in stderr


def _child_worker(parent_pid: int) -> int:
    """The pid of `ledger worker` among the children of `parent_pid` (exactly one)."""
    workers = [
        int(child.pid)
        for child in psutil.Process(parent_pid).children()
        if child.cmdline()[-1:] == ["worker"]
    ]
    assert len(workers) == 1, workers
    return workers[0]


async def _wait_counted(database: str, tenant: str, events: int) -> None:
    deadline = time.monotonic() + worker_timeout_s
    counted = 0
    while counted < events:
        assert time.monotonic() < deadline, f"the worker did not project {events} events"
        await asyncio.sleep(0.3)
        with psycopg.connect(database, autocommit=True) as conn:
            conn.execute("SELECT set_config('ledger.tenants', %s, false)", [tenant])
            row = conn.execute(
                "SELECT state FROM projection_state WHERE projection = 'event_counts'"
                " AND tenant_id = %s",
                [tenant],
            ).fetchone()
            counted = row[0]["events"] if row else 0


@pytest.mark.parametrize("command", ["relay", "ingest"])
def test_kafka_roles_without_a_broker_say_so(command: str) -> None:
    environment = _environment()
    environment.pop("LEDGER_KAFKA_BOOTSTRAP", None)
    result = subprocess.run(
        [sys.executable, "-m", "ledger.cli", command],
        env=environment,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.decode().startswith(f"ledger: {command}: set LEDGER_KAFKA_BOOTSTRAP")


async def test_a_child_that_keeps_failing_is_restarted_ever_more_slowly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from ledger import cli

    monkeypatch.setattr(cli, "child_poll_s", 0.01)
    monkeypatch.setattr(cli, "child_restart_delay_initial_s", 0.1)
    monkeypatch.setattr(cli, "child_restart_delay_max_s", 0.4)
    spawned: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        spawned.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
        return spawned[-1]

    supervised = cli._Supervised("failing child", spawn)
    stop = asyncio.Event()
    running = asyncio.create_task(supervised.run(stop))
    await asyncio.sleep(3.0)
    stop.set()
    await running
    supervised.stop()
    delays = [
        float(record.getMessage().rsplit(" in ", 1)[1].removesuffix(" s"))
        for record in caplog.records
        if "exited with code 3" in record.getMessage()
    ]
    # 0.1, 0.2, 0.4, then 0.4 s a try: at most ~10 starts in 3 s (each child also takes its own
    # interpreter's start-up), never a spin.
    assert supervised.restarts == len(spawned) - 1 >= 3
    assert len(spawned) <= 12
    assert delays[:3] == [0.1, 0.2, 0.4] and set(delays[3:]) <= {0.4}
    # Each child it started again had exited on its own; the newest may still have been starting
    # when the supervisor was stopped, and stop() then ended it (SIGTERM).
    assert all(child.poll() == 3 for child in spawned[:-1])
    assert spawned[-1].wait(timeout=30) in (3, -signal.SIGTERM)
