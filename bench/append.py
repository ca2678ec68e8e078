"""Append benchmark: the ledger beside the `eventsourcing` library (9.5, PostgreSQL) and raw COPY,
the same events on the same PostgreSQL in the same run (DESIGN section 9).

    python3 dev.py bench append [--database-url URL] [--events N] [--quick]

Scenarios, each repetition on a fresh database (CREATE DATABASE bench_<hex>, dropped after):
  1. one event per call, one writer: median and p99 latency of a call;
  2. batches of 1,000 events per call: events/s;
  3. 16 concurrent writers, one event per call: events/s (the ledger's group commit);
  4. `ledger append FILE` of a JSON-lines file as a whole process, against a script that saves
     the same lines with eventsourcing (`bench/eventsourcing_append.py`): wall-clock seconds,
     interpreter start included.
The ledger's figures include everything a caller pays: validation of the CloudEvent and its payload,
the append rules (references, over-application, idempotency, automatic allocation) and two tables
written (events and the write-side references). The references store the same CloudEvent JSON
without any of that. Every reference variant is measured; the table shows the fastest, the
variants table all of them. The results table goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench import databases  # noqa: E402
from bench import eventsourcing_append as reference  # noqa: E402
from bench.events import stream, tenants_stream, write_lines  # noqa: E402

from ledger.runtime import settle_memory  # noqa: E402
from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
# The sizes: batches of 1,000 events, 16 writers, a 50,000-line file.
batch_events = 1000
writers = 16
# Calls made before the latency samples, on their own tenant: connections, prepared plans and
# imports are warm, as in a long-running service.
warmup_calls = 50


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    single_calls: int
    batched_events: int
    concurrent_events: int
    file_lines: int


def sizes_from(args: argparse.Namespace) -> Sizes:
    events = args.events or (10_000 if args.quick else 50_000)
    return Sizes(
        repetitions=args.repetitions or (1 if args.quick else 3),
        single_calls=args.single_calls or (500 if args.quick else 2000),
        batched_events=events,
        concurrent_events=args.concurrent_events or (3200 if args.quick else 16_000),
        file_lines=events,
    )


def progress(message: str) -> None:
    print(f"append bench: {message}", file=sys.stderr, flush=True)


# --- databases --------------------------------------------------------------------------------


# `--database-setting NAME=VALUE` pairs, applied to every fresh database (ALTER DATABASE ... SET):
# a knob for trying a server setting on every contender alike; none by default.
database_settings: list[tuple[str, str]] = []


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """`bench.databases.fresh_database` with the `--database-setting` pairs."""
    with databases.fresh_database(server_url, settings=database_settings) as url:
        yield url


def count_rows(url: str, table: str) -> int:
    """Rows in `table`, read as the connecting superuser (row-level security does not apply)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        ).fetchone()
        return int(row[0]) if row else 0


def check_rows(url: str, table: str, expected: int, who: str) -> None:
    """The pair assertion: what was reported written is what reads back."""
    found = count_rows(url, table)
    if found != expected:
        raise RuntimeError(f"{who}: {table} holds {found} rows, expected {expected}")


# --- the ledger -------------------------------------------------------------------------------


@dataclass
class TransactionCount:
    transactions: int = 0
    events: int = 0


def count_transactions(store: PostgresEventStore) -> TransactionCount:
    """Count the store's append transactions (diagnostics only: how well group commit groups)."""
    counts = TransactionCount()
    original = getattr(store, "_append_transaction", None)
    if original is None:
        return counts

    async def counting(units: list[Any]) -> Any:
        counts.transactions += 1
        counts.events += sum(len(unit.events) for unit in units)
        return await original(units)

    store._append_transaction = counting  # type: ignore[method-assign]
    return counts


def _check_report(report: Any, expected: int) -> None:
    if report.rejected or len(report.appended) != expected:
        raise RuntimeError(
            f"ledger appended {len(report.appended)} of {expected}: {report.rejected[:3]}"
        )


async def _warm_up(service: LedgerService) -> None:
    for event in stream("warmup", warmup_calls):
        _check_report(await service.append([event]), 1)


async def ledger_single(url: str, calls: int) -> list[float]:
    store = await PostgresEventStore.open(url)
    try:
        service = LedgerService(store)
        await _warm_up(service)
        latencies = []
        for event in stream("single", calls):
            started = time.perf_counter()
            report = await service.append([event])
            latencies.append(time.perf_counter() - started)
            _check_report(report, 1)
    finally:
        await store.close()
    check_rows(url, "events", warmup_calls + calls, "ledger")
    return latencies


async def ledger_batched(url: str, count: int, atomic: bool) -> float:
    events = list(stream("batched", count))
    store = await PostgresEventStore.open(url)
    try:
        service = LedgerService(store)
        await _warm_up(service)
        started = time.perf_counter()
        for start in range(0, count, batch_events):
            batch = events[start : start + batch_events]
            _check_report(await service.append(batch, atomic=atomic), len(batch))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    check_rows(url, "events", warmup_calls + count, "ledger")
    return count / elapsed


async def ledger_concurrent(url: str, count: int) -> tuple[float, float]:
    """Events/s, and the mean events per append transaction (group commit at work)."""
    per_writer = count // writers
    streams = [list(stream(f"writer{index}", per_writer)) for index in range(writers)]
    store = await PostgresEventStore.open(url)
    try:
        service = LedgerService(store)
        await _warm_up(service)
        counts = count_transactions(store)

        async def write(events: list[dict[str, Any]]) -> None:
            for event in events:
                _check_report(await service.append([event]), 1)

        started = time.perf_counter()
        await asyncio.gather(*(write(events) for events in streams))
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    check_rows(url, "events", warmup_calls + per_writer * writers, "ledger")
    grouping = counts.events / counts.transactions if counts.transactions else math.nan
    return per_writer * writers / elapsed, grouping


# --- eventsourcing ----------------------------------------------------------------------------
# The recorder is the library's own batched path under Application.save; "lock" is its default
# (LOCK TABLE ... IN EXCLUSIVE MODE per insert: notification ids in commit order, the ledger's
# guarantee), "db functions" its POSTGRES_ENABLE_DB_FUNCTIONS option, which skips that lock.


def es_single(url: str, calls: int, db_functions: bool) -> list[float]:
    target = reference.recorder(url, db_functions=db_functions)
    versions: dict[uuid.UUID, int] = {}
    try:
        for event in stream("warmup", warmup_calls):
            target.insert_events([reference.stored(event, versions)])
        latencies = []
        for event in stream("single", calls):
            started = time.perf_counter()
            target.insert_events([reference.stored(event, versions)])
            latencies.append(time.perf_counter() - started)
    finally:
        target.datastore.close()
    check_rows(url, "stored_events", warmup_calls + calls, "eventsourcing")
    return latencies


def es_batched(url: str, count: int, db_functions: bool) -> float:
    events = list(stream("batched", count))
    target = reference.recorder(url, db_functions=db_functions)
    versions: dict[uuid.UUID, int] = {}
    try:
        target.insert_events(
            [reference.stored(event, versions) for event in stream("warmup", warmup_calls)]
        )
        started = time.perf_counter()
        for start in range(0, count, batch_events):
            target.insert_events(
                [
                    reference.stored(event, versions)
                    for event in events[start : start + batch_events]
                ]
            )
        elapsed = time.perf_counter() - started
    finally:
        target.datastore.close()
    check_rows(url, "stored_events", warmup_calls + count, "eventsourcing")
    return count / elapsed


def es_application_batched(url: str, count: int) -> float:
    events = list(stream("batched", count))
    app = reference.application(url)
    try:
        app.save(
            *(reference.CloudEventAggregate(event) for event in stream("warmup", warmup_calls))
        )
        started = time.perf_counter()
        for start in range(0, count, batch_events):
            app.save(
                *(
                    reference.CloudEventAggregate(event)
                    for event in events[start : start + batch_events]
                )
            )
        elapsed = time.perf_counter() - started
    finally:
        app.close()
    check_rows(url, "application_events", warmup_calls + count, "eventsourcing")
    return count / elapsed


def _run_threads(work: Callable[[int], None]) -> float:
    """Start one thread per writer, all at once; the seconds until the last one is done."""
    failures: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            work(index)
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=guarded, args=(index,)) for index in range(writers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} writer threads failed") from failures[0]
    return elapsed


def es_concurrent(url: str, count: int, db_functions: bool) -> float:
    per_writer = count // writers
    streams = [list(stream(f"writer{index}", per_writer)) for index in range(writers)]
    target = reference.recorder(url, pool_size=writers, db_functions=db_functions)
    try:
        versions: dict[uuid.UUID, int] = {}
        for event in stream("warmup", warmup_calls):
            target.insert_events([reference.stored(event, versions)])

        def write(index: int) -> None:
            own_versions: dict[uuid.UUID, int] = {}
            for event in streams[index]:
                target.insert_events([reference.stored(event, own_versions)])

        elapsed = _run_threads(write)
    finally:
        target.datastore.close()
    check_rows(url, "stored_events", warmup_calls + per_writer * writers, "eventsourcing")
    return per_writer * writers / elapsed


# --- raw COPY into a bare table -----------------------------------------------------------------

_raw_table = (
    "CREATE TABLE raw_events (id bigserial PRIMARY KEY, tenant_id text, event_id text, data jsonb)"
)


def _copy(conn: psycopg.Connection[Any], events: list[dict[str, Any]]) -> None:
    with conn.transaction(), conn.cursor() as cursor:
        with cursor.copy("COPY raw_events (tenant_id, event_id, data) FROM STDIN") as copy:
            for event in events:
                copy.write_row((event["tenantid"], event["id"], orjson.dumps(event).decode()))


def copy_single(url: str, calls: int) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
        for event in stream("warmup", warmup_calls):
            _copy(conn, [event])
        latencies = []
        for event in stream("single", calls):
            started = time.perf_counter()
            _copy(conn, [event])
            latencies.append(time.perf_counter() - started)
    check_rows(url, "raw_events", warmup_calls + calls, "COPY")
    return latencies


def copy_batched(url: str, count: int) -> float:
    events = list(stream("batched", count))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
        _copy(conn, list(stream("warmup", warmup_calls)))
        started = time.perf_counter()
        for start in range(0, count, batch_events):
            _copy(conn, events[start : start + batch_events])
        elapsed = time.perf_counter() - started
    check_rows(url, "raw_events", warmup_calls + count, "COPY")
    return count / elapsed


def copy_concurrent(url: str, count: int) -> float:
    per_writer = count // writers
    streams = [list(stream(f"writer{index}", per_writer)) for index in range(writers)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
    connections = [psycopg.connect(url, autocommit=True) for _ in range(writers)]
    try:
        for conn in connections:
            _copy(conn, list(stream(f"warmup-{id(conn)}", 1)))

        def write(index: int) -> None:
            for event in streams[index]:
                _copy(connections[index], [event])

        elapsed = _run_threads(write)
    finally:
        for conn in connections:
            conn.close()
    check_rows(url, "raw_events", writers + per_writer * writers, "COPY")
    return per_writer * writers / elapsed


# --- whole process ------------------------------------------------------------------------------


def whole_process(url: str, lines: int, command: list[str], table: str) -> float:
    environment = dict(os.environ, LEDGER_DATABASE_URL=url)
    started = time.perf_counter()
    result = subprocess.run(command, env=environment, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[1:3]} failed: {result.stderr.decode()[-2000:]}")
    check_rows(url, table, lines, " ".join(command[1:3]))
    return elapsed


def process_commands(url: str, file: Path) -> dict[str, tuple[list[str], str]]:
    """The command of each contender, and the table it fills."""
    script = str(root / "bench" / "eventsourcing_append.py")
    es = [sys.executable, script, "--database-url", url]
    return {
        "ledger": ([sys.executable, "-m", "ledger.cli", "append", str(file)], "events"),
        "es lock": ([*es, str(file)], "stored_events"),
        "es db functions": ([*es, "--db-functions", str(file)], "stored_events"),
        "es application": ([*es, "--application", str(file)], "application_events"),
    }


# --- the run ------------------------------------------------------------------------------------


@dataclass
class Results:
    """Every repetition's value per scenario and contender."""

    values: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def add(self, scenario: str, contender: str, value: Any) -> None:
        self.values.setdefault(scenario, {}).setdefault(contender, []).append(value)

    def median(self, scenario: str, contender: str, index: int | None = None) -> float:
        samples = self.values.get(scenario, {}).get(contender, [])
        if index is not None:
            samples = [sample[index] for sample in samples]
        return statistics.median(samples) if samples else math.nan


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def latency_ms(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies) * 1e3, percentile(latencies, 0.99) * 1e3


def measure(
    server: str,
    results: Results,
    scenario: str,
    contender: str,
    run: Callable[[str], Any],
) -> None:
    with fresh_database(server) as url:
        value = run(url)
    results.add(scenario, contender, value)
    progress(f"{scenario} / {contender}: {value if not isinstance(value, list) else '...'}")


def run_single(server: str, sizes: Sizes, results: Results) -> None:
    calls = sizes.single_calls
    contenders: dict[str, Callable[[str], list[float]]] = {
        "ledger": lambda url: asyncio.run(ledger_single(url, calls)),
        "es lock": lambda url: es_single(url, calls, db_functions=False),
        "es db functions": lambda url: es_single(url, calls, db_functions=True),
        "copy": lambda url: copy_single(url, calls),
    }
    for _ in range(sizes.repetitions):
        for name, run in contenders.items():
            measure(
                server,
                results,
                "single",
                name,
                lambda url, run=run: latency_ms(run(url)),
            )


def run_batched(server: str, sizes: Sizes, results: Results) -> None:
    count = sizes.batched_events
    contenders: dict[str, Callable[[str], float]] = {
        "ledger atomic": lambda url: asyncio.run(ledger_batched(url, count, atomic=True)),
        "ledger per-event": lambda url: asyncio.run(ledger_batched(url, count, atomic=False)),
        "es lock": lambda url: es_batched(url, count, db_functions=False),
        "es db functions": lambda url: es_batched(url, count, db_functions=True),
        "es application": lambda url: es_application_batched(url, count),
        "copy": lambda url: copy_batched(url, count),
    }
    for _ in range(sizes.repetitions):
        for name, run in contenders.items():
            measure(server, results, "batched", name, run)


def run_concurrent(server: str, sizes: Sizes, results: Results) -> None:
    count = sizes.concurrent_events
    contenders: dict[str, Callable[[str], Any]] = {
        "ledger": lambda url: asyncio.run(ledger_concurrent(url, count)),
        "es lock": lambda url: es_concurrent(url, count, db_functions=False),
        "es db functions": lambda url: es_concurrent(url, count, db_functions=True),
        "copy": lambda url: copy_concurrent(url, count),
    }
    for _ in range(sizes.repetitions):
        for name, run in contenders.items():
            measure(server, results, "concurrent", name, run)


def run_process(server: str, sizes: Sizes, results: Results) -> None:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "events.jsonl"
        # Five tenants interleaved, as several publishers feeding one file.
        write_lines(file, tenants_stream("file", 5, sizes.file_lines))
        for _ in range(sizes.repetitions):
            for name in ("ledger", "es lock", "es db functions", "es application"):

                def run(url: str, name: str = name) -> float:
                    command, table = process_commands(url, file)[name]
                    return whole_process(url, sizes.file_lines, command, table)

                measure(server, results, "process", name, run)


scenario_runners = {
    "single": run_single,
    "batched": run_batched,
    "concurrent": run_concurrent,
    "process": run_process,
}
es_variants = {
    "single": ("es lock", "es db functions"),
    "batched": ("es lock", "es db functions", "es application"),
    "concurrent": ("es lock", "es db functions"),
    "process": ("es lock", "es db functions", "es application"),
}
es_variant_names = {
    "es lock": "recorder, LOCK TABLE (default)",
    "es db functions": "recorder, db functions (no lock)",
    "es application": "Application.save",
}


# --- the report ---------------------------------------------------------------------------------


def _fastest_es(
    results: Results, scenario: str, lower_is_better: bool, index: int | None = None
) -> tuple[str, float]:
    options = [
        (name, results.median(scenario, name, index))
        for name in es_variants[scenario]
        if name in results.values.get(scenario, {})
    ]
    pick = min if lower_is_better else max
    return pick(options, key=lambda option: option[1]) if options else ("-", math.nan)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _rate(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:,.0f}"


def main_table(results: Results, sizes: Sizes) -> list[str]:
    rows = [
        "| scenario | ledger | eventsourcing 9.5 (fastest variant) | raw COPY "
        "| ratio ledger/eventsourcing (speed, >1: ledger faster) | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    if "single" in results.values:
        for index, label, target in ((0, "median", 1.0), (1, "p99", 5.0)):
            ledger = results.median("single", "ledger", index)
            name, es = _fastest_es(results, "single", lower_is_better=True, index=index)
            copy = results.median("single", "copy", index)
            rows.append(
                f"| 1. one event per call, one writer: {label} latency (ms) | {ledger:.2f} "
                f"| {es:.2f} ({es_variant_names.get(name, name)}) | {copy:.2f} | {es / ledger:.2f}x "
                f"| <= {target:g} ms | {_met(ledger <= target)} |"
            )
    if "batched" in results.values:
        name, es = _fastest_es(results, "batched", lower_is_better=False)
        copy = results.median("batched", "copy")
        for contender, label in (
            ("ledger atomic", "atomic=True"),
            ("ledger per-event", "atomic=False"),
        ):
            ledger = results.median("batched", contender)
            rows.append(
                f"| 2. batches of {batch_events:,} per call ({label}): events/s | {_rate(ledger)} "
                f"| {_rate(es)} ({es_variant_names.get(name, name)}) | {_rate(copy)} "
                f"| {ledger / es:.2f}x | >= 50,000/s and >= 3x | "
                f"{_met(ledger >= 50_000 and ledger / es >= 3)} |"
            )
    if "concurrent" in results.values:
        ledger = results.median("concurrent", "ledger", 0)
        name, es = _fastest_es(results, "concurrent", lower_is_better=False)
        copy = results.median("concurrent", "copy")
        rows.append(
            f"| 3. {writers} concurrent writers, one event per call: events/s | {_rate(ledger)} "
            f"| {_rate(es)} ({es_variant_names.get(name, name)}) | {_rate(copy)} "
            f"| {ledger / es:.2f}x | >= 10,000/s | {_met(ledger >= 10_000)} |"
        )
    if "process" in results.values:
        ledger = results.median("process", "ledger")
        name, es = _fastest_es(results, "process", lower_is_better=True)
        rows.append(
            f"| 4. `ledger append` of a {sizes.file_lines:,}-line file, whole process: s "
            f"| {ledger:.2f} | {es:.2f} ({es_variant_names.get(name, name)}) | - "
            f"| {es / ledger:.2f}x | >= 3x | {_met(es / ledger >= 3)} |"
        )
    return rows


def variants_table(results: Results) -> list[str]:
    rows = [
        "| scenario | contender | median | every repetition |",
        "|---|---|---|---|",
    ]
    for scenario, contenders in results.values.items():
        for contender, samples in contenders.items():
            if scenario == "single":
                shown = [f"{median:.2f} / {p99:.2f}" for median, p99 in samples]
                median = f"{results.median(scenario, contender, 0):.2f} / {results.median(scenario, contender, 1):.2f} ms (median / p99)"
            elif scenario == "concurrent" and contender == "ledger":
                shown = [
                    f"{rate:,.0f} ({grouping:.1f} events/transaction)" for rate, grouping in samples
                ]
                median = f"{results.median(scenario, contender, 0):,.0f} events/s"
            elif scenario == "process":
                shown = [f"{value:.2f}" for value in samples]
                median = f"{results.median(scenario, contender):.2f} s"
            else:
                shown = [f"{value:,.0f}" for value in samples]
                median = f"{results.median(scenario, contender):,.0f} events/s"
            label = es_variant_names.get(contender, contender)
            rows.append(f"| {scenario} | {label} | {median} | {'; '.join(shown)} |")
    return rows


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def environment(server: str) -> list[str]:
    """The machine, the server and the code under test, taken when the run starts (the working tree
    may change while it runs; the whole-process scenario starts the ledger anew each time)."""
    shown = ("server_version", "fsync", "synchronous_commit", "autovacuum", "shared_buffers")
    with psycopg.connect(server) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone() for name in shown}
    values = {name: str(row[0]) if row else "?" for name, row in settings.items()}
    postgres = (
        values.pop("server_version")
        + " ("
        + ", ".join(f"{name}={value}" for name, value in values.items())
        + ")"
    )
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return [
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {platform.platform()}",
        f"- PostgreSQL {postgres}; Python {platform.python_version()}; "
        f"eventsourcing {metadata.version('eventsourcing')}; psycopg {metadata.version('psycopg')}",
        f"- commit: {commit or '?'}" + (" (with uncommitted changes in src/)" if dirty else ""),
        *(
            [f"- database settings: {', '.join(f'{n} = {v}' for n, v in database_settings)}"]
            if database_settings
            else []
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=default_url, help="a server to create databases on"
    )
    parser.add_argument(
        "--events",
        type=int,
        help="events of the batched scenario and lines of the file (50,000)",
    )
    parser.add_argument("--single-calls", type=int, help="calls of scenario 1 (2,000)")
    parser.add_argument("--concurrent-events", type=int, help="events of scenario 3 (16,000)")
    parser.add_argument("--repetitions", type=int, help="repetitions per contender (3)")
    parser.add_argument("--quick", action="store_true", help="smaller counts, one repetition")
    parser.add_argument(
        "--scenarios", default=",".join(scenario_runners), help="comma-separated subset"
    )
    parser.add_argument(
        "--database-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="ALTER DATABASE ... SET NAME = VALUE on every fresh database (all contenders alike)",
    )
    parser.add_argument("--json", type=Path, help="also write every repetition's values here")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave the garbage collector as CPython sets it (default: as `ledger` commands set"
        " it, ledger.runtime.settle_memory; the in-process contenders all run under it)",
    )
    args = parser.parse_args()
    if not args.default_gc:
        settle_memory()
    sizes = sizes_from(args)
    database_settings.extend(tuple(pair.split("=", 1)) for pair in args.database_setting)  # type: ignore[misc]
    results = Results()
    load_at_start = load_average()
    started = environment(args.database_url)
    for scenario in args.scenarios.split(","):
        scenario_runners[scenario](args.database_url, sizes, results)
    lines = [
        "# Append benchmark",
        "",
        *started,
        "- garbage collector: "
        + ("CPython's defaults" if args.default_gc else "as `ledger` commands set it")
        + f" (thresholds {gc.get_threshold()})",
        f"- load average (1, 5, 15 min) at start: {load_at_start}; at end: {load_average()} "
        "(other work on the machine slows every contender; compare within one run)",
        f"- sizes: {sizes.single_calls:,} single calls, {sizes.batched_events:,} batched events, "
        f"{sizes.concurrent_events:,} events from {writers} writers, a {sizes.file_lines:,}-line file; "
        f"{sizes.repetitions} repetitions each, each on a fresh database; the table shows medians "
        "over the repetitions (for latency: the median of each repetition's median and p99)",
        "",
        *main_table(results, sizes),
        "",
        "## Every contender",
        "",
        *variants_table(results),
    ]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(
            json.dumps({"sizes": sizes.__dict__, "results": results.values}, indent=1)
        )


if __name__ == "__main__":
    main()
