"""Live benchmark on `ledger up`: event appended over HTTP -> kpi:update received, and a memory soak.

    python3 dev.py bench live                       # latency at 50, 200, 500, 1,000/s, then a 30-minute soak
    python3 dev.py bench live latency --rates 1000 --seconds 30
    python3 dev.py bench live soak --soak-minutes 10

The system runs as a user runs it: one subprocess `ledger up --api-port P --gateway-port G
--data-dir <tmp>` (HTTP API, relay, ingest and gateway in that process; the projection worker and
the embedded tansu broker its children), with LEDGER_DATABASE_URL on a fresh database of the given
server, LEDGER_REDIS_URL on a spare Redis database and LEDGER_JWT_SECRET set (the bench signs its
own tokens). The code is `src/` of a commit (`--source`, default HEAD), exported, because the
working tree is shared and may hold half-edited files; `--source worktree` runs the tree as it is.

latency (a fresh database and `ledger up` per rate): a websocket client subscribes to the tenant's
`kpi:update`; the worker has joined once a first event reaches it (~33 s on tansu). A load
generator then POSTs one event per request on an open-loop schedule (send times fixed in advance,
so a slow server cannot slow the load and hide its own delay): invoices of varying amounts for a few
customers, each followed by a payment of that amount by the same customer, which the ledger applies
oldest due first (`--mix paid`, the default: every event moves AR and few invoices stay open, so the
KPI report costs as much at the end as at the start) or invoices only (`--mix invoices`). An
event's latency runs from its scheduled send time to the arrival of the first kpi:update whose
`position` is at least the event's (updates coalesce: one answers many events).

Where the time goes, per event: the path is cut at the event's `recorded_at` (its append
transaction's start, from the Kafka headers), when a bare aiokafka consumer in this process (the
tap; `--no-tap` turns it off) sees it on the broker, when the worker starts and ends applying its
batch, when the worker starts and ends computing the KPI state that answered it, at the update's
`updated_at` (stamped before the Redis script) and at its arrival. The worker's times come from a
trace (`--no-trace` turns it off): a generated `sitecustomize` on the children's PYTHONPATH wraps
three worker functions from outside (`src/` is not changed) and appends a JSON line per call. The
processes' Prometheus histograms (the API's /metrics; the worker's on LEDGER_METRICS_PORT), the CPU
time of each process over the window, and the KPI report timed alone afterwards complete it.
`--fetch-wait-ms N` sets LEDGER_KAFKA_FETCH_MAX_WAIT_MS for `ledger up` (default: its own, 10 ms on
the embedded tansu).

soak: `ledger up --demo` plus `--soak-rate` events/s of the load above on a tenant of its own,
`--soak-clients` websocket clients (100) subscribed to the demo tenants; every 10 s the resident
memory of `ledger up` (API, relay, gateway), the worker, tansu and this process (the clients).
Printed: start, end, max, and the slope after the warm-up (least squares, MiB per 10 minutes).

Markdown tables go to stdout, progress to stderr; `--json PATH` keeps every figure, `--keep-logs DIR`
every `ledger up` log.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import functools
import itertools
import os
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))
from bench.databases import fresh_database  # noqa: E402
from bench.sources import export_src  # noqa: E402

# The `src/` the system runs from: a commit's, exported by `export_source` (the working tree is
# shared, and half-edited files in it are not the code under test), or the working tree's.
# `ledger`, `projections` and `gateway` are imported only after main() has put it first on the path.
source_dir = root / "src"

# Named limits, units last.

# `ledger up` answers /healthz within seconds; tansu's first metadata exchanges take a few more.
startup_timeout_s = 60.0
# The worker joins its consumer group on tansu in 5-10 s; a loaded machine takes longer.
worker_join_timeout_s = 180.0
# After the last send, events still unanswered after this long are counted as never answered.
drain_timeout_s = 60.0
# A SIGTERMed `ledger up` stops its worker (20 s at most) and its servers.
stop_timeout_s = 60.0
# tansu 0.6 answers a fetch with new data after up to about half the consumer's fetch_max_wait_ms
# (measured: 1,500 ms -> p50 363, max 742 ms; 10 ms -> p50 1.9, max 8.4 ms), so the tap asks with
# 10 ms: its own delay stays a few ms, for ~100 idle fetches/s.
tap_fetch_wait_ms = 10
# Customers per tenant the invoices go to.
customers_per_tenant = 5
# A request not answered within this is counted as failed (its connection is dropped).
http_timeout_s = 30.0
# The KPI report timed on its own after each rate, on the final data.
kpi_report_timings = 20
# Soak: clients, and how often memory is sampled.
soak_client_count = 100
soak_sample_interval_s = 10.0
# The demo's tenants (ledger.demo.demo_tenants); their Redis states are cleared before a soak, so a
# previous run's higher position cannot make the publish script drop this run's states.
demo_tenants = ("acme", "globex", "initech")
# Redis database for the run: one nothing else on the shared machine uses (0, 3 and 5 are taken).
redis_url_default = "redis://127.0.0.1:6379/11"
database_url_default = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)


def export_source(revision: str, folder: Path) -> str:
    """Put `src/` of `revision` (git archive) in `folder` and first on this process's path (the
    children get it through PYTHONPATH); "worktree" keeps the working tree's. The commit, or
    "worktree" with the files that differ from HEAD."""
    global source_dir
    if revision == "worktree":
        changed = subprocess.run(
            ["git", "-C", str(root), "status", "--short", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        return "worktree" + (f" (changed: {', '.join(c[3:] for c in changed if c)})")
    commit, source_dir = export_src(revision, folder)
    sys.path.insert(0, str(source_dir))
    return commit


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the events ----------------------------------------------------------------------------------


def _envelope(tenant: str, event_id: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "bench/live",
        "type": f"ledger.{kind}.v1",
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "tenantid": tenant,
        "data": data,
    }


def customers(tenant: str) -> list[dict[str, Any]]:
    return [
        _envelope(
            tenant,
            f"{tenant}-customer-{index}",
            "customer.registered",
            {"customer_id": f"C{index}", "name": f"Customer {index}"},
        )
        for index in range(customers_per_tenant)
    ]


def load_event(tenant: str, number: int, mix: str, today: date) -> dict[str, Any]:
    """The `number`th event of the load: an invoice, or (mix paid, odd numbers) a payment of the
    invoice's amount by its customer. Amounts vary, so every event moves AR."""
    invoice = number // 2 if mix == "paid" else number
    customer = f"C{invoice % customers_per_tenant}"
    total = f"{100 + (invoice * 37) % 900}.{invoice % 100:02d}"
    if mix == "paid" and number % 2:
        # No allocations: the ledger applies it oldest due first. Naming the invoice just issued
        # would be refused whenever the two requests, 1 ms apart, reach the store out of order.
        data: dict[str, Any] = {
            "payment_id": f"PAY-{invoice}",
            "customer_id": customer,
            "date": today.isoformat(),
            "amount": total,
            "currency": "USD",
        }
        return _envelope(tenant, f"{tenant}-pay-{invoice}", "payment.received", data)
    data = {
        "invoice_id": f"INV-{invoice}",
        "customer_id": customer,
        "issue_date": today.isoformat(),
        "due_date": (today + timedelta(days=30)).isoformat(),
        "currency": "USD",
        "lines": [{"description": "Subscription", "amount": total}],
        "total": total,
    }
    return _envelope(tenant, f"{tenant}-inv-{invoice}", "invoice.issued", data)


# --- `ledger up` as a process --------------------------------------------------------------------


@dataclass
class RunningUp:
    process: subprocess.Popen[bytes]
    log_path: Path
    api: str
    gateway: str
    secret: str
    worker_metrics: str
    bootstrap: str = ""
    worker_pid: int = 0
    trace_path: Path | None = None

    def token(self, tenant: str = "*") -> str:
        from ledger.auth import issue_token

        return issue_token(self.secret, tenant, 6 * 3600)


def _get(url: str, token: str | None = None, timeout_s: float = 5.0) -> bytes:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=headers), timeout=timeout_s
    ) as r:
        return bytes(r.read())


def _environment(trace_dir: Path | None, **values: str) -> dict[str, str]:
    environment = dict(os.environ)
    environment.update(values)
    paths = [str(source_dir), environment.get("PYTHONPATH", "")]
    if trace_dir is not None:
        paths.insert(0, str(trace_dir))
        environment["LEDGER_BENCH_TRACE"] = str(trace_dir / "worker-trace.jsonl")
    environment["PYTHONPATH"] = os.pathsep.join(paths)
    for name in ("LEDGER_KAFKA_BOOTSTRAP", "LEDGER_METRICS_PORT"):
        if name not in values:
            environment.pop(name, None)  # tansu embedded, as `ledger up` starts it
    return environment


async def start_up(
    database_url: str,
    redis_url: str,
    data_dir: Path,
    demo: bool,
    trace: bool = False,
    fetch_wait_ms: int = 0,
) -> RunningUp:
    from ledger.embedded import free_loopback_port

    api_port, gateway_port, metrics_port = (free_loopback_port() for _ in range(3))
    trace_dir = None
    if trace:
        trace_dir = data_dir / "trace"
        trace_dir.mkdir()
        (trace_dir / "sitecustomize.py").write_text(sitecustomize_text.format(root=str(root)))
    secret = secrets.token_urlsafe(32)
    log_path = data_dir / "ledger-up.log"
    command = [sys.executable, "-m", "ledger.cli", "up", "--api-port", str(api_port)]
    command += ["--gateway-port", str(gateway_port), "--data-dir", str(data_dir / "data")]
    with log_path.open("wb") as output:
        process = subprocess.Popen(
            command + (["--demo"] if demo else []),
            env=_environment(
                trace_dir,
                LEDGER_DATABASE_URL=database_url,
                LEDGER_REDIS_URL=redis_url,
                LEDGER_JWT_SECRET=secret,
                # `ledger up` itself serves no metrics port; its worker child inherits this one.
                LEDGER_METRICS_PORT=str(metrics_port),
                **({"LEDGER_KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait_ms)} if fetch_wait_ms else {}),
            ),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    up = RunningUp(
        process,
        log_path,
        f"http://127.0.0.1:{api_port}",
        f"ws://127.0.0.1:{gateway_port}/v1/stream",
        secret,
        f"http://127.0.0.1:{metrics_port}/metrics",
    )
    if trace_dir is not None:
        up.trace_path = trace_dir / "worker-trace.jsonl"
    deadline = time.monotonic() + startup_timeout_s
    while b"Press Ctrl-C to stop." not in log_path.read_bytes():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"ledger up did not start:\n{log_path.read_text(errors='replace')}")
        await asyncio.sleep(0.2)
    banner = log_path.read_text(errors="replace")
    up.worker_pid = int(re.search(r"worker:\s+pid (\d+)", banner).group(1))  # type: ignore[union-attr]
    up.bootstrap = re.search(r"Kafka:\s+(\S+)", banner).group(1)  # type: ignore[union-attr]
    _get(f"{up.api}/healthz")
    return up


def stop_up(up: RunningUp, keep_logs: Path | None = None) -> str:
    """SIGTERM, wait; a problem (exit code, traceback, a hang) is returned, not raised. With
    `keep_logs`, the process's log is copied there."""
    up.process.send_signal(signal.SIGTERM)
    problems = []
    try:
        up.process.wait(timeout=stop_timeout_s)
    except subprocess.TimeoutExpired:
        problems.append(f"did not stop within {stop_timeout_s:g} s of SIGTERM (killed)")
        up.process.kill()
        up.process.wait()
        if rss_mib(up.worker_pid) is not None:  # the worker child, orphaned by the kill
            with contextlib.suppress(ProcessLookupError):
                os.kill(up.worker_pid, signal.SIGKILL)
    output = up.log_path.read_text(errors="replace")
    if keep_logs is not None:
        keep_logs.mkdir(parents=True, exist_ok=True)
        kept = keep_logs / f"ledger-up-{time.strftime('%H%M%S')}-{up.process.pid}.log"
        kept.write_text(output)
        log(f"  log kept: {kept}")
    if up.process.returncode not in (0, -signal.SIGKILL):
        problems.append(f"exit code {up.process.returncode}")
    if "Traceback" in output:
        problems.append("a traceback in its log")
    return "; ".join(problems)


def clear_redis_states(redis_url: str, tenants: list[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*[f"ledger:kpi-state:{tenant}" for tenant in tenants])
    finally:
        client.close()


@contextlib.contextmanager
def system(server_url: str, redis_url: str, tenants: list[str]) -> Iterator[tuple[str, Path]]:
    """A fresh database, a data folder, and this run's tenants' Redis states cleared before and
    after (the publish script drops states older than the stored one)."""
    clear_redis_states(redis_url, tenants)
    with fresh_database(server_url) as url, tempfile.TemporaryDirectory() as folder:
        try:
            yield url, Path(folder)
        finally:
            clear_redis_states(redis_url, tenants)


# --- the worker trace ----------------------------------------------------------------------------

# Put first on the children's PYTHONPATH: in the worker process only (`python -m ledger.cli worker`)
# it wraps the worker's functions from outside, as bench/profile_append.py does; `src/` is unchanged.
sitecustomize_text = """
import os, sys
if sys.argv[-1:] == ["worker"] and os.environ.get("LEDGER_BENCH_TRACE"):
    sys.path.insert(0, {root!r})
    from bench.live import install_worker_trace
    install_worker_trace(os.environ["LEDGER_BENCH_TRACE"])
"""


def install_worker_trace(path: str) -> None:
    """Append a JSON line per batch applied, per KPI state computed and per state published:
    wall-clock start and end, and the positions. A few timestamps per batch: no measurable cost."""
    from projections import live, worker

    output = Path(path).open("a", buffering=1)  # noqa: SIM115 - open for the process's life

    def write(record: dict[str, Any]) -> None:
        output.write(orjson.dumps(record).decode() + "\n")

    write({"kind": "source", "path": live.__file__})
    apply_retrying = worker._Projecting._apply_retrying
    kpi_body = live.kpi_body
    publish = live.KpiStates.publish

    async def traced_apply(self: Any, events: list[Any]) -> dict[str, int]:
        started = time.time()
        applied = await apply_retrying(self, events)
        positions = [event.position for event in events]
        write({"kind": "apply", "start": started, "end": time.time(), "positions": positions})
        return applied

    async def traced_kpi_body(
        conn: Any, tenant: str, today: date, **options: Any
    ) -> dict[str, Any]:
        started = time.time()
        body = await kpi_body(conn, tenant, today, **options)
        write(
            {
                "kind": "kpi",
                "start": started,
                "end": time.time(),
                "tenant": tenant,
                "position": body["position"],
            }
        )
        return body

    async def traced_publish(self: Any, body: dict[str, Any]) -> tuple[bool, bytes]:
        started = time.time()
        result = await publish(self, body)
        write(
            {
                "kind": "publish",
                "start": started,
                "end": time.time(),
                "tenant": body["tenant"],
                "position": body["position"],
                "published": result[0],
            }
        )
        return result

    worker._Projecting._apply_retrying = traced_apply  # type: ignore[method-assign]
    live.kpi_body = traced_kpi_body
    live.KpiStates.publish = traced_publish  # type: ignore[method-assign]


@dataclass
class WorkerTrace:
    applied_s: dict[int, tuple[float, float]] = field(default_factory=dict)  # position -> batch
    batches: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, size
    kpi: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    kpi_all: list[tuple[float, float]] = field(default_factory=list)
    source: str = ""  # where the worker's projections.live came from

    @classmethod
    def read(cls, path: Path | None) -> WorkerTrace | None:
        if path is None or not path.exists():
            return None
        trace = cls()
        for line in path.read_bytes().splitlines():
            record = orjson.loads(line)
            if record["kind"] == "source":
                trace.source = record["path"]
                continue
            span = (record["start"], record["end"])
            if record["kind"] == "apply":
                trace.batches.append((*span, len(record["positions"])))
                for position in record["positions"]:
                    trace.applied_s[position] = span
            elif record["kind"] == "kpi":
                # The first computation at a position is the one whose state was published.
                trace.kpi.setdefault((record["tenant"], record["position"]), span)
                trace.kpi_all.append(span)
        return trace


# --- the websocket probe -------------------------------------------------------------------------


@dataclass
class Updates:
    """kpi:update frames as they arrived, per tenant, positions non-decreasing."""

    positions: dict[str, list[int]] = field(default_factory=dict)
    received_s: dict[str, list[float]] = field(default_factory=dict)
    updated_s: dict[str, list[float]] = field(default_factory=dict)
    frames: int = 0
    seq_gaps: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def newest(self, tenant: str) -> int:
        positions = self.positions.get(tenant)
        return positions[-1] if positions else 0

    def answer(self, tenant: str, position: int) -> int | None:
        """Index of the first update at `position` or later."""
        positions = self.positions.get(tenant, [])
        index = bisect.bisect_left(positions, position)
        return index if index < len(positions) else None


def _wall_seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@contextlib.asynccontextmanager
async def probe(up: RunningUp, tenants: list[str]) -> AsyncIterator[Updates]:
    from websockets.asyncio.client import connect

    updates = Updates()
    # No pings from this side: a loaded machine delays pongs past websockets' 20 s and the probe
    # would close; the gateway still pings, and a live connection answers.
    url = f"{up.gateway}?token={up.token()}"
    async with connect(url, compression=None, ping_interval=None) as connection:
        for tenant in tenants:
            subscribe = {"type": "subscribe", "channel": "kpi:update", "tenant": tenant}
            await connection.send(orjson.dumps(subscribe).decode())

        async def receive() -> None:
            last_seq: dict[str, int] = {}
            async for text in connection:
                received = time.time()
                frame = orjson.loads(text)
                if frame.get("type") == "error":
                    raise RuntimeError(f"the gateway refused the probe: {frame}")
                tenant = frame["tenant"]
                if frame["type"] == "kpi:update":
                    updates.frames += 1
                    if frame["seq"] != last_seq.get(tenant, frame["seq"] - 1) + 1:
                        updates.seq_gaps += 1
                    updates.positions.setdefault(tenant, []).append(frame["position"])
                    updates.received_s.setdefault(tenant, []).append(received)
                    updates.updated_s.setdefault(tenant, []).append(
                        _wall_seconds(frame["updated_at"])
                    )
                last_seq[tenant] = frame["seq"]
                updates.arrived.set()

        receiver = asyncio.create_task(receive())
        try:
            yield updates
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await receiver


async def wait_for_position(
    updates: Updates, tenants: list[str], positions: dict[str, int], timeout_s: float
) -> bool:
    deadline = time.monotonic() + timeout_s
    while any(updates.newest(t) < positions.get(t, 0) for t in tenants):
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            return False
        updates.arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(updates.arrived.wait(), min(remaining_s, 1.0))
    return True


# --- the broker tap ------------------------------------------------------------------------------


@dataclass
class Tap:
    """When each position reached the broker (as a bare consumer sees it), and its recorded_at."""

    seen_s: dict[int, float] = field(default_factory=dict)
    recorded_s: dict[int, float] = field(default_factory=dict)


async def tap_broker(bootstrap: str, topic: str, tap: Tap, started: asyncio.Event) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=tap_fetch_wait_ms
    )
    await consumer.start()
    try:
        partitions: set[int] = set()
        while not partitions:
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                await asyncio.sleep(0.2)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_end(*assigned)
        started.set()
        while True:
            for records in (await consumer.getmany(timeout_ms=100)).values():
                seen = time.time()
                for record in records:
                    headers = dict(record.headers)
                    position = int(headers["ce_position"])
                    tap.seen_s[position] = seen
                    tap.recorded_s[position] = _wall_seconds(headers["ce_recordedat"].decode())
    finally:
        await consumer.stop()


# --- Prometheus histograms -----------------------------------------------------------------------


@dataclass(frozen=True)
class Histogram:
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)
    count: float
    total: float

    def minus(self, before: Histogram | None) -> Histogram:
        if before is None:
            return self
        buckets = tuple(
            (bound, count - other)
            for (bound, count), (_, other) in zip(self.buckets, before.buckets, strict=True)
        )
        return Histogram(buckets, self.count - before.count, self.total - before.total)

    def quantile_bound(self, share: float) -> float:
        """The upper bound of the bucket the quantile falls in (as exact as the buckets)."""
        for bound, count in self.buckets:
            if count >= share * self.count:
                return bound
        return float("inf")

    def describe(self, unit: str = "ms") -> str:
        if self.count == 0:
            return "-"
        scale = 1000.0 if unit == "ms" else 1.0
        mean = self.total / self.count * scale
        p50, p99 = (self.quantile_bound(q) * scale for q in (0.5, 0.99))
        return f"mean {mean:.1f}, p50 <= {p50:g}, p99 <= {p99:g} ({self.count:,.0f} obs.)"


def scrape(url: str, token: str | None = None) -> dict[str, Histogram]:
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = _get(url, token).decode()
    except OSError:
        return {}
    histograms: dict[str, Histogram] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        buckets, count, total = [], 0.0, 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), float(sample.value)))
            elif sample.name.endswith("_count"):
                count = float(sample.value)
            elif sample.name.endswith("_sum"):
                total = float(sample.value)
        histograms[family.name] = Histogram(tuple(buckets), count, total)
    return histograms


def histogram_deltas(
    after: dict[str, Histogram], before: dict[str, Histogram]
) -> dict[str, Histogram]:
    return {name: value.minus(before.get(name)) for name, value in after.items()}


# --- the load ------------------------------------------------------------------------------------


@dataclass
class Sent:
    tenant: str
    scheduled_s: float  # wall clock
    started_s: float = 0.0
    answered_s: float = 0.0
    position: int = 0
    status: int = 0


class HttpClient:
    """POSTs over HTTP/1.1 keep-alive connections kept in a pool (a new one when all are busy),
    written by hand to leave the cores to the system under test: at 200 requests/s this process
    (probe and tap included) used 0.25 cores with aiohttp's client, 0.18 with this one."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "", parts.port or 80, parts.path
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.connections = 0

    async def post(self, body: bytes, token: str) -> tuple[int, bytes]:
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self.connections += 1
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        try:
            writer.write(head + body)
            status_line = await reader.readuntil(b"\r\n")
            length = 0
            while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
        except BaseException:  # failed or cancelled midway: the connection is unusable
            writer.close()
            raise
        self._idle.append((reader, writer))
        return int(status_line.split()[1]), answer

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def post(client: HttpClient, token: str, body: bytes, sent: Sent) -> None:
    sent.started_s = time.time()
    try:
        sent.status, answer = await asyncio.wait_for(client.post(body, token), http_timeout_s)
    except (OSError, asyncio.IncompleteReadError, TimeoutError):  # counted, not raised
        sent.status = -1
        return
    sent.answered_s = time.time()
    if sent.status == 200:
        sent.position = orjson.loads(answer)["appended"][0]["position"]


async def open_loop(
    up: RunningUp,
    tenants: list[str],
    rate: float,
    seconds: float,
    mix: str,
    first: int,
    record: bool = True,
) -> list[Sent]:
    """Send `rate * seconds` events at fixed times, round robin over tenants; return when every
    request is answered (what was sent, or with `record` off only the failures). Requests are
    tasks, so a slow answer never delays the next send."""
    today = datetime.now(UTC).date()
    tokens = {tenant: up.token(tenant) for tenant in tenants}
    client = HttpClient(f"{up.api}/v1/events")
    sent: list[Sent] = []
    tasks: set[asyncio.Task[None]] = set()

    def done(task: asyncio.Task[None], *, event: Sent) -> None:
        tasks.discard(task)
        if not record and event.status != 200:
            sent.append(event)

    started = time.time()
    for number in range(int(rate * seconds)):
        due = started + number / rate
        pause = due - time.time()
        if pause > 0:
            await asyncio.sleep(pause)
        tenant = tenants[number % len(tenants)]
        body = orjson.dumps(load_event(tenant, first + number // len(tenants), mix, today))
        event = Sent(tenant, due)
        if record:
            sent.append(event)
        task = asyncio.create_task(post(client, tokens[tenant], body, event))
        tasks.add(task)
        task.add_done_callback(functools.partial(done, event=event))
    while tasks:
        await asyncio.gather(*list(tasks))
    await client.close()
    return sent


# --- latency -------------------------------------------------------------------------------------


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


# The path of one event, cut where a timestamp exists: each part is the time between two cuts.
path_parts = (
    "send -> recorded_at (HTTP, validation, the append transaction's start)",
    "recorded_at -> on the broker (commit, relay wake-up, publish, acks; the tap's fetch)",
    "on the broker -> batch apply starts (faust fetch, the batch window, the previous batch)",
    "batch apply (the projection transaction)",
    "applied -> KPI computation starts (the publisher busy with an earlier state)",
    "KPI computation (`kpi_body`: the kpi report)",
    "KPI computed -> updated_at (Redis script)",
    "updated_at -> received (Redis pub/sub, gateway, websocket)",
)


def event_cuts(
    event: Sent,
    answered_at: int,
    received: float,
    updated: float,
    tap: Tap | None,
    trace: WorkerTrace | None,
) -> list[float] | None:
    """send, recorded_at, on the broker, apply start, applied, KPI start, KPI end, updated_at,
    received (the cuts of `path_parts`), when the tap and the worker trace both saw the event;
    the KPI computation is the one of the state that answered it (at position `answered_at`)."""
    if tap is None or trace is None or event.position not in tap.seen_s:
        return None
    batch = trace.applied_s.get(event.position)
    kpi = trace.kpi.get((event.tenant, answered_at))
    if batch is None or kpi is None:
        return None
    seen, recorded = tap.seen_s[event.position], tap.recorded_s[event.position]
    return [event.scheduled_s, recorded, seen, *batch, *kpi, updated, received]


def latencies(
    sent: list[Sent], updates: Updates, tap: Tap | None, trace: WorkerTrace | None
) -> dict[str, Any]:
    """Per event: total latency and its parts; the events nobody answered are counted."""
    parts: dict[str, list[float]] = {
        name: [] for name in ("total", "send lag", "HTTP append", *path_parts)
    }
    unanswered = failed = 0
    for event in sent:
        if event.status != 200:
            failed += 1
            continue
        index = updates.answer(event.tenant, event.position)
        if index is None:
            unanswered += 1
            continue
        received = updates.received_s[event.tenant][index]
        updated = updates.updated_s[event.tenant][index]
        parts["total"].append(received - event.scheduled_s)
        parts["send lag"].append(event.started_s - event.scheduled_s)
        parts["HTTP append"].append(event.answered_s - event.started_s)
        answered_at = updates.positions[event.tenant][index]
        cuts = event_cuts(event, answered_at, received, updated, tap, trace)
        if cuts is not None:
            for name, (before, after) in zip(path_parts, itertools.pairwise(cuts), strict=True):
                parts[name].append(after - before)
    third = len(parts["total"]) // 3
    return {
        "events": len(sent),
        "failed": failed,
        "unanswered": unanswered,
        # A latency that grows from the first third of the window to the last is a backlog: the
        # rate is not sustained, however the quantiles look.
        "p50_first_third": quantiles(parts["total"][:third]).get("p50"),
        "p50_last_third": quantiles(parts["total"][-third:] if third else []).get("p50"),
        "traced": len(parts[path_parts[0]]),
        "parts": {name: quantiles(values) for name, values in parts.items()},
    }


def worker_summary(trace: WorkerTrace | None, start: float, end: float) -> dict[str, Any]:
    """The worker's batches and KPI computations that began within [start, end)."""
    if trace is None:
        return {}
    batches = [b for b in trace.batches if start <= b[0] < end]
    kpis = [k for k in trace.kpi_all if start <= k[0] < end]
    window = max(end - start, 1e-9)
    return {
        "batches": len(batches),
        "batch_size": quantiles([float(size) for _, _, size in batches]),
        "apply_s": quantiles([stop - begin for begin, stop, _ in batches]),
        "apply_busy_share": sum(stop - begin for begin, stop, _ in batches) / window,
        "batch_interval_s": quantiles(
            [b[0] - a[0] for a, b in itertools.pairwise(sorted(batches))]
        ),
        "kpi_computations": len(kpis),
        "kpi_s": quantiles([stop - begin for begin, stop in kpis]),
        "kpi_busy_share": sum(stop - begin for begin, stop in kpis) / window,
    }


def time_kpi_report(database_url: str, tenant: str) -> dict[str, float]:
    """The worker's KPI computation for one tenant (`projections.live.kpi_body`), timed alone."""

    async def run() -> list[float]:
        from psycopg import AsyncConnection

        from ledger.store.postgres import configure_connection
        from projections.live import kpi_body

        conn = await AsyncConnection.connect(database_url, autocommit=True)
        try:
            await configure_connection(conn)
            today = datetime.now(UTC).date()
            timings = []
            for _ in range(kpi_report_timings + 2):
                started = time.perf_counter()
                await kpi_body(conn, tenant, today)
                timings.append(time.perf_counter() - started)
            return timings[2:]
        finally:
            await conn.close()

    return quantiles(asyncio.run(run()))


async def register_customers(up: RunningUp, tenant: str) -> int:
    """Append the tenant's customers in one request; the last one's position."""
    client = HttpClient(f"{up.api}/v1/events")
    try:
        status, answer = await client.post(orjson.dumps(customers(tenant)), up.token(tenant))
    finally:
        await client.close()
    if status != 200:
        raise RuntimeError(f"the customers were not appended ({status}): {answer!r}")
    return int(orjson.loads(answer)["appended"][-1]["position"])


async def warm_up(up: RunningUp, tenants: list[str], updates: Updates) -> float:
    """Register the customers; wait until the worker has projected them and a kpi:update came."""
    started = time.monotonic()
    newest = {tenant: await register_customers(up, tenant) for tenant in tenants}
    if not await wait_for_position(updates, tenants, newest, worker_join_timeout_s):
        raise RuntimeError("no kpi:update reached the probe: the worker never joined")
    return time.monotonic() - started


async def measure_rate(
    up: RunningUp, args: argparse.Namespace, tenants: list[str], rate: float, database_url: str
) -> dict[str, Any]:
    tap = Tap() if args.tap else None
    tap_task: asyncio.Task[None] | None = None
    async with probe(up, tenants) as updates:
        joined_s = await warm_up(up, tenants, updates)
        log(f"  worker joined: first kpi:update {joined_s:.1f} s after the first append")
        if tap is not None:
            tap_started = asyncio.Event()
            tap_task = asyncio.create_task(
                tap_broker(up.bootstrap, "ledger.events", tap, tap_started)
            )
            await asyncio.wait_for(tap_started.wait(), 30)
        try:
            log(f"  warm-up: {args.warmup_seconds:g} s at {rate:g}/s")
            warm = await open_loop(up, tenants, rate, args.warmup_seconds, args.mix, 0)
            api_before, worker_before = scrape_both(up)
            cpu_before = cpu_snapshot(up, database_url)
            load_before = load_average()
            log(f"  measuring: {args.seconds:g} s at {rate:g}/s")
            first = -(-len(warm) // len(tenants) // 2) * 2  # even: a new invoice comes first
            sent = await open_loop(up, tenants, rate, args.seconds, args.mix, first)
            last_sent = sent[-1].started_s if sent else time.time()
            newest = {
                t: max((s.position for s in sent if s.tenant == t), default=0) for t in tenants
            }
            drained = await wait_for_position(updates, tenants, newest, drain_timeout_s)
            api_after, worker_after = scrape_both(up)
            cpu_after = cpu_snapshot(up, database_url)
        finally:
            if tap_task is not None:
                tap_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await tap_task
        window_end = time.time()
        trace = WorkerTrace.read(up.trace_path)
        result = latencies(sent, updates, tap, trace)
        result["worker"] = worker_summary(trace, sent[0].scheduled_s if sent else 0, window_end)
        if trace is not None and not trace.source.startswith(str(source_dir)):
            raise RuntimeError(f"the worker ran {trace.source}, not the code under test")
        result["cpu"] = cpu_shares(cpu_before, cpu_after)
    answered = [s for s in sent if s.status == 200]
    span_s = (sent[-1].scheduled_s - sent[0].scheduled_s) if len(sent) > 1 else 1.0
    result.update(
        rate=rate,
        seconds=args.seconds,
        drained=drained,
        load_before=load_before,
        load_after=load_average(),
        achieved_send_rate=(len(sent) - 1) / max(last_sent - sent[0].started_s, 1e-9),
        achieved_append_rate=len(answered)
        / max(max(s.answered_s for s in answered) - sent[0].scheduled_s, 1e-9)
        if answered
        else 0.0,
        scheduled_rate=(len(sent) - 1) / span_s,
        updates=updates.frames,
        seq_gaps=updates.seq_gaps,
        histograms={
            f"{process}: {name}": value.describe()
            for process, deltas in (
                ("ledger up", histogram_deltas(api_after, api_before)),
                ("worker", histogram_deltas(worker_after, worker_before)),
            )
            for name, value in deltas.items()
            if name.startswith("ledger_") and value.count > 0
        },
        worker_batches=histogram_deltas(worker_after, worker_before)
        .get("ledger_projection_apply_seconds", Histogram((), 0, 0))
        .count,
    )
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc, Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, all) CPU seconds of the machine so far, over every core."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / ticks, sum(values) / ticks


def database_backends(database_url: str) -> list[int]:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows]


def cpu_snapshot(up: RunningUp, database_url: str) -> dict[str, Any]:
    tansu = [pid for pid, name in child_pids(up.process.pid).items() if "tansu" in name]
    processes = {
        "ledger up (API, relay, gateway)": [up.process.pid],
        "worker": [up.worker_pid],
        "tansu": tansu,
        "PostgreSQL backends of the run's database": database_backends(database_url),
        "bench (load, probe, tap)": [os.getpid()],
    }
    return {
        "at": time.monotonic(),
        "machine": machine_cpu_seconds(),
        "processes": {
            name: {pid: cpu_seconds(pid) for pid in pids} for name, pids in processes.items()
        },
    }


def cpu_shares(before: dict[str, Any], after: dict[str, Any]) -> dict[str, float]:
    """Cores used over the window, per process group and for the whole machine (all users)."""
    elapsed = max(after["at"] - before["at"], 1e-9)
    shares = {}
    for name, pids in after["processes"].items():
        used = 0.0
        for pid, seconds in pids.items():
            earlier = before["processes"].get(name, {}).get(pid)
            if seconds is not None and earlier is not None:
                used += seconds - earlier
        shares[name] = used / elapsed
    busy = (after["machine"][0] - before["machine"][0]) / elapsed
    shares["other work on the machine (every other user)"] = max(0.0, busy - sum(shares.values()))
    shares[f"whole machine ({os.cpu_count()} cores)"] = busy
    return shares


def scrape_both(up: RunningUp) -> tuple[dict[str, Histogram], dict[str, Histogram]]:
    return scrape(f"{up.api}/metrics", up.token()), scrape(up.worker_metrics)


def run_latency(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for rate in args.rates:
        suffix = secrets.token_hex(3)
        tenants = [f"live{suffix}t{index}" for index in range(args.tenants)]
        log(f"rate {rate:g}/s: starting ledger up on a fresh database (tenants {tenants})")
        with system(args.database_url, args.redis_url, tenants) as (url, folder):
            up = asyncio.run(
                start_up(
                    url,
                    args.redis_url,
                    folder,
                    demo=False,
                    trace=args.trace,
                    fetch_wait_ms=args.fetch_wait_ms,
                )
            )
            try:
                result = asyncio.run(measure_rate(up, args, tenants, rate, url))
                result["kpi_report_s"] = time_kpi_report(url, tenants[0])
            except Exception as error:  # one rate that breaks down must not lose the others
                log(f"  {rate:g}/s failed: {error!r}")
                result = {"rate": rate, "error": repr(error)}
            finally:
                stopped = stop_up(up, args.keep_logs) or "clean"
            result["stop"] = stopped
        results.append(result)
        if "error" not in result:
            print_rate(result)
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def print_rate(result: dict[str, Any]) -> None:
    parts = result["parts"]
    total = parts["total"]
    log(
        f"  {result['rate']:g}/s: p50 {_ms(total.get('p50'))} ms, p99 {_ms(total.get('p99'))} ms,"
        f" max {_ms(total.get('max'))} ms; {result['updates']} updates for {result['events']}"
        f" events; failed {result['failed']}, unanswered {result['unanswered']}"
    )


def _quartet(q: dict[str, float]) -> str:
    return " / ".join(_ms(q.get(k)) for k in ("p50", "p90", "p99", "max")) if q else "-"


def _row(name: str, cells: list[str]) -> str:
    return f"| {name} | " + " | ".join(cells) + " |"


def latency_tables(all_results: list[dict[str, Any]]) -> str:
    results = [r for r in all_results if "error" not in r]
    failed = [
        f"- {r['rate']:,.0f}/s: no figures ({r['error']})" for r in all_results if "error" in r
    ]
    return "\n".join([_latency_tables(results), *(["", *failed] if failed else [])])


def _latency_tables(results: list[dict[str, Any]]) -> str:
    lines = [
        "| rate (scheduled) | sent/s achieved | appended/s | events | kpi:updates | failed /"
        " unanswered | p50 ms | p90 ms | p99 ms | max ms | p50 first -> last third of the window, ms"
        " | target p99 <= 100 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        total = r["parts"]["total"]
        met = "yes" if total and total["p99"] <= 0.1 and not r["unanswered"] else "**no**"
        lines.append(
            f"| {r['rate']:,.0f}/s | {r['achieved_send_rate']:,.0f}"
            f" | {r['achieved_append_rate']:,.0f} | {r['events']:,} | {r['updates']:,}"
            f" | {r['failed']} / {r['unanswered']} | {_ms(total.get('p50'))}"
            f" | {_ms(total.get('p90'))} | {_ms(total.get('p99'))} | {_ms(total.get('max'))}"
            f" | {_ms(r.get('p50_first_third'))} -> {_ms(r.get('p50_last_third'))} | {met} |"
        )
    header = _row("part (ms: p50 / p90 / p99 / max)", [f"{r['rate']:,.0f}/s" for r in results])
    lines += ["", header, "|---|" + "---|" * len(results)]
    for name in results[0]["parts"] if results else []:
        lines.append(_row(name, [_quartet(r["parts"][name]) for r in results]))
    lines.append(_row("events with every cut traced", [f"{r['traced']:,}" for r in results]))
    lines += ["", _row("worker (measured window)", [f"{r['rate']:,.0f}/s" for r in results])]
    lines.append("|---|" + "---|" * len(results))
    workers = [r.get("worker") or {} for r in results]
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("batches applied", lambda w: f"{w['batches']:,}"),
        ("events per batch (p50 / p90 / p99 / max)", lambda w: _count_quartet(w["batch_size"])),
        ("between batch starts, ms", lambda w: _quartet(w["batch_interval_s"])),
        ("apply per batch, ms", lambda w: _quartet(w["apply_s"])),
        ("share of the window spent applying", lambda w: f"{w['apply_busy_share']:.0%}"),
        ("KPI states computed", lambda w: f"{w['kpi_computations']:,}"),
        ("KPI computation, ms", lambda w: _quartet(w["kpi_s"])),
        ("share of the window spent computing KPIs", lambda w: f"{w['kpi_busy_share']:.0%}"),
    ]
    for name, cell in rows:
        lines.append(_row(name, [cell(w) if w else "-" for w in workers]))
    lines.append(
        _row(
            "KPI report alone after the run, ms (p50 / p90 / p99 / max)",
            [_quartet(r["kpi_report_s"]) for r in results],
        )
    )
    lines += ["", _row("Prometheus histograms (ms)", [f"{r['rate']:,.0f}/s" for r in results])]
    lines.append("|---|" + "---|" * len(results))
    for name in sorted({name for r in results for name in r["histograms"]}):
        process, metric = name.split(": ")
        cells = [r["histograms"].get(name, "-") for r in results]
        lines.append(_row(f"{process}: `{metric}`", cells))
    header = _row(
        "CPU over the window: cores (CPU per appended event)",
        [f"{r['rate']:,.0f}/s" for r in results],
    )
    lines += ["", header]
    lines.append("|---|" + "---|" * len(results))
    for name in results[0].get("cpu", {}) if results else []:
        cells = []
        for r in results:
            cores = r.get("cpu", {}).get(name, 0.0)
            appended = r["achieved_append_rate"]
            per_event = name in r.get("cpu", {}) and not name.startswith(("other", "whole"))
            cells.append(
                f"{cores:.2f} ({cores / appended * 1000:.1f} ms/event)"
                if per_event and appended
                else f"{cores:.2f}"
            )
        lines.append(_row(name, cells))
    loads = [f"{r['load_before']} -> {r['load_after']}" for r in results]
    lines.append(_row("load average (1/5/15 min) before -> after", loads))
    lines.append(_row("`ledger up` stopped", [r["stop"] for r in results]))
    return "\n".join(lines)


def _count_quartet(q: dict[str, float]) -> str:
    return " / ".join(f"{q[k]:,.0f}" for k in ("p50", "p90", "p99", "max")) if q else "-"


# --- the soak ------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def child_pids(pid: int) -> dict[int, str]:
    """Direct children of `pid`: pid -> command name (from /proc, Linux)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        if parent == pid:
            children[int(entry.name)] = name
    return children


def slope_mib_per_10_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), scaled to MiB per 10 minutes."""
    if len(samples) < 3:
        return float("nan")
    xs = [s for s, _ in samples]
    ys = [m for _, m in samples]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        return float("nan")
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread * 600


async def soak_clients(
    up: RunningUp, tenants: list[str], counts: list[int], stop: asyncio.Event
) -> None:
    """One client per tenant first, each until its snapshot arrives, then the rest at once.

    The first subscriptions of a gateway must not run concurrently: redis-py's
    `PubSub.connect()` opens a connection per concurrent first caller and keeps only the last,
    so the others' SUBSCRIBEs are lost (those clients wait forever for a snapshot or never get an
    update, and the gateway then cannot close). Once the pub/sub connection exists, and each
    tenant's channel is subscribed, concurrent clients are fine."""
    from websockets.asyncio.client import connect

    async def client(index: int, subscribed: asyncio.Event) -> None:
        tenant = tenants[index % len(tenants)]
        url = f"{up.gateway}?token={up.token(tenant)}"
        async with connect(url, compression=None, ping_interval=None) as conn:
            subscribe = {"type": "subscribe", "channel": "kpi:update", "tenant": tenant}
            await conn.send(orjson.dumps(subscribe).decode())
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    frame = orjson.loads(await asyncio.wait_for(conn.recv(), 1.0))
                    if frame.get("type") == "error":
                        raise RuntimeError(f"soak client refused: {frame}")
                    counts[index] += 1
                    subscribed.set()

    first = []
    for index in range(min(len(tenants), len(counts))):
        subscribed = asyncio.Event()
        first.append(asyncio.create_task(client(index, subscribed)))
        await asyncio.wait_for(subscribed.wait(), worker_join_timeout_s)
    rest = [client(index, asyncio.Event()) for index in range(len(first), len(counts))]
    await asyncio.gather(*first, *rest)


async def soak(up: RunningUp, args: argparse.Namespace, load_tenant: str) -> dict[str, Any]:
    stop = asyncio.Event()
    counts = [0] * args.soak_clients
    clients = asyncio.create_task(soak_clients(up, list(demo_tenants), counts, stop))
    load: asyncio.Task[list[Sent]] | None = None
    if args.soak_rate > 0:
        await register_customers(up, load_tenant)
        seconds = args.soak_minutes * 60
        load = asyncio.create_task(
            open_loop(up, [load_tenant], args.soak_rate, seconds, args.mix, 0, record=False)
        )
    tansu = [pid for pid, name in child_pids(up.process.pid).items() if "tansu" in name]
    processes = {"ledger up (API, relay, gateway)": up.process.pid, "worker": up.worker_pid}
    if tansu:
        processes["tansu"] = tansu[0]
    processes[f"bench ({args.soak_clients} websocket clients)"] = os.getpid()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
    appended: list[tuple[float, float]] = []
    # The worker's store sweep: how old the oldest event its read models lack is, and how many
    # events it had to take from the store because Kafka did not deliver them.
    lag: list[tuple[float, float, float]] = []
    started = time.monotonic()
    end = started + args.soak_minutes * 60
    while time.monotonic() < end:
        elapsed = time.monotonic() - started
        for name, pid in processes.items():
            value = rss_mib(pid)
            if value is not None:
                samples[name].append((elapsed, value))
        appended.append((elapsed, events_appended(up)))
        lag.append(
            (
                elapsed,
                metric_value(up.worker_metrics, "ledger_projection_lag_seconds"),
                metric_value(up.worker_metrics, "ledger_projection_events_from_store_total"),
            )
        )
        if clients.done():
            clients.result()  # a client that failed says why
        if len(appended) % 6 == 1:
            line = ", ".join(f"{n.split(' ')[0]} {s[-1][1]:.0f}" for n, s in samples.items() if s)
            log(f"  soak {elapsed / 60:.1f} min: RSS MiB {line}; appended {appended[-1][1]:,.0f}")
        await asyncio.sleep(
            max(0.0, started + len(appended) * soak_sample_interval_s - time.monotonic())
        )
    stop.set()
    await clients
    sent = await load if load is not None else []
    return {
        "minutes": args.soak_minutes,
        "samples": samples,
        "appended": appended,
        "frames": counts,
        "load_sent": int(args.soak_rate * args.soak_minutes * 60),
        "load_failed": len(sent),
        "projection_lag": lag,
    }


def events_appended(up: RunningUp) -> float:
    return metric_value(f"{up.api}/metrics", "ledger_events_appended_total", up.token())


def metric_value(url: str, name: str, token: str | None = None) -> float:
    """One unlabelled sample of a Prometheus endpoint (NaN when it cannot be read)."""
    try:
        text = _get(url, token).decode()
    except OSError:
        return float("nan")
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else float("nan")


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    load_tenant = f"soak{secrets.token_hex(3)}"
    log(f"soak: ledger up --demo for {args.soak_minutes:g} min, extra load {args.soak_rate:g}/s")
    with system(args.database_url, args.redis_url, [*demo_tenants, load_tenant]) as (url, folder):
        load_start = load_average()
        up = asyncio.run(start_up(url, args.redis_url, folder, demo=True))
        try:
            result = asyncio.run(soak(up, args, load_tenant))
        finally:
            problem = stop_up(up, args.keep_logs)
        output = up.log_path.read_text(errors="replace")
        result.update(
            stop=problem or "clean",
            load_before=load_start,
            load_after=load_average(),
            # faust's own report of a partition it stopped consuming, and the sweep's mends
            consumer_stalled_lines=output.count("Stream stopped processing"),
            sweep_lines=output.count("events from the store"),
        )
    print_soak_progress(result)
    log(
        f"  worker log: {result['consumer_stalled_lines']} 'Stream stopped processing' lines,"
        f" {result['sweep_lines']} store sweep warnings"
    )
    return result


def print_soak_progress(result: dict[str, Any]) -> None:
    log(f"  soak done: frames per client {_frames_per_tenant(result['frames'])}")
    lags = [seconds for _, seconds, _ in result["projection_lag"] if seconds == seconds]
    from_store = [count for _, _, count in result["projection_lag"] if count == count]
    log(
        f"  projection lag (the worker's store sweep): max {max(lags, default=float('nan')):.1f} s,"
        f" {from_store[-1] if from_store else float('nan'):,.0f} events applied from the store"
    )


def _frames_per_tenant(frames: list[int]) -> str:
    parts = []
    for index, tenant in enumerate(demo_tenants):
        mine = frames[index :: len(demo_tenants)]
        if mine:
            parts.append(f"{tenant} {min(mine):,}-{max(mine):,} ({len(mine)} clients)")
    return ", ".join(parts)


def soak_table(result: dict[str, Any], warmup_minutes: float) -> str:
    lines = [
        f"| process | RSS start MiB | end MiB | max MiB | slope after {warmup_minutes:.2g} min"
        " (MiB per 10 min) |",
        "|---|---|---|---|---|",
    ]
    for name, samples in result["samples"].items():
        if not samples:
            continue
        steady = [(s, m) for s, m in samples if s >= warmup_minutes * 60]
        lines.append(
            f"| {name} | {samples[0][1]:,.1f} | {samples[-1][1]:,.1f}"
            f" | {max(m for _, m in samples):,.1f} | {slope_mib_per_10_min(steady):+.2f} |"
        )
    appended = result["appended"]
    steady_appended = [(s, n) for s, n in appended if s >= warmup_minutes * 60]
    if len(steady_appended) > 1:
        span = steady_appended[-1][0] - steady_appended[0][0]
        rate = (steady_appended[-1][1] - steady_appended[0][1]) / max(span, 1e-9)
        lines.append("")
        lines.append(
            f"Events appended: {appended[-1][1]:,.0f} in all (the demo's history first), "
            f"{rate:,.1f}/s after the warm-up. Frames per websocket client: "
            f"{_frames_per_tenant(result['frames'])}. Extra HTTP load: "
            f"{result['load_sent']:,} sent, {result['load_failed']} failed. Load average "
            f"{result['load_before']} -> {result['load_after']}. `ledger up` stopped:"
            f" {result['stop']}."
        )
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", choices=("all", "latency", "soak"), default="all")
    parser.add_argument(
        "--database-url", default=database_url_default, help="a server to create databases on"
    )
    parser.add_argument("--redis-url", default=redis_url_default, help="a spare Redis database")
    parser.add_argument("--rates", default="50,200,500,1000", help="events/s, comma separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per rate")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--tenants", type=int, default=1, help="tenants the load goes to")
    parser.add_argument("--mix", choices=("paid", "invoices"), default="paid")
    parser.add_argument("--no-tap", dest="tap", action="store_false", help="no broker consumer")
    parser.add_argument(
        "--no-trace", dest="trace", action="store_false", help="no timestamps from the worker"
    )
    parser.add_argument(
        "--fetch-wait-ms",
        type=int,
        default=0,
        help="LEDGER_KAFKA_FETCH_MAX_WAIT_MS for ledger up (default: its own)",
    )
    parser.add_argument("--soak-minutes", type=float, default=30.0)
    parser.add_argument("--soak-warmup-minutes", type=float, default=None)
    parser.add_argument(
        "--soak-rate", type=float, default=50.0, help="HTTP events/s beside the demo"
    )
    parser.add_argument("--soak-clients", type=int, default=soak_client_count)
    parser.add_argument(
        "--source",
        default="HEAD",
        help="the commit whose src/ runs (exported; default HEAD), or worktree",
    )
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep-logs", type=Path, help="copy each `ledger up` log to this folder")
    args = parser.parse_args()
    args.rates = [float(rate) for rate in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        code = export_source(args.source, Path(folder))
        log(f"code under test: {code}; load average at the start: {load_average()}")
        output = run(args, code)
    log(f"load average at the end: {load_average()}")
    if args.json:
        args.json.write_bytes(orjson.dumps(output, default=str, option=orjson.OPT_INDENT_2))


def run(args: argparse.Namespace, code: str) -> dict[str, Any]:
    output: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "code": code}
    output["args"] = {name: str(value) for name, value in vars(args).items()}
    if args.what in ("all", "latency"):
        output["latency"] = run_latency(args)
        print(latency_tables(output["latency"]))
        print()
    if args.what in ("all", "soak"):
        warmup = args.soak_warmup_minutes
        if warmup is None:
            warmup = min(5.0, args.soak_minutes / 3)
        output["soak"] = run_soak(args)
        print(soak_table(output["soak"], warmup))
    return output


if __name__ == "__main__":
    main()
