"""Automatic allocation against a customer's open invoices: how a payment's append grows with them.

    python3 dev.py bench allocation [--database-url URL] [--open-invoices 10000] [--payments 15]

On a fresh database, two customers of one tenant: one with 8 open invoices, one with
`--open-invoices` (appended in batches of 1,000). Then payments without allocations (the ledger
allocates them oldest due date first), appended one per call through `LedgerService` as a
service would, alternately `--payments` for each customer, twice: the median latency per
customer. Each payment allocates 0.50 to the oldest open invoice, so every invoice stays open and
the second round sees the same count. The table goes to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root))

from bench.databases import fresh_database  # noqa: E402

from ledger.runtime import settle_memory  # noqa: E402
from ledger.service import LedgerService  # noqa: E402
from ledger.store.postgres import PostgresEventStore  # noqa: E402

default_url = (
    os.environ.get("LEDGER_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
)
tenant = "alloc"
small_customer_invoices = 8
batch_events = 1000


class Events:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        self.count += 1
        return {
            "specversion": "1.0",
            "id": f"{tenant}-{self.count}",
            "source": "bench/allocation",
            "type": f"ledger.{kind}.v1",
            "time": "2026-01-15T10:00:00Z",
            "tenantid": tenant,
            "data": data,
        }


async def run(url: str, open_invoices: int, payments: int) -> dict[str, list[float]]:
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    event = Events()

    async def append(events: list[dict[str, Any]]) -> None:
        report = await service.append(events)
        if not report.ok:
            raise RuntimeError(f"rejected: {report.rejected[:2]}")

    customers = {"small": small_customer_invoices, "large": open_invoices}
    try:
        for customer, count in customers.items():
            await append(
                [event("customer.registered", {"customer_id": customer, "name": customer})]
            )
            for start in range(0, count, batch_events):
                await append(
                    [
                        event(
                            "invoice.issued",
                            {
                                "invoice_id": f"{customer}-{index}",
                                "customer_id": customer,
                                "issue_date": "2026-01-01",
                                "due_date": f"2026-02-{1 + index % 28:02d}",
                                "currency": "USD",
                                "lines": [{"description": "Usage", "amount": "100.00"}],
                                "total": "100.00",
                            },
                        )
                        for index in range(start, min(start + batch_events, count))
                    ]
                )
            print(f"allocation bench: {customer}: {count:,} open invoices", file=sys.stderr)
        latencies: dict[str, list[float]] = {customer: [] for customer in customers}
        for _round in range(2):
            for customer in customers:
                for _ in range(payments):
                    payment = event(
                        "payment.received",
                        {
                            "payment_id": f"P{event.count + 1}",
                            "customer_id": customer,
                            "date": "2026-01-20",
                            "amount": "0.50",
                            "currency": "USD",
                        },
                    )
                    started = time.perf_counter()
                    await append([payment])
                    latencies[customer].append((time.perf_counter() - started) * 1000)
        return latencies
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=default_url)
    parser.add_argument("--open-invoices", type=int, default=10_000)
    parser.add_argument("--payments", type=int, default=15)
    args = parser.parse_args()
    settle_memory()  # as `ledger` commands run
    with fresh_database(args.database_url) as url:
        latencies = asyncio.run(run(url, args.open_invoices, args.payments))
    print("| customer's open invoices | payments | median ms | p90 ms |")
    print("|---|---|---|---|")
    for customer, count in (("small", small_customer_invoices), ("large", args.open_invoices)):
        values = sorted(latencies[customer])
        print(
            f"| {count:,} | {len(values)} | {statistics.median(values):.2f} |"
            f" {values[int(len(values) * 0.9)]:.2f} |"
        )


if __name__ == "__main__":
    main()
