"""A realistic, valid event stream for benchmarks: customers, invoices with tax, and payments
(half auto-allocated oldest due date first, half allocated explicitly), per tenant."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any


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


def stream(tenant: str, count: int, invoices_per_customer: int = 8) -> Iterator[dict[str, Any]]:
    """`count` events for one tenant, each valid given the ones before it."""
    number = 0
    customer = 0
    while True:
        customer += 1
        customer_id = f"C{customer}"
        events: list[tuple[str, dict[str, Any]]] = [
            ("customer.registered", {"customer_id": customer_id, "name": f"Customer {customer}"})
        ]
        for index in range(invoices_per_customer):
            issue = date(2026, 1, 1) + timedelta(days=index)
            amount = f"{100 + index * 7}.50"
            tax = f"{(100 + index * 7) // 5}.10"
            total = str(Decimal(amount) + Decimal(tax))
            events.append(
                (
                    "invoice.issued",
                    {
                        "invoice_id": f"INV-{customer}-{index}",
                        "customer_id": customer_id,
                        "issue_date": issue.isoformat(),
                        "due_date": (issue + timedelta(days=30)).isoformat(),
                        "currency": "USD",
                        "lines": [
                            {"description": "Subscription", "amount": amount, "tax_amount": tax}
                        ],
                        "total": total,
                    },
                )
            )
            payment: dict[str, Any] = {
                "payment_id": f"PAY-{customer}-{index}",
                "customer_id": customer_id,
                "date": (issue + timedelta(days=10)).isoformat(),
                "amount": "50.00",
                "currency": "USD",
            }
            if index % 2:
                payment["allocations"] = [
                    {"invoice_id": f"INV-{customer}-{index}", "amount": "50.00"}
                ]
            events.append(("payment.received", payment))
        for kind, data in events:
            number += 1
            yield _event(tenant, number, kind, data)
            if number == count:
                return
