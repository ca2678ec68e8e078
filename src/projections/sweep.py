"""The worker's safety net under Kafka: what the store holds and the read models do not, taken from
the store.

The live worker trusts the broker to deliver every event the relay published. When it does not (a
partition the consumer stopped receiving while the others go on: the embedded tansu answers fetches
it cannot serve within their wait with nothing, see `projections.worker.widen_fetch_wait`, and
faust-streaming has open reports of consumers that stop, its issues #175 and #640; a relay that is
down), the read models fall behind with no error anywhere.
Every `LEDGER_PROJECTION_SWEEP_S` seconds (30) the worker therefore compares, per tenant, the lowest
position its projectors have applied with the store, and:

- sets the gauges `ledger_projection_lag_seconds` (how long the oldest committed event that the read
  models lack has been committed; 0 when none) and `ledger_projection_lagging_tenants`;
- applies from the store, through the worker's own batch path (the same writer, the same poison
  handling, the same notices to Redis and the KPI publisher), every event of a tenant whose first
  missing event was already committed at the previous sweep, so a whole interval ago: Kafka had its
  chance. It logs a warning naming the tenant and the positions, and counts the events in
  `ledger_projection_events_from_store`. The writer's per-tenant locks and positions make this
  exactly once whoever applies first: the messages Kafka delivers later are skipped.

A sweep reads per tenant two index probes (the store's tenants by a skip scan of
`events_tenant_position`, then each one's last position and first missing event), not the events;
it applies at most `sweep_events_max` events, the rest at the next sweep. Events the worker skipped
as poison are not tried again by the sweep (their tenant is remembered up to the last position
tried) until a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ledger import metrics
from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent

logger = logging.getLogger(__name__)

sweep_events_max = 10_000
sweep_page_events = 1000

# Per tenant of the store (a skip scan: one probe of the tenant index per tenant): its last
# position up to the head read now, the lowest position all the projectors have applied (0 where one
# has none), and its first event above that, with when it was committed.
_lagging = """
WITH RECURSIVE tenants(tenant_id) AS (
    (SELECT tenant_id FROM events ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.tenant_id FROM events e WHERE e.tenant_id > t.tenant_id
            ORDER BY e.tenant_id LIMIT 1)
    FROM tenants t WHERE t.tenant_id IS NOT NULL
), applied AS (
    SELECT t.tenant_id,
           (SELECT max(e.position) FROM events e
            WHERE e.tenant_id = t.tenant_id AND e.position <= %(head)s) AS last,
           (SELECT CASE WHEN count(*) = %(projections)s THEN min(s.position) ELSE 0 END
            FROM projection_state s
            WHERE s.tenant_id = t.tenant_id AND s.projection = ANY(%(names)s)) AS applied
    FROM tenants t WHERE t.tenant_id IS NOT NULL
)
SELECT a.tenant_id, a.last, a.applied, first.position, first.recorded_at
FROM applied a
CROSS JOIN LATERAL (
    SELECT e.position, e.recorded_at FROM events e
    WHERE e.tenant_id = a.tenant_id AND e.position > a.applied
    ORDER BY e.position LIMIT 1
) first
WHERE a.last > a.applied
ORDER BY first.recorded_at, a.tenant_id
"""


@dataclass(frozen=True)
class Lagging:
    """A tenant whose read models lack committed events."""

    tenant_id: str
    last: int  # its last event in the store (up to the head of the sweep)
    applied: int  # the lowest position its projectors have applied
    first_missing: int  # the position of its first event above that
    first_missing_at: datetime  # when that event was committed


Apply = Callable[[list[ProjectedEvent]], Awaitable[Any]]


class StoreSweep:
    """One sweep at a time (`run_once`), reading through the store's pool; `apply` is the worker's
    batch path (`_Projecting.apply`), on a connection of its own."""

    def __init__(
        self,
        store: PostgresEventStore,
        projection_names: Sequence[str],
        apply: Apply,
        *,
        events_max: int = sweep_events_max,
    ) -> None:
        self.store = store
        self.names = list(projection_names)
        self.apply = apply
        self.events_max = events_max
        self.previous_head: int | None = None
        # tenant -> the last position the sweep applied (tried) for it: what is still missing at or
        # below it was skipped as poison and is not tried again.
        self.tried: dict[str, int] = {}

    async def lagging(self, head: int) -> list[Lagging]:
        """The tenants whose read models lack events at or below `head`, oldest lack first."""
        async with self.store.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
            cursor = await conn.execute(
                _lagging, {"head": head, "projections": len(self.names), "names": self.names}
            )
            rows = await cursor.fetchall()
        return [Lagging(row[0], int(row[1]), int(row[2]), int(row[3]), row[4]) for row in rows]

    async def run_once(self) -> int:
        """Measure the lag, apply from the store what Kafka had a whole interval to deliver;
        return the number of events applied from the store."""
        head = await self.store.head()
        lagging = await self.lagging(head)
        now = datetime.now(UTC)
        oldest = min((tenant.first_missing_at for tenant in lagging), default=now)
        metrics.projection_lag_seconds.set(max(0.0, (now - oldest).total_seconds()))
        metrics.projection_lagging_tenants.set(len(lagging))
        previous, self.previous_head = self.previous_head, head
        if previous is None:
            return 0  # the first sweep only measures: nothing has had an interval yet
        budget = self.events_max
        for tenant in lagging:
            start = max(tenant.first_missing, self.tried.get(tenant.tenant_id, 0) + 1)
            if start > previous or start > tenant.last or budget <= 0:
                continue
            applied = await self._apply_tenant(tenant, start, head, budget)
            budget -= applied
        return self.events_max - budget

    async def _apply_tenant(self, tenant: Lagging, start: int, head: int, budget: int) -> int:
        applied, position, last_tried = 0, start, 0
        while applied < budget and position <= head:
            page = await self.store.read(
                tenant.tenant_id, position, min(sweep_page_events, budget - applied)
            )
            page = [event for event in page if event.position <= head]
            if not page:
                break
            await self.apply([ProjectedEvent.from_recorded(event) for event in page])
            applied += len(page)
            last_tried = page[-1].position
            position = last_tried + 1
        if applied:
            self.tried[tenant.tenant_id] = last_tried
            metrics.events_from_store.inc(applied)
            logger.warning(
                "tenant %s: applied %d events from the store (positions %d-%d), the first "
                "committed %s and not applied from Kafka since; the read models were at position %d",
                tenant.tenant_id,
                applied,
                start,
                last_tried,
                tenant.first_missing_at.isoformat(),
                tenant.applied,
            )
        return applied
