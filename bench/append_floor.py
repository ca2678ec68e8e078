"""The floor under batched appends: the ledger's own writes, timed alone, beside eventsourcing's
whole batch and raw COPY in the same run.

    python3 dev.py bench append_floor [--database-url URL] [--events N] [--repetitions R]

Issue 2 asks batches of 1,000 events at >= 3x the eventsourcing library. Whatever the ledger's
Python does, its store must write each batch: the events (four indexes: position, (tenant,
event id) for idempotency, (tenant, stream, version) for optimistic concurrency, (tenant,
position) for a tenant's reads) and the write-side references the append rules read
(`ledger_refs`). This times exactly that: `ledger_write` of the rows the ledger decided for
`bench.events`' stream, captured from a real run and sent again pre-encoded to a fresh database,
under the app role as the store runs (row-level security on), in one transaction per batch with
the position lock taken, so the client only waits. Variants: the real write (events and
references), events alone, references alone. Alternated with them, each on its own fresh database:
eventsourcing's batched recorder and raw COPY into a bare table, as bench/append.py runs them,
and the ledger's whole batched append. The table gives medians over the repetitions.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from psycopg import AsyncConnection

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench import databases  # noqa: E402
from bench.append import batch_events, copy_batched, default_url, es_batched, progress  # noqa: E402
from bench.events import stream  # noqa: E402

import ledger.store.postgres as postgres_store  # noqa: E402
from ledger.runtime import settle_memory  # noqa: E402
from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore, configure_connection, migrate  # noqa: E402

Batch = tuple[int, str, str]  # the head after the batch, its events and references as JSON text


async def ledger_whole(url: str, count: int, captured: list[Batch] | None) -> float:
    """The ledger's batched append (events/s), capturing what `ledger_write` was sent."""
    events = list(stream("batched", count))
    written: dict[str, Any] = {}
    events_json, ref_rows = postgres_store._events_json, postgres_store._ref_rows

    def capture_events(accepted: list[Any]) -> str:
        text = events_json(accepted)
        written["events"], written["head"] = text, accepted[-1].position
        return text

    def capture_refs(state: Any) -> list[list[Any]]:
        rows = ref_rows(state)
        written["refs"] = rows
        return rows

    if captured is not None:
        postgres_store._events_json = capture_events
        postgres_store._ref_rows = capture_refs
    store = await PostgresEventStore.open(url)
    try:
        service = LedgerService(store)
        started = time.perf_counter()
        for start in range(0, count, batch_events):
            report = await service.append(events[start : start + batch_events])
            if report.rejected or len(report.appended) != len(events[start : start + batch_events]):
                raise RuntimeError(f"the ledger refused: {report.rejected[:3]}")
            if captured is not None:
                refs = orjson.dumps(written["refs"]).decode()
                captured.append((written["head"], written["events"], refs))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
        postgres_store._events_json, postgres_store._ref_rows = events_json, ref_rows
    return count / elapsed


async def writes_alone(url: str, batches: list[Batch], variant: str, count: int) -> float:
    """`ledger_write` of the captured batches (events/s of the stream they carry)."""
    await migrate(url)
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await configure_connection(conn)
        started = time.perf_counter()
        for head, events, refs in batches:
            async with conn.transaction():
                await conn.execute("SELECT set_config('ledger.tenants', 'batched', true)")
                await conn.execute("SELECT head FROM ledger_position FOR UPDATE")
                await conn.execute(
                    "SELECT ledger_write(%s, %s, %s::jsonb, %s::jsonb)",
                    [
                        head,
                        head,
                        events if variant != "references alone" else "[]",
                        refs if variant != "events alone" else "[]",
                    ],
                )
        elapsed = time.perf_counter() - started
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    settle_memory()
    count = args.events
    batches: list[Batch] = []
    with databases.fresh_database(args.database_url) as url:
        asyncio.run(ledger_whole(url, count, batches))
    contenders: dict[str, Any] = {
        "ledger_write: events and references (the real write)": lambda url: asyncio.run(
            writes_alone(url, batches, "both", count)
        ),
        "ledger_write: events alone": lambda url: asyncio.run(
            writes_alone(url, batches, "events alone", count)
        ),
        "ledger_write: references alone": lambda url: asyncio.run(
            writes_alone(url, batches, "references alone", count)
        ),
        "ledger: the whole batched append": lambda url: asyncio.run(ledger_whole(url, count, None)),
        "eventsourcing 9.5: recorder, batched (LOCK TABLE)": lambda url: es_batched(
            url, count, db_functions=False
        ),
        "raw COPY into a bare table": lambda url: copy_batched(url, count),
    }
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for repetition in range(args.repetitions):
        names = list(contenders)
        names = names[repetition % len(names) :] + names[: repetition % len(names)]
        for name in names:
            progress(f"repetition {repetition + 1}: {name}")
            with databases.fresh_database(args.database_url) as url:
                rates[name].append(contenders[name](url))
    es = statistics.median(rates["eventsourcing 9.5: recorder, batched (LOCK TABLE)"])
    budget_us = 1e6 / (3 * es)
    print(
        f"{count:,} events of bench.events' batched stream in batches of {batch_events:,};"
        f" {args.repetitions} repetitions, each on a fresh database; medians\n"
    )
    print(
        "| what | events/s | us/event | share of the 3x-eventsourcing budget | every repetition |"
    )
    print("|---|---|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        us = 1e6 / rate
        print(
            f"| {name} | {rate:,.0f} | {us:.1f} | {us / budget_us:.2f}x |"
            f" {', '.join(f'{value:,.0f}' for value in values)} |"
        )
    print(
        f"\n3x eventsourcing is {3 * es:,.0f} events/s here, {budget_us:.1f} us per event for"
        " everything: validation, the append rules and the writes."
    )


if __name__ == "__main__":
    main()
