"""Where replay's fold spends its time, part by part, in microseconds per event.

    python3 dev.py bench profile_replay [--database-url URL] [--events 30000] [--repeat 7]

Seeds a fresh database the way `bench/replay.py` does (the every-kind scenario, validated by the
service, then copied into more tenants), reads the events once, and then times, best of
`--repeat` runs over the same events, each part alone: reading and decoding a page of events as
the fold does, `ProjectedEvent.from_recorded`, each projector alone over fresh `MemoryTables`
(its `needs` and `apply`, as `MemoryTables.apply_changes` runs them), all projectors together,
and encoding the appended rows as the fold's writer does. No PostgreSQL work is timed except the
read. The cycle collector is off, as in the fold.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from psycopg import AsyncConnection

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.databases import fresh_database  # noqa: E402
from bench.replay import seed  # noqa: E402

from ledger.store.postgres import configure_connection, recorded_from_row, select_events  # noqa: E402
from projections.core import ProjectedEvent, fold, is_table_projector  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.tables import MemoryTables, _json_default  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def read_rows(url: str, count: int) -> list[Any]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await configure_connection(conn)
        async with conn.transaction():
            await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
            cursor = await conn.execute(
                select_events + "WHERE position <= %s ORDER BY position", [count]
            )
            return await cursor.fetchall()


def best_us(work: Callable[[], Any], events: int, repeat: int) -> float:
    """The fastest of `repeat` runs, in microseconds per event."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times) / events * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with fresh_database(args.database_url) as url:
        await seed(url, args.events)
        read_s = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            rows = await read_rows(url, args.events)
            read_s.append(time.perf_counter() - started)
    count = len(rows)
    gc.disable()
    results: list[tuple[str, float]] = [
        ("read and decode the rows (psycopg)", min(read_s) / count * 1e6)
    ]
    recorded = [recorded_from_row(row) for row in rows]
    results.append(
        (
            "recorded_from_row",
            best_us(lambda: [recorded_from_row(r) for r in rows], count, args.repeat),
        )
    )
    results.append(
        (
            "ProjectedEvent.from_recorded",
            best_us(
                lambda: [ProjectedEvent.from_recorded(r) for r in recorded], count, args.repeat
            ),
        )
    )
    events = [ProjectedEvent.from_recorded(r) for r in recorded]
    page = 5000
    pages = [events[start : start + page] for start in range(0, count, page)]

    def run(projectors: list[Any]) -> Callable[[], Any]:
        def work() -> None:
            tables = MemoryTables()
            states: dict[Any, Any] = {}
            documents = [p for p in projectors if not is_table_projector(p)]
            table_projectors = [p for p in projectors if is_table_projector(p)]
            for batch in pages:
                fold(documents, states, batch)
                tables.apply_changes(table_projectors, batch)

        return work

    projectors = all_projectors()
    for projector in projectors:
        results.append((projector.name, best_us(run([projector]), count, args.repeat)))
    results.append(("all projectors together", best_us(run(projectors), count, args.repeat)))

    table_projectors = [p for p in projectors if is_table_projector(p)]
    inserts = []
    tables = MemoryTables()
    for batch in pages:
        inserts.append(tables.apply_changes(table_projectors, batch)[1].inserts)

    def encode() -> None:
        for changes in inserts:
            for rows_of in changes.values():
                orjson.dumps(rows_of, default=_json_default)
        for keyed in tables.keyed.values():
            orjson.dumps(
                [{"tenant_id": t, **row} for (t, _k), row in keyed.items()], default=_json_default
            )

    results.append(("encode every row for the writer (JSON)", best_us(encode, count, args.repeat)))
    print(f"{count:,} events, best of {args.repeat} runs, us per event")
    print("| part | us/event |\n|---|---|")
    for name, us in results:
        print(f"| {name} | {us:.1f} |")


if __name__ == "__main__":
    asyncio.run(main())
