"""Events and a one-tenant view of an event store, for the store tests (contract and PostgreSQL).

Builders leave the tenant out: `Book` fills in its own tenant, so one raw event can serve both
backends' runs of a parametrised case. Each builder makes a fresh event id.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from ledger.contract import ProposedEvent, parse_event
from ledger.decide import Accepted, Duplicate, Outcome, Refused
from ledger.errors import Rejection
from ledger.store import EventStore, RecordedEvent, Unit

_sequence = itertools.count(1)

# --- building events -------------------------------------------------------------------------


def raw_event(kind: str, data: dict[str, Any], **envelope: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "specversion": "1.0",
        "id": f"evt-{next(_sequence)}-{uuid.uuid4().hex[:8]}",
        "source": "tests/store-contract",
        "type": f"ledger.{kind}.v1",
        "time": "2026-01-15T10:00:00Z",
        "data": data,
    }
    event.update(envelope)
    return event


def customer(customer_id: str = "C1", **envelope: Any) -> dict[str, Any]:
    return raw_event(
        "customer.registered", {"customer_id": customer_id, "name": "Acme Corp"}, **envelope
    )


def _contract_lines(*line_ids: str) -> list[dict[str, Any]]:
    known = {
        "L1": {"description": "Platform", "amount": "1200.00", "recognition": "ratable"},
        "L2": {"description": "Onboarding", "amount": "500.00", "recognition": "point_in_time"},
    }
    return [
        {"line_id": line_id, **known[line_id], "recurring": line_id == "L1"} for line_id in line_ids
    ]


def contract(
    contract_id: str = "K1",
    customer_id: str = "C1",
    start_date: str = "2026-01-01",
    end_date: str = "2027-01-01",
) -> dict[str, Any]:
    return raw_event(
        "contract.signed",
        {
            "contract_id": contract_id,
            "customer_id": customer_id,
            "start_date": start_date,
            "end_date": end_date,
            "currency": "USD",
            "lines": _contract_lines("L1", "L2"),
        },
    )


def amendment(
    effective_date: str, contract_id: str = "K1", line_ids: tuple[str, ...] = ("L1", "L2")
) -> dict[str, Any]:
    return raw_event(
        "contract.amended",
        {
            "contract_id": contract_id,
            "effective_date": effective_date,
            "currency": "USD",
            "lines": _contract_lines(*line_ids),
        },
    )


def cancellation(effective_date: str, contract_id: str = "K1") -> dict[str, Any]:
    return raw_event(
        "contract.cancelled", {"contract_id": contract_id, "effective_date": effective_date}
    )


def obligation(
    line_id: str = "L2", date: str = "2026-02-01", contract_id: str = "K1"
) -> dict[str, Any]:
    return raw_event(
        "obligation.satisfied", {"contract_id": contract_id, "line_id": line_id, "date": date}
    )


def invoice(
    invoice_id: str = "INV-1",
    customer_id: str = "C1",
    amount: str = "100.00",
    issue_date: str = "2026-01-15",
    due_date: str = "2026-02-14",
    currency: str = "USD",
    contract_id: str | None = None,
    line_id: str | None = None,
) -> dict[str, Any]:
    line: dict[str, Any] = {"description": "Subscription", "amount": amount}
    if line_id is not None:
        line["line_id"] = line_id
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "customer_id": customer_id,
        "issue_date": issue_date,
        "due_date": due_date,
        "currency": currency,
        "lines": [line],
        "total": amount,
    }
    if contract_id is not None:
        data["contract_id"] = contract_id
    return raw_event("invoice.issued", data)


def void(invoice_id: str = "INV-1", date: str = "2026-01-16") -> dict[str, Any]:
    return raw_event("invoice.voided", {"invoice_id": invoice_id, "date": date})


def credit_note(
    amount: str, credit_note_id: str = "CN-1", invoice_id: str = "INV-1", date: str = "2026-01-25"
) -> dict[str, Any]:
    return raw_event(
        "credit_note.issued",
        {
            "credit_note_id": credit_note_id,
            "invoice_id": invoice_id,
            "date": date,
            "amount": amount,
            "currency": "USD",
        },
    )


def write_off(amount: str, invoice_id: str = "INV-1", date: str = "2026-03-01") -> dict[str, Any]:
    return raw_event(
        "invoice.written_off",
        {"invoice_id": invoice_id, "date": date, "amount": amount, "currency": "USD"},
    )


def payment(
    amount: str,
    payment_id: str = "PAY-1",
    customer_id: str = "C1",
    date: str = "2026-01-20",
    allocations: dict[str, str] | None = None,
    currency: str = "USD",
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "customer_id": customer_id,
        "date": date,
        "amount": amount,
        "currency": currency,
    }
    if allocations is not None:
        data["allocations"] = [
            {"invoice_id": invoice_id, "amount": allocated}
            for invoice_id, allocated in allocations.items()
        ]
    return raw_event("payment.received", data)


def refund(amount: str, payment_id: str = "PAY-1", date: str = "2026-02-01") -> dict[str, Any]:
    return raw_event(
        "payment.refunded",
        {"payment_id": payment_id, "date": date, "amount": amount, "currency": "USD"},
    )


def expense(
    expense_id: str = "X-1",
    amount: str = "100.00",
    tax_amount: str = "10.00",
    currency: str = "USD",
) -> dict[str, Any]:
    return raw_event(
        "expense.recorded",
        {
            "expense_id": expense_id,
            "vendor": "Cloud Co",
            "category": "hosting",
            "incurred_date": "2026-01-10",
            "amount": amount,
            "tax_amount": tax_amount,
            "currency": currency,
        },
    )


def expense_paid(amount: str, expense_id: str = "X-1", date: str = "2026-01-31") -> dict[str, Any]:
    return raw_event(
        "expense.paid",
        {"expense_id": expense_id, "date": date, "amount": amount, "currency": "USD"},
    )


def journal(entry_id: str = "J-1", currency: str = "USD") -> dict[str, Any]:
    return raw_event(
        "journal.posted",
        {
            "entry_id": entry_id,
            "date": "2026-01-01",
            "memo": "opening balance",
            "currency": currency,
            "lines": [
                {"account": "cash", "debit": "1000.00"},
                {"account": "equity", "credit": "1000.00"},
            ],
        },
    )


# --- appending through one tenant ------------------------------------------------------------


def describe(outcomes: list[Outcome]) -> list[tuple[str, str, str]]:
    """Outcomes as comparable tuples: ("accepted", id, ""), ("refused", code, field), ..."""
    described = []
    for outcome in outcomes:
        match outcome:
            case Accepted():
                described.append(("accepted", outcome.event.event_id, ""))
            case Duplicate():
                described.append(("duplicate", outcome.event_id, str(outcome.position)))
            case Refused():
                described.append(("refused", outcome.rejection.code.value, outcome.rejection.field))
    return described


@dataclass
class Book:
    """One tenant's view of a store: turns raw events into units and checks the answers."""

    store: EventStore
    tenant: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:12]}")

    def event(self, raw: dict[str, Any]) -> ProposedEvent:
        parsed = parse_event({**raw, "tenantid": self.tenant})
        assert isinstance(parsed, ProposedEvent), parsed
        return parsed

    def unit(self, *raws: dict[str, Any], validate_only: bool = False) -> Unit:
        return Unit([self.event(raw) for raw in raws], validate_only=validate_only)

    async def append(self, *raws: dict[str, Any]) -> list[Outcome]:
        return (await self.store.append([self.unit(*raws)]))[0]

    async def accept(self, *raws: dict[str, Any]) -> list[Accepted]:
        outcomes = await self.append(*raws)
        accepted = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
        assert len(accepted) == len(raws), describe(outcomes)
        return accepted

    async def refuse(self, raw: dict[str, Any]) -> Rejection:
        """Append one event that must be refused; prove it left no trace."""
        head = await self.store.head()
        stored = await self.events()
        outcomes = await self.append(raw)
        assert len(outcomes) == 1 and isinstance(outcomes[0], Refused), describe(outcomes)
        assert outcomes[0].event_id == raw["id"]
        assert await self.store.head() == head
        assert await self.events() == stored
        return outcomes[0].rejection

    async def events(self, from_position: int = 1) -> list[RecordedEvent]:
        return await self.store.read(self.tenant, from_position=from_position, limit=10_000)

    async def ledger_metadata(self, outcome: Accepted) -> Any:
        """The decision as recorded (read back), after checking it equals the decision returned."""
        [recorded] = await self.store.read(self.tenant, from_position=outcome.position, limit=1)
        assert recorded.position == outcome.position
        assert recorded.metadata == outcome.metadata
        return recorded.metadata["ledger"]


def assert_recorded_as_appended(recorded: RecordedEvent, accepted: Accepted) -> None:
    """Pair assertion: every field read back equals what the append decided and was given."""
    event = accepted.event
    assert (
        recorded.position,
        recorded.tenant_id,
        recorded.stream_id,
        recorded.stream_version,
        recorded.event_id,
        recorded.type,
        recorded.time,
        recorded.data,
        recorded.metadata,
        recorded.hash,
    ) == (
        accepted.position,
        event.tenant_id,
        event.stream_id,
        accepted.stream_version,
        event.event_id,
        event.type,
        event.time,
        event.data,
        accepted.metadata,
        event.content_hash,
    )
