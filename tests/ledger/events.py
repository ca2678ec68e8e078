"""Valid example events for tests: one builder per v1 type, each a plain CloudEvent dict."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

_counter = itertools.count(1)


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def cloud_event(tenant: str, kind: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": f"evt-{next(_counter)}-{uuid.uuid4().hex[:8]}",
        "source": "tests",
        "type": f"ledger.{kind}.v1",
        "time": "2026-01-15T10:00:00Z",
        "tenantid": tenant,
        "data": data,
    }
    event.update(extra)
    return event


def customer(tenant: str, customer_id: str = "C1", **extra: Any) -> dict[str, Any]:
    return cloud_event(
        tenant, "customer.registered", {"customer_id": customer_id, "name": "Acme Corp"}, **extra
    )


def invoice(
    tenant: str,
    invoice_id: str = "INV-1",
    customer_id: str = "C1",
    amount: str = "100.00",
    issue_date: str = "2026-01-15",
    due_date: str = "2026-02-14",
    currency: str = "USD",
    **extra: Any,
) -> dict[str, Any]:
    return cloud_event(
        tenant,
        "invoice.issued",
        {
            "invoice_id": invoice_id,
            "customer_id": customer_id,
            "issue_date": issue_date,
            "due_date": due_date,
            "currency": currency,
            "lines": [{"description": "Subscription", "amount": amount}],
            "total": amount,
        },
        **extra,
    )


def payment(
    tenant: str,
    payment_id: str = "PAY-1",
    customer_id: str = "C1",
    amount: str = "100.00",
    date: str = "2026-01-20",
    allocations: list[dict[str, str]] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "customer_id": customer_id,
        "date": date,
        "amount": amount,
        "currency": "USD",
    }
    if allocations is not None:
        data["allocations"] = allocations
    return cloud_event(tenant, "payment.received", data, **extra)
