"""A tenant's worth of every kind of event, for the read model tests: contracts (ratable and point
in time, amended and cancelled), invoices tied to them and not, payments (explicit, oldest due
first, over-paying), a refund, credit notes before and after payment, a write-off, a void, expenses
and a manual journal entry."""

from __future__ import annotations

from typing import Any

from tests.ledger import store_builders as b


def with_tenant(tenant: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**event, "tenantid": tenant} for event in events]


def journal(entry_id: str, date: str, lines: list[tuple[str, str, str]]) -> dict[str, Any]:
    return b.raw_event(
        "journal.posted",
        {
            "entry_id": entry_id,
            "date": date,
            "memo": "opening balances",
            "currency": "USD",
            "lines": [
                {"account": account, **({"debit": debit} if debit else {"credit": credit})}
                for account, debit, credit in lines
            ],
        },
    )


def everything(tenant: str) -> list[dict[str, Any]]:
    events = [
        journal("J-1", "2026-01-01", [("cash", "5000.00", ""), ("equity", "", "5000.00")]),
        b.customer("C1"),
        b.customer("C2"),
        b.contract("K1", "C1", "2026-01-01", "2027-01-01"),
        b.contract("K2", "C2", "2026-01-15", "2026-07-15"),
        b.invoice(
            "INV-1", "C1", "1200.00", "2026-01-01", "2026-01-31", contract_id="K1", line_id="L1"
        ),
        b.invoice("INV-2", "C1", "250.00", "2026-01-10", "2026-02-09"),
        b.invoice(
            "INV-3", "C2", "600.00", "2026-01-15", "2026-02-14", contract_id="K2", line_id="L1"
        ),
        b.invoice("INV-4", "C2", "80.00", "2026-01-20", "2026-02-19"),
        b.invoice("INV-5", "C2", "40.00", "2026-01-21", "2026-02-20"),
        b.payment("1000.00", "PAY-1", "C1", "2026-02-01"),
        b.payment("700.00", "PAY-2", "C2", "2026-02-20", allocations={"INV-3": "600.00"}),
        b.credit_note("100.00", "CN-1", "INV-1", "2026-02-05"),
        b.credit_note("50.00", "CN-2", "INV-3", "2026-03-01"),
        b.refund("60.00", "PAY-2", "2026-03-02"),
        b.obligation("L2", "2026-03-01", "K1"),
        b.amendment("2026-04-01", "K1", ("L1",)),
        b.cancellation("2026-05-15", "K2"),
        b.write_off("40.00", "INV-5", "2026-04-01"),
        b.void("INV-4", "2026-01-22"),
        b.expense("X-1", "300.00", "30.00"),
        b.raw_event(
            "expense.paid",
            {"expense_id": "X-1", "date": "2026-02-10", "amount": "330.00", "currency": "USD"},
        ),
        b.payment("500.00", "PAY-3", "C1", "2026-03-10"),
    ]
    return with_tenant(tenant, events)
