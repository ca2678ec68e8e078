"""Replay's fold, one partition of the tenants at a time: every chosen projector applied in memory to
the partition's events from position 1 to a given position, the rows COPYed to the fresh tables.

Projectors are sequential within a tenant and never look across tenants, so tenants split the work
with nothing shared: replay runs one partition per core, each in a child process
(`python -m projections.replay_fold`, a job on stdin, JSON lines on stdout), and PostgreSQL hands
each child only its tenants' rows, so reading and decoding the events (a third of the work) is split
too. With one partition it runs in the caller's process.

Memory, per partition: the keyed rows of its tenants (one dict per invoice, contract, payment,
account and day, ...), held until they are copied at the end, and one page of events and of
appended rows (`FoldJob.page_events`), which are COPYed as each page is folded.

The protocol on stdout: `{"position": N}` after each page (the last position folded),
then `{"result": {...}}` (`FoldResult`), or `{"error": "..."}` and exit status 1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from sqlalchemy import Table

from ledger.store.postgres import configure_connection, event_page, scoped_position_read
from projections.core import ProjectedEvent, State, fold, is_table_projector
from projections.tables import Key, MemoryTables, Row, insert_json_rows, metadata

# Keyed rows written per statement at the end of the fold (~1 MB of JSON).
keyed_batch_rows = 5000


@dataclass(frozen=True)
class FoldJob:
    conninfo: str
    projections: list[str]
    partition: int
    partitions: int
    until: int  # the last position to fold
    page_events: int
    suffix: str  # of the fresh tables' names
    # The partition's tenants (`tenant_shares`); None: every tenant (one partition).
    tenants: list[str] | None = None


async def tenant_shares(
    conn: AsyncConnection[TupleRow], until: int, partitions: int
) -> list[list[str]]:
    """The tenants split into `partitions` shares of about as many events each, up to position
    `until`: largest tenant first, each to the share with the fewest events so far. A tenant's
    events are folded in order by one process, so no share can be smaller than the largest tenant;
    beyond that the fold takes as long as the largest share (a hash of the tenant ids gave 56% of
    the bench's 100 equal tenants to one of two processes)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        cursor = await conn.execute(
            "SELECT tenant_id, count(*) FROM events WHERE position <= %s GROUP BY tenant_id",
            [until],
        )
        counts = await cursor.fetchall()
    return balanced_shares([(str(tenant), int(count)) for tenant, count in counts], partitions)


def balanced_shares(counts: list[tuple[str, int]], partitions: int) -> list[list[str]]:
    """(tenant, events) split into `partitions` shares: largest first, each to the lightest."""
    shares: list[list[str]] = [[] for _ in range(partitions)]
    loads = [0] * partitions
    for tenant, count in sorted(counts, key=lambda pair: (-pair[1], pair[0])):
        lightest = loads.index(min(loads))
        shares[lightest].append(tenant)
        loads[lightest] += count
    return shares


@dataclass
class FoldResult:
    events: int = 0
    # [projection, tenant, last position applied] of the table projectors
    positions: list[tuple[str, str, int]] = field(default_factory=list)
    # [projection, tenant, last position applied, state] of the state documents
    states: list[tuple[str, str, int, State]] = field(default_factory=list)


async def fold_partition(
    job: FoldJob, projectors: Sequence[Any], progress: Callable[[int], None] | None = None
) -> FoldResult:
    """Fold the partition's events into the fresh tables; return where each projection got to."""
    table_projectors = [p for p in projectors if is_table_projector(p)]
    states: dict[tuple[str, str], tuple[int, State]] = {}
    memory = MemoryTables()
    result = FoldResult()
    # The fold allocates millions of small dicts, most of them kept until the end and none in a
    # cycle: the cycle collector would walk them over and over (a fifth of the fold's time, even
    # with the kept ones frozen) and free nothing.
    collecting = gc.isenabled()
    gc.disable()
    reader = await AsyncConnection.connect(job.conninfo, autocommit=True)
    # The writer works as the session user, the tables' owner, on tables without row-level
    # security yet: they get it once they are filled.
    writer = await AsyncConnection.connect(job.conninfo, autocommit=True)
    # Each page's rows commit without waiting for their WAL to reach the disk: nothing reads the
    # fresh tables before the swap, whose commit waits, and WAL is flushed in order, so the
    # swap's commit makes every page before it durable as well. A crash before it loses only a
    # replay that would be run again.
    await writer.execute("SET synchronous_commit = off")
    written: asyncio.Future[None] | None = None
    try:
        await configure_connection(reader)
        position = 1
        next_page = asyncio.ensure_future(_read(reader, job, position))
        try:
            while True:
                events = await next_page
                if not events:
                    break
                position = events[-1].position + 1
                # The next page is read, and this one's rows written, while the page after is
                # folded: PostgreSQL's work overlaps ours, with at most two pages held.
                next_page = asyncio.ensure_future(_read(reader, job, position))
                fold(projectors, states, events)
                _applied, changes = memory.apply_changes(table_projectors, events)
                if written is not None:
                    await written
                written = asyncio.ensure_future(_write(writer, changes.inserts, job.suffix))
                result.events += len(events)
                if progress:
                    progress(position - 1)
            if written is not None:
                await written
            if progress:
                progress(job.until)  # done, even if the partition had no events
        finally:
            next_page.cancel()
            if written is not None:
                written.cancel()
        for projector in table_projectors:
            for table in projector.tables:
                await _write_keyed(writer, table, memory.keyed.pop(table.name, {}), job.suffix)
    finally:
        await reader.close()
        await writer.close()
        if collecting:
            gc.enable()
    result.positions = [(name, tenant, at) for (name, tenant), at in memory.positions.items()]
    result.states = [(name, tenant, at, state) for (name, tenant), (at, state) in states.items()]
    return result


async def _read(
    conn: AsyncConnection[TupleRow], job: FoldJob, position: int
) -> list[ProjectedEvent]:
    """The partition's next page, as `PostgresEventStore.read` would give it (the store reads
    every tenant or one; replay wants a share of them)."""
    where = "WHERE position >= %s AND position <= %s"
    params: list[Any] = [position, job.until]
    if job.tenants is not None:
        where += " AND tenant_id = ANY(%s)"
        params.append(job.tenants)
    where += " ORDER BY position LIMIT %s"
    params.append(job.page_events)
    async with conn.transaction():
        await conn.execute(scoped_position_read, ["*"])
        cursor = await conn.execute(event_page(where).encode(), params)
        rows = await cursor.fetchall()
    return [ProjectedEvent.from_row(row) for row in rows]


async def _write(
    conn: AsyncConnection[TupleRow], inserts: dict[str, list[Row]], suffix: str
) -> None:
    for table_name, rows in inserts.items():
        await insert_json_rows(conn, metadata.tables[table_name], rows, table_name + suffix)


async def _write_keyed(
    conn: AsyncConnection[TupleRow], table: Table, rows: dict[tuple[str, Key], Row], suffix: str
) -> None:
    batch: list[Row] = []
    for (tenant, _key), row in rows.items():
        batch.append({"tenant_id": tenant, **row})
        if len(batch) == keyed_batch_rows:
            await insert_json_rows(conn, table, batch, table.name + suffix)
            batch.clear()
    if batch:
        await insert_json_rows(conn, table, batch, table.name + suffix)


# --- as a child process -----------------------------------------------------------------------


def _say(message: dict[str, Any]) -> None:
    sys.stdout.buffer.write(orjson.dumps(message) + b"\n")
    sys.stdout.buffer.flush()


def main() -> int:
    from projections.registry import select

    job = FoldJob(**orjson.loads(sys.stdin.buffer.readline()))
    try:
        result = asyncio.run(
            fold_partition(
                job, select(job.projections), lambda position: _say({"position": position})
            )
        )
    except Exception as error:  # the parent reports it and stops the other partitions
        _say({"error": f"partition {job.partition}: {type(error).__name__}: {error}"})
        return 1
    _say({"result": dataclasses.asdict(result)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
