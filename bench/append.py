"""Append benchmark: the ledger beside the eventsourcing library (9.5, PostgreSQL) and raw COPY,
same events, same PostgreSQL, same run. Each scenario runs on a fresh database.

    python3 dev.py bench append [--database-url URL] [--quick]

Scenarios (DESIGN section 9): one event per call (median and p99 latency), batches of 1,000
(events/s), 16 concurrent writers with one event per call (events/s), and `ledger append` of a
50,000-line file as a whole process against a script that saves the same lines with eventsourcing.
The ledger's figures include everything a caller pays: JSON validation, the append rules
(references, over-application, idempotency), and two tables written (events, references).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.events import stream  # noqa: E402
from bench.eventsourcing_append import recorder, stored  # noqa: E402

from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server_url, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# --- the ledger --------------------------------------------------------------------------------


async def ledger_single(url: str, count: int) -> list[float]:
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    latencies = []
    for event in stream("single", count):
        started = time.perf_counter()
        report = await service.append([event])
        latencies.append(time.perf_counter() - started)
        assert report.appended, report.rejected
    await store.close()
    return latencies


async def ledger_batched(url: str, count: int, atomic: bool) -> float:
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    events = list(stream("batched", count))
    started = time.perf_counter()
    for start in range(0, count, 1000):
        report = await service.append(events[start : start + 1000], atomic=atomic)
        assert not report.rejected, report.rejected[:3]
    elapsed = time.perf_counter() - started
    await store.close()
    return count / elapsed


async def ledger_concurrent(url: str, count: int, writers: int) -> float:
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    per_writer = count // writers
    streams = [list(stream(f"writer{w}", per_writer)) for w in range(writers)]

    async def write(events: list[dict[str, Any]]) -> None:
        for event in events:
            report = await service.append([event])
            assert report.appended, report.rejected

    started = time.perf_counter()
    await asyncio.gather(*(write(events) for events in streams))
    elapsed = time.perf_counter() - started
    await store.close()
    return per_writer * writers / elapsed


# --- eventsourcing ----------------------------------------------------------------------------


def es_single(url: str, count: int) -> list[float]:
    target = recorder(url)
    versions: dict[str, int] = {}
    latencies = []
    for event in stream("single", count):
        item = stored(orjson.dumps(event), versions)
        started = time.perf_counter()
        target.insert_events([item])
        latencies.append(time.perf_counter() - started)
    return latencies


def es_batched(url: str, count: int) -> float:
    target = recorder(url)
    versions: dict[str, int] = {}
    lines = [orjson.dumps(event) for event in stream("batched", count)]
    started = time.perf_counter()
    for start in range(0, count, 1000):
        target.insert_events([stored(line, versions) for line in lines[start : start + 1000]])
    return count / (time.perf_counter() - started)


def es_concurrent(url: str, count: int, writers: int) -> float:
    target = recorder(url, pool_size=writers)
    per_writer = count // writers
    streams = [[orjson.dumps(e) for e in stream(f"writer{w}", per_writer)] for w in range(writers)]

    def write(lines: list[bytes]) -> None:
        versions: dict[str, int] = {}
        for line in lines:
            target.insert_events([stored(line, versions)])

    threads = [threading.Thread(target=write, args=(lines,)) for lines in streams]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return per_writer * writers / (time.perf_counter() - started)


# --- raw COPY ---------------------------------------------------------------------------------

_raw_table = (
    "CREATE TABLE raw_events (id bigserial PRIMARY KEY, tenant_id text, event_id text, data jsonb)"
)


def _copy(conn: psycopg.Connection[Any], rows: list[tuple[str, str, str]]) -> None:
    with conn.transaction(), conn.cursor() as cursor:
        with cursor.copy("COPY raw_events (tenant_id, event_id, data) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def _rows(tenant: str, count: int) -> list[tuple[str, str, str]]:
    return [(e["tenantid"], e["id"], orjson.dumps(e).decode()) for e in stream(tenant, count)]


def copy_single(url: str, count: int) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
        latencies = []
        for row in _rows("single", count):
            started = time.perf_counter()
            _copy(conn, [row])
            latencies.append(time.perf_counter() - started)
    return latencies


def copy_batched(url: str, count: int) -> float:
    rows = _rows("batched", count)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
        started = time.perf_counter()
        for start in range(0, count, 1000):
            _copy(conn, rows[start : start + 1000])
        return count / (time.perf_counter() - started)


def copy_concurrent(url: str, count: int, writers: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_raw_table)
    per_writer = count // writers
    streams = [_rows(f"writer{w}", per_writer) for w in range(writers)]
    connections = [psycopg.connect(url, autocommit=True) for _ in range(writers)]

    def write(conn: psycopg.Connection[Any], rows: list[tuple[str, str, str]]) -> None:
        for row in rows:
            _copy(conn, [row])

    threads = [
        threading.Thread(target=write, args=pair) for pair in zip(connections, streams, strict=True)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    for conn in connections:
        conn.close()
    return per_writer * writers / elapsed


# --- whole process ----------------------------------------------------------------------------


def whole_process(url: str, lines: int, which: str) -> float:
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "events.jsonl"
        with file.open("wb") as handle:
            for tenant in range(5):
                for event in stream(f"file{tenant}", lines // 5):
                    handle.write(orjson.dumps(event) + b"\n")
        environment = dict(os.environ, LEDGER_DATABASE_URL=url)
        environment["PYTHONPATH"] = os.pathsep.join([str(root / "src"), str(root)])
        if which == "ledger":
            command = [sys.executable, "-m", "ledger.cli", "append", str(file)]
        else:
            command = [
                sys.executable,
                str(root / "bench" / "eventsourcing_append.py"),
                "--database-url",
                url,
                str(file),
            ]
        started = time.perf_counter()
        result = subprocess.run(command, env=environment, capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{which} failed: {result.stderr.decode()[-2000:]}")
        return elapsed


# --- the run ----------------------------------------------------------------------------------


def repeat(server_url: str, repetitions: int, measure: Callable[[str], Any]) -> list[Any]:
    results = []
    for _ in range(repetitions):
        with fresh_database(server_url) as url:
            results.append(measure(url))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--quick", action="store_true", help="smaller counts, one repetition")
    args = parser.parse_args()
    server = args.database_url
    repetitions = 1 if args.quick else 3
    single_count = 500 if args.quick else 2000
    batch_count = 10_000 if args.quick else 50_000
    concurrent_count = 3200 if args.quick else 16_000
    file_lines = 10_000 if args.quick else 50_000
    writers = 16

    def median_latency(samples: list[list[float]]) -> tuple[float, float]:
        flat = [value for sample in samples for value in sample]
        return statistics.median(flat) * 1e3, percentile(flat, 0.99) * 1e3

    print(
        f"# append benchmark ({repetitions} repetitions, medians; PostgreSQL {_server_version(server)})\n"
    )
    rows: list[tuple[str, str, str, str, str]] = []

    ledger = median_latency(
        repeat(server, repetitions, lambda url: asyncio.run(ledger_single(url, single_count)))
    )
    es = median_latency(repeat(server, repetitions, lambda url: es_single(url, single_count)))
    raw = median_latency(repeat(server, repetitions, lambda url: copy_single(url, single_count)))
    rows.append(
        (
            "one event per call: median latency (ms)",
            f"{ledger[0]:.2f}",
            f"{es[0]:.2f}",
            f"{raw[0]:.2f}",
            f"{es[0] / ledger[0]:.2f}x",
        )
    )
    rows.append(
        (
            "one event per call: p99 latency (ms)",
            f"{ledger[1]:.2f}",
            f"{es[1]:.2f}",
            f"{raw[1]:.2f}",
            f"{es[1] / ledger[1]:.2f}x",
        )
    )

    for atomic in (True, False):
        ledger_rate = statistics.median(
            repeat(
                server,
                repetitions,
                lambda url, atomic=atomic: asyncio.run(ledger_batched(url, batch_count, atomic)),
            )
        )
        if atomic:
            es_rate = statistics.median(
                repeat(server, repetitions, lambda url: es_batched(url, batch_count))
            )
            raw_rate = statistics.median(
                repeat(server, repetitions, lambda url: copy_batched(url, batch_count))
            )
        label = "atomic batches" if atomic else "per-event units"
        rows.append(
            (
                f"batches of 1,000 ({label}): events/s",
                f"{ledger_rate:,.0f}",
                f"{es_rate:,.0f}",
                f"{raw_rate:,.0f}",
                f"{ledger_rate / es_rate:.2f}x",
            )
        )

    ledger_rate = statistics.median(
        repeat(
            server,
            repetitions,
            lambda url: asyncio.run(ledger_concurrent(url, concurrent_count, writers)),
        )
    )
    es_rate = statistics.median(
        repeat(server, repetitions, lambda url: es_concurrent(url, concurrent_count, writers))
    )
    raw_rate = statistics.median(
        repeat(server, repetitions, lambda url: copy_concurrent(url, concurrent_count, writers))
    )
    rows.append(
        (
            f"{writers} concurrent writers, one event per call: events/s",
            f"{ledger_rate:,.0f}",
            f"{es_rate:,.0f}",
            f"{raw_rate:,.0f}",
            f"{ledger_rate / es_rate:.2f}x",
        )
    )

    ledger_s = statistics.median(
        repeat(server, repetitions, lambda url: whole_process(url, file_lines, "ledger"))
    )
    es_s = statistics.median(
        repeat(server, repetitions, lambda url: whole_process(url, file_lines, "eventsourcing"))
    )
    rows.append(
        (
            f"`ledger append` of {file_lines:,} lines, whole process: s",
            f"{ledger_s:.2f}",
            f"{es_s:.2f}",
            "",
            f"{es_s / ledger_s:.2f}x",
        )
    )

    print(
        "| scenario | ledger | eventsourcing 9.5 | raw COPY | ledger speed ÷ eventsourcing speed (>1: ledger faster) |"
    )
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def _server_version(url: str) -> str:
    with psycopg.connect(
        make_conninfo(url, dbname=str(conninfo_to_dict(url).get("dbname", "postgres")))
    ) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


if __name__ == "__main__":
    main()
