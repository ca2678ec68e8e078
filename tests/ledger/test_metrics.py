"""Prometheus metrics move with the work: the API's /metrics counts appended events and rejections
by code, the relay counts what it published, the projection writer what it applied (not what it
skipped)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from psycopg import AsyncConnection

from ledger import relay as relay_module
from ledger.api import make_app
from ledger.relay import Relay
from ledger.service import LedgerService
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.core import ProjectedEvent, ProjectionWriter
from projections.registry import all_projectors
from tests.ledger.events import customer, invoice, new_tenant
from tests.ledger.test_relay import FakePublisher


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_api_metrics_count_appends_and_rejections() -> None:
    before_appended = value("ledger_events_appended_total")
    before_rejected = value("ledger_rejections_total", code="unknown_customer")
    tenant = new_tenant()
    async with TestClient(TestServer(make_app(LedgerService(MemoryEventStore())))) as client:
        await client.post("/v1/events", json=[customer(tenant), invoice(tenant)])
        await client.post("/v1/events", json=invoice(tenant, "INV-2", customer_id="NOBODY"))
        response = await client.get("/metrics")
        text = await response.text()
    assert response.status == 200
    assert value("ledger_events_appended_total") == before_appended + 2
    assert value("ledger_rejections_total", code="unknown_customer") == before_rejected + 1
    assert re.search(r"^ledger_events_appended_total \d", text, re.MULTILINE)


async def test_relay_and_projection_metrics(new_database: Callable[[], str]) -> None:
    store = await PostgresEventStore.open(new_database())
    conn: AsyncConnection[Any] = await AsyncConnection.connect(store.conninfo, autocommit=True)
    try:
        await configure_connection(conn)
        tenant = new_tenant()
        await LedgerService(store).append([customer(tenant), invoice(tenant)])
        before_relayed = value("ledger_events_relayed_total")
        relay = Relay(store, FakePublisher(), topic="events")
        await relay.repair_broker()
        await relay.catch_up()
        assert value("ledger_events_relayed_total") == before_relayed + 2
        assert value("ledger_relay_lag_events") == 0

        before_projected = value("ledger_events_projected_total", projection="event_counts")
        events = [ProjectedEvent.from_recorded(event) for event in await store.read(tenant, 1, 10)]
        writer = ProjectionWriter(conn, all_projectors())
        await writer.apply(events)
        await writer.apply(events)  # redelivered: skipped, not counted
        assert (
            value("ledger_events_projected_total", projection="event_counts")
            == before_projected + 2
        )
    finally:
        await conn.close()
        await store.close()


async def test_relay_lag_counts_the_committed_events_not_yet_published(
    new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger_relay_lag_events`: the head the relay has seen (read with its checkpoint, then
    from each NOTIFY) less its checkpoint, after each batch; it was only ever set to 0."""
    store = await PostgresEventStore.open(new_database())
    try:
        tenant = new_tenant()
        events = [customer(tenant)] + [invoice(tenant, f"INV-{n}") for n in range(4)]
        assert (await LedgerService(store).append(events)).ok
        monkeypatch.setattr(relay_module, "relay_batch_events_max", 2)
        relay = Relay(store, FakePublisher(), topic="events")
        await relay.repair_broker()
        assert await relay.load_checkpoint() == 0
        assert value("ledger_relay_lag_events") == 5
        lags = []
        while await relay.publish_once():
            lags.append(value("ledger_relay_lag_events"))
        assert lags == [3, 1, 0]
        assert value("ledger_relay_lag_events") == 0
    finally:
        await store.close()
