"""Live KPI states for dashboards: computed from the read models, numbered and fanned out by Redis.

After the worker commits a batch, `KpiPublisher` recomputes the KPIs of each tenant that moved (the
`kpi` report of `projections.reports`, as of the tenant's dashboard date) and publishes the state.
Publishing is one Lua script, so it is atomic in Redis whoever calls it (several workers, a gateway
loading a snapshot):

- the tenant's `seq` grows by one per published state: it is the only counter, so every gateway
  process sends the same seq for the same state;
- a state computed at an older read-model position than the stored one is dropped (a worker that
  lost its partition in a rebalance cannot publish the past); an identical state is not published
  again;
- the state is stored (`ledger:kpi-state:<tenant>`, the snapshot a new client gets) and published
  (`ledger:kpi:<tenant>`) together.

The dashboard date (`as_of`) is today (UTC), or the date of the newest event the read models
reflect when that is later (the demo stream runs in simulated time). A day that rolls over
republishes every tenant the publisher knows, so aging moves at midnight without an event.

A state reads again only what may have changed: the worker tells the publisher which tables each
batch changed, per tenant, with the read models' positions before and after it (`Touched`), and
the KPI report's parts that read none of those tables since the last state of the same date are
reused (`KpiParts`; at 100,000 open invoices recognition and MRR are ~60% of a state). Exact by
construction: a part is reused only when the state's snapshot is at the very positions the chain
of batches reached from the snapshot the part was read in, so any other writer (a report catching
its tenant up, another worker) breaks the chain and everything is read again; a rebuild that swaps
tables in without moving a position is covered by reading every part at least every
`kpi_parts_max_age_s`.

Publishing runs beside projecting, never in its way: tenants that move while a state is computed
are marked and computed once more afterwards (their changes coalesce), and a Redis or database
outage is retried with backoff while projecting goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger import metrics
from ledger.store.postgres import configure_connection
from projections.core import Touched
from projections.reports import KPI_PARTS, REPORT_PROJECTIONS, KpiCache, KpiSnapshot, Rows, report

logger = logging.getLogger(__name__)

kpi_state_key_prefix = "ledger:kpi-state:"
kpi_channel_prefix = "ledger:kpi:"
kpi_channel = "kpi:update"
retry_delay_initial_s = 0.2
retry_delay_max_s = 10.0
# Every KPI part is read again at least this often, whatever the batches say (see the docstring).
kpi_parts_max_age_s = 30.0
# The parts of at most this many tenants are kept (those used least recently go first): a few KB
# each, so a worker's memory stays bounded however many tenants its partitions hold.
kpi_parts_tenants_max = 10_000

# KEYS[1] the state hash, KEYS[2] the channel; ARGV[1] the read-model position, ARGV[2] the state as
# a JSON object without seq and updated_at, ARGV[3] updated_at. Returns {published 0/1, message}.
_publish_script = """
local position = tonumber(ARGV[1])
local last = redis.call('HMGET', KEYS[1], 'position', 'body', 'message')
if last[1] then
  local last_position = tonumber(last[1])
  if position < last_position or (position == last_position and ARGV[2] == last[2]) then
    return {0, last[3]}
  end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local message = '{"seq":' .. seq .. ',"updated_at":"' .. ARGV[3] .. '",' .. string.sub(ARGV[2], 2)
redis.call('HSET', KEYS[1], 'position', ARGV[1], 'body', ARGV[2], 'message', message)
redis.call('PUBLISH', KEYS[2], message)
return {1, message}
"""


def state_key(tenant: str) -> str:
    return f"{kpi_state_key_prefix}{tenant}"


def channel(tenant: str) -> str:
    return f"{kpi_channel_prefix}{tenant}"


def _utc_today() -> date:
    return datetime.now(UTC).date()


def _utc_now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class KpiStates:
    """The Redis side: publish a state (numbered atomically) and read the current one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._script = client.register_script(_publish_script)

    async def publish(self, body: dict[str, Any]) -> tuple[bool, bytes]:
        tenant = body["tenant"]
        published, message = await self._script(
            keys=[state_key(tenant), channel(tenant)],
            args=[body["position"], orjson.dumps(body), _utc_now_text()],
        )
        return bool(published), bytes(message)

    async def current(self, tenant: str) -> bytes | None:
        message = await self.client.hget(state_key(tenant), "message")
        return None if message is None else bytes(message)


def _report_positions(positions: Mapping[str, int]) -> dict[str, int]:
    return {name: positions.get(name, 0) for name in REPORT_PROJECTIONS}


class _TenantParts:
    """One tenant's kept KPI parts, and the chain of batches applied since they were read."""

    __slots__ = ("after", "dirty", "read_at", "snapshot")

    def __init__(self, after: dict[str, int], snapshot: KpiSnapshot | None = None) -> None:
        self.after = after  # the report projections' positions after the last batch of the chain
        self.dirty: set[str] = set()  # tables the chain changed since `snapshot`
        self.snapshot = snapshot
        self.read_at: dict[str, float] = {}  # part -> when its rows were read


class KpiParts:
    """The KPI parts of every tenant the worker's publisher computed, kept between states."""

    def __init__(
        self,
        max_age_s: float = kpi_parts_max_age_s,
        clock: Callable[[], float] = time.monotonic,
        tenants_max: int = kpi_parts_tenants_max,
    ) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self.tenants_max = tenants_max
        self._tenants: dict[str, _TenantParts] = {}  # least recently kept first

    def __len__(self) -> int:
        return len(self._tenants)

    def _keep(self, tenant: str, entry: _TenantParts) -> None:
        self._tenants.pop(tenant, None)
        self._tenants[tenant] = entry
        while len(self._tenants) > self.tenants_max:
            del self._tenants[next(iter(self._tenants))]

    def note(self, tenant: str, touched: Touched) -> None:
        """A batch committed for the tenant: continue its chain, or start one afresh (keeping
        nothing) when the batch did not start where the chain ended."""
        entry = self._tenants.get(tenant)
        before, after = _report_positions(touched.before), _report_positions(touched.after)
        if entry is None or entry.after != before:
            self._keep(tenant, _TenantParts(after))
            return
        entry.after = after
        entry.dirty |= touched.tables

    def forget(self, tenant: str) -> None:
        self._tenants.pop(tenant, None)

    def cache(self, tenant: str) -> KpiCache:
        return _TenantCache(self, tenant)

    def reusable(
        self, tenant: str, positions: dict[str, int], as_of: date, digits: int
    ) -> dict[str, Rows]:
        entry = self._tenants.get(tenant)
        snapshot = None if entry is None else entry.snapshot
        if entry is None or snapshot is None or entry.after != _report_positions(positions):
            return {}
        if snapshot.as_of != as_of or snapshot.digits != digits:
            return {}
        oldest = self.clock() - self.max_age_s
        return {
            name: rows
            for name, rows in snapshot.parts.items()
            if not (KPI_PARTS[name] & entry.dirty) and entry.read_at.get(name, oldest) > oldest
        }

    def computed(self, tenant: str, snapshot: KpiSnapshot) -> None:
        """Keep the parts of a state, and start the tenant's chain at its snapshot: a batch
        noted meanwhile (started before it) breaks the chain, so nothing stale is ever kept."""
        previous = self._tenants.get(tenant)
        kept = None if previous is None else previous.snapshot
        entry = _TenantParts(_report_positions(snapshot.positions), snapshot)
        now = self.clock()
        for name, rows in snapshot.parts.items():
            reused = kept is not None and kept.parts.get(name) is rows
            if reused and previous is not None:
                entry.read_at[name] = previous.read_at.get(name, now)
                metrics.kpi_parts_reused.labels(part=name).inc()
            else:
                entry.read_at[name] = now
        self._keep(tenant, entry)


class _TenantCache:
    """`KpiParts` seen as one tenant's `KpiCache`, for `report`."""

    def __init__(self, parts: KpiParts, tenant: str) -> None:
        self.parts = parts
        self.tenant = tenant

    def reusable(self, positions: dict[str, int], as_of: date, digits: int) -> dict[str, Rows]:
        return self.parts.reusable(self.tenant, positions, as_of, digits)

    def computed(self, snapshot: KpiSnapshot) -> None:
        self.parts.computed(self.tenant, snapshot)


async def kpi_body(
    conn: AsyncConnection[TupleRow],
    tenant: str,
    today: date,
    *,
    kpi_cache: KpiCache | None = None,
) -> dict[str, Any]:
    """The state a dashboard shows, without seq and updated_at (Redis adds those). Its date is
    today, or the date of the newest event the read models reflect when that is later (simulated
    time)."""
    data = await report(
        conn, "kpi", tenant, today, not_before_newest_event=True, kpi_cache=kpi_cache
    )
    return {
        "type": kpi_channel,
        "channel": kpi_channel,
        "tenant": tenant,
        "position": data["position"],
        "as_of": data["as_of"],
        "currency": data["currency"],
        "kpis": data["kpis"],
        "alerts": data["alerts"],
    }


async def publish_kpis(
    conn: AsyncConnection[TupleRow],
    states: KpiStates,
    tenant: str,
    today: date,
    *,
    kpi_cache: KpiCache | None = None,
) -> bytes:
    """Compute and publish a tenant's KPI state; the current message (new or unchanged)."""
    _, message = await states.publish(await kpi_body(conn, tenant, today, kpi_cache=kpi_cache))
    return message


class KpiPublisher:
    """A `Notifier` for the worker: marks the tenants that moved, publishes their KPIs beside."""

    def __init__(
        self, database_url: str, redis_url: str, today: Callable[[], date] = _utc_today
    ) -> None:
        import redis.asyncio

        self.database_url = database_url
        self.today = today
        self.states = KpiStates(redis.asyncio.Redis.from_url(redis_url))
        self._dirty: set[str] = set()
        self._known: set[str] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._conn: AsyncConnection[TupleRow] | None = None
        self._day: date | None = None
        self.published = 0
        self._busy = False
        self.parts = KpiParts()

    async def changed(
        self,
        applied: dict[str, int],
        projections: list[str],
        touched: Mapping[str, Sequence[Touched]] | None = None,
    ) -> None:
        for tenant in applied:
            notes = None if touched is None else touched.get(tenant)
            if notes is None:
                self.parts.forget(tenant)  # moved, and how is not known: keep nothing
                continue
            for note in notes:
                self.parts.note(tenant, note)
        self._dirty.update(applied)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="kpi-publisher")

    async def _connection(self) -> AsyncConnection[TupleRow]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await AsyncConnection.connect(self.database_url, autocommit=True)
            await configure_connection(self._conn)
        return self._conn

    async def _run(self) -> None:
        from redis.exceptions import RedisError

        delay = retry_delay_initial_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            today = self.today()
            if self._day is not None and today != self._day:
                self._dirty |= self._known
            self._day = today
            tenants, self._dirty = sorted(self._dirty), set()
            self._busy = True
            try:
                while tenants:
                    await self._publish_one(tenants[0], today)
                    tenants.pop(0)
                delay = retry_delay_initial_s
            except (psycopg.OperationalError, OSError, RedisError) as error:
                self._dirty.update(tenants)
                logger.warning("KPI states not published (%r); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, retry_delay_max_s)
                self._wake.set()
            finally:
                self._busy = False

    async def _publish_one(self, tenant: str, today: date) -> None:
        """Transient errors propagate (retried); any other is logged and the tenant skipped until
        it moves again, so one tenant that cannot be computed never holds up the others."""
        from redis.exceptions import RedisError

        try:
            await publish_kpis(
                await self._connection(),
                self.states,
                tenant,
                today,
                kpi_cache=self.parts.cache(tenant),
            )
        except (psycopg.OperationalError, OSError, RedisError):
            raise
        except Exception:
            logger.exception("the KPI state of tenant %s cannot be computed; skipped", tenant)
            return
        self._known.add(tenant)
        self.published += 1

    async def wait_idle(self) -> None:
        """Until every marked tenant is published (tests)."""
        while self._dirty or self._wake.is_set() or self._busy:
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._conn is not None:
            await self._conn.close()
        await self.states.client.aclose()
