"""Projectors and the one place their results are stored.

A projector is pure: `apply(state, event) -> state` for one tenant, with no I/O, no clock and no
randomness. Runners feed it: the live worker (from Kafka), replay and catch-up (from the store) and
the test runner (from a list). All three call `fold`, so they cannot disagree.

Exactly once, although delivery is at least once: `ProjectionWriter.apply` keeps each tenant's state
and the last position applied to it in the same row (`projection_state`), locks the rows of the
batch's tenants, skips every event at or below that position, and writes state and position in one
transaction. A redelivered or re-published event is therefore skipped; a crash before commit leaves
both untouched, and the event is applied when it comes again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger import metrics
from ledger.store import RecordedEvent

logger = logging.getLogger(__name__)

State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProjectedEvent:
    """What projectors see of an event, whether it came from the store or from Kafka: every column
    of the stored row (the audit chain hashes them all). `ledger` is `metadata["ledger"]`, the
    ledger's own decisions, which most projectors read."""

    position: int
    tenant_id: str
    event_id: str
    type: str
    stream_id: str
    time: str
    data: dict[str, Any]
    ledger: dict[str, Any]
    recorded_at: str = ""
    stream_version: int = 0
    content_hash: str = ""  # the store's idempotency fingerprint (`events.hash`)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_recorded(cls, event: RecordedEvent) -> ProjectedEvent:
        return cls(
            position=event.position,
            tenant_id=event.tenant_id,
            event_id=event.event_id,
            type=event.type,
            stream_id=event.stream_id,
            time=_rfc3339(event.time),
            data=event.data,
            ledger=dict(event.metadata.get("ledger", {})),
            recorded_at=_rfc3339(event.recorded_at),
            stream_version=event.stream_version,
            content_hash=event.hash,
            metadata=event.metadata,
        )

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ProjectedEvent:
        """From a row of `ledger.store.postgres.select_events`: what `from_recorded` makes of
        `recorded_from_row(row)`, without the `RecordedEvent` between (replay reads millions;
        `test_the_partitions_read_what_the_store_reads` holds the two equal)."""
        metadata = row[9]
        return cls(
            position=int(row[0]),
            tenant_id=row[1],
            event_id=row[4],
            type=row[5],
            stream_id=row[2],
            time=_rfc3339(row[6]),
            data=row[8],
            ledger=dict(metadata.get("ledger", {})),
            recorded_at=_rfc3339(row[7]),
            stream_version=int(row[3]),
            content_hash=row[10],
            metadata=metadata,
        )

    @classmethod
    def from_kafka(
        cls, value: bytes | None, headers: Iterable[tuple[str, bytes]]
    ) -> ProjectedEvent:
        """From the relay's CloudEvents binary mode message (see `ledger.relay.to_message`)."""
        attributes = {name: raw.decode() for name, raw in headers}
        ledger = orjson.loads(attributes["ce_ledger"]) if "ce_ledger" in attributes else {}
        # The stored metadata travels as `ce_metadata` without its `ledger` part (that is
        # `ce_ledger`); a message from an older relay has only `ce_source` and `ce_specversion`.
        if "ce_metadata" in attributes:
            metadata = orjson.loads(attributes["ce_metadata"])
        else:
            metadata = {
                "source": attributes.get("ce_source", ""),
                "specversion": attributes.get("ce_specversion", "1.0"),
            }
        if "ce_ledger" in attributes:
            metadata["ledger"] = ledger
        return cls(
            position=int(attributes["ce_position"]),
            tenant_id=attributes["ce_tenantid"],
            event_id=attributes["ce_id"],
            type=attributes["ce_type"],
            stream_id=attributes.get("ce_subject", ""),
            time=attributes.get("ce_time", ""),
            data=orjson.loads(value or b"{}"),
            ledger=ledger,
            recorded_at=attributes.get("ce_recordedat", ""),
            stream_version=int(attributes.get("ce_streamversion", "0")),
            content_hash=attributes.get("ce_hash", ""),
            metadata=metadata,
        )


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Projector(Protocol):
    name: str

    def initial(self) -> State: ...

    def apply(self, state: State, event: ProjectedEvent) -> State:
        """Pure: the tenant's state after the event. Must not mutate `state`."""
        ...


def is_table_projector(projector: object) -> bool:
    return hasattr(projector, "tables")


def fold(
    projectors: Sequence[Any],
    states: dict[tuple[str, str], tuple[int, State]],
    events: Iterable[ProjectedEvent],
) -> set[tuple[str, str]]:
    """Apply events in position order to (projection, tenant) -> (position, state); skip what is
    at or below a state's position. Returns the keys that changed."""
    changed: set[tuple[str, str]] = set()
    projectors = [projector for projector in projectors if not is_table_projector(projector)]
    for event in events:
        for projector in projectors:
            key = (projector.name, event.tenant_id)
            position, state = states.get(key, (0, projector.initial()))
            if event.position <= position:
                continue
            states[key] = (event.position, projector.apply(state, event))
            changed.add(key)
    return changed


def run_in_memory(
    projectors: Sequence[Any], events: Iterable[ProjectedEvent]
) -> dict[tuple[str, str], tuple[int, State]]:
    """The test runner for state documents: the read models a list of events produces, with no
    I/O (`projections.tables.MemoryTables` is the one for table projectors)."""
    states: dict[tuple[str, str], tuple[int, State]] = {}
    fold(projectors, states, events)
    return states


# The class half of the two-key advisory locks that order writers per tenant ("LP"); one-key
# advisory locks (migrations, replay) live in another lock space.
tenant_lock_class = 0x4C50
_state_upsert = (
    "INSERT INTO projection_state (projection, tenant_id, position, state)"
    " SELECT projection, tenant_id, position, state FROM jsonb_to_recordset(%s::jsonb)"
    "  AS r(projection text, tenant_id text, position bigint, state jsonb)"
    " ON CONFLICT (projection, tenant_id) DO UPDATE"
    " SET position = excluded.position, state = excluded.state, updated_at = now()"
)


@dataclass(frozen=True, slots=True)
class Touched:
    """What one committed batch did to a tenant's read models: each projection's position before
    and after it, and the tables it changed. A reader that keeps figures derived from some tables
    (the KPI publisher) knows from a chain of these that nothing else moved them."""

    before: dict[str, int]
    after: dict[str, int]
    tables: frozenset[str]


class ProjectionWriter:
    """Applies batches in one transaction each: state documents to `projection_state`, table
    projectors' changes to their tables, and every (projection, tenant)'s position with them.
    After `apply`, `touched` says per tenant what the batch changed (tenants it moved only)."""

    def __init__(self, conn: AsyncConnection[TupleRow], projectors: Sequence[Any]) -> None:
        self.conn = conn
        self.projectors = projectors
        self.touched: dict[str, Touched] = {}

    async def apply(self, events: Sequence[ProjectedEvent]) -> dict[str, int]:
        """Apply a batch; return tenant -> highest position applied, for tenants that changed."""
        from projections import tables

        self.touched = {}
        if not events:
            return {}
        names = [projector.name for projector in self.projectors]
        documents = [p for p in self.projectors if not is_table_projector(p)]
        table_projectors = [p for p in self.projectors if is_table_projector(p)]
        tenants = sorted({event.tenant_id for event in events})
        started = time.perf_counter()
        ordered = sorted(events, key=lambda event: event.position)
        # Two round trips whatever the batch: the locks, the states and every row the batch may
        # read are asked for together (pipeline mode), then every write and the commit are sent
        # together. One statement per round trip cost ~0.5 ms each, ~9 ms for a batch of one
        # event with all projectors; on a busy machine each round trip also waits to be
        # scheduled again.
        async with self.conn.pipeline(), self.conn.transaction():
            # Two writers may hold a tenant at once (workers during a rebalance, a report catching
            # its tenant up while the worker applies). The state rows' locks below order them once
            # the rows exist; for a tenant's first events there is nothing to lock yet and both
            # would insert the same rows. A transaction advisory lock per tenant, taken in one
            # order (by name) by every writer, orders them in every case without deadlock.
            # The row-security setting and the locks in one statement: apply is the hot path.
            await self.conn.execute(
                "SELECT set_config('ledger.tenants', %s, true),"
                " (SELECT count(pg_advisory_xact_lock(%s, hashtext(tenant)))"
                "  FROM (SELECT unnest(%s::text[]) AS tenant ORDER BY 1) AS ordered)",
                [",".join(tenants), tenant_lock_class, tenants],
            )
            cursor = await self.conn.execute(
                "SELECT projection, tenant_id, position, state FROM projection_state"
                " WHERE projection = ANY(%s) AND tenant_id = ANY(%s) FOR UPDATE",
                [names, tenants],
            )
            # The rows every event of the batch may read, asked for before the states tell which
            # events are new (an event applied before only makes its rows loaded for nothing).
            # They are read after the locks are held: statements run in the order they were sent.
            cache: dict[Any, Any] = {}
            table_changes = tables.Changes()
            pending = (
                await tables.send_loads(
                    self.conn, tables.needed_keys(table_projectors, ordered), cache
                )
                if table_projectors
                else []
            )
            states = {(row[0], row[1]): (int(row[2]), row[3]) for row in await cursor.fetchall()}
            positions_before = {key: value[0] for key, value in states.items()}
            await tables.receive_loads(pending, cache)
            # What fold will apply: the events above each (projection, tenant)'s stored position.
            applied_by_projection = {
                name: sum(
                    1
                    for event in ordered
                    if event.position > states.get((name, event.tenant_id), (0, {}))[0]
                )
                for name in names
            }
            changed = fold(documents, states, ordered)
            if table_projectors:
                positions = {key: value[0] for key, value in states.items()}
                before = dict(positions)
                unseen = [
                    event
                    for event in ordered
                    if any(
                        event.position > positions.get((p.name, event.tenant_id), 0)
                        for p in table_projectors
                    )
                ]
                tables.apply_batch(table_projectors, positions, unseen, cache, table_changes)
                await tables.write_changes(self.conn, table_changes)
                for key, position in positions.items():
                    if position != before.get(key):
                        states[key] = (position, {})
                        changed.add(key)
            if changed:
                # One statement for every (projection, tenant) that moved, the rows as one JSON
                # document: `executemany` sent a statement per row (~7 for a batch of one tenant
                # with all projectors), each flushed on its own in pipeline mode (~30 system calls
                # fewer per batch).
                rows = [
                    {
                        "projection": key[0],
                        "tenant_id": key[1],
                        "position": states[key][0],
                        "state": states[key][1],
                    }
                    for key in changed
                ]
                await self.conn.execute(_state_upsert, [orjson.dumps(rows).decode()])
        metrics.projection_apply_seconds.observe(time.perf_counter() - started)
        for name, count in applied_by_projection.items():
            metrics.events_projected.labels(projection=name).inc(count)
        applied: dict[str, int] = {}
        for _, tenant in changed:
            positions_of = [states[(name, tenant)][0] for name in names if (name, tenant) in states]
            applied[tenant] = max(positions_of)
        touched_tables: dict[str, set[str]] = {}
        for table_name, tenant, _key in (*table_changes.puts, *table_changes.adds):
            touched_tables.setdefault(tenant, set()).add(table_name)
        for table_name, rows in table_changes.inserts.items():
            for tenant in {row["tenant_id"] for row in rows}:
                touched_tables.setdefault(tenant, set()).add(table_name)
        self.touched = {
            tenant: Touched(
                before={n: positions_before.get((n, tenant), 0) for n in names},
                after={n: states[(n, tenant)][0] if (n, tenant) in states else 0 for n in names},
                tables=frozenset(touched_tables.get(tenant, ())),
            )
            for tenant in applied
        }
        return applied


async def read_states(
    conn: AsyncConnection[TupleRow], projection: str | None = None
) -> dict[tuple[str, str], tuple[int, State]]:
    """Every stored (projection, tenant) -> (position, state), for reports and comparisons."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        cursor = await conn.execute(
            "SELECT projection, tenant_id, position, state FROM projection_state"
            + (" WHERE projection = %s" if projection else ""),
            [projection] if projection else [],
        )
        rows = await cursor.fetchall()
    return {(row[0], row[1]): (int(row[2]), row[3]) for row in rows}
