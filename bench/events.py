"""A realistic, valid event stream for the benchmarks: customers, invoices with tax, and payments
(half allocated automatically, oldest due date first, half allocated explicitly), per tenant.

Every event is valid given the ones before it in the same tenant, so the ledger appends all of them
and rejects none; the benchmarks check that. The same CloudEvent dicts (as JSON bytes) are what the
`eventsourcing` reference and raw COPY store, so the bytes written are comparable.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

# One customer, then this many invoices and as many payments: 1 + 2 * 8 = 17 events per customer.
invoices_per_customer = 8


def _event(tenant: str, number: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{tenant}-{number}",
        "source": "bench",
        "type": f"ledger.{kind}.v1",
        "time": "2026-01-15T10:00:00Z",
        "tenantid": tenant,
        "data": data,
    }


def _customer_events(customer: int) -> list[tuple[str, dict[str, Any]]]:
    customer_id = f"C{customer}"
    events: list[tuple[str, dict[str, Any]]] = [
        (
            "customer.registered",
            {"customer_id": customer_id, "name": f"Customer {customer}"},
        )
    ]
    for index in range(invoices_per_customer):
        issue = date(2026, 1, 1) + timedelta(days=index)
        amount = f"{100 + index * 7}.50"
        tax = f"{(100 + index * 7) // 5}.10"
        total = str(Decimal(amount) + Decimal(tax))
        invoice = {
            "invoice_id": f"INV-{customer}-{index}",
            "customer_id": customer_id,
            "issue_date": issue.isoformat(),
            "due_date": (issue + timedelta(days=30)).isoformat(),
            "currency": "USD",
            "lines": [{"description": "Subscription", "amount": amount, "tax_amount": tax}],
            "total": total,
        }
        events.append(("invoice.issued", invoice))
        payment: dict[str, Any] = {
            "payment_id": f"PAY-{customer}-{index}",
            "customer_id": customer_id,
            "date": (issue + timedelta(days=10)).isoformat(),
            "amount": "50.00",
            "currency": "USD",
        }
        if index % 2:
            # Explicit allocation; the other half is allocated by the ledger, oldest due first.
            payment["allocations"] = [{"invoice_id": f"INV-{customer}-{index}", "amount": "50.00"}]
        events.append(("payment.received", payment))
    return events


def stream(tenant: str, count: int) -> Iterator[dict[str, Any]]:
    """`count` events for one tenant, each valid given the ones before it."""
    number = 0
    customer = 0
    while number < count:
        customer += 1
        for kind, data in _customer_events(customer):
            number += 1
            yield _event(tenant, number, kind, data)
            if number == count:
                return


def tenants_stream(prefix: str, tenants: int, count: int) -> list[dict[str, Any]]:
    """`count` events spread over `tenants` tenants, interleaved in blocks of one customer, as
    several publishers feeding one file would produce them."""
    per_tenant = [list(stream(f"{prefix}{index}", count // tenants)) for index in range(tenants)]
    per_tenant[0].extend(stream(f"{prefix}0-rest", count - sum(map(len, per_tenant))))
    block = 1 + 2 * invoices_per_customer
    events: list[dict[str, Any]] = []
    for start in range(0, max(map(len, per_tenant)), block):
        for events_of_tenant in per_tenant:
            events.extend(events_of_tenant[start : start + block])
    return events


def write_lines(path: Path, events: list[dict[str, Any]]) -> None:
    with path.open("wb") as handle:
        for event in events:
            handle.write(orjson.dumps(event) + b"\n")


def originator_id(event: dict[str, Any]) -> uuid.UUID:
    """The aggregate an `eventsourcing` application would keep this event in: the same entity the
    ledger's stream is (customer/C1, invoice/INV-1-0, payment/PAY-1-0), per tenant."""
    data = event["data"]
    for key, prefix in (
        ("payment_id", "payment"),
        ("invoice_id", "invoice"),
        ("customer_id", "customer"),
    ):
        if key in data:
            return uuid.uuid5(uuid.NAMESPACE_URL, f"{event['tenantid']}/{prefix}/{data[key]}")
    raise ValueError(f"no entity key in {event['type']}")
