"""KPI states benchmark: what the worker's publisher spends on one tenant's KPI state after each
small batch, on the reports benchmark's tenant (100,000 open invoices), with the parts no batch
changed kept (`projections.live.KpiParts`) and read whole, alternated on the same batches.

Needs the reports benchmark's kept database (`python bench/reports.py --keep-database NAME
--skip-apply` makes it once); each run works on a copy. Per batch: append it (the HTTP path's
`LedgerService`), apply it with the worker's `ProjectionWriter` and tell `KpiParts` what it
changed, then time `kpi_body` both ways, in alternating order, each on a long-lived connection
as the publisher's. Every pair of states is compared: they must be the same to the character.

    python bench/kpi_states.py --keep-database bench_reports_kept13 [--batches 200] [--size 4]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg.conninfo import make_conninfo

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench import databases  # noqa: E402
from bench.reports import as_of, report_tenant, tenant_events  # noqa: E402

from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore, configure_connection  # noqa: E402
from projections.core import ProjectedEvent, ProjectionWriter  # noqa: E402
from projections.live import KpiParts, kpi_body  # noqa: E402
from projections.registry import all_projectors  # noqa: E402
from projections.reports import KPI_PARTS, KpiCache, KpiSnapshot, Rows  # noqa: E402

default_url = os.environ.get("LEDGER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


class Spy:
    """A tenant's `KpiCache` that remembers which parts it offered."""

    def __init__(self, cache: KpiCache) -> None:
        self.cache = cache
        self.offered: set[str] = set()

    def reusable(self, positions: dict[str, int], day: date, digits: int) -> dict[str, Rows]:
        found = self.cache.reusable(positions, day, digits)
        self.offered = set(found)
        return found

    def computed(self, snapshot: KpiSnapshot) -> None:
        self.cache.computed(snapshot)


def quantile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def connect(url: str) -> AsyncConnection[Any]:
    conn = await AsyncConnection.connect(url, autocommit=True)
    await configure_connection(conn)
    return conn


async def measure(url: str, batches: int, size: int, warmup: int) -> dict[str, Any]:
    store = await PostgresEventStore.open(url)
    writer_conn, kept_conn, whole_conn = [await connect(url) for _ in range(3)]
    service = LedgerService(store)
    parts = KpiParts()
    # More invoices and payments for the tenant's customers (no contract events: 98.5% of the
    # reports mix), enough for every batch.
    events = tenant_events(
        report_tenant, 5000, 0, (batches + warmup) * size, prefix="L", register=False, seed=7
    )
    kept_ms: list[float] = []
    whole_ms: list[float] = []
    reused: dict[str, int] = dict.fromkeys(KPI_PARTS, 0)
    try:
        for number in range(batches + warmup):
            chunk = events[number * size : (number + 1) * size]
            if not chunk:
                break
            head = await store.head()
            report = await service.append(chunk)
            assert report.ok, report.as_json()
            recorded = await store.read(report_tenant, head + 1, 10_000)
            writer = ProjectionWriter(writer_conn, all_projectors())
            await writer.apply([ProjectedEvent.from_recorded(event) for event in recorded])
            parts.note(report_tenant, writer.touched[report_tenant])
            spy = Spy(parts.cache(report_tenant))
            timings: dict[str, float] = {}
            bodies: dict[str, Any] = {}
            order = ("kept", "whole") if number % 2 == 0 else ("whole", "kept")
            for way in order:
                started = time.perf_counter()
                if way == "kept":
                    bodies[way] = await kpi_body(kept_conn, report_tenant, as_of, kpi_cache=spy)
                else:
                    bodies[way] = await kpi_body(whole_conn, report_tenant, as_of)
                timings[way] = (time.perf_counter() - started) * 1000
            assert bodies["kept"] == bodies["whole"], number
            if number >= warmup:
                kept_ms.append(timings["kept"])
                whole_ms.append(timings["whole"])
                for name in spy.offered:
                    reused[name] += 1
    finally:
        for conn in (writer_conn, kept_conn, whole_conn):
            await conn.close()
        await store.close()
    return {"kept": kept_ms, "whole": whole_ms, "reused": reused, "batches": len(kept_ms)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--keep-database", required=True, metavar="NAME")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--size", type=int, default=4, help="events per batch")
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    template = args.keep_database
    make_conninfo(args.database_url, dbname=template)  # a valid name, or fail here
    with databases.fresh_database(args.database_url, template=template, prefix="bench_kpi") as url:
        found = asyncio.run(measure(url, args.batches, args.size, args.warmup))
    kept, whole = found["kept"], found["whole"]
    print(f"KPI state after each batch of {args.size} events, {found['batches']} batches,")
    print(f"tenant {report_tenant!r} of the reports benchmark ({template}), as of {as_of}:")
    print("| KPI state | median ms | p95 ms |")
    print("|---|---|---|")
    print(f"| read whole | {statistics.median(whole):.1f} | {quantile(whole, 0.95):.1f} |")
    print(f"| kept parts reused | {statistics.median(kept):.1f} | {quantile(kept, 0.95):.1f} |")
    ratio = statistics.median(whole) / statistics.median(kept)
    print(
        f"median ratio whole / kept: {ratio:.2f}x; states that reused each part: "
        + ", ".join(f"{name} {count}" for name, count in found["reused"].items())
    )
    today = date.today().isoformat()
    print(f"({today}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
