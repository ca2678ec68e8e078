"""Where the ledger's batched append spends its time, per event: parse, decide, SQL.

    python3 dev.py bench profile_append [--database-url URL] [--events N] [--atomic] [--cprofile N]

Appends N events (default 20,000) in batches of 1,000 through `LedgerService.append` on a fresh
database, with timers around the phases: `parse_all` (JSON Schema-level validation, pydantic),
`needs_of` and the JSON documents for PostgreSQL, the two round trips (lock and load; write and
commit; server time included), decoding the loaded state, and `decide_unit` (the append rules).
The timers wrap module functions of `ledger.service` and `ledger.store.postgres` from outside and
the writer connection in a proxy: nothing in src/ changes. With `--cprofile N` the run is also
profiled and the N most expensive functions (own time) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.append import default_url, fresh_database  # noqa: E402
from bench.events import stream  # noqa: E402

import ledger.service  # noqa: E402
import ledger.store.known  # noqa: E402
import ledger.store.postgres  # noqa: E402
from ledger.runtime import settle_memory  # noqa: E402
from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore  # noqa: E402

batch_events = 1000
seconds: dict[str, float] = defaultdict(float)
cpu_seconds: dict[str, float] = defaultdict(float)
calls: dict[str, int] = defaultdict(int)
batch_seconds: list[float] = []


def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        started_cpu = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            cpu_seconds[name] += time.thread_time() - started_cpu
            calls[name] += 1

    return wrapper


def instrument() -> None:
    """Wrap the functions the append path calls through module globals."""
    known = ledger.store.known.KnownState
    known.guess = timed("guess on what the writer knows", known.guess)  # type: ignore[method-assign]
    known.learn_written = timed("learn what was written", known.learn_written)  # type: ignore[method-assign]
    ledger.service.parse_all = timed(
        "parse (parse_all: orjson + pydantic + rules)", ledger.service.parse_all
    )
    store_module = ledger.store.postgres
    for name, label in (
        ("needs_of", "needs_of (keys to load)"),
        ("_needs_json", "encode needs JSON"),
        ("_state_from", "decode loaded state"),
        ("decide_unit", "decide (decide_unit: append rules)"),
        ("_events_json", "encode events JSON"),
        ("_ref_rows", "references to write (rows)"),
    ):
        setattr(store_module, name, timed(label, getattr(store_module, name)))


class TimingConnection:
    """The writer connection, with each pipeline (one round trip) timed and named by its SQL."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._statements: list[str] = []
        self._in_pipeline = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)

    async def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self._statements.append(str(query)[:40])
        if self._in_pipeline or "ledger_append_known" not in str(query):
            return await self._connection.execute(query, *args, **kwargs)
        # One statement, its own transaction (autocommit): the one-round-trip append.
        name = "one round trip: ledger_append_known (SQL)"
        started = time.perf_counter()
        started_cpu = time.thread_time()
        try:
            return await self._connection.execute(query, *args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            cpu_seconds[name] += time.thread_time() - started_cpu
            calls[name] += 1

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[Any]:
        self._statements = []
        started = time.perf_counter()
        started_cpu = time.thread_time()
        self._in_pipeline = True
        try:
            async with self._connection.pipeline() as pipeline:
                yield pipeline
        finally:
            self._in_pipeline = False
        joined = " ".join(self._statements)
        if "ledger_lock_and_load" in joined:
            name = "round trip 1: BEGIN; ledger_lock_and_load (SQL)"
        elif "ledger_write" in joined:
            name = "round trip 2: ledger_write; COMMIT (SQL)"
        else:
            name = f"round trip: {joined}"
        seconds[name] += time.perf_counter() - started
        cpu_seconds[name] += time.thread_time() - started_cpu
        calls[name] += 1


async def run(url: str, count: int, atomic: bool, writers: int, warmup: int) -> float:
    events = list(stream("batched", count))
    streams = [list(stream(f"writer{index}", count // writers)) for index in range(writers)]
    store = await PostgresEventStore.open(url)
    try:
        connection = await store._writer_connection()
        store._writer = TimingConnection(connection)  # type: ignore[assignment]
        service = LedgerService(store)
        for event in stream("warmup", warmup):
            await service.append([event])
        for collected in (seconds, cpu_seconds, calls, batch_seconds):
            collected.clear()
        started = time.perf_counter()
        if writers:

            async def write(events: list[dict[str, Any]]) -> None:
                for event in events:
                    report = await service.append([event], atomic=atomic)
                    if report.rejected:
                        raise RuntimeError(f"rejected: {report.rejected[:3]}")

            await asyncio.gather(*(write(events) for events in streams))
            return time.perf_counter() - started
        for start in range(0, count, batch_events):
            batch_started = time.perf_counter()
            report = await service.append(events[start : start + batch_events], atomic=atomic)
            batch_seconds.append(time.perf_counter() - batch_started)
            if report.rejected:
                raise RuntimeError(f"rejected: {report.rejected[:3]}")
        return time.perf_counter() - started
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--atomic", action="store_true", help="atomic=True (default: False)")
    parser.add_argument(
        "--writers",
        type=int,
        default=0,
        help="instead of batches: this many tasks, one event per call",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=50,
        help="single-event appends first, as a running service has made (default 50)",
    )
    parser.add_argument("--cprofile", type=int, default=0, metavar="N")
    args = parser.parse_args()
    settle_memory()  # the garbage collector as `ledger` commands and bench/append.py run it
    instrument()
    profiler = cProfile.Profile() if args.cprofile else None
    with fresh_database(args.database_url) as url:
        if profiler:
            profiler.enable()
        elapsed = asyncio.run(run(url, args.events, args.atomic, args.writers, args.warmup))
        if profiler:
            profiler.disable()
    per_event_us = 1e6 / args.events
    shape = (
        f"from {args.writers} concurrent writers, one per call"
        if args.writers
        else f"in batches of {batch_events:,}"
    )
    print(
        f"{args.events:,} events {shape} (atomic={args.atomic}): "
        f"{elapsed:.2f} s, {args.events / elapsed:,.0f} events/s, {elapsed * per_event_us:.1f} us/event"
    )
    # The JSON documents are encoded inside the pipeline blocks: take them out of the round trips.
    nested = {
        "round trip 1: BEGIN; ledger_lock_and_load (SQL)": ["encode needs JSON"],
        "round trip 2: ledger_write; COMMIT (SQL)": [
            "encode events JSON",
            "encode references JSON",
        ],
    }
    for trip, parts in nested.items():
        seconds[trip] -= sum(seconds.get(part, 0.0) for part in parts)
        cpu_seconds[trip] -= sum(cpu_seconds.get(part, 0.0) for part in parts)
    print(
        "\n| phase | calls | wall s | wall us/event | share of wall | CPU us/event (this process) |"
        "\n|---|---|---|---|---|---|"
    )
    for name, total in sorted(seconds.items(), key=lambda item: -item[1]):
        cpu = f"{cpu_seconds[name] * per_event_us:.1f}" if name in cpu_seconds else "-"
        print(
            f"| {name} | {calls[name]} | {total:.3f} | {total * per_event_us:.1f} "
            f"| {total / elapsed:.0%} | {cpu} |"
        )
    rest = elapsed - sum(seconds.values())
    print(
        f"| everything else (service, group commit, report) | | {rest:.3f} "
        f"| {rest * per_event_us:.1f} | {rest / elapsed:.0%} | |"
    )
    if len(batch_seconds) >= 10:
        first, last = batch_seconds[:5], batch_seconds[-5:]
        print(
            f"\nper batch of {batch_events:,}: first five {sum(first) / 5 * 1e3:.1f} ms, "
            f"last five {sum(last) / 5 * 1e3:.1f} ms"
        )
    if profiler:
        output = io.StringIO()
        stats = pstats.Stats(profiler, stream=output)
        stats.sort_stats("tottime").print_stats(args.cprofile)
        print("\n```\n" + output.getvalue().strip() + "\n```")


if __name__ == "__main__":
    main()
