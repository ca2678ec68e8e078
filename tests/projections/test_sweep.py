"""The worker's store sweep (`projections.sweep`) against the real database: it measures how far the
read models are behind the store, applies from the store only what Kafka had a whole interval to
deliver, exactly once whoever comes first, never tries a poison event again, and stops nothing when
it fails. Then a real `ledger worker` process with no relay at all (nothing on Kafka) brings the read
models to the store by its sweep, and the same events delivered by Kafka afterwards count once."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from psycopg import AsyncConnection

from ledger import metrics
from ledger.config import Settings
from ledger.relay import KafkaPublisher, Relay
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent, State, read_states, run_in_memory
from projections.event_counts import EventCounts
from projections.registry import all_projectors
from projections.replay import catch_up
from projections.sweep import StoreSweep
from projections.worker import _Projecting, sweep_forever
from tests.ledger.events import customer, invoice, new_tenant
from tests.projections.test_runners import _stop, _wait_for, spawn_ledger

# Every test on a database of its own (`store` in tests/conftest.py): they read every tenant
# of the store or change the database.
own_database = True

States = dict[tuple[str, str], tuple[int, State]]


async def _append(store: PostgresEventStore, tenant: str, invoices: int, tag: str = "") -> None:
    events = [customer(tenant, f"C{tag}")] + [
        invoice(tenant, f"INV{tag}-{i}", customer_id=f"C{tag}") for i in range(invoices)
    ]
    report = await LedgerService(store).append(events)
    assert not report.rejected, report.rejected


async def _expected(store: PostgresEventStore) -> States:
    events = await store.read(None, 1, 100_000)
    return run_in_memory(all_projectors(), [ProjectedEvent.from_recorded(e) for e in events])


async def _caught_up(store: PostgresEventStore, conn: AsyncConnection[Any]) -> bool:
    """Every projection of every tenant at the tenant's last event, the counts as in memory."""
    events = await store.read(None, 1, 100_000)
    last = {event.tenant_id: event.position for event in events}
    names = [projector.name for projector in all_projectors()]
    positions = {key: position for key, (position, _) in (await read_states(conn)).items()}
    wanted = {(name, tenant): position for name in names for tenant, position in last.items()}
    return positions == wanted and await read_states(conn, "event_counts") == await _expected(store)


def _counts(states: States) -> dict[str, int]:
    return {tenant: state["events"] for (_, tenant), (_, state) in states.items()}


async def test_the_sweep_applies_what_kafka_left_undelivered_for_an_interval_once(
    store: PostgresEventStore, conn: AsyncConnection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    delivered, stalled, late = new_tenant(), new_tenant(), new_tenant()
    await _append(store, delivered, invoices=3)
    await catch_up(store, conn, all_projectors(), tenant=delivered)  # as Kafka would have
    await _append(store, stalled, invoices=4)
    projecting = _Projecting(store.conninfo, all_projectors(), None)
    sweep = StoreSweep(store, [p.name for p in all_projectors()], projecting.apply)
    from_store = metrics.events_from_store._value.get()
    try:
        # The first sweep measures only: nothing has had a whole interval yet.
        assert await sweep.run_once() == 0
        assert metrics.projection_lagging_tenants._value.get() == 1
        assert metrics.projection_lag_seconds._value.get() >= 0
        assert _counts(await read_states(conn, "event_counts")) == {delivered: 4}

        # Appended after that sweep: its tenant is not due yet; the stalled one's events are,
        # those since the last sweep with them.
        await _append(store, late, invoices=1)
        await _append(store, stalled, invoices=2, tag="b")
        with caplog.at_level(logging.WARNING, logger="projections.sweep"):
            assert await sweep.run_once() == 8
        assert _counts(await read_states(conn, "event_counts")) == {delivered: 4, stalled: 8}
        assert metrics.events_from_store._value.get() == from_store + 8
        assert metrics.projection_lagging_tenants._value.get() == 2  # measured before applying
        (warning,) = [r for r in caplog.records if r.name == "projections.sweep"]
        assert stalled in warning.getMessage() and "applied 8 events" in warning.getMessage()

        assert await sweep.run_once() == 2  # the late tenant, one interval on
        assert await _caught_up(store, conn)
        assert await sweep.run_once() == 0
        assert metrics.projection_lagging_tenants._value.get() == 0
        assert metrics.projection_lag_seconds._value.get() == 0

        # Kafka delivers the same events afterwards: the writer skips every one.
        everything = [ProjectedEvent.from_recorded(e) for e in await store.read(None, 1, 1000)]
        before = await read_states(conn)
        await projecting.apply(everything)
        assert await read_states(conn) == before
        assert await _caught_up(store, conn)
    finally:
        await projecting.close()


async def test_the_sweep_applies_at_most_its_budget_and_the_rest_next_time(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenants = [new_tenant() for _ in range(3)]
    for tenant in tenants:
        await _append(store, tenant, invoices=4)  # 5 events each
    projecting = _Projecting(store.conninfo, all_projectors(), None)
    sweep = StoreSweep(store, [p.name for p in all_projectors()], projecting.apply, events_max=7)
    try:
        assert await sweep.run_once() == 0
        assert await sweep.run_once() == 7
        assert sum(_counts(await read_states(conn, "event_counts")).values()) == 7
        assert await sweep.run_once() == 7
        assert await sweep.run_once() == 1
        assert await _caught_up(store, conn)
    finally:
        await projecting.close()


class _Fragile(EventCounts):
    """Event counts that cannot apply one event: poison, as a projector bug would make it."""

    name = "fragile_counts"

    def __init__(self, poison_id: str) -> None:
        self.poison_id = poison_id

    def apply(self, state: State, event: ProjectedEvent) -> State:
        if event.event_id == self.poison_id:
            raise ValueError("this projector cannot apply it")
        return super().apply(state, event)


async def test_an_event_skipped_as_poison_is_not_tried_at_every_sweep(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant = new_tenant()
    await _append(store, tenant, invoices=2)
    poison = (await store.read(tenant, 1, 10))[-1]  # the tenant's last event
    projectors = [_Fragile(poison.event_id)]
    projecting = _Projecting(store.conninfo, projectors, None)
    sweep = StoreSweep(store, [p.name for p in projectors], projecting.apply)
    skipped = metrics.events_skipped._value.get()
    try:
        await sweep.run_once()
        assert await sweep.run_once() == 3  # tried: two applied, the poison skipped
        assert metrics.events_skipped._value.get() == skipped + 1
        assert _counts(await read_states(conn, "fragile_counts")) == {tenant: 2}
        assert metrics.projection_lagging_tenants._value.get() == 1
        assert await sweep.run_once() == 0  # the poison is not tried again ...
        assert metrics.events_skipped._value.get() == skipped + 1
        await _append(store, tenant, invoices=1, tag="b")
        await sweep.run_once()
        assert await sweep.run_once() == 2  # ... but what comes after it is applied
        assert _counts(await read_states(conn, "fragile_counts")) == {tenant: 4}
    finally:
        await projecting.close()


async def test_a_failing_sweep_is_logged_and_tried_again(
    store: PostgresEventStore,
    conn: AsyncConnection[Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    tenant = new_tenant()
    await _append(store, tenant, invoices=1)
    failures = 2
    run_once = StoreSweep.run_once

    async def failing_at_first(self: StoreSweep) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("the database went away")
        return await run_once(self)

    monkeypatch.setattr(StoreSweep, "run_once", failing_at_first)
    sweeping = asyncio.create_task(sweep_forever(store.conninfo, all_projectors(), None, 0.05))
    try:
        deadline = time.monotonic() + 20
        while _counts(await read_states(conn, "event_counts")) != {tenant: 2}:
            assert not sweeping.done(), sweeping
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        sweeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeping
    failed = [r for r in caplog.records if "store sweep failed" in r.getMessage()]
    assert len(failed) == 2 and "the database went away" in failed[0].getMessage()


async def test_a_worker_with_nothing_on_kafka_catches_up_from_the_store_and_kafka_counts_once(
    store: PostgresEventStore,
    conn: AsyncConnection[Any],
    kafka_bootstrap: str,
    kafka_environment: dict[str, str],
    redis_url: str,
    tmp_path: Path,
) -> None:
    tenants = [new_tenant(), new_tenant()]
    for tenant in tenants:
        await _append(store, tenant, invoices=5)
    suffix = uuid.uuid4().hex[:8]
    topic, group = f"ledger.events.{suffix}", f"sweep-{suffix}"
    log = tmp_path / "worker.log"
    # No relay: Kafka has none of these events; only the sweep (every second) can apply them.
    worker = spawn_ledger(
        "worker",
        store,
        kafka_environment,
        redis_url,
        topic,
        group,
        log,
        {"LEDGER_PROJECTION_SWEEP_S": "1"},
    )
    publisher = KafkaPublisher(kafka_bootstrap, idempotent=False)
    stop = asyncio.Event()
    relaying: asyncio.Task[None] | None = None
    try:
        await _wait_for(conn, await _expected(store), worker, log)
        assert await _caught_up(store, conn)
        assert "applied 6 events from the store" in log.read_text()
        _stop(worker)

        # The relay publishes them after all, and more; a worker that does not sweep (its first
        # sweep would be an hour away) gets them from Kafka: the old ones are skipped, the new
        # ones applied, each counted once.
        relaying = asyncio.create_task(Relay(store, publisher, topic=topic, partitions=3).run(stop))
        worker = spawn_ledger(
            "worker", store, kafka_environment, redis_url, topic, group + "-kafka", log
        )
        for tenant in tenants:
            await _append(store, tenant, invoices=1, tag="b")
        await _wait_for(conn, await _expected(store), worker, log)
        assert await _caught_up(store, conn)
        assert set(_counts(await read_states(conn, "event_counts")).values()) == {8}
    finally:
        _stop(worker)
        stop.set()
        if relaying is not None:
            await relaying
        await publisher.close()


def test_the_sweep_interval_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGER_PROJECTION_SWEEP_S", raising=False)
    assert Settings.from_env().projection_sweep_s == 30
    monkeypatch.setenv("LEDGER_PROJECTION_SWEEP_S", "5")
    assert Settings.from_env().projection_sweep_s == 5


async def test_the_worker_is_told_when_a_sweep_applied_what_kafka_did_not_deliver(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant = new_tenant()
    await _append(store, tenant, invoices=2)
    told: list[float] = []
    sweeping = asyncio.create_task(
        sweep_forever(
            store.conninfo, all_projectors(), None, 0.05, lambda: told.append(time.monotonic())
        )
    )
    try:
        deadline = time.monotonic() + 20
        while not told:
            assert time.monotonic() < deadline and not sweeping.done()
            await asyncio.sleep(0.05)
        assert _counts(await read_states(conn, "event_counts")) == {tenant: 3}
        await asyncio.sleep(0.5)  # ten sweeps more, with nothing to apply: nothing said
        assert len(told) == 1
    finally:
        sweeping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeping
