"""Feeding projectors straight from the event store: catch-up and replay.

`catch_up` applies what the read models have not seen yet (the writer skips the rest) and returns.
`replay` rebuilds from position 1 in memory and swaps the result in atomically: readers see the old
read model until the swap commits, then the new one. During the swap the table is locked against
writers (the live worker waits), and the events committed since the rebuild started are folded in
under that lock, so nothing the worker applied meanwhile is lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb

from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent, ProjectionWriter, State, fold, is_table_projector
from projections.tables import MemoryTables, insert_rows

# Events read from the store per page: large pages keep the per-call cost negligible.
replay_page_events = 5000

Progress = Callable[[int, int, float], None]  # (position, head, seconds elapsed)


async def catch_up(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    projectors: Sequence[Any],
    progress: Progress | None = None,
) -> int:
    """Bring the read models to the store's head; return the head reached."""
    writer = ProjectionWriter(conn, projectors)
    head = await store.head()
    position, started = 1, time.monotonic()
    while position <= head:
        events = await store.read(None, position, replay_page_events)
        if not events:
            break
        await writer.apply([ProjectedEvent.from_recorded(event) for event in events])
        position = events[-1].position + 1
        if progress:
            progress(position - 1, head, time.monotonic() - started)
    return head


async def _fold_from_store(
    store: PostgresEventStore,
    projectors: Sequence[Any],
    states: dict[tuple[str, str], tuple[int, State]],
    memory: MemoryTables,
    position: int,
    progress: Progress | None,
    head: int,
    started: float,
) -> int:
    while True:
        events = await store.read(None, position, replay_page_events)
        if not events:
            return position
        projected = [ProjectedEvent.from_recorded(event) for event in events]
        fold(projectors, states, projected)
        memory.apply([p for p in projectors if is_table_projector(p)], projected)
        position = events[-1].position + 1
        if progress:
            progress(position - 1, max(head, position - 1), time.monotonic() - started)


async def replay(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    projectors: Sequence[Any],
    progress: Progress | None = None,
) -> int:
    """Rebuild the projectors' read models from the store; swap them in; return events folded."""
    states: dict[tuple[str, str], tuple[int, State]] = {}
    table_projectors = [p for p in projectors if is_table_projector(p)]
    memory = MemoryTables()
    head, started = await store.head(), time.monotonic()
    position = await _fold_from_store(store, projectors, states, memory, 1, progress, head, started)
    names = [projector.name for projector in projectors]
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        await conn.execute("LOCK TABLE projection_state IN EXCLUSIVE MODE")
        # What was committed while we rebuilt, the live worker may already have applied: fold it.
        position = await _fold_from_store(
            store, projectors, states, memory, position, progress, head, started
        )
        await conn.execute("DELETE FROM projection_state WHERE projection = ANY(%s)", [names])
        for (name, tenant), table_position in memory.positions.items():
            states[(name, tenant)] = (table_position, {})
        await conn.cursor().executemany(
            "INSERT INTO projection_state (projection, tenant_id, position, state)"
            " VALUES (%s, %s, %s, %s)",
            [(key[0], key[1], value[0], Jsonb(value[1])) for key, value in states.items()],
        )
        for projector in table_projectors:
            for table in projector.tables:
                await conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(table.name)))
                rows = memory.rows(table)
                for start in range(0, len(rows), replay_page_events):
                    await insert_rows(conn, table, rows[start : start + replay_page_events])
    return position - 1
