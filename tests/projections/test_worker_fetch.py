"""The worker's Kafka consumer fetches and heartbeats as configured: faust hard-codes a 1,500 ms
fetch wait and defaults to a 60 s session, which on the embedded tansu broker are the delivery
latency and twice the time to join the group. The values reach the fetcher and the group
coordinator of a consumer started against the real broker."""

from __future__ import annotations

import uuid

import pytest

from ledger.config import Settings, group_timeouts
from projections.worker import make_app, widen_fetch_wait


@pytest.mark.parametrize(
    ("wait_ms", "session_ms", "expected_session_ms", "expected_heartbeat_ms"),
    [(10, 6000, 6000, 1000), (500, None, 60_000, 3000)],  # None: faust's defaults
)
async def test_the_worker_consumer_fetches_and_heartbeats_as_configured(
    kafka_bootstrap: str,
    database_url: str,
    wait_ms: int,
    session_ms: int | None,
    expected_session_ms: int,
    expected_heartbeat_ms: int,
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_fetch_max_wait_ms=wait_ms,
        kafka_session_timeout_ms=session_ms,
        worker_group=f"fetch-{uuid.uuid4().hex[:8]}",
    )
    app = make_app(settings, database_url, [])
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == wait_ms
        assert consumer._coordinator._session_timeout_ms == expected_session_ms
        assert consumer._coordinator._heartbeat_interval_ms == expected_heartbeat_ms
    finally:
        await consumer.stop()


def test_fetch_wait_and_session_timeout_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", raising=False)
    monkeypatch.delenv("LEDGER_KAFKA_SESSION_TIMEOUT_MS", raising=False)
    assert Settings.from_env().fetch_max_wait_ms == 500  # Kafka's own default
    assert Settings.from_env().kafka_session_timeout_ms is None
    monkeypatch.setenv("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", "25")
    monkeypatch.setenv("LEDGER_KAFKA_SESSION_TIMEOUT_MS", "9000")
    assert Settings.from_env().fetch_max_wait_ms == 25
    assert Settings.from_env().kafka_session_timeout_ms == 9000
    assert group_timeouts(9000) == {"session_timeout_ms": 9000, "heartbeat_interval_ms": 1500}
    assert group_timeouts(None) == {}


async def test_the_fetch_wait_widens_in_steps_to_kafkas_default(
    kafka_bootstrap: str, database_url: str
) -> None:
    """What the store sweep does when Kafka did not deliver (`widen_fetch_wait`): the embedded
    tansu answers a fetch it cannot serve within its wait with nothing."""
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_fetch_max_wait_ms=10,
        worker_group=f"widen-{uuid.uuid4().hex[:8]}",
    )
    app = make_app(settings, database_url, [])
    assert widen_fetch_wait(app) is None  # no consumer yet
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        steps = [widen_fetch_wait(app) for _ in range(5)]
        assert steps == [40, 160, 500, None, None]
        assert consumer._fetcher._fetch_max_wait_ms == 500
    finally:
        await consumer.stop()
