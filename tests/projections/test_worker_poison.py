"""The worker's batch handling against the real database: a message on the events topic that no
projector can apply (forged, or malformed data) is skipped, the rest of its batch is applied exactly
once, nothing of the bad message is half applied, and the worker keeps going."""

from __future__ import annotations

from collections.abc import Callable

from psycopg import AsyncConnection

from ledger import metrics
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.ar_aging import ar_invoices
from projections.core import ProjectedEvent
from projections.registry import all_projectors
from projections.tables import read_rows
from projections.worker import _Projecting
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.scenario import with_tenant


async def test_a_message_no_projector_can_apply_is_skipped_and_the_rest_applied(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    store = await PostgresEventStore.open(url)
    try:
        tenant = new_tenant()
        report = await LedgerService(store).append(
            with_tenant(
                tenant,
                [b.customer("C1"), b.invoice("INV-1", "C1"), b.invoice("INV-2", "C1")],
            )
        )
        assert not report.rejected
        real = [ProjectedEvent.from_recorded(e) for e in await store.read(tenant, 1, 10)]
        # Forged: it claims a real event's position and carries data that misses the invoice's
        # required fields; it comes first, so the real event at that position must still apply.
        forged = ProjectedEvent(
            position=real[1].position,
            tenant_id=tenant,
            event_id="forged",
            type="ledger.invoice.issued.v1",
            stream_id="invoice/X",
            time="2026-01-15T10:00:00Z",
            data={"invoice_id": "X"},
            ledger={},
        )
        batch = [real[0], forged, *real[1:]]
        projecting = _Projecting(url, all_projectors(), None)
        skipped_before = metrics.events_skipped._value.get()
        await projecting.apply(batch)
        assert metrics.events_skipped._value.get() == skipped_before + 1
        conn = await AsyncConnection.connect(url, autocommit=True)
        await configure_connection(conn)
        try:
            invoices = [row["invoice_id"] for row in await read_rows(conn, ar_invoices)]
            assert invoices == ["INV-1", "INV-2"]
            await projecting.apply(real)  # redelivered: skipped by position, nothing doubles
            assert [row["invoice_id"] for row in await read_rows(conn, ar_invoices)] == invoices
        finally:
            await conn.close()
    finally:
        await store.close()
