"""The event-store contract, proved once and run over both backends (in memory and PostgreSQL).

Every test takes the parametrised `store` fixture, so the in-memory store and the PostgreSQL store
must give the same answers to the same appends: what is read back equals what was appended field
for field; positions are contiguous; an event id is an idempotency key; expected versions guard
streams; a unit is all or nothing and a refused one consumes no position; every stateful rule of
`ledger.decide` refuses with its code and field (and, where it has a boundary, accepts the event
just inside it); and the decisions the ledger records in metadata["ledger"] (auto-allocation,
refunds, credit notes) are the ones a finance engineer expects.

The PostgreSQL database is shared by the session and events are never deleted, so each test works
in its own tenants and counts positions from the head it found when it started.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ledger.decide import Accepted, Duplicate
from ledger.errors import RejectionCode
from ledger.store import EventStore, Unit
from tests.ledger.store_builders import (
    Book,
    amendment,
    assert_recorded_as_appended,
    cancellation,
    contract,
    credit_note,
    customer,
    describe,
    expense,
    expense_paid,
    invoice,
    journal,
    obligation,
    payment,
    raw_event,
    refund,
    void,
    write_off,
)

# Server and test clocks are the same machine's, but a transaction's now() is taken at its start.
recorded_at_slack = timedelta(seconds=5)

# --- append and read back --------------------------------------------------------------------


async def test_appended_events_read_back_field_for_field(store: EventStore) -> None:
    book, other = Book(store), Book(store)
    head = await store.head()
    started = datetime.now(UTC)
    raws = [
        (book, customer("C1")),
        (book, invoice("INV-1")),
        (other, customer("C1")),
        (book, write_off("10.00")),
        (book, customer("C2", subject="crm/C2")),
        (other, customer("C2")),
        (book, credit_note("5.00")),
    ]
    units = [Unit([owner.event(raw)]) for owner, raw in raws]
    results = await store.append(units)
    finished = datetime.now(UTC)
    accepted = [
        outcome for outcomes in results for outcome in outcomes if isinstance(outcome, Accepted)
    ]
    assert len(accepted) == len(raws), results

    assert [outcome.position for outcome in accepted] == list(range(head + 1, head + 8))
    assert await store.head() == head + 7
    everything = await store.read(None, from_position=head + 1)
    assert [event.position for event in everything] == list(range(head + 1, head + 8))
    for recorded, outcome, (owner, raw) in zip(everything, accepted, raws, strict=True):
        assert_recorded_as_appended(recorded, outcome)
        # ... and equals what the publisher sent, not only what the store decided.
        assert recorded.tenant_id == owner.tenant
        assert recorded.event_id == raw["id"]
        assert recorded.type == raw["type"]
        assert recorded.data == raw["data"]
        assert recorded.time == datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
        assert recorded.metadata["source"] == "tests/store-contract"
        assert recorded.recorded_at.tzinfo is not None
        assert started - recorded_at_slack <= recorded.recorded_at <= finished + recorded_at_slack
        assert len(recorded.hash) == 64

    # Streams count per tenant and stream: invoice/INV-1 took three events; an explicit subject
    # names the stream; the other tenant's customer/C1 is a stream of its own.
    assert [(event.stream_id, event.stream_version) for event in everything] == [
        ("customer/C1", 1),
        ("invoice/INV-1", 1),
        ("customer/C1", 1),
        ("invoice/INV-1", 2),
        ("crm/C2", 1),
        ("customer/C2", 1),
        ("invoice/INV-1", 3),
    ]
    assert everything[4].metadata["subject"] == "crm/C2"

    mine = await book.events()
    theirs = await other.events()
    assert [event.position for event in mine] == [head + 1, head + 2, head + 4, head + 5, head + 7]
    assert [event.position for event in theirs] == [head + 3, head + 6]
    assert {event.tenant_id for event in mine} == {book.tenant}
    assert {event.tenant_id for event in theirs} == {other.tenant}
    assert sorted(mine + theirs, key=lambda event: event.position) == everything


async def test_read_pages_with_from_position_and_limit(store: EventStore) -> None:
    book, other = Book(store), Book(store)
    head = await store.head()
    for index in range(1, 6):
        await book.accept(customer(f"C{index}"))
        await other.accept(customer(f"C{index}"))
    mine = [head + 1, head + 3, head + 5, head + 7, head + 9]

    page = await store.read(book.tenant, from_position=head + 3, limit=2)
    assert [event.position for event in page] == [head + 3, head + 5]
    # from_position between two of the tenant's events starts at the next one.
    page = await store.read(book.tenant, from_position=head + 4, limit=2)
    assert [event.position for event in page] == [head + 5, head + 7]
    page = await store.read(None, from_position=head + 4, limit=3)
    assert [(event.position, event.tenant_id) for event in page] == [
        (head + 4, other.tenant),
        (head + 5, book.tenant),
        (head + 6, other.tenant),
    ]
    assert [event.position for event in await book.events(from_position=head + 1)] == mine
    assert await store.read(None, from_position=head + 11) == []
    assert await store.read(book.tenant, from_position=head + 10) == []
    assert await store.read(None, from_position=head + 1, limit=0) == []
    assert await store.read(f"t{uuid.uuid4().hex[:12]}") == []


async def test_read_of_an_empty_tenant_and_head_of_no_appends(store: EventStore) -> None:
    head = await store.head()
    assert await store.append([]) == []
    assert await store.append([Unit([])]) == [[]]
    assert await store.head() == head
    assert await Book(store).events() == []


# --- idempotency -----------------------------------------------------------------------------


async def test_same_id_and_content_is_a_duplicate_of_the_original(store: EventStore) -> None:
    book = Book(store)
    registered = customer("C1", expectedversion=0)
    [original] = await book.accept(registered)
    head = await store.head()

    assert await book.append(registered) == [Duplicate(registered["id"], original.position)]
    # A retry after a lost answer may carry any expected version: the stream moved on since.
    await book.accept(
        raw_event("customer.registered", {"customer_id": "C9", "name": "x"}, subject="customer/C1")
    )
    retry = {**registered, "expectedversion": 7}
    assert await book.append(retry) == [Duplicate(registered["id"], original.position)]
    without_version = {key: value for key, value in registered.items() if key != "expectedversion"}
    assert await book.append(without_version) == [Duplicate(registered["id"], original.position)]

    assert await store.head() == head + 1
    assert [event.event_id for event in await book.events()].count(registered["id"]) == 1


async def test_same_id_with_different_content_is_refused(store: EventStore) -> None:
    book = Book(store)
    registered = customer("C1")
    [original] = await book.accept(registered)
    changed = {**registered, "data": {"customer_id": "C1", "name": "Acme Corporation"}}
    rejection = await book.refuse(changed)
    assert (rejection.code, rejection.field) == (RejectionCode.exists_with_different_content, "id")
    assert f"position {original.position}" in rejection.message
    later = {**registered, "time": "2026-01-15T10:00:01Z"}
    assert (await book.refuse(later)).code is RejectionCode.exists_with_different_content


async def test_event_ids_are_keys_within_a_tenant_only(store: EventStore) -> None:
    book, other = Book(store), Book(store)
    registered = customer("C1")
    [first] = await book.accept(registered)
    [second] = await other.accept(registered)
    assert second.position == first.position + 1


async def test_an_event_twice_in_one_unit_is_stored_once(store: EventStore) -> None:
    book = Book(store)
    head = await store.head()
    registered = customer("C1")
    outcomes = await book.append(registered, registered)
    assert isinstance(outcomes[0], Accepted)
    assert outcomes == [outcomes[0], Duplicate(registered["id"], head + 1)]
    assert [event.position for event in await book.events()] == [head + 1]


# --- optimistic concurrency ------------------------------------------------------------------


async def test_expected_version_guards_the_stream(store: EventStore) -> None:
    book = Book(store)
    await book.accept(customer("C1"))
    [issued] = await book.accept({**invoice("INV-1"), "expectedversion": 0})
    assert (issued.event.stream_id, issued.stream_version) == ("invoice/INV-1", 1)
    [written_off] = await book.accept({**write_off("10.00"), "expectedversion": 1})
    assert written_off.stream_version == 2

    stale = await book.refuse({**credit_note("5.00"), "expectedversion": 1})
    assert (stale.code, stale.field) == (RejectionCode.wrong_expected_version, "expectedversion")
    assert "at version 2, not 1" in stale.message
    ahead = await book.refuse({**credit_note("5.00"), "expectedversion": 3})
    assert ahead.code is RejectionCode.wrong_expected_version
    # The check names the stream, not the tenant: a new stream is at version 0.
    new_stream = await book.refuse({**customer("C2"), "expectedversion": 1})
    assert "at version 0, not 1" in new_stream.message
    [credited] = await book.accept({**credit_note("5.00"), "expectedversion": 2})
    assert credited.stream_version == 3


# --- atomic units ----------------------------------------------------------------------------


async def test_a_unit_with_one_bad_event_appends_nothing(store: EventStore) -> None:
    book = Book(store)
    head = await store.head()
    bad = invoice("INV-2", customer_id="C9")
    outcomes = await book.append(customer("C1"), invoice("INV-1"), bad, journal())
    assert describe(outcomes)[2] == ("refused", "unknown_customer", "data.customer_id")
    assert [entry[:2] for index, entry in enumerate(describe(outcomes)) if index != 2] == [
        ("refused", "batch_rejected")
    ] * 3
    assert await store.head() == head
    assert await book.events() == []
    # No position was consumed: the next accepted event takes the very next one.
    [accepted] = await book.accept(customer("C1"))
    assert accepted.position == head + 1


async def test_units_in_one_append_succeed_or_fail_alone(store: EventStore) -> None:
    book = Book(store)
    head = await store.head()
    results = await store.append(
        [
            book.unit(customer("C1"), invoice("INV-1")),
            book.unit(invoice("INV-2", customer_id="C2"), customer("C2")),  # C2 too late
            book.unit(invoice("INV-3")),  # sees INV-1's unit, accepted earlier in this call
            book.unit(payment("100.00", allocations={"INV-2": "100.00"})),  # INV-2 never was
        ]
    )
    assert [[entry[0] for entry in describe(outcomes)] for outcomes in results] == [
        ["accepted", "accepted"],
        ["refused", "refused"],
        ["accepted"],
        ["refused"],
    ]
    assert describe(results[1])[0] == ("refused", "unknown_customer", "data.customer_id")
    assert describe(results[3])[0] == (
        "refused",
        "unknown_invoice",
        "data.allocations[0].invoice_id",
    )
    stored = await book.events()
    assert [(event.position, event.data.get("invoice_id")) for event in stored] == [
        (head + 1, None),
        (head + 2, "INV-1"),
        (head + 3, "INV-3"),
    ]
    assert await store.head() == head + 3


async def test_validate_only_reports_every_rejection_and_stores_nothing(store: EventStore) -> None:
    book = Book(store)
    await book.accept(customer("C1"))
    head = await store.head()
    unit = book.unit(
        invoice("INV-1"),
        invoice("INV-2", customer_id="C9"),
        expense_paid("1.00", expense_id="X-9"),
        invoice("INV-1"),  # exists only because the first line would have issued it
        validate_only=True,
    )
    [outcomes] = await store.append([unit])
    assert describe(outcomes) == [
        ("refused", "batch_rejected", ""),
        ("refused", "unknown_customer", "data.customer_id"),
        ("refused", "unknown_expense", "data.expense_id"),
        ("refused", "invoice_exists", "data.invoice_id"),
    ]
    [all_valid] = await store.append([book.unit(invoice("INV-1"), validate_only=True)])
    assert describe(all_valid) == [("refused", "batch_rejected", "")]
    assert await store.head() == head
    assert len(await book.events()) == 1
    [issued] = await book.accept(invoice("INV-1"))
    assert issued.position == head + 1


# --- every stateful rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """Given accepted events, one more event is refused with `code` at `field`; where the rule has
    a boundary, `instead` is the nearest event that is accepted (proving the refusal was exact)."""

    name: str
    given: list[dict[str, Any]]
    when: dict[str, Any]
    code: RejectionCode
    field: str
    mentions: str = ""
    instead: dict[str, Any] | None = None


code = RejectionCode
paid_60 = payment("60.00", allocations={"INV-1": "60.00"})
rule_cases = [
    Case(
        "currency fixed by the first money event",
        [customer(), invoice()],
        invoice("INV-2", currency="EUR"),
        code.currency_mismatch,
        "data.currency",
        "in USD",
    ),
    Case(
        "currency fixed by an expense",
        [customer(), expense(currency="EUR")],
        invoice(),
        code.currency_mismatch,
        "data.currency",
        "in EUR",
        instead=invoice(currency="EUR"),
    ),
    Case(
        "currency of a payment",
        [customer(), invoice()],
        payment("1.00", currency="EUR"),
        code.currency_mismatch,
        "data.currency",
    ),
    Case(
        "currency of a journal entry",
        [journal(currency="GBP")],
        journal("J-2"),
        code.currency_mismatch,
        "data.currency",
        "in GBP",
    ),
    Case(
        "invoice for an unknown customer",
        [customer()],
        invoice(customer_id="C9"),
        code.unknown_customer,
        "data.customer_id",
        "'C9'",
    ),
    Case(
        "contract for an unknown customer",
        [],
        contract(),
        code.unknown_customer,
        "data.customer_id",
        "'C1'",
        instead=customer(),
    ),
    Case(
        "payment from an unknown customer",
        [customer()],
        payment("1.00", customer_id="C9"),
        code.unknown_customer,
        "data.customer_id",
    ),
    Case(
        "customer registered twice",
        [customer()],
        customer(),
        code.customer_exists,
        "data.customer_id",
        "'C1'",
        instead=customer("C2"),
    ),
    Case(
        "contract signed twice",
        [customer(), contract()],
        contract(),
        code.contract_exists,
        "data.contract_id",
        "'K1'",
    ),
    Case(
        "amendment of an unknown contract",
        [customer(), contract()],
        amendment("2026-03-01", contract_id="K9"),
        code.unknown_contract,
        "data.contract_id",
        "'K9'",
    ),
    Case(
        "invoice naming an unknown contract",
        [customer()],
        invoice(contract_id="K9"),
        code.unknown_contract,
        "data.contract_id",
    ),
    Case(
        "obligation of an unknown contract",
        [customer()],
        obligation(contract_id="K9"),
        code.unknown_contract,
        "data.contract_id",
    ),
    Case(
        "amendment of a cancelled contract",
        [customer(), contract(), cancellation("2026-03-01")],
        amendment("2026-04-01"),
        code.contract_not_live,
        "data.contract_id",
        "cancelled",
    ),
    Case(
        "cancellation of a cancelled contract",
        [customer(), contract(), cancellation("2026-03-01")],
        cancellation("2026-04-01"),
        code.contract_not_live,
        "data.contract_id",
    ),
    Case(
        "obligation of a cancelled contract",
        [customer(), contract(), cancellation("2026-03-01")],
        obligation(),
        code.contract_not_live,
        "data.contract_id",
    ),
    Case(
        "invoice of another customer's contract",
        [customer(), customer("C2"), contract()],
        invoice(customer_id="C2", contract_id="K1"),
        code.contract_customer_mismatch,
        "data.contract_id",
        "'C1'",
        instead=invoice(contract_id="K1", line_id="L1"),
    ),
    Case(
        "amendment on the exclusive end date",
        [customer(), contract()],
        amendment("2027-01-01"),
        code.effective_date_outside_term,
        "data.effective_date",
        instead=amendment("2026-12-31"),
    ),
    Case(
        "amendment before the start",
        [customer(), contract()],
        amendment("2025-12-31"),
        code.effective_date_outside_term,
        "data.effective_date",
        instead=amendment("2026-01-01"),
    ),
    Case(
        "cancellation after the end",
        [customer(), contract()],
        cancellation("2027-02-01"),
        code.effective_date_outside_term,
        "data.effective_date",
    ),
    Case(
        "amendment before the previous one",
        [customer(), contract(), amendment("2026-06-01")],
        amendment("2026-05-31"),
        code.effective_date_before_previous_change,
        "data.effective_date",
        "2026-06-01",
        instead=amendment("2026-06-01"),
    ),
    Case(
        "cancellation before the last amendment",
        [customer(), contract(), amendment("2026-06-01")],
        cancellation("2026-05-01"),
        code.effective_date_before_previous_change,
        "data.effective_date",
    ),
    Case(
        "invoice line missing from its contract",
        [customer(), contract()],
        invoice(contract_id="K1", line_id="L9"),
        code.unknown_contract_line,
        "data.lines[0].line_id",
        "'L9'",
        instead=invoice(contract_id="K1", line_id="L2"),
    ),
    Case(
        "invoice line without a contract",
        [customer(), contract()],
        invoice(line_id="L1"),
        code.unknown_contract_line,
        "data.lines[0].line_id",
        "no contract_id",
    ),
    Case(
        "obligation of a missing line",
        [customer(), contract()],
        obligation("L9"),
        code.unknown_contract_line,
        "data.line_id",
        "'L9'",
    ),
    Case(
        "obligation of a line amended away",
        [customer(), contract(), amendment("2026-03-01", line_ids=("L1",))],
        obligation("L2"),
        code.unknown_contract_line,
        "data.line_id",
    ),
    Case(
        "obligation of a ratable line",
        [customer(), contract()],
        obligation("L1"),
        code.line_not_point_in_time,
        "data.line_id",
        "ratably",
        instead=obligation("L2"),
    ),
    Case(
        "obligation satisfied twice",
        [customer(), contract(), obligation("L2")],
        obligation("L2", date="2026-03-01"),
        code.obligation_already_satisfied,
        "data.line_id",
    ),
    Case(
        "obligation before the contract's start",
        [customer(), contract()],
        obligation("L2", date="2025-12-31"),
        code.date_before_reference,
        "data.date",
        "2026-01-01",
        instead=obligation("L2", date="2026-01-01"),
    ),
    Case(
        "invoice issued twice",
        [customer(), invoice()],
        invoice(amount="5.00"),
        code.invoice_exists,
        "data.invoice_id",
        "'INV-1'",
    ),
    Case(
        "credit note for an unknown invoice",
        [customer(), invoice()],
        credit_note("1.00", invoice_id="INV-9"),
        code.unknown_invoice,
        "data.invoice_id",
        "'INV-9'",
    ),
    Case(
        "void of an unknown invoice",
        [customer()],
        void("INV-9"),
        code.unknown_invoice,
        "data.invoice_id",
    ),
    Case(
        "write-off of an unknown invoice",
        [customer()],
        write_off("1.00", invoice_id="INV-9"),
        code.unknown_invoice,
        "data.invoice_id",
    ),
    Case(
        "allocation to an unknown invoice",
        [customer(), invoice()],
        payment("10.00", allocations={"INV-1": "5.00", "INV-9": "5.00"}),
        code.unknown_invoice,
        "data.allocations[1].invoice_id",
        "'INV-9'",
    ),
    Case(
        "allocation to a voided invoice",
        [customer(), invoice(), void()],
        payment("10.00", allocations={"INV-1": "10.00"}),
        code.invoice_not_open,
        "data.allocations[0].invoice_id",
        "voided",
    ),
    Case(
        "credit note on a voided invoice",
        [customer(), invoice(), void()],
        credit_note("1.00"),
        code.invoice_not_open,
        "data.invoice_id",
    ),
    Case(
        "void twice",
        [customer(), invoice(), void()],
        void(date="2026-01-17"),
        code.invoice_not_open,
        "data.invoice_id",
    ),
    Case(
        "write-off of a voided invoice",
        [customer(), invoice(), void()],
        write_off("1.00"),
        code.invoice_not_open,
        "data.invoice_id",
    ),
    Case(
        "allocation to another customer's invoice",
        [customer(), customer("C2"), invoice()],
        payment("10.00", customer_id="C2", allocations={"INV-1": "10.00"}),
        code.invoice_customer_mismatch,
        "data.allocations[0].invoice_id",
        "another customer",
    ),
    Case(
        "void after a payment",
        [customer(), invoice(), paid_60],
        void(),
        code.invoice_has_applications,
        "data.invoice_id",
        "credit note",
    ),
    Case(
        "void after a write-off",
        [customer(), invoice(), write_off("1.00")],
        void(date="2026-03-02"),
        code.invoice_has_applications,
        "data.invoice_id",
    ),
    Case(
        "void after a credit note",
        [customer(), invoice(), credit_note("1.00")],
        void(date="2026-03-02"),
        code.invoice_has_applications,
        "data.invoice_id",
    ),
    Case(
        # Paid on 01-20, reopened by the refund on 02-01: voided on 01-25 it would be paid and
        # void at once in between, and AR for those dates negative.
        "void dated before the refund that reopened the invoice",
        [customer(), invoice(), paid_60, refund("60.00", date="2026-02-01")],
        void(date="2026-01-25"),
        code.date_before_reference,
        "data.date",
        "2026-02-01",
        instead=void(date="2026-02-01"),
    ),
    Case(
        "void after a credit note whose payment was refunded",
        [customer(), invoice(), payment("100.00"), credit_note("30.00"), refund("100.00")],
        void(date="2026-03-02"),
        code.invoice_has_applications,
        "data.invoice_id",
    ),
    Case(
        "allocation over the open amount",
        [customer(), invoice(), paid_60],
        payment("40.01", "PAY-2", allocations={"INV-1": "40.01"}),
        code.allocation_exceeds_open_amount,
        "data.allocations[0].amount",
        "40.00 open",
        instead=payment("40.01", "PAY-2", allocations={"INV-1": "40.00"}),
    ),
    Case(
        "credit over the invoice",
        [customer(), invoice()],
        credit_note("100.01"),
        code.credit_exceeds_invoice,
        "data.amount",
        "100.00",
        instead=credit_note("100.00"),
    ),
    Case(
        "credit over what earlier credits left",
        [customer(), invoice(), credit_note("60.00")],
        credit_note("40.01", "CN-2"),
        code.credit_exceeds_invoice,
        "data.amount",
        instead=credit_note("40.00", "CN-2"),
    ),
    Case(
        "credit note issued twice",
        [customer(), invoice(), credit_note("1.00")],
        credit_note("1.00", date="2026-01-26"),
        code.credit_note_exists,
        "data.credit_note_id",
        "'CN-1'",
        instead=credit_note("1.00", "CN-2"),
    ),
    Case(
        "write-off over the open amount",
        [customer(), invoice(), paid_60],
        write_off("40.01"),
        code.write_off_exceeds_open_amount,
        "data.amount",
        "40.00 open",
        instead=write_off("40.00"),
    ),
    Case(
        "payment received twice",
        [customer(), payment("1.00")],
        payment("2.00"),
        code.payment_exists,
        "data.payment_id",
        "'PAY-1'",
    ),
    Case(
        "refund of an unknown payment",
        [customer(), payment("1.00")],
        refund("1.00", "PAY-9"),
        code.unknown_payment,
        "data.payment_id",
        "'PAY-9'",
    ),
    Case(
        "refund over the payment",
        [customer(), payment("100.00"), refund("60.00")],
        refund("40.01"),
        code.refund_exceeds_payment,
        "data.amount",
        "only 40.00",
        instead=refund("40.00"),
    ),
    Case(
        "expense recorded twice",
        [expense()],
        expense(amount="1.00"),
        code.expense_exists,
        "data.expense_id",
        "'X-1'",
    ),
    Case(
        "payment of an unknown expense",
        [expense()],
        expense_paid("1.00", "X-9"),
        code.unknown_expense,
        "data.expense_id",
        "'X-9'",
    ),
    Case(
        "expense paid over its total with tax",
        [expense(), expense_paid("50.00")],
        expense_paid("60.01"),
        code.expense_payment_exceeds_open_amount,
        "data.amount",
        "60.00 open",
        instead=expense_paid("60.00"),
    ),
    Case(
        "journal entry posted twice",
        [journal()],
        journal(),
        code.entry_exists,
        "data.entry_id",
        "'J-1'",
        instead=journal("J-2"),
    ),
    Case(
        "void before the issue date",
        [customer(), invoice()],
        void(date="2026-01-14"),
        code.date_before_reference,
        "data.date",
        "2026-01-15",
        instead=void(date="2026-01-15"),
    ),
    Case(
        "credit note before the issue date",
        [customer(), invoice()],
        credit_note("1.00", date="2026-01-14"),
        code.date_before_reference,
        "data.date",
    ),
    Case(
        "write-off before the issue date",
        [customer(), invoice()],
        write_off("1.00", date="2026-01-14"),
        code.date_before_reference,
        "data.date",
    ),
    Case(
        "allocation before the issue date",
        [customer(), invoice()],
        payment("1.00", date="2026-01-14", allocations={"INV-1": "1.00"}),
        code.date_before_reference,
        "data.date",
        "'INV-1'",
    ),
    Case(
        "refund before the payment",
        [customer(), payment("10.00")],
        refund("1.00", date="2026-01-19"),
        code.date_before_reference,
        "data.date",
        "2026-01-20",
        instead=refund("1.00", date="2026-01-20"),
    ),
    Case(
        "expense paid before it was incurred",
        [expense()],
        expense_paid("1.00", date="2026-01-09"),
        code.date_before_reference,
        "data.date",
        "2026-01-10",
    ),
]


@pytest.mark.parametrize("case", rule_cases, ids=[case.name for case in rule_cases])
async def test_stateful_rule_refuses_with_its_code_and_field(store: EventStore, case: Case) -> None:
    book = Book(store)
    if case.given:
        await book.accept(*case.given)
    rejection = await book.refuse(case.when)
    assert (rejection.code, rejection.field) == (case.code, case.field), rejection.message
    assert case.mentions in rejection.message
    assert rejection.message.strip()
    if case.instead is not None:
        await book.accept(case.instead)


async def test_rules_see_state_from_earlier_appends_and_units(store: EventStore) -> None:
    """The rules read what earlier calls stored, not only what one call carries."""
    book = Book(store)
    await book.accept(customer())
    await book.accept(invoice())
    await book.accept(payment("70.00", allocations={"INV-1": "70.00"}))
    rejection = await book.refuse(payment("30.01", "PAY-2", allocations={"INV-1": "30.01"}))
    assert rejection.code is RejectionCode.allocation_exceeds_open_amount
    # Two payments in one unit add up: the second sees the first's allocation.
    outcomes = await book.append(
        payment("20.00", "PAY-2", allocations={"INV-1": "20.00"}),
        payment("10.01", "PAY-3", allocations={"INV-1": "10.01"}),
    )
    assert describe(outcomes)[1] == (
        "refused",
        "allocation_exceeds_open_amount",
        "data.allocations[0].amount",
    )


# --- the decisions recorded in metadata["ledger"] ----------------------------------------------


async def test_payment_without_allocations_pays_oldest_due_date_first(store: EventStore) -> None:
    book = Book(store)
    await book.accept(customer(), customer("C2"))
    # Issued in this order; ids sort differently from both due date and issue order.
    await book.accept(
        invoice("INV-A", amount="100.00", issue_date="2026-01-05", due_date="2026-03-01"),
        invoice("INV-Z", amount="50.00", issue_date="2026-01-06", due_date="2026-02-01"),
    )
    await book.accept(
        invoice("INV-M", amount="30.00", issue_date="2026-01-07", due_date="2026-02-01")
    )
    await book.accept(
        invoice("INV-OTHER", customer_id="C2", amount="999.00", due_date="2026-01-20"),
        invoice("INV-LATER", amount="10.00", issue_date="2026-02-11", due_date="2026-02-11"),
    )
    # The payment's own unit issues one more invoice, due last: it is a candidate too.
    [_, paid] = await book.accept(
        invoice("INV-NEW", amount="5.00", issue_date="2026-02-01", due_date="2026-04-01"),
        payment("200.00", date="2026-02-10"),
    )
    assert await book.ledger_metadata(paid) == {
        "allocation": "oldest_due_first",
        "allocations": [
            {"invoice_id": "INV-Z", "amount": "50.00"},  # due 02-01, issued before INV-M
            {"invoice_id": "INV-M", "amount": "30.00"},  # due 02-01
            {"invoice_id": "INV-A", "amount": "100.00"},  # due 03-01
            {"invoice_id": "INV-NEW", "amount": "5.00"},  # due 04-01
        ],  # not INV-OTHER (another customer's), not INV-LATER (issued after the payment)
        "unapplied": "15.00",
    }
    # Those invoices are settled: the next payment goes to the one left, partly.
    [second] = await book.accept(payment("4.00", "PAY-2", date="2026-02-12"))
    assert await book.ledger_metadata(second) == {
        "allocation": "oldest_due_first",
        "allocations": [{"invoice_id": "INV-LATER", "amount": "4.00"}],
        "unapplied": "0.00",
    }
    refused = await book.refuse(payment("6.01", "PAY-3", allocations={"INV-LATER": "6.01"}))
    assert refused.code is RejectionCode.allocation_exceeds_open_amount


async def test_payment_with_no_open_invoices_is_all_unapplied(store: EventStore) -> None:
    book = Book(store)
    await book.accept(customer())
    [paid] = await book.accept(payment("25.00"))
    assert await book.ledger_metadata(paid) == {
        "allocation": "oldest_due_first",
        "allocations": [],
        "unapplied": "25.00",
    }


async def test_explicit_allocations_are_recorded_as_given(store: EventStore) -> None:
    book = Book(store)
    await book.accept(
        customer(), invoice("INV-1"), invoice("INV-2", amount="50.00", due_date="2026-01-31")
    )
    [paid] = await book.accept(payment("120.00", allocations={"INV-1": "70.00", "INV-2": "30.00"}))
    assert await book.ledger_metadata(paid) == {
        "allocation": "explicit",
        "allocations": [
            {"invoice_id": "INV-1", "amount": "70.00"},
            {"invoice_id": "INV-2", "amount": "30.00"},
        ],
        "unapplied": "20.00",
    }
    [rest] = await book.accept(payment("60.00", "PAY-2"))
    assert (await book.ledger_metadata(rest))["allocations"] == [
        {"invoice_id": "INV-2", "amount": "20.00"},
        {"invoice_id": "INV-1", "amount": "30.00"},
    ]


async def test_refund_returns_unapplied_cash_then_reverses_newest_allocations(
    store: EventStore,
) -> None:
    book = Book(store)
    await book.accept(
        customer(),
        invoice("INV-1", amount="100.00", due_date="2026-02-01"),
        invoice("INV-2", amount="80.00", due_date="2026-03-01"),
    )
    [paid] = await book.accept(payment("200.00"))
    assert (await book.ledger_metadata(paid))["unapplied"] == "20.00"

    [first] = await book.accept(refund("70.00"))
    assert await book.ledger_metadata(first) == {
        "from_unapplied": "20.00",
        "reversed_allocations": [{"invoice_id": "INV-2", "amount": "50.00"}],
    }
    [second] = await book.accept(refund("100.00", date="2026-02-02"))
    assert await book.ledger_metadata(second) == {
        "from_unapplied": "0.00",
        "reversed_allocations": [
            {"invoice_id": "INV-2", "amount": "30.00"},
            {"invoice_id": "INV-1", "amount": "70.00"},
        ],
    }
    over = await book.refuse(refund("30.01", date="2026-02-03"))
    assert (over.code, over.field) == (RejectionCode.refund_exceeds_payment, "data.amount")

    # The reopened invoices are open again, to explicit and to automatic allocation alike.
    too_much = await book.refuse(payment("80.01", "PAY-2", allocations={"INV-2": "80.01"}))
    assert too_much.code is RejectionCode.allocation_exceeds_open_amount
    [again] = await book.accept(payment("160.00", "PAY-3", date="2026-02-05"))
    assert await book.ledger_metadata(again) == {
        "allocation": "oldest_due_first",
        "allocations": [
            {"invoice_id": "INV-1", "amount": "70.00"},
            {"invoice_id": "INV-2", "amount": "80.00"},
        ],
        "unapplied": "10.00",
    }
    # A settled invoice can be written off no further.
    settled = await book.refuse(write_off("0.01", invoice_id="INV-2"))
    assert settled.code is RejectionCode.write_off_exceeds_open_amount


async def test_credit_note_after_full_payment_goes_to_customer_credit(store: EventStore) -> None:
    book = Book(store)
    await book.accept(customer(), invoice("INV-1"), invoice("INV-2"))
    await book.accept(payment("100.00", allocations={"INV-1": "100.00"}))
    [credited] = await book.accept(credit_note("30.00"))
    assert await book.ledger_metadata(credited) == {
        "applied": "0.00",
        "to_customer_credit": "30.00",
    }
    # Part paid: the credit settles what is open and the rest becomes customer credit.
    await book.accept(payment("80.00", "PAY-2", allocations={"INV-2": "80.00"}))
    [split] = await book.accept(credit_note("30.00", "CN-2", invoice_id="INV-2"))
    assert await book.ledger_metadata(split) == {"applied": "20.00", "to_customer_credit": "10.00"}
    settled = await book.refuse(payment("0.01", "PAY-3", allocations={"INV-2": "0.01"}))
    assert settled.code is RejectionCode.allocation_exceeds_open_amount
    # Credit notes on one invoice never add up to more than it, wherever the credit went.
    over = await book.refuse(credit_note("70.01", "CN-3"))
    assert (over.code, over.field) == (RejectionCode.credit_exceeds_invoice, "data.amount")
    await book.accept(credit_note("70.00", "CN-3"))
    assert (
        await book.refuse(credit_note("0.01", "CN-4"))
    ).code is RejectionCode.credit_exceeds_invoice
