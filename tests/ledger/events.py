"""Tenant-first shorthands over `store_builders` for the entry-point tests (API, CLI, client, relay):
the same valid events, with the tenant set and any envelope attribute overridable."""

from __future__ import annotations

import uuid
from typing import Any

from tests.ledger import store_builders


def new_tenant() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def cloud_event(tenant: str, kind: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return store_builders.raw_event(kind, data, tenantid=tenant, **extra)


def customer(tenant: str, customer_id: str = "C1", **extra: Any) -> dict[str, Any]:
    return store_builders.customer(customer_id, tenantid=tenant, **extra)


def invoice(tenant: str, invoice_id: str = "INV-1", **fields: Any) -> dict[str, Any]:
    event = store_builders.invoice(invoice_id, **fields)
    event["tenantid"] = tenant
    return event


def payment(
    tenant: str,
    payment_id: str = "PAY-1",
    amount: str = "100.00",
    allocations: list[dict[str, str]] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    by_invoice = (
        None if allocations is None else {a["invoice_id"]: a["amount"] for a in allocations}
    )
    event = store_builders.payment(amount, payment_id, allocations=by_invoice, **fields)
    event["tenantid"] = tenant
    return event
