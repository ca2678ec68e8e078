"""The worker's KPI states reuse the report's parts that no batch changed (`live.KpiParts`), and
are then exactly what a state read whole says: driven through the real `ProjectionWriter` and the
`kpi` report on PostgreSQL, batch by batch, with a spy that records which parts each state reused.
The property over random streams is in `test_report_properties.py`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
from psycopg import AsyncConnection

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.core import ProjectedEvent, ProjectionWriter
from projections.live import KpiParts, kpi_body
from projections.registry import all_projectors
from projections.reports import KpiSnapshot, Rows, catch_up_tenant
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.scenario import with_tenant

today = date(2026, 3, 31)


class Spy:
    """`KpiParts.cache(tenant)` that remembers which parts each state was offered."""

    def __init__(self, parts: KpiParts, tenant: str) -> None:
        self.inner = parts.cache(tenant)
        self.offered: list[set[str]] = []

    def reusable(self, positions: dict[str, int], as_of: date, digits: int) -> dict[str, Rows]:
        found = self.inner.reusable(positions, as_of, digits)
        self.offered.append(set(found))
        return found

    def computed(self, snapshot: KpiSnapshot) -> None:
        self.inner.computed(snapshot)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def conns(database_url: str) -> AsyncIterator[tuple[Any, Any]]:
    """Two connections: the writer's and the publisher's (as in the worker)."""
    writer = await AsyncConnection.connect(database_url, autocommit=True)
    publisher = await AsyncConnection.connect(database_url, autocommit=True)
    for conn in (writer, publisher):
        await configure_connection(conn)
    yield writer, publisher
    await writer.close()
    await publisher.close()


async def append(store: PostgresEventStore, tenant: str, events: list[dict[str, Any]]) -> list[Any]:
    """Append, and the events as the worker would receive them."""
    head = await store.head()
    report = await LedgerService(store).append(with_tenant(tenant, events))
    assert report.ok, report.as_json()
    return [
        ProjectedEvent.from_recorded(event) for event in await store.read(tenant, head + 1, 10_000)
    ]


async def apply(writer_conn: Any, parts: KpiParts, tenant: str, events: list[Any]) -> None:
    writer = ProjectionWriter(writer_conn, all_projectors())
    await writer.apply(events)
    parts.note(tenant, writer.touched[tenant])


async def states(publisher: Any, parts: KpiParts, tenant: str) -> tuple[set[str], dict[str, Any]]:
    """A state with the kept parts (and what it reused), checked against one read whole."""
    spy = Spy(parts, tenant)
    kept = await kpi_body(publisher, tenant, today, kpi_cache=spy)
    whole = await kpi_body(publisher, tenant, today)
    assert kept == whole
    return spy.offered[-1], kept


async def test_a_state_reads_again_only_the_parts_a_batch_changed(
    store: PostgresEventStore, conns: tuple[Any, Any]
) -> None:
    writer_conn, publisher = conns
    tenant = new_tenant()
    parts = KpiParts()
    opening = [
        b.customer("C1"),
        b.customer("C2"),
        b.contract("K1", "C1", "2026-01-01", "2027-01-01"),
        b.invoice(
            "INV-1", "C1", "1200.00", "2026-01-01", "2026-01-31", contract_id="K1", line_id="L1"
        ),
        b.invoice("INV-2", "C2", "300.00", "2026-02-01", "2026-03-03"),
    ]
    await apply(writer_conn, parts, tenant, await append(store, tenant, opening))
    reused, first = await states(publisher, parts, tenant)
    assert reused == set()  # nothing kept yet
    assert first["kpis"]["ar"] == "1500.00"

    # A payment moves the receivables and the ledger, not recognition nor MRR.
    paid = [b.payment("300.00", "PAY-1", "C2", "2026-03-05")]
    await apply(writer_conn, parts, tenant, await append(store, tenant, paid))
    reused, second = await states(publisher, parts, tenant)
    assert reused == {"recognition", "mrr"}
    assert second["kpis"]["ar"] == "1200.00"

    # Nothing moved: everything kept is reused.
    reused, _ = await states(publisher, parts, tenant)
    assert reused == {"recognition", "mrr", "receivables"}

    # A contract changes recognition, MRR and the live contracts: read again.
    signed = [b.contract("K2", "C2", "2026-03-01", "2027-03-01")]
    await apply(writer_conn, parts, tenant, await append(store, tenant, signed))
    reused, third = await states(publisher, parts, tenant)
    assert reused == set()
    assert third["kpis"]["active_contracts"] == 2
    assert third["kpis"]["mrr"] != second["kpis"]["mrr"]

    # Another date: nothing of the other date's parts.
    spy = Spy(parts, tenant)
    await kpi_body(publisher, tenant, date(2026, 4, 30), kpi_cache=spy)
    assert spy.offered == [set()]


async def test_another_writer_breaks_the_chain(
    store: PostgresEventStore, conns: tuple[Any, Any]
) -> None:
    """A report catching its tenant up (or a second worker) applies events the publisher hears
    nothing of: the next state reuses nothing, and the one after can again."""
    writer_conn, publisher = conns
    tenant = new_tenant()
    parts = KpiParts()
    opening = [b.customer("C1"), b.contract("K1", "C1", "2026-01-01", "2027-01-01")]
    await apply(writer_conn, parts, tenant, await append(store, tenant, opening))
    await states(publisher, parts, tenant)
    await append(store, tenant, [b.contract("K2", "C1", "2026-02-01", "2026-08-01")])
    await catch_up_tenant(store, writer_conn, tenant)  # unseen by `parts`
    reused, state = await states(publisher, parts, tenant)
    assert reused == set()
    assert state["kpis"]["active_contracts"] == 2
    # The worker's next batch starts where that writer ended, not where the chain did. A payment
    # with no invoice open is a credit (the ledger and `ar_credits`): every part is reused.
    events = await append(store, tenant, [b.payment("10.00", "PAY-1", "C1", "2026-03-01")])
    await apply(writer_conn, parts, tenant, events)
    reused, state = await states(publisher, parts, tenant)
    assert reused == {"recognition", "mrr", "receivables"}
    assert state["kpis"]["unapplied"] == "10.00"


async def test_every_part_is_read_again_after_its_age(
    store: PostgresEventStore, conns: tuple[Any, Any]
) -> None:
    writer_conn, publisher = conns
    tenant = new_tenant()
    clock = Clock()
    parts = KpiParts(max_age_s=30.0, clock=clock)
    events = await append(store, tenant, [b.customer("C1"), b.contract("K1", "C1")])
    await apply(writer_conn, parts, tenant, events)
    await states(publisher, parts, tenant)
    clock.now += 20
    reused, _ = await states(publisher, parts, tenant)
    assert reused == {"recognition", "mrr", "receivables"}
    clock.now += 11  # 31 s after the parts were read, though reused 11 s ago
    reused, _ = await states(publisher, parts, tenant)
    assert reused == set()
    reused, _ = await states(publisher, parts, tenant)
    assert reused == {"recognition", "mrr", "receivables"}


async def test_a_tenant_moved_without_notes_keeps_nothing(
    store: PostgresEventStore, conns: tuple[Any, Any], database_url: str, redis_url: str
) -> None:
    """The publisher's `changed` without `touched` (a notifier that cannot say) forgets: the
    state it then publishes reads every part again (the reuse counter does not move)."""
    from ledger import metrics
    from projections.live import KpiPublisher

    def reused() -> list[float]:
        return [
            float(metrics.kpi_parts_reused.labels(part=part)._value.get())
            for part in ("recognition", "receivables", "mrr")
        ]

    writer_conn, publisher = conns
    tenant = new_tenant()
    events = await append(store, tenant, [b.customer("C1"), b.contract("K1", "C1")])
    kpis = KpiPublisher(database_url, redis_url, today=lambda: today)
    try:
        await apply(writer_conn, kpis.parts, tenant, events)
        await states(publisher, kpis.parts, tenant)  # parts kept, all reusable
        before = reused()
        await kpis.changed({tenant: events[-1].position}, ["general_ledger"])
        await kpis.wait_idle()
        assert kpis.published == 1
        assert reused() == before
    finally:
        await kpis.close()


async def test_the_worker_path_publishes_states_from_kept_parts(
    store: PostgresEventStore, database_url: str, redis_url: str
) -> None:
    """Through the worker's own path (`_Projecting` -> its notifiers -> `KpiPublisher`, Redis):
    each batch's published state is the state read whole, and the parts a payment batch left
    alone were reused (the `ledger_kpi_parts_reused` counter moved)."""
    import orjson
    import redis.asyncio

    from ledger import metrics
    from projections.live import KpiPublisher, state_key
    from projections.notify import Notifiers
    from projections.worker import _Projecting

    def reused(part: str) -> float:
        return float(metrics.kpi_parts_reused.labels(part=part)._value.get())

    tenant = new_tenant()
    publisher = KpiPublisher(database_url, redis_url, today=lambda: today)
    projecting = _Projecting(database_url, all_projectors(), Notifiers([publisher]))
    direct = redis.asyncio.Redis.from_url(redis_url)
    batches = [
        [b.customer("C1"), b.contract("K1", "C1", "2026-01-01", "2027-01-01")],
        [b.invoice("INV-1", "C1", "1200.00", "2026-01-01", "2026-01-31", "USD", "K1", "L1")],
        [b.payment("200.00", "PAY-1", "C1", "2026-02-01")],
        [b.payment("100.00", "PAY-2", "C1", "2026-02-02")],
    ]
    conn = await AsyncConnection.connect(database_url, autocommit=True)
    await configure_connection(conn)
    try:
        recognition_before = reused("recognition")
        for number, batch in enumerate(batches):
            events = await append(store, tenant, batch)
            await projecting.apply(events)
            await publisher.wait_idle()
            state = orjson.loads(await direct.hget(state_key(tenant), "message"))
            whole = await kpi_body(conn, tenant, today)
            assert state["position"] == events[-1].position, number
            assert (state["kpis"], state["alerts"]) == (whole["kpis"], whole["alerts"]), number
        # The two payment batches: recognition and MRR kept from the state before each.
        assert reused("recognition") - recognition_before == 2
    finally:
        await conn.close()
        await publisher.close()
        await direct.aclose()


async def test_the_parts_of_the_tenants_used_least_recently_go_first(
    store: PostgresEventStore, conns: tuple[Any, Any]
) -> None:
    """At most `tenants_max` tenants' parts are kept: a worker's memory stays bounded."""
    writer_conn, publisher = conns
    parts = KpiParts(tenants_max=2)
    tenants = [new_tenant() for _ in range(3)]
    for tenant in tenants:
        events = await append(store, tenant, [b.customer("C1"), b.contract("K1", "C1")])
        await apply(writer_conn, parts, tenant, events)
        await states(publisher, parts, tenant)
    assert len(parts) == 2
    reused, _ = await states(publisher, parts, tenants[0])  # the first one went
    assert reused == set()
    reused, _ = await states(publisher, parts, tenants[2])
    assert reused == {"recognition", "receivables", "mrr"}
