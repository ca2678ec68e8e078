"""Replay benchmark: `ledger replay` of every projection over realistic events, events/s and memory.

    python3 dev.py bench replay [--database-url URL] [--events 100000,1000000] [--cprofile N]

Each size runs on a fresh database (CREATE DATABASE bench_<hex>, dropped after):
1. seed: blocks of the read-model tests' every-kind scenario (`tests/projections/scenario.py`:
   contracts signed, amended and cancelled, ratable and point-in-time lines, invoices tied to
   contracts and not, payments allocated explicitly and oldest-first, credit notes, a refund, a
   write-off, a void, expenses, a manual journal entry), with their ids made unique per block and
   their dates shifted, appended through `LedgerService` (validated, with the ledger's allocation
   decisions in the metadata) for a few base tenants; then copied by SQL into more tenants,
   interleaved position by position, until the store holds N events. Copies keep each event's
   data and metadata, so every copy is as valid as its original, and seeding 1M events takes
   seconds instead of the minutes validation would;
2. replays of all projections (or `--projection`), each with the number of fold processes given
   by `--processes` (default: replay's own choice, one per core; then 1, in process): the first
   over empty live tables, the next ones over the tables the previous one swapped in (as in
   production). Each runs in a child process, so its peak RSS is replay's own; with fold
   processes, the largest one's peak RSS is reported too. `--sources PARENT,HEAD` runs each of
   them with each commit's `src/` in turn, each on its own file copy of the seeded database:
   alternated, as every comparison of two commits here should be. A commit whose read-model
   migrations end before the seed's (the working tree's) gets its copy without read models, and
   creates them its own way (its first replay is then into empty tables, as every source's is).

After each replay the rebuilt tables are checked: projection positions equal the store's last
position per tenant, the journal balances, and no `__rebuild` or `__old` table is left.
The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import json
import logging
import os
import platform
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import conninfo_to_dict

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.databases import fresh_database  # noqa: E402
from bench.sources import export_src  # noqa: E402
from tests.projections.scenario import everything  # noqa: E402

from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore, configure_connection  # noqa: E402
from projections.core import ProjectedEvent, ProjectionWriter  # noqa: E402
from projections.registry import select  # noqa: E402
from projections.replay import replay  # noqa: E402
from projections.tables import metadata  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Tenants whose events go through validation; the rest are copies of theirs.
base_tenants = 4
# Events appended through the service at most (a few seconds per 10,000).
base_events_max = 40_000
# Events per append call: the service's batched path.
append_batch_events = 1000
# Dates move by up to this many days from one block to the next, so daily totals spread out.
date_shift_days_max = 360

_id_fields = {
    "customer_id",
    "contract_id",
    "invoice_id",
    "payment_id",
    "credit_note_id",
    "expense_id",
    "entry_id",
}
_date_fields = {
    "date",
    "issue_date",
    "due_date",
    "start_date",
    "end_date",
    "effective_date",
    "incurred_date",
}


def progress(message: str) -> None:
    print(f"replay bench: {message}", file=sys.stderr, flush=True)


def _rewrite(value: Any, suffix: str, shift: datetime.timedelta) -> Any:
    if isinstance(value, list):
        return [_rewrite(item, suffix, shift) for item in value]
    if not isinstance(value, dict):
        return value
    rewritten: dict[str, Any] = {}
    for key, item in value.items():
        if key in _id_fields and isinstance(item, str):
            rewritten[key] = f"{item}-{suffix}"
        elif key in _date_fields and isinstance(item, str):
            rewritten[key] = (datetime.date.fromisoformat(item) + shift).isoformat()
        else:
            rewritten[key] = _rewrite(item, suffix, shift)
    return rewritten


def block(tenant: str, number: int) -> list[dict[str, Any]]:
    """The every-kind scenario once more for `tenant`, its ids unique to block `number`."""
    shift = datetime.timedelta(days=(number * 7) % date_shift_days_max)
    events = []
    for event in everything(tenant):
        copy = dict(event)
        copy["id"] = f"{tenant}-{number}-{event['id']}"
        copy["data"] = _rewrite(event["data"], str(number), shift)
        events.append(copy)
    return events


async def seed(url: str, total: int) -> None:
    """Fill the store with `total` events: validated base tenants, then interleaved copies."""
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    base = min(total, base_events_max)
    per_tenant = base // base_tenants
    started = time.perf_counter()
    pending: list[dict[str, Any]] = []
    for tenant_index in range(base_tenants):
        tenant = f"base{tenant_index}"
        events: list[dict[str, Any]] = []
        number = 0
        while len(events) < per_tenant:
            number += 1
            events.extend(block(tenant, number))
        pending.extend(events[:per_tenant])
    for start in range(0, len(pending), append_batch_events):
        report = await service.append(pending[start : start + append_batch_events])
        assert not report.rejected, report.rejected[:3]
    appended = await store.head()
    await store.close()
    progress(
        f"appended {appended:,} events through the service in {time.perf_counter() - started:.1f} s"
    )
    copies = -(-total // appended) - 1  # ceiling, minus the originals
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        if copies > 0:
            # Copy k of the event at position p lands at head + (p - 1) * copies + k: the copies'
            # tenants interleave event by event, as many publishers' appends would.
            await conn.execute(
                "INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id,"
                " type, time, recorded_at, data, metadata, hash)"
                " SELECT %(head)s + (e.position - 1) * %(copies)s + k, e.tenant_id || '-copy' || k,"
                " e.stream_id, e.stream_version, e.event_id, e.type, e.time, e.recorded_at,"
                " e.data, e.metadata, e.hash"
                " FROM events e CROSS JOIN generate_series(1, %(copies)s) AS k"
                " WHERE e.position <= %(head)s AND %(head)s + (e.position - 1) * %(copies)s + k"
                " <= %(total)s",
                {"head": appended, "copies": copies, "total": total},
            )
        cursor = await conn.execute("SELECT max(position), count(*) FROM events")
        row = await cursor.fetchone()
        assert row is not None and row[0] == row[1] == total, (row, total)
        await conn.execute("UPDATE ledger_position SET head = %s", [total])
        await conn.execute("VACUUM ANALYZE events")
    progress(f"seeded {total:,} events in {time.perf_counter() - started:.1f} s")


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s() -> float:
    """CPU time of this process and of its children that have ended (the fold processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class _Steps(logging.Handler):
    """The seconds at which replay logged each step ("folded", "indexed", "caught up", ...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.at_s: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        found = re.match(r"replay: (.+) to position \d+ at ([\d.]+) s", record.getMessage())
        if found:
            self.at_s[found.group(1)] = float(found.group(2))


async def run_replay(
    url: str, names: list[str] | None, processes: int, profile_lines: int
) -> dict[str, Any]:
    """The measuring child's work: replay, then check what it built."""
    store = await PostgresEventStore.open(url)
    conn = await AsyncConnection.connect(url, autocommit=True)
    await configure_connection(conn)
    projectors = select(names)
    steps = _Steps()
    logging.getLogger("projections.replay").addHandler(steps)
    logging.getLogger("projections.replay").setLevel(logging.INFO)
    rss_before_mib = _rss_mib()
    last = [0.0]

    def show(position: int, head: int, elapsed_s: float) -> None:
        if elapsed_s - last[0] >= 10:
            last[0] = elapsed_s
            progress(f"  {position:,}/{head:,} at {position / elapsed_s:,.0f} events/s")

    profiler = cProfile.Profile() if profile_lines else None
    cpu_before_s = _cpu_s()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    folded = await replay(store, conn, projectors, show, processes=processes or None)
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    cpu_s = _cpu_s() - cpu_before_s
    head = await store.head()
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        cursor = await conn.execute(
            "SELECT count(*) FROM (SELECT tenant_id, max(position) AS last FROM events"
            " GROUP BY tenant_id) e JOIN projection_state s USING (tenant_id)"
            " WHERE s.projection = ANY(%s) AND s.position <> e.last",
            [[projector.name for projector in projectors]],
        )
        behind = (await cursor.fetchone() or [0])[0]
        cursor = await conn.execute("SELECT sum(debit) = sum(credit), count(*) FROM gl_lines")
        balanced, gl_lines = await cursor.fetchone() or (None, 0)
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%%\\_\\_rebuild'"
            " OR relname LIKE '%%\\_\\_old'"
        )
        leftovers = (await cursor.fetchone() or [0])[0]
    await conn.close()
    await store.close()
    assert folded == head, (folded, head)
    assert behind == 0, f"{behind} projection positions differ from the store"
    assert balanced in (True, None) and leftovers == 0, (balanced, leftovers)
    if profiler:
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(profile_lines)
    return {
        "events": folded,
        "seconds": elapsed,
        "events_per_s": folded / elapsed,
        "cpu_us_per_event": cpu_s / folded * 1e6,
        "steps_s": steps.at_s,
        "gl_lines": gl_lines,
        "rss_before_mib": rss_before_mib,
        "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "fold_child_rss_peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


async def apply_probe(url: str, count: int, batch: int) -> dict[str, Any]:
    """The live writer's cost on this store: `count` new events (blocks of the scenario for a new
    tenant and for `base0`, an existing one, alternately by block), appended through the service,
    then applied by `ProjectionWriter` (all projectors, batches of `batch` events, as the worker
    applies them) over the read models the replays built. Events/s of the apply alone.

    A CHECKPOINT first: right after a replay of 1M events PostgreSQL still writes back gigabytes of
    the rebuilt tables, and a probe run meanwhile measured that (0.61x at 1M in stop 11's run; the
    same store probed minutes later applied as fast as at 10k)."""
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    first = await store.head() + 1
    events: list[dict[str, Any]] = []
    number = 100_000  # block numbers no seeded block used: fresh ids in `base0`
    while len(events) < count:
        number += 1
        events.extend(block("probe" if number % 2 else "base0", number))
    events = events[:count]
    for start in range(0, count, append_batch_events):
        report = await service.append(events[start : start + append_batch_events])
        assert not report.rejected, report.rejected[:3]
    recorded = []
    for tenant in ("probe", "base0"):
        position = first
        while page := await store.read(tenant, position, count):  # pages end at a size too
            recorded += page
            position = page[-1].position + 1
    await store.close()
    async with await AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute("CHECKPOINT")
    projected = sorted(
        (ProjectedEvent.from_recorded(event) for event in recorded),
        key=lambda event: event.position,
    )
    conn = await AsyncConnection.connect(url, autocommit=True)
    await configure_connection(conn)
    writer = ProjectionWriter(conn, select(None))
    seconds = []
    for start in range(0, len(projected), batch):
        started = time.perf_counter()
        await writer.apply(projected[start : start + batch])
        seconds.append(time.perf_counter() - started)
    await conn.close()
    seconds.sort()
    return {
        "events": len(projected),
        "events_per_s": len(projected) / sum(seconds),
        "batch_median_ms": seconds[len(seconds) // 2] * 1000,
        "batch_p95_ms": seconds[int(len(seconds) * 0.95)] * 1000,
    }


def export_sources(revisions: list[str], folder: Path) -> dict[str, Path]:
    """revision -> the `src/` replay runs from: the working tree's for "worktree", else that
    commit's, exported with git archive (so two commits alternate on one seeded database)."""
    sources = {}
    for revision in revisions:
        if revision == "worktree":
            sources[revision] = root / "src"
            continue
        commit, source = export_src(revision, folder / revision)
        sources[commit] = source
    return sources


def _revisions(source: Path) -> set[str]:
    """The read-model migration revisions `source` (a `src/` folder) knows."""
    found = set()
    for path in (source / "projections" / "migrations" / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r'^revision = "([^"]+)"', text, re.MULTILINE)
        if revision:
            found.add(revision.group(1))
    return found


def prepare_copy(url: str, source: Path) -> None:
    """Make a copy of the seeded store fit for `source`: when its migrations do not know the
    revision the read models are at (an older commit than the working tree that seeded them),
    drop the read models, which it then creates its own way; the events stay as they are."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT version_num FROM read_model_migrations").fetchone()
        if row is None or row[0] in _revisions(source):
            return
        for name in [*metadata.tables, "read_model_migrations"]:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        conn.execute("DELETE FROM projection_state")


def measure(
    url: str, names: list[str] | None, processes: int, profile_lines: int, source: Path
) -> dict[str, Any]:
    """Replay in a child process, so that peak RSS is replay's alone (and its fold children's),
    running the projections of `source` (a `src/` folder)."""
    command = [sys.executable, __file__, "--child", url, "--cprofile", str(profile_lines)]
    command += ["--processes", str(processes)]
    for name in names or []:
        command += ["--projection", name]
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(source), str(root), environment.get("PYTHONPATH", "")]
    )
    finished = subprocess.run(command, env=environment, stdout=subprocess.PIPE, check=True)
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--events", default="100000,1000000", help="sizes, comma-separated")
    parser.add_argument("--projection", action="append", help="only these (default: all)")
    parser.add_argument(
        "--processes",
        default="0,1",
        help="fold processes of each measured replay, comma-separated; 0: replay's default",
    )
    parser.add_argument("--cprofile", type=int, default=0, help="print the N costliest functions")
    parser.add_argument(
        "--apply-events",
        type=int,
        default=5000,
        help="after the replays, events applied by the live writer (0: none)",
    )
    parser.add_argument("--apply-batch", type=int, default=100, help="events per live batch")
    parser.add_argument(
        "--sources",
        default="worktree",
        help="whose src/ each measured replay runs, comma-separated commits (alternated on the"
        " same seeded database) or worktree (the default)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        from ledger.runtime import settle_memory

        settle_memory()  # as `ledger replay` runs (ledger.cli)
        result = asyncio.run(
            run_replay(args.child, args.projection, int(args.processes), args.cprofile)
        )
        print(json.dumps(result))
        return
    sizes = [int(size) for size in args.events.split(",")]
    processes = [int(count) for count in args.processes.split(",")]
    load = os.getloadavg()
    rows = []
    applied = []
    folder = tempfile.TemporaryDirectory()
    sources = export_sources(args.sources.split(","), Path(folder.name))
    for size in sizes:
        with fresh_database(args.database_url) as url, contextlib.ExitStack() as copies:
            asyncio.run(seed(url, size))
            # One database per source: the seeded one, or file copies of it for two or more.
            urls = {}
            for code, source in sources.items():
                urls[code] = (
                    url
                    if len(sources) == 1
                    else copies.enter_context(
                        fresh_database(args.database_url, template=conninfo_to_dict(url)["dbname"])
                    )
                )
                prepare_copy(urls[code], source)
            replayed: set[str] = set()
            for count in processes:
                for code, source in sources.items():
                    result = measure(urls[code], args.projection, count, args.cprofile, source)
                    progress(f"replay ({code}): {result}")
                    rows.append(
                        (size, count, "full" if code in replayed else "empty", result, code)
                    )
                    replayed.add(code)
            if args.apply_events and not args.projection:
                last = urls[list(sources)[-1]]  # over the read models the last source built
                probe = asyncio.run(apply_probe(last, args.apply_events, args.apply_batch))
                progress(f"live apply: {probe}")
                applied.append((size, probe))
    folder.cleanup()
    print(
        f"Replay benchmark, {datetime.date.today()}, {platform.node()} ({os.cpu_count()} cores),"
        f" load average (1, 5, 15 min) {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start,"
        f" {os.getloadavg()[0]:.2f} at the end"
    )
    print()
    print(
        "| events | code | projections | fold processes | live tables | replay | events/s"
        " | Python CPU per event | fold / indexes / catch-up and swap"
        " | peak RSS: replay (before), largest fold process |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, count, live, result, code in rows:
        at = result["steps_s"]
        steps = (
            f"{at['folded']:.1f} / {at['indexed'] - at['folded']:.1f} /"
            f" {at['swapped'] - at['indexed']:.1f} s"
        )
        print(
            f"| {size:,} | {code} | {', '.join(args.projection or ['all'])} | {count or 'default'}"
            f" | {live} |"
            f" {result['seconds']:.1f} s | {result['events_per_s']:,.0f} |"
            f" {result['cpu_us_per_event']:.0f} us | {steps} |"
            f" {result['rss_peak_mib']:,.0f} MiB ({result['rss_before_mib']:,.0f} MiB),"
            f" {result['fold_child_rss_peak_mib']:,.0f} MiB |"
        )
    if applied:
        print()
        print(
            f"The live writer on the replayed store (`ProjectionWriter.apply`, all projectors,"
            f" batches of {args.apply_batch}; half the events in a new tenant, half in an"
            " existing one):"
        )
        print()
        print("| store holds | events applied | events/s | batch median ms | batch p95 ms |")
        print("|---|---|---|---|---|")
        for size, probe in applied:
            print(
                f"| {size:,} | {probe['events']:,} | {probe['events_per_s']:,.0f} |"
                f" {probe['batch_median_ms']:.1f} | {probe['batch_p95_ms']:.1f} |"
            )


if __name__ == "__main__":
    main()
