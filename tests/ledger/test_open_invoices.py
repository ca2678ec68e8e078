"""Automatic allocation reads a customer's open invoices in order, as far as a payment goes.

A payment without allocations is applied oldest due date first (then oldest issued). The rules read
the customer's open invoices in that order and stop when the payment is spent; the PostgreSQL store
loads only a prefix of them (`ledger_refs_open_invoices_in_order`) and loads a longer one, under
the same lock, when a payment goes past it (`NeedOpenInvoices`). These tests hold the answers to
the in-memory store's, which keeps every open invoice, with prefixes small enough that every
payment below goes past one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any
from unittest import mock

import psycopg
import pytest
from prometheus_client import REGISTRY

from ledger import decide
from ledger.contract import parse_event
from ledger.decide import (
    Accepted,
    InvoiceState,
    NeedOpenInvoices,
    PositionCounter,
    TenantState,
    decide_unit,
    ref_row,
)
from ledger.service import AppendReport, LedgerService
from ledger.store import EventStore, RecordedEvent
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.ledger.test_store_known import (
    paths,
    refs_of,
    relative,
    relative_state,
    since,
    two_writers,
)

Event = dict[str, Any]


@contextmanager
def prefixes(per_payment: int, growth: int) -> Iterator[None]:
    """Loads of `per_payment` open invoices per payment, growing `growth` times when short."""
    with (
        mock.patch.object(decide, "open_invoices_per_payment", per_payment),
        mock.patch.object(decide, "open_invoices_growth", growth),
    ):
        yield


def reloads() -> float:
    return REGISTRY.get_sample_value("ledger_append_open_invoice_loads_total") or 0.0


async def append(store: EventStore, events: list[Event], tenant: str) -> AppendReport:
    return await LedgerService(store).append(
        [{**event, "tenantid": tenant} for event in events], atomic=True
    )


@pytest.fixture
async def writers(database_url: str) -> AsyncIterator[tuple[PostgresEventStore, ...]]:
    async with two_writers(database_url) as pair:
        yield pair


def many_invoices() -> list[Event]:
    """24 open invoices of C1 whose order is not their issue order: due dates across a year end,
    ties on the due date broken by issue order, and two (I03, I17) issued after most payments
    below are dated."""
    due_dates = [
        "2027-01-01", "2026-12-31", "2026-10-01", "2026-06-01", "2026-02-10", "2026-02-01",
        "2026-09-30", "2026-02-01", "2026-03-15", "2026-12-31", "2026-03-02", "2026-11-11",
    ] * 2  # fmt: skip
    return [
        b.invoice(
            f"I{number:02d}",
            amount=f"{10 + number}.00",
            issue_date="2026-06-01" if number in (3, 17) else "2026-01-15",
            due_date="2026-06-01" if number in (3, 17) else due,
        )
        for number, due in enumerate(due_dates)
    ]


def allocations_of(events: list[RecordedEvent]) -> dict[str, list[tuple[str, str]]]:
    """payment_id -> the (invoice_id, amount) the ledger allocated it to, as it recorded them."""
    return {
        event.data["payment_id"]: [
            (row["invoice_id"], row["amount"]) for row in event.metadata["ledger"]["allocations"]
        ]
        for event in events
        if event.type == "ledger.payment.received.v1"
    }


# (writer of the set-up, writer of each step): one writer decides on what it knows, in one round
# trip; with two, each append finds the other's and loads, and the first writer's knowledge is a
# loaded prefix (a payment past it goes back to the load).
plans = {"one writer": (0, [0, 0, 0, 0, 0, 0]), "two writers": (1, [0, 0, 0, 1, 0, 0])}


@pytest.mark.parametrize("plan", list(plans))
async def test_payments_past_the_loaded_prefix_are_allocated_as_with_every_invoice_known(
    writers: tuple[PostgresEventStore, ...], plan: str
) -> None:
    tenant = new_tenant()
    memory = MemoryEventStore()
    setup_writer, step_writers = plans[plan]
    setup = [b.customer("C1"), *many_invoices()]
    offset = await writers[0].head()  # the shared database's
    assert (await append(writers[setup_writer], setup, tenant)).ok
    assert (await append(memory, setup, tenant)).ok
    steps: list[list[Event]] = [
        [b.payment("11.00", "P1", date="2026-02-01")],  # the oldest due one, nothing more
        [b.payment("150.00", "P2", date="2026-02-20")],  # past several prefixes
        [  # a batch: two payments, the second after a credit note and a void took some
            b.payment("5.00", "P3", date="2026-03-01"),
            b.credit_note("15.00", "CN1", invoice_id="I08", date="2026-03-01"),
            b.void("I20", date="2026-03-01"),
            b.payment("80.00", "P4", date="2026-03-01"),
        ],
        [b.refund("100.00", "P2", date="2026-03-05")],  # reopens invoices inside the prefix
        [b.payment("1000.00", "P5", date="2026-05-01")],  # all but those issued later
        [b.payment("1000.00", "P6", date="2026-07-01")],  # and those
    ]
    before, paths_before = reloads(), paths()
    with prefixes(per_payment=2, growth=2):
        for writer, step in zip(step_writers, steps, strict=True):
            stored = await append(writers[writer], step, tenant)
            expected = await append(memory, step, tenant)
            assert stored.ok, stored.as_json()
            assert relative(stored, offset) == relative(expected, 0), step
    stored_events = await writers[0].read(tenant)
    allocated = allocations_of(stored_events)
    # The order worked out by hand: due 2026-02-01 (I05, I07, I19 in issue order), then
    # 2026-02-10 (I04, I16), 2026-03-02 (I10, I22), 2026-03-15 (I08, I20); I03 and I17 (due
    # 2026-06-01 with I15) were not issued yet.
    assert allocated["P1"] == [("I05", "11.00")]
    assert allocated["P2"] == [
        ("I05", "4.00"), ("I07", "17.00"), ("I19", "29.00"), ("I04", "14.00"),
        ("I16", "26.00"), ("I10", "20.00"), ("I22", "32.00"), ("I08", "8.00"),
    ]  # fmt: skip
    assert not {"I03", "I17"} & {invoice_id for invoice_id, _ in allocated["P5"]}
    assert {("I03", "13.00"), ("I17", "27.00")} <= set(allocated["P6"])
    counted = since(paths_before)
    if plan == "one writer":
        # Decided on what the writer knows (every open invoice): a longer prefix of it, no load.
        assert counted["two_round_trips"] == 0 and reloads() == before, counted
    else:
        assert reloads() - before >= 3, "payments went past the loaded prefixes"
    assert [(e.event_id, e.metadata) for e in stored_events] == [
        (e.event_id, e.metadata) for e in await memory.read(tenant)
    ]
    stored_refs = {
        key: (customer, is_open, relative_state(state, offset))
        for key, (customer, is_open, state) in refs_of(writers[0].conninfo, tenant).items()
    }
    assert stored_refs == {key: ref_row(value) for key, value in memory._state[tenant].refs.items()}


def state_with(*invoices: tuple[str, str, int, str]) -> TenantState:
    """A tenant state of customer C1's open invoices (id, due date, position, total)."""
    state = TenantState(refs={("currency", ""): "USD", ("customer", "C1"): True})
    for invoice_id, due, position, total in invoices:
        state.put_loaded(
            "invoice",
            invoice_id,
            InvoiceState("C1", date(2026, 1, 1), date.fromisoformat(due), Decimal(total), position),
        )
    return state


def auto_payment(amount: str, payment_id: str) -> Any:
    return parse_event({**b.payment(amount, payment_id, date="2026-03-01"), "tenantid": "t"})


def test_a_payment_within_the_prefix_needs_nothing_more_and_one_past_it_asks() -> None:
    state = state_with(("A", "2026-02-01", 5, "10.00"), ("B", "2026-02-01", 7, "10.00"))
    state.open_through["C1"] = (date(2026, 2, 1), 7, "B")
    outcome = decide_unit({"t": state}, [auto_payment("15.00", "P1")], PositionCounter(10))
    assert isinstance(outcome[0], Accepted)
    assert outcome[0].metadata["ledger"]["allocations"] == [
        {"invoice_id": "A", "amount": "10.00"},
        {"invoice_id": "B", "amount": "5.00"},
    ]
    # 6.00 is more than the prefix holds open: more open invoices may be stored after it.
    with pytest.raises(NeedOpenInvoices) as raised:
        decide_unit({"t": state}, [auto_payment("6.00", "P2")], PositionCounter(11))
    assert (raised.value.tenant_id, raised.value.customer_id) == ("t", "C1")
    # Everything is known: the rest is unapplied.
    del state.open_through["C1"]
    [outcome] = decide_unit({"t": state}, [auto_payment("6.00", "P2")], PositionCounter(11))
    assert isinstance(outcome, Accepted)
    assert outcome.metadata["ledger"]["unapplied"] == "1.00"


def test_the_open_list_follows_payments_voids_and_refunds() -> None:
    """The in-memory store's state keeps every customer's open invoices in order, exactly."""
    state: dict[str, TenantState] = {}
    positions = PositionCounter(0)
    events = [
        b.customer("C1"),
        b.invoice("I1", due_date="2026-03-01"),
        b.invoice("I2", due_date="2026-02-01"),
        b.invoice("I3", due_date="2026-02-01"),
        b.payment("100.00", "P1", date="2026-02-01"),
        b.void("I3", date="2026-02-02"),
        b.refund("40.00", "P1", date="2026-02-03"),
    ]
    keys_after = []
    for event in events:
        [outcome] = decide_unit(state, [parse_event({**event, "tenantid": "t"})], positions)
        assert isinstance(outcome, Accepted), outcome
        keys_after.append([key[2] for key in state["t"].open_invoices.get("C1", [])])
    assert keys_after == [[], ["I1"], ["I2", "I1"], ["I2", "I3", "I1"], ["I3", "I1"], ["I1"],
                          ["I2", "I1"]]  # fmt: skip
    assert all(ref_row(state["t"].refs[("invoice", i)])[1] for i in ("I1", "I2"))


async def test_the_load_reads_open_invoices_in_allocation_order_as_far_as_asked(
    writers: tuple[PostgresEventStore, ...],
) -> None:
    """`ledger_load` straight: a prefix in the rules' order, or every one for a writer of an
    earlier version (which names no limit)."""
    tenant = new_tenant()
    events = [b.customer("C1"), *many_invoices(), b.payment("40.00", "P1", date="2026-02-01")]
    assert (await append(writers[0], events, tenant)).ok  # pays I05, I07 and 8.00 of I19

    def load(customer: list[Any]) -> list[Any]:
        with psycopg.connect(writers[0].conninfo, autocommit=True) as conn, conn.transaction():
            conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
            needs = {"event_ids": [], "streams": [], "refs": [], "customers": [customer]}
            row = conn.execute("SELECT ledger_load(%s::jsonb)", [json.dumps(needs)]).fetchone()
        assert row is not None
        [[_tenant, _customer, _limit, invoice_ids]] = row[0]["open"]
        assert {r[2] for r in row[0]["refs"]} == set(invoice_ids)
        return list(invoice_ids)

    # By due date (a year end included), then issue order; those issued after a payment's date
    # too (the rules skip them, the load does not know the payment's date).
    in_order = [
        "I19", "I04", "I16", "I10", "I22", "I08", "I20", "I03", "I15", "I17", "I06",
        "I18", "I02", "I14", "I11", "I23", "I01", "I09", "I13", "I21", "I00", "I12",
    ]  # fmt: skip
    assert load([tenant, "C1", 4]) == in_order[:4]
    assert load([tenant, "C1", 40]) == in_order
    assert load([tenant, "C1"]) == in_order
