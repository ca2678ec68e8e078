"""Streaming benchmark: relay throughput, event committed -> read model committed latency, replay.

    python3 dev.py bench streaming [--database-url URL] [--replay-events N] [--quick]
                                   [--parts relay,latency,replay]

- relay: events/s from the store to the embedded tansu broker, acks awaited, checkpoints written,
  uncompressed and with each codec of `relay_codecs` (rounds alternated), and the bytes an event
  takes on the broker (its record batches as stored, read back with raw fetches);
- latency: events offered at 1,000 events/s, open loop (each sent at its scheduled time whether or
  not earlier ones have answered), while `ledger relay` and `ledger worker` run as processes; the
  worker's own histogram (`ledger_projection_latency_seconds`, from the event's commit to its read
  model's commit) gives p50 and p99, interpolated within its buckets as Prometheus'
  `histogram_quantile` does (what the warm-up put there taken off), beside the rate actually
  appended and the worker's batch size and apply time;
- replay: `replay` of the event-count projection over N events written straight into the events
  table by SQL (appending a million events through validation would take minutes and measure the
  write side, not replay).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.append import default_url, fresh_database  # noqa: E402
from bench.events import stream  # noqa: E402
from tests.kafka_batches import stored  # noqa: E402

from ledger.embedded import (  # noqa: E402
    EmbeddedKafka,
    free_loopback_port,
    tansu_fetch_max_wait_ms,
    tansu_session_timeout_ms,
)
from ledger.relay import KafkaPublisher, Relay  # noqa: E402
from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore, configure_connection  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.replay import replay  # noqa: E402

# The relay's codecs measured side by side (None: uncompressed), each this many times, alternated.
relay_codecs: list[str | None] = [None, "lz4", "zstd"]
relay_rounds = 3


@dataclass
class Relayed:
    codec: str | None
    rates: list[float]  # events/s of each round
    bytes_per_event: float  # what the broker holds, batch headers included


async def relay_throughput(url: str, bootstrap: str, count: int) -> list[Relayed]:
    """Every codec of `relay_codecs` publishes the same stored events to a topic of its own per
    round (a fresh relay checkpoint each time), rounds alternated across codecs."""
    store = await PostgresEventStore.open(url)
    events = list(stream("relay", count))
    for start in range(0, count, 1000):
        await LedgerService(store).append(events[start : start + 1000])
    results = {codec: Relayed(codec, [], 0.0) for codec in relay_codecs}
    for round_ in range(relay_rounds):
        for codec in relay_codecs:
            topic = f"bench.relay.{codec or 'none'}.{round_}"
            publisher = KafkaPublisher(bootstrap, idempotent=False, compression=codec)
            relay = Relay(store, publisher, topic=topic, partitions=6)
            await relay.repair_broker()
            started = time.perf_counter()
            published = await relay.catch_up()
            elapsed = time.perf_counter() - started
            await publisher.close()
            results[codec].rates.append(published / elapsed)
            held = await stored(bootstrap, topic)
            assert held.records == published == count, (held.records, published, count)
            results[codec].bytes_per_event = held.size / held.records
    await store.close()
    return list(results.values())


def _count(text: str, name: str) -> float:
    found = re.search(rf"^{name}_count (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _buckets(text: str, name: str) -> list[tuple[float, float]]:
    """A histogram's (upper bound, cumulative count) pairs, +Inf last."""
    return [
        (float(bound), float(count))
        for bound, count in re.findall(
            rf'^{name}_bucket{{le="([^"]+)"}} (\S+)$', text, re.MULTILINE
        )
    ]


def _quantile(
    after: list[tuple[float, float]], before: list[tuple[float, float]], share: float
) -> tuple[float, float]:
    """The quantile of what a histogram counted between two scrapes: linearly interpolated within
    its bucket (Prometheus' `histogram_quantile`), and the bucket's upper bound."""
    earlier = dict(before)
    counts = [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]
    total = counts[-1][1] if counts else 0.0
    lower, below = 0.0, 0.0
    for bound, count in counts:
        if total and count >= share * total:
            if bound == float("inf"):
                return lower, bound
            inside = count - below
            fraction = (share * total - below) / inside if inside else 1.0
            return lower + (bound - lower) * fraction, bound
        lower, below = bound, count
    return float("inf"), float("inf")


@dataclass
class Paced:
    p50_s: float  # interpolated within the histogram's buckets
    p99_s: float
    p50_bound_s: float  # the buckets' upper bounds
    p99_bound_s: float
    projected: int
    appended_per_s: float  # events offered / time until the last append answered
    late_s: float  # the most any send was behind its schedule
    events_per_batch: float  # the worker's batches during the run, mean
    batch_p50_s: float  # the worker's batch apply time (interpolated)


async def latency(url: str, bootstrap: str, seconds: float, rate: float) -> Paced:
    metrics_port = free_loopback_port()
    environment = dict(os.environ)
    environment.update(
        LEDGER_DATABASE_URL=url,
        LEDGER_KAFKA_BOOTSTRAP=bootstrap,
        LEDGER_KAFKA_IDEMPOTENT="false",
        LEDGER_KAFKA_FETCH_MAX_WAIT_MS=str(tansu_fetch_max_wait_ms),
        LEDGER_KAFKA_SESSION_TIMEOUT_MS=str(tansu_session_timeout_ms),
        LEDGER_EVENTS_TOPIC="bench.latency",
        LEDGER_WORKER_GROUP="bench-latency",
        PYTHONPATH=os.pathsep.join([str(root / "src"), str(root)]),
    )
    relay = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "relay"], env=environment, stderr=subprocess.DEVNULL
    )
    environment["LEDGER_METRICS_PORT"] = str(metrics_port)
    worker = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "worker"], env=environment, stderr=subprocess.DEVNULL
    )
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    try:
        # Warm up until the worker has joined its group and projected something.
        warm = list(stream("warmup", 50))
        for event in warm:
            await service.append([event])
        text = ""
        deadline = time.monotonic() + 120
        while "ledger_projection_latency_seconds_count" not in text or re.search(
            r"^ledger_projection_latency_seconds_count 0\.0$", text, re.MULTILINE
        ):
            assert time.monotonic() < deadline, "the worker never projected"
            await asyncio.sleep(0.5)
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/metrics", timeout=2
                ) as answer:
                    text = answer.read().decode()
            except OSError:
                text = ""
        # What the warm-up put in the histograms (the first events wait for the worker to join)
        # is taken off what the run adds.
        base = _count(text, "ledger_projection_latency_seconds")
        batches_base = _count(text, "ledger_projection_apply_seconds")
        latency_base = _buckets(text, "ledger_projection_latency_seconds")
        apply_base = _buckets(text, "ledger_projection_apply_seconds")
        # Open loop: each event is sent at its scheduled time as a task of its own, whether or
        # not earlier appends have answered (as many clients would), and the store's group commit
        # batches those in flight. A loop that awaited each append before the next could not
        # offer more than 1 / (one append's latency) events/s, ~600/s here, whatever `rate` said.
        events = list(stream("paced", int(seconds * rate)))
        sent: list[asyncio.Task[Any]] = []
        late_s = 0.0
        started = time.perf_counter()
        for number, event in enumerate(events):
            due = started + number / rate
            pause = due - time.perf_counter()
            if pause > 0:
                await asyncio.sleep(pause)
            late_s = max(late_s, time.perf_counter() - due)
            sent.append(asyncio.create_task(service.append([event])))
        for report in await asyncio.gather(*sent):
            assert report.ok, report.rejected[:3]
        appended_s = time.perf_counter() - started
        await asyncio.sleep(3)
        with urllib.request.urlopen(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=5
        ) as answer:
            text = answer.read().decode()
        name = "ledger_projection_latency_seconds"
        measured = _count(text, name) - base
        batches = _count(text, "ledger_projection_apply_seconds") - batches_base
        latencies = _buckets(text, name)
        p50, p50_bound = _quantile(latencies, latency_base, 0.5)
        p99, p99_bound = _quantile(latencies, latency_base, 0.99)
        batch_p50, _ = _quantile(_buckets(text, "ledger_projection_apply_seconds"), apply_base, 0.5)
        return Paced(
            p50,
            p99,
            p50_bound,
            p99_bound,
            int(measured),
            len(events) / appended_s,
            late_s,
            measured / batches if batches else 0.0,
            batch_p50,
        )
    finally:
        for process in (relay, worker):
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
        await store.close()


async def replay_throughput(url: str, count: int) -> float:
    store = await PostgresEventStore.open(url)
    conn = await AsyncConnection.connect(url, autocommit=True)
    await conn.execute(
        "INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id, type, time,"
        " data, metadata, hash)"
        " SELECT g, 'tenant' || (g %% 10), 'customer/C' || g, 1, 'e' || g,"
        " 'ledger.customer.registered.v1', now(),"
        " jsonb_build_object('customer_id', 'C' || g, 'name', 'Customer ' || g),"
        ' \'{"source": "bench"}\', md5(g::text) FROM generate_series(1, %s) AS g',
        [count],
    )
    await conn.execute("UPDATE ledger_position SET head = %s", [count])
    await configure_connection(conn)
    started = time.perf_counter()
    folded = await replay(store, conn, all_projectors())
    elapsed = time.perf_counter() - started
    await conn.close()
    await store.close()
    return folded / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--replay-events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--parts", default="relay,latency,replay", help="comma-separated subset to run"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    relay_events = 10_000 if args.quick else 50_000
    replay_events = 100_000 if args.quick else args.replay_events
    latency_s = 5.0 if args.quick else 20.0
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        broker = EmbeddedKafka.start(Path(folder))
        try:
            if "relay" in parts:
                with fresh_database(args.database_url) as url:
                    relayed = asyncio.run(relay_throughput(url, broker.bootstrap, relay_events))
                for result in relayed:
                    rates = ", ".join(f"{rate:,.0f}" for rate in result.rates)
                    rows.append(
                        f"| relay to the embedded broker ({relay_events:,} events),"
                        f" compression {result.codec or 'none'} |"
                        f" {statistics.median(result.rates):,.0f} events/s (median of {rates});"
                        f" the broker holds {result.bytes_per_event:,.0f} bytes an event |"
                        " >= 20,000 events/s |"
                    )
            if "latency" in parts:
                with fresh_database(args.database_url) as url:
                    paced = asyncio.run(latency(url, broker.bootstrap, latency_s, 1000.0))
                rows.append(
                    f"| event committed -> read model committed at 1,000 events/s offered"
                    f" ({paced.projected:,} events; appended at {paced.appended_per_s:,.0f}/s,"
                    f" sends at most {paced.late_s * 1000:.0f} ms behind schedule) |"
                    f" p50 {paced.p50_s * 1000:.0f} ms, p99 {paced.p99_s * 1000:.0f} ms"
                    f" (interpolated in the worker's histogram buckets, which end at"
                    f" {paced.p50_bound_s * 1000:g} and {paced.p99_bound_s * 1000:g} ms;"
                    f" worker batches of {paced.events_per_batch:.0f} events, apply p50"
                    f" {paced.batch_p50_s * 1000:.0f} ms) | p99 <= 50 ms |"
                )
        finally:
            broker.stop()
    if "replay" in parts:
        with fresh_database(args.database_url) as url:
            rate = asyncio.run(replay_throughput(url, replay_events))
        rows.append(
            f"| replay of {replay_events:,} events (event counts) | {rate:,.0f} events/s |"
            " >= 20,000 events/s |"
        )
    print("| what | measured | target |")
    print("|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
