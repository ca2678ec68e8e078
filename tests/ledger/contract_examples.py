"""One valid example event per v1 type, with the data and stream the contract must normalise it to.

The examples pick amounts that need padding ("10" -> "10.00") and currencies with 0, 2, 3 and 4
minor digits, so the normalisation is checked for each width.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Example:
    data: dict[str, Any]
    normalised: dict[str, Any]
    stream_id: str


def event(kind: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    """A structured-mode CloudEvent; keyword arguments replace (or add) envelope attributes."""
    raw: dict[str, Any] = {
        "specversion": "1.0",
        "id": "evt-1",
        "source": "tests/contract",
        "type": f"ledger.{kind}.v1",
        "time": "2026-01-15T10:00:00Z",
        "tenantid": "acme",
        "data": copy.deepcopy(data),
    }
    raw.update(envelope)
    return raw


def example_event(kind: str, **envelope: Any) -> dict[str, Any]:
    return event(kind, examples[kind].data, **envelope)


_contract_lines = [
    {
        "line_id": "L1",
        "description": "Platform subscription",
        "amount": "1200",
        "recognition": "ratable",
        "recurring": True,
    },
    {
        "line_id": "L2",
        "description": "Onboarding",
        "amount": "300.5",
        "recognition": "point_in_time",
        "recurring": False,
    },
]
_contract_lines_normalised = [
    {**_contract_lines[0], "amount": "1200.00"},
    {**_contract_lines[1], "amount": "300.50"},
]

examples: dict[str, Example] = {
    "customer.registered": Example(
        data={"customer_id": "C-1", "name": "Acme Corp", "segment": "enterprise"},
        normalised={"customer_id": "C-1", "name": "Acme Corp", "segment": "enterprise"},
        stream_id="customer/C-1",
    ),
    "contract.signed": Example(
        data={
            "contract_id": "K-1",
            "customer_id": "C-1",
            "currency": "USD",
            "start_date": "2026-01-01",
            "end_date": "2027-01-01",
            "lines": _contract_lines,
        },
        normalised={
            "contract_id": "K-1",
            "customer_id": "C-1",
            "currency": "USD",
            "start_date": "2026-01-01",
            "end_date": "2027-01-01",
            "lines": _contract_lines_normalised,
        },
        stream_id="contract/K-1",
    ),
    "contract.amended": Example(
        data={
            "contract_id": "K-1",
            "currency": "EUR",
            "effective_date": "2026-07-01",
            "lines": _contract_lines,
        },
        normalised={
            "contract_id": "K-1",
            "currency": "EUR",
            "effective_date": "2026-07-01",
            "lines": _contract_lines_normalised,
        },
        stream_id="contract/K-1",
    ),
    "contract.cancelled": Example(
        data={"contract_id": "K-1", "effective_date": "2026-09-30"},
        normalised={"contract_id": "K-1", "effective_date": "2026-09-30"},
        stream_id="contract/K-1",
    ),
    "obligation.satisfied": Example(
        data={"contract_id": "K-1", "line_id": "L2", "date": "2026-02-01"},
        normalised={"contract_id": "K-1", "line_id": "L2", "date": "2026-02-01"},
        stream_id="contract/K-1",
    ),
    "invoice.issued": Example(
        data={
            "invoice_id": "INV-1",
            "customer_id": "C-1",
            "contract_id": "K-1",
            "currency": "USD",
            "issue_date": "2026-01-15",
            "due_date": "2026-02-14",
            "lines": [
                {
                    "description": "Subscription",
                    "amount": "100",
                    "tax_amount": "8.5",
                    "line_id": "L1",
                },
                {"description": "Setup", "amount": "50.25"},
            ],
            "total": "158.75",
        },
        normalised={
            "invoice_id": "INV-1",
            "customer_id": "C-1",
            "contract_id": "K-1",
            "currency": "USD",
            "issue_date": "2026-01-15",
            "due_date": "2026-02-14",
            "lines": [
                {
                    "description": "Subscription",
                    "amount": "100.00",
                    "tax_amount": "8.50",
                    "line_id": "L1",
                },
                {"description": "Setup", "amount": "50.25"},
            ],
            "total": "158.75",
        },
        stream_id="invoice/INV-1",
    ),
    "invoice.voided": Example(
        data={"invoice_id": "INV-1", "date": "2026-01-16"},
        normalised={"invoice_id": "INV-1", "date": "2026-01-16"},
        stream_id="invoice/INV-1",
    ),
    "credit_note.issued": Example(
        data={
            "credit_note_id": "CN-1",
            "invoice_id": "INV-1",
            "currency": "BHD",
            "date": "2026-01-20",
            "amount": "1.5",
        },
        normalised={
            "credit_note_id": "CN-1",
            "invoice_id": "INV-1",
            "currency": "BHD",
            "date": "2026-01-20",
            "amount": "1.500",
        },
        stream_id="invoice/INV-1",
    ),
    "invoice.written_off": Example(
        data={"invoice_id": "INV-1", "currency": "USD", "date": "2026-06-30", "amount": "10"},
        normalised={
            "invoice_id": "INV-1",
            "currency": "USD",
            "date": "2026-06-30",
            "amount": "10.00",
        },
        stream_id="invoice/INV-1",
    ),
    "payment.received": Example(
        data={
            "payment_id": "PAY-1",
            "customer_id": "C-1",
            "currency": "USD",
            "date": "2026-01-20",
            "amount": "150",
            "allocations": [
                {"invoice_id": "INV-1", "amount": "100"},
                {"invoice_id": "INV-2", "amount": "49.9"},
            ],
        },
        normalised={
            "payment_id": "PAY-1",
            "customer_id": "C-1",
            "currency": "USD",
            "date": "2026-01-20",
            "amount": "150.00",
            "allocations": [
                {"invoice_id": "INV-1", "amount": "100.00"},
                {"invoice_id": "INV-2", "amount": "49.90"},
            ],
        },
        stream_id="payment/PAY-1",
    ),
    "payment.refunded": Example(
        data={"payment_id": "PAY-1", "currency": "JPY", "date": "2026-01-25", "amount": "1200"},
        normalised={
            "payment_id": "PAY-1",
            "currency": "JPY",
            "date": "2026-01-25",
            "amount": "1200",
        },
        stream_id="payment/PAY-1",
    ),
    "expense.recorded": Example(
        data={
            "expense_id": "EXP-1",
            "vendor": "Cloud Hosting Ltd",
            "category": "hosting",
            "currency": "USD",
            "incurred_date": "2026-01-31",
            "due_date": "2026-02-28",
            "amount": "99.9",
            "tax_amount": "0",
        },
        normalised={
            "expense_id": "EXP-1",
            "vendor": "Cloud Hosting Ltd",
            "category": "hosting",
            "currency": "USD",
            "incurred_date": "2026-01-31",
            "due_date": "2026-02-28",
            "amount": "99.90",
            "tax_amount": "0.00",
        },
        stream_id="expense/EXP-1",
    ),
    "expense.paid": Example(
        data={"expense_id": "EXP-1", "currency": "CLF", "date": "2026-02-15", "amount": "12.5"},
        normalised={
            "expense_id": "EXP-1",
            "currency": "CLF",
            "date": "2026-02-15",
            "amount": "12.5000",
        },
        stream_id="expense/EXP-1",
    ),
    "journal.posted": Example(
        data={
            "entry_id": "JE-1",
            "currency": "USD",
            "date": "2026-01-01",
            "memo": "Opening balance",
            "lines": [
                {"account": "cash", "debit": "1000"},
                {"account": "equity", "credit": "1000.00"},
            ],
        },
        normalised={
            "entry_id": "JE-1",
            "currency": "USD",
            "date": "2026-01-01",
            "memo": "Opening balance",
            "lines": [
                {"account": "cash", "debit": "1000.00"},
                {"account": "equity", "credit": "1000.00"},
            ],
        },
        stream_id="journal/JE-1",
    ),
}
