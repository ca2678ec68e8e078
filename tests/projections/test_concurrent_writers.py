"""Two writers applying the same new tenant's first events at once (a report catching its tenant
up while the worker applies, or two workers during a rebalance) both succeed, and the read models
hold each event once: the per-tenant advisory lock orders them where no state row exists yet to
lock. Before it, one of them failed with a unique violation (an HTTP report answered 500)."""

from __future__ import annotations

import asyncio
from datetime import date

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections.registry import all_projectors
from projections.replay import catch_up
from projections.reports import report
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.scenario import with_tenant

writers = 4


async def test_concurrent_writers_of_a_new_tenant_apply_each_event_once(
    store: PostgresEventStore,
) -> None:
    for _ in range(3):  # the race is a window of milliseconds: give it a few chances
        tenant = new_tenant()
        events = [b.customer("C1"), b.invoice("INV-1", amount="100.00"), b.payment("30.00")]
        appended = await LedgerService(store).append(with_tenant(tenant, events))
        assert not appended.rejected

        async def one_writer(tenant: str) -> int:
            async with store.connection() as conn:
                return await catch_up(store, conn, all_projectors(), tenant=tenant)

        positions = await asyncio.gather(*(one_writer(tenant) for _ in range(writers)))
        assert len(set(positions)) == 1
        async with store.connection() as conn:
            kpi = await report(conn, "kpi", tenant, date(2026, 1, 31))
            balance = await report(conn, "trial-balance", tenant, date(2026, 1, 31))
        assert (kpi["kpis"]["ar"], kpi["kpis"]["cash"]) == ("70.00", "30.00")
        assert balance["balanced"] and balance["total_debit"] == "100.00"
