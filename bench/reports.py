"""Reports benchmark: report query latency with 100,000 open invoices in one tenant, and the cost of
projecting a batch as the read models grow (DESIGN section 9).

    python3 dev.py bench reports [--database-url URL] [--invoices 100000] [--quick] [--profile]
    python3 dev.py bench reports --keep-database bench_reports_kept [--rebuild] [--skip-apply]

One fresh database (CREATE DATABASE bench_reports_<hex>, dropped after):
1. small store: a tenant of ~10,000 realistic events appended through `LedgerService` and projected
   (`projections.replay.catch_up`), then 10,000 more appended and applied with
   `ProjectionWriter.apply` in batches of 1,000 (all projectors): events/s of `apply` alone;
2. the report tenant: ~5,000 customers, ~2,000 contracts with a ratable recurring line (a third also
   a point-in-time line) each billed up front, 100,000 invoices in all (contract invoices included)
   with due dates spread over the 200 days before the as-of date, a quarter of them partly paid
   (explicit allocation), some contracts amended or cancelled in the as-of month; plus filler
   tenants of the same mix until the store holds `--large` events; all appended through the service
   in batches of 1,000, projected by catch-up, then ANALYZE (the CI server runs autovacuum=off);
3. large store: 10,000 more events of a new tenant, and 10,000 more of the report tenant (new
   invoices and payments of its customers), applied as in 1;
4. each report (`projections.reports.report`) on a pooled connection of the store (the app role,
   row-level security on, as the HTTP API reads): warm-up, then `--runs` runs, median and p95;
5. with `--profile`: the slowest report timed query by query (SQL round trip and row decoding vs the
   Python around it), under cProfile, and EXPLAIN (ANALYZE, BUFFERS) of its costliest statements.
Invoices stay open (payments are partial), so the tenant has 100,000 open invoices on the as-of date.
The table goes to stdout, progress to stderr.

Loading takes most of a run (~10 minutes on 2 cores). `--keep-database NAME` loads steps 1-2 once
into NAME and keeps it; every run then works on a copy of it (`CREATE DATABASE ... TEMPLATE NAME`,
dropped after), so step 3's events never reach the kept data and every run measures the same
dataset. Step 1's apply runs in a small fresh database of its own then. `--rebuild` first brings
NAME to the current code: migrations, then `replay` of every projection (a new read model table, or
a projector that now writes more, starts filled). `--skip-apply` leaves out steps 1 and 3.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import platform
import pstats
import random
import statistics
import sys
import time
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import make_conninfo

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench import databases  # noqa: E402

from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore, configure_connection  # noqa: E402
from projections import reports  # noqa: E402
from projections.core import ProjectedEvent, ProjectionWriter  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.replay import catch_up, replay  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
as_of = date(2026, 7, 20)
report_tenant = "reports"
append_batch = 1000
apply_batch = 1000
apply_events = 10_000
target_ms = 20.0
targeted = (
    "kpi",
    "ar-aging",
    "ar-aging limit=100",
    "ar-aging limit=100 after=C2500",
    "deferred-revenue",
    "deferred-revenue limit=100",
)


def progress(message: str) -> None:
    print(f"reports bench: {message}", file=sys.stderr, flush=True)


# --- events -------------------------------------------------------------------------------------


def _event(tenant: str, number: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{tenant}-{number}",
        "source": "bench",
        "type": f"ledger.{kind}.v1",
        "time": "2026-07-01T10:00:00Z",
        "tenantid": tenant,
        "data": data,
    }


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}"


def tenant_events(
    tenant: str,
    customers: int,
    contracts: int,
    invoices: int,
    *,
    prefix: str = "",
    register: bool = True,
    seed: int = 1,
) -> list[dict[str, Any]]:
    """A tenant's events, each valid given the ones before it. With `register=False` and a new
    `prefix`: more invoices and payments for the customers of an earlier call (no contracts)."""
    rng = random.Random(seed)
    raw: list[tuple[str, dict[str, Any]]] = []
    if register:
        raw += [
            ("customer.registered", {"customer_id": f"C{c}", "name": f"Customer {c}"})
            for c in range(customers)
        ]
    contract_lines: dict[str, list[dict[str, Any]]] = {}
    for k in range(contracts):
        contract_id = f"{prefix}K{k}"
        customer_id = f"C{k % customers}"
        start = as_of - timedelta(days=rng.randint(30, 229))
        end = start.replace(year=start.year + 1)
        amount = Decimal(rng.randint(12, 600) * 100)
        lines = [
            {
                "line_id": "L1",
                "description": "Platform",
                "amount": _money(amount),
                "recognition": "ratable",
                "recurring": True,
            }
        ]
        if k % 3 == 0:
            lines.append(
                {
                    "line_id": "L2",
                    "description": "Onboarding",
                    "amount": "500.00",
                    "recognition": "point_in_time",
                    "recurring": False,
                }
            )
        contract_lines[contract_id] = lines
        raw.append(
            (
                "contract.signed",
                {
                    "contract_id": contract_id,
                    "customer_id": customer_id,
                    "start_date": start.isoformat(),
                    "end_date": end.isoformat(),
                    "currency": "USD",
                    "lines": lines,
                },
            )
        )
        raw.append(
            (
                "invoice.issued",
                {
                    "invoice_id": f"{prefix}INV-K{k}",
                    "customer_id": customer_id,
                    "contract_id": contract_id,
                    "issue_date": start.isoformat(),
                    "due_date": (start + timedelta(days=30)).isoformat(),
                    "currency": "USD",
                    "lines": [
                        {"description": "Platform", "amount": _money(amount), "line_id": "L1"}
                    ],
                    "total": _money(amount),
                },
            )
        )
    invoice_totals: list[tuple[str, str, Decimal, date]] = []
    for n in range(invoices - contracts):
        customer_id = f"C{rng.randrange(customers)}"
        due = as_of - timedelta(days=rng.randint(0, 199))
        issue = due - timedelta(days=30)
        amount = Decimal(rng.randint(5000, 500_000)) / 100
        tax = (amount / 5).quantize(Decimal("0.01"))
        invoice_id = f"{prefix}INV-{n}"
        raw.append(
            (
                "invoice.issued",
                {
                    "invoice_id": invoice_id,
                    "customer_id": customer_id,
                    "issue_date": issue.isoformat(),
                    "due_date": due.isoformat(),
                    "currency": "USD",
                    "lines": [
                        {
                            "description": "Services",
                            "amount": _money(amount),
                            "tax_amount": _money(tax),
                        }
                    ],
                    "total": _money(amount + tax),
                },
            )
        )
        invoice_totals.append((invoice_id, customer_id, amount + tax, issue))
    # A quarter of the invoices partly paid (40 %), so every invoice stays open.
    for p, (invoice_id, customer_id, total, issue) in enumerate(invoice_totals[::4]):
        paid = _money(total * Decimal("0.4"))
        raw.append(
            (
                "payment.received",
                {
                    "payment_id": f"{prefix}PAY-{p}",
                    "customer_id": customer_id,
                    "date": min(issue + timedelta(days=10), as_of).isoformat(),
                    "amount": paid,
                    "currency": "USD",
                    "allocations": [{"invoice_id": invoice_id, "amount": paid}],
                },
            )
        )
    # MRR movements in the as-of month: 10 % of contracts expand, 5 % cancel.
    month_start = as_of.replace(day=1)
    for k in range(contracts):
        contract_id = f"{prefix}K{k}"
        effective = (month_start + timedelta(days=rng.randint(0, as_of.day - 1))).isoformat()
        if k % 10 == 1:
            lines = [dict(line) for line in contract_lines[contract_id]]
            lines[0]["amount"] = _money(Decimal(lines[0]["amount"]) * Decimal("1.25"))
            raw.append(
                (
                    "contract.amended",
                    {
                        "contract_id": contract_id,
                        "effective_date": effective,
                        "currency": "USD",
                        "lines": lines,
                    },
                )
            )
        elif k % 20 == 2:
            raw.append(
                (
                    "contract.cancelled",
                    {"contract_id": contract_id, "effective_date": effective},
                )
            )
    return [
        _event(tenant, number, kind, data)
        for number, (kind, data) in enumerate(raw, start=1 if register else 10_000_000)
    ]


def mix(tenant: str, invoices: int, seed: int) -> list[dict[str, Any]]:
    """The report tenant's proportions (1 customer per 20 invoices, 1 contract per 50)."""
    return tenant_events(
        tenant, max(invoices // 20, 1), max(invoices // 50, 1), invoices, seed=seed
    )


# --- the store ----------------------------------------------------------------------------------


async def append_all(service: LedgerService, events: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for start in range(0, len(events), append_batch):
        batch = events[start : start + append_batch]
        report = await service.append(batch, atomic=False)
        if report.rejected or len(report.appended) != len(batch):
            raise RuntimeError(f"rejected: {report.rejected[:3]}")
    return len(events) / (time.perf_counter() - started)


async def project_conn(store: PostgresEventStore) -> AsyncConnection[Any]:
    conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
    await configure_connection(conn)
    return conn


async def timed_apply(store: PostgresEventStore, conn: AsyncConnection[Any], first: int) -> dict:
    """Apply the store's events from `first` to its head with ProjectionWriter, in batches of
    1,000: events/s of `apply` alone (reading and decoding the events not counted)."""
    writer = ProjectionWriter(conn, all_projectors())
    rates, total_s, total = [], 0.0, 0
    position = first
    while True:
        events = await store.read(None, position, apply_batch)
        if not events:
            break
        projected = [ProjectedEvent.from_recorded(event) for event in events]
        started = time.perf_counter()
        await writer.apply(projected)
        elapsed = time.perf_counter() - started
        rates.append(len(projected) / elapsed)
        total_s += elapsed
        total += len(projected)
        position = events[-1].position + 1
    return {
        "events": total,
        "overall": total / total_s,
        "median_batch": statistics.median(rates),
        "min_batch": min(rates),
    }


async def analyze(url: str) -> None:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE")


async def read_model_rows(url: str) -> dict[str, int]:
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        out = {}
        for table in ("events", "gl_daily", "ar_invoices", "ar_changes", "dr_contracts"):
            cursor = await conn.execute(
                sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            )
            row = await cursor.fetchone()
            out[table] = int(row[0]) if row else 0
        return out


# --- reports ------------------------------------------------------------------------------------

# (name, kind, limit, after): the unpaged reports list every customer or contract; a page lists
# 100 of them (the middle page: after customer C2500, ids in code point order).
cases: list[tuple[str, str, int | None, str | None]] = [
    ("kpi", "kpi", None, None),
    ("ar-aging limit=100", "ar-aging", 100, None),
    ("ar-aging limit=100 after=C2500", "ar-aging", 100, "C2500"),
    ("ar-aging", "ar-aging", None, None),
    ("deferred-revenue limit=100", "deferred-revenue", 100, None),
    ("deferred-revenue", "deferred-revenue", None, None),
    ("trial-balance", "trial-balance", None, None),
    ("mrr-movements", "mrr-movements", None, None),
]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def time_reports(
    store: PostgresEventStore, runs: int, warmup: int
) -> dict[str, tuple[float, float, int]]:
    results = {}
    async with store.connection() as conn:
        for name, kind, limit, after in cases:
            for _ in range(warmup):
                await reports.report(conn, kind, report_tenant, as_of, limit=limit, after=after)
            samples = []
            for _ in range(runs):
                started = time.perf_counter()
                data = await reports.report(
                    conn, kind, report_tenant, as_of, limit=limit, after=after
                )
                samples.append((time.perf_counter() - started) * 1000)
            results[name] = (statistics.median(samples), percentile(samples, 0.95), len(samples))
            progress(f"{name}: median {results[name][0]:.1f} ms, p95 {results[name][1]:.1f} ms")
            if kind == "ar-aging":
                progress(f"  open invoices: {data['invoices_total']}, total {data['total']}")
            if kind == "kpi":
                progress(f"  kpis: {data['kpis']}")
    return results


async def profile_report(store: PostgresEventStore, name: str, runs: int) -> str:
    """Per-query wall time (execute + fetch) vs the rest, cProfile, and EXPLAIN ANALYZE."""
    kind, limit, after = next((k, lim, a) for n, k, lim, a in cases if n == name)
    queries: dict[str, list[float]] = {}
    captured: dict[str, Any] = {}
    original = reports._Reader._all

    original_many = reports._Reader.many

    async def timed(self: Any, query: str, params: Any) -> list[tuple[Any, ...]]:
        started = time.perf_counter()
        rows = await original(self, query, params)
        queries.setdefault(query, []).append(time.perf_counter() - started)
        captured[query] = params
        return rows

    async def one_by_one(self: Any, *asked: tuple[str, Any]) -> list[list[tuple[Any, ...]]]:
        # A report sends its queries together (pipeline mode); here they go one by one, so that
        # each can be timed: the total below is a little higher than the report's own.
        return [await self._all(query, params) for query, params in asked]

    out = io.StringIO()
    async with store.connection() as conn:
        reports._Reader._all = timed  # type: ignore[method-assign]
        reports._Reader.many = one_by_one  # type: ignore[method-assign]
        try:
            walls = []
            for _ in range(runs):
                started = time.perf_counter()
                await reports.report(conn, kind, report_tenant, as_of, limit=limit, after=after)
                walls.append(time.perf_counter() - started)
        finally:
            reports._Reader._all = original  # type: ignore[method-assign]
            reports._Reader.many = original_many  # type: ignore[method-assign]
        total = sum(walls)
        in_sql = sum(sum(v) for v in queries.values())
        print(
            f"{name}: {runs} runs, mean {total / runs * 1000:.1f} ms per report;"
            f" queries (execute + fetch + row decoding) {in_sql / runs * 1000:.1f} ms,"
            f" the rest (Python) {(total - in_sql) / runs * 1000:.1f} ms",
            file=out,
        )
        ranked = sorted(queries.items(), key=lambda item: -sum(item[1]))
        for query, times in ranked:
            print(
                f"  {sum(times) / runs * 1000:7.2f} ms/report, {len(times) // runs} call(s):"
                f" {' '.join(query.split())[:150]}",
                file=out,
            )
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(max(runs // 2, 3)):
            await reports.report(conn, kind, report_tenant, as_of, limit=limit, after=after)
        profiler.disable()
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats("tottime").print_stats(18)
        print("\ncProfile, by own time:", file=out)
        print("\n".join(stream.getvalue().splitlines()[6:]), file=out)
        for query, _ in ranked[:3]:
            async with conn.transaction():
                await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [report_tenant])
                cursor = await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query, captured[query])
                plan = "\n".join(row[0] for row in await cursor.fetchall())
            print(f"\nEXPLAIN ANALYZE {' '.join(query.split())[:120]}\n{plan}", file=out)
    return out.getvalue()


# --- main ---------------------------------------------------------------------------------------


def small_invoices(args: argparse.Namespace) -> int:
    return 2_000 if args.quick else 8_000  # invoices of a small tenant (~10,000 events)


async def small_store_apply(url: str, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Step 1: a tenant projected by catch-up, then another one applied batch by batch."""
    store = await PostgresEventStore.open(url)
    conn = await project_conn(store)
    service = LedgerService(store)
    try:
        await append_all(service, mix("small", small_invoices(args), seed=2))
        await catch_up(store, conn, all_projectors())
        head = await store.head()
        await append_all(service, mix("small2", small_invoices(args), seed=3))
        figures = await timed_apply(store, conn, head + 1)
        progress(f"apply at {head:,} events: {figures}")
        return head, figures
    finally:
        await conn.close()
        await store.close()


async def load_report_tenant(url: str, args: argparse.Namespace) -> float:
    """Step 2: the report tenant and the filler, projected by catch-up; returns its events/s."""
    store = await PostgresEventStore.open(url)
    conn = await project_conn(store)
    service = LedgerService(store)
    try:
        events = tenant_events(
            report_tenant, args.invoices // 20, args.invoices // 50, args.invoices, seed=1
        )
        progress(f"report tenant: {len(events):,} events")
        rate = await append_all(service, events)
        progress(f"appended at {rate:,.0f} events/s")
        filler = 0
        while await store.head() < args.large:
            filler += 1
            await append_all(service, mix(f"filler{filler}", 20_000, seed=10 + filler))
            progress(f"store head {await store.head():,}")
        started = time.perf_counter()
        head = await catch_up(store, conn, all_projectors())
        catch_up_rate = head / (time.perf_counter() - started)
        progress(f"caught up {head:,} events at {catch_up_rate:,.0f} events/s")
    finally:
        await conn.close()
        await store.close()
    await analyze(url)
    return catch_up_rate


async def rebuild(url: str) -> None:
    """Migrations, then every projection replayed: the kept data as the current code builds it."""
    store = await PostgresEventStore.open(url)  # runs the migrations
    conn = await project_conn(store)
    try:
        started = time.perf_counter()
        head = await replay(store, conn, all_projectors())
        progress(f"replayed {head:,} events in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()
        await store.close()
    await analyze(url)


async def measure(
    url: str, args: argparse.Namespace
) -> tuple[
    dict[str, tuple[float, float, int]], str, list[tuple[str, int, dict[str, Any]]], dict[str, int]
]:
    """Steps 4 and 3: the reports (before step 3 adds to the report tenant), then apply."""
    store = await PostgresEventStore.open(url)
    conn = await project_conn(store)
    service = LedgerService(store)
    applies: list[tuple[str, int, dict[str, Any]]] = []
    try:
        progress(f"load average before the reports: {os.getloadavg()}")
        results = await time_reports(store, args.runs, args.warmup)
        progress(f"load average after the reports: {os.getloadavg()}")
        profile = ""
        if args.profile:
            slowest = max(
                (name for name in results if name in targeted), key=lambda n: results[n][1]
            )
            profile = await profile_report(store, slowest, 20)
            if slowest != "kpi":
                profile += "\n" + await profile_report(store, "kpi", 20)
        large_head = await store.head()
        if not args.skip_apply:
            await append_all(service, mix("late", small_invoices(args), seed=4))
            large_new = await timed_apply(store, conn, large_head + 1)
            progress(f"apply at {large_head:,} events, new tenant: {large_new}")
            applies.append(("large store, new tenant", large_head, large_new))
            head = await store.head()
            more = tenant_events(
                report_tenant,
                args.invoices // 20,
                0,
                small_invoices(args),
                prefix="X",
                register=False,
                seed=5,
            )
            await append_all(service, more)
            large_big = await timed_apply(store, conn, head + 1)
            progress(f"apply at {head:,} events, report tenant: {large_big}")
            applies.append(("large store, the 100k-invoice tenant", head, large_big))
        rows = await read_model_rows(url)
        rows["store head at report time"] = large_head
    finally:
        await conn.close()
        await store.close()
    return results, profile, applies, rows


def print_results(
    args: argparse.Namespace,
    results: dict[str, tuple[float, float, int]],
    applies: list[tuple[str, int, dict[str, Any]]],
    rows: dict[str, int],
    catch_up_rate: float | None,
    profile: str,
) -> None:
    print(f"\n- {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"- as of {as_of}; rows: {rows}")
    if catch_up_rate is not None:
        print(f"- catch-up of the whole store: {catch_up_rate:,.0f} events/s\n")
    else:
        print(f"- a copy of the kept database {args.keep_database} (catch-up not measured)\n")
    print(
        f"| report ({args.runs} runs after {args.warmup} warm-up) | median ms | p95 ms | target |"
    )
    print("|---|---|---|---|")
    for name, (median, p95, _) in results.items():
        target = (
            f"p95 <= 20 ms: {'yes' if p95 <= target_ms else '**no**'}" if name in targeted else "-"
        )
        print(f"| {name} | {median:.1f} | {p95:.1f} | {target} |")
    if applies:
        print(
            "\n| ProjectionWriter.apply, batches of 1,000, all projectors | store holds | events"
            " applied | events/s overall | median batch | slowest batch |"
        )
        print("|---|---|---|---|---|---|")
    for label, at, figures in applies:
        print(
            f"| {label} | {at:,} | {figures['events']:,} | {figures['overall']:,.0f} |"
            f" {figures['median_batch']:,.0f} | {figures['min_batch']:,.0f} |"
        )
    if profile:
        print("\n```\n" + profile + "```")


async def run(args: argparse.Namespace, url: str) -> None:
    """Everything in one fresh database."""
    applies = []
    if not args.skip_apply:
        small_head, small_apply = await small_store_apply(url, args)
        applies.append(("small store, new tenant", small_head, small_apply))
    catch_up_rate = await load_report_tenant(url, args)
    results, profile, more, rows = await measure(url, args)
    print_results(args, results, applies + more, rows, catch_up_rate, profile)


def kept_database_exists(server_url: str, name: str) -> bool:
    admin = make_conninfo(server_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
    return found is not None


def run_on_kept_database(args: argparse.Namespace) -> None:
    """Steps 1-2 once into the kept database; each run measures a copy of it."""
    name = args.keep_database
    kept_url = make_conninfo(args.database_url, dbname=name)
    catch_up_rate = None
    if not kept_database_exists(args.database_url, name):
        admin = make_conninfo(args.database_url, dbname="postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            asyncio.run(small_store_apply(kept_url, args))
            catch_up_rate = asyncio.run(load_report_tenant(kept_url, args))
        except BaseException:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            raise
    elif args.rebuild:
        asyncio.run(rebuild(kept_url))
    applies = []
    if not args.skip_apply:
        with databases.fresh_database(args.database_url, prefix="bench_reports") as small_url:
            small_head, small_apply = asyncio.run(small_store_apply(small_url, args))
        applies.append(("small store, new tenant", small_head, small_apply))
    with databases.fresh_database(args.database_url, template=name, prefix="bench_reports") as url:
        results, profile, more, rows = asyncio.run(measure(url, args))
    print_results(args, results, applies + more, rows, catch_up_rate, profile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=300_000, help="store size before apply")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="5,000 invoices, a small store")
    parser.add_argument("--keep-database", metavar="NAME", help="load once into NAME, reuse it")
    parser.add_argument("--rebuild", action="store_true", help="replay the kept database first")
    parser.add_argument("--skip-apply", action="store_true", help="reports only (no steps 1, 3)")
    args = parser.parse_args()
    if args.quick:
        args.invoices, args.large, args.runs = 5_000, 20_000, 10
    if args.keep_database:
        run_on_kept_database(args)
        return
    with databases.fresh_database(args.database_url, prefix="bench_reports") as url:
        asyncio.run(run(args, url))


if __name__ == "__main__":
    main()
