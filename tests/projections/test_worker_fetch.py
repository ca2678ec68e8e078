"""The worker's Kafka consumer waits at most the configured time per fetch (faust hard-codes
1,500 ms, which on the embedded tansu broker is the delivery latency): the value reaches the
fetcher of a consumer started against the real broker."""

from __future__ import annotations

import uuid

import pytest

from ledger.config import Settings
from projections.worker import make_app


@pytest.mark.parametrize("wait_ms", [10, 500])
async def test_the_worker_consumer_fetches_with_the_configured_wait(
    kafka_bootstrap: str, database_url: str, wait_ms: int
) -> None:
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_fetch_max_wait_ms=wait_ms,
        worker_group=f"fetch-{uuid.uuid4().hex[:8]}",
    )
    app = make_app(settings, database_url, [])
    thread = app.consumer._new_consumer_thread()
    consumer = thread._create_worker_consumer(app.transport)
    await consumer.start()
    try:
        assert consumer._fetcher._fetch_max_wait_ms == wait_ms
    finally:
        await consumer.stop()


def test_the_fetch_wait_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", raising=False)
    assert Settings.from_env().fetch_max_wait_ms == 500  # Kafka's own default
    monkeypatch.setenv("LEDGER_KAFKA_FETCH_MAX_WAIT_MS", "25")
    assert Settings.from_env().fetch_max_wait_ms == 25
