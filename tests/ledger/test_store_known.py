"""Appends in one round trip on what the writer knows (`ledger.store.known`), against the real
PostgreSQL: the answers, the stored events and `ledger_refs` are those of the two-round-trip path
(and of the in-memory store) whatever another writer, a restamp or a retry did meanwhile."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from unittest import mock

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ledger import decide
from ledger.decide import TenantState, ref_row
from ledger.errors import StoreUnavailableError
from ledger.service import AppendReport, LedgerService
from ledger.store import EventStore
from ledger.store.known import KnownState, OpenInvoices, known_events_max
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.test_report_properties import Stream, property_settings, streams

Event = dict[str, Any]


def paths() -> dict[str, float]:
    return {
        path: REGISTRY.get_sample_value("ledger_append_transactions_total", {"path": path}) or 0.0
        for path in ("one_round_trip", "two_round_trips", "missed")
    }


def since(before: dict[str, float]) -> dict[str, int]:
    now = paths()
    return {path: int(now[path] - before[path]) for path in now}


def tenant_events(tenant: str, *events: Event) -> list[Event]:
    return [{**event, "tenantid": tenant} for event in events]


def refs_of(url: str, tenant: str) -> dict[tuple[str, str], tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT set_config('ledger.tenants', %s, false)", [tenant])
        rows = conn.execute(
            "SELECT kind, ref_id, customer_id, is_open, state FROM ledger_refs"
            " WHERE tenant_id = %s",
            [tenant],
        ).fetchall()
    return {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}


@pytest.fixture
async def url(new_database: Callable[[], str]) -> str:
    return new_database()


Writers = tuple[PostgresEventStore, PostgresEventStore]


@asynccontextmanager
async def two_writers(url: str) -> AsyncIterator[Writers]:
    """Two stores on one database: two writers, each with its own knowledge."""
    first = await PostgresEventStore.open(url)
    second = await PostgresEventStore.open(url, run_migrations=False)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def writers(url: str) -> AsyncIterator[Writers]:
    async with two_writers(url) as pair:
        yield pair


async def append(store: EventStore, *events: Event, atomic: bool = True) -> AppendReport:
    return await LedgerService(store).append(list(events), atomic=atomic)


async def test_one_writer_appends_in_one_round_trip_and_keeps_exact_references(
    url: str, writers: Writers
) -> None:
    store, _ = writers
    tenant = new_tenant()
    before = paths()
    memory = MemoryEventStore()
    events = tenant_events(
        tenant,
        b.customer("C1"),
        b.invoice("I1", amount="100.00", due_date="2026-02-01"),
        b.invoice("I2", amount="80.00", due_date="2026-02-15"),
        b.payment("30.00", "P1"),  # auto-allocated: oldest due first
        b.payment("50.00", "P2", allocations={"I2": "50.00"}),
        b.payment("120.00", "P3"),  # more than is open: the rest unapplied
        b.refund("40.00", "P3"),  # reopens what P3 paid last
        b.invoice("I3", amount="10.00"),
        b.payment("10.00", "P4", allocations={"I3": "10.00"}),
    )
    for event in events:
        report = await append(store, event)
        assert report.ok, report.as_json()
        assert report.as_json() == (await append(memory, event)).as_json()
    counted = since(before)
    # The first append knows nothing yet; C1's invoices are known from its registration on.
    assert counted == {"one_round_trip": len(events) - 1, "two_round_trips": 1, "missed": 0}
    stored = refs_of(url, tenant)
    expected = memory._state[tenant]
    assert stored == {key: ref_row(value) for key, value in expected.refs.items()}, (
        "ledger_refs as the rules keep them"
    )
    # The writer keeps a customer's open invoices, all of them and only those, in allocation
    # order: I1 and I3 are paid, I2 reopened by the refund.
    known = store._known.customers[(tenant, "C1")]
    assert known.through is None
    assert (
        [key[2] for key in known.keys]
        == [
            invoice_id
            for (kind, invoice_id), value in expected.refs.items()
            if kind == "invoice" and ref_row(value)[1]
        ]
        == ["I2"]
    )
    allocations = [e.metadata.get("ledger") for e in await store.read(tenant)]
    assert allocations == [e.metadata.get("ledger") for e in await memory.read(tenant)]


async def test_another_writers_appends_are_seen_before_any_decision(
    writers: Writers,
) -> None:
    first, second = writers
    tenant = new_tenant()
    for event in tenant_events(tenant, b.customer("C1"), b.invoice("I1", amount="100.00")):
        assert (await append(first, event)).ok
    # The second writer pays 60 of I1; the first still knows I1 with 100 open.
    paid = await append(second, *tenant_events(tenant, b.payment("60.00", "P1")))
    assert paid.ok, paid.as_json()

    def pay(amount: str, payment_id: str) -> Event:
        return tenant_events(tenant, b.payment(amount, payment_id, allocations={"I1": amount}))[0]

    # Accepted on what the first writer knows, but the head moved: not written; the stored
    # state (40 open) refuses it.
    before = paths()
    over = await append(first, pay("60.00", "P2"))
    assert [r["code"] for r in over.as_json()["rejected"]] == ["allocation_exceeds_open_amount"]
    assert since(before) == {"one_round_trip": 0, "two_round_trips": 1, "missed": 1}
    # Having seen another writer, the first reads before deciding until a read finds it quiet.
    before = paths()
    assert (await append(first, pay("30.00", "P3"))).ok
    assert since(before) == {"one_round_trip": 0, "two_round_trips": 1, "missed": 0}
    # Quiet again: 10 open, known. A refusal on known state is still read, never guessed.
    before = paths()
    late = await append(first, pay("11.00", "P4"))
    assert [r["code"] for r in late.as_json()["rejected"]] == ["allocation_exceeds_open_amount"]
    assert (await append(first, pay("10.00", "P5"))).ok
    assert since(before) == {"one_round_trip": 1, "two_round_trips": 1, "missed": 0}
    stored = await first.read(tenant)
    assert [e.data.get("payment_id") for e in stored] == [None, None, "P1", "P3", "P5"]


async def test_a_restamped_state_is_read_again(url: str, writers: Writers) -> None:
    """References changed without moving the head (what `ledger refs rebuild` does, which sets a
    new stamp) are read again: here an invoice marked paid behind the writer's back."""
    store, _ = writers
    tenant = new_tenant()
    for event in tenant_events(tenant, b.customer("C1"), b.invoice("I1", amount="100.00")):
        assert (await append(store, event)).ok
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ledger_refs SET is_open = false,"
            " state = jsonb_set(state, '{paid}', '\"100.00\"')"
            " WHERE tenant_id = %s AND kind = 'invoice' AND ref_id = 'I1'",
            [tenant],
        )
        conn.execute("UPDATE ledger_position SET stamp = stamp + 1")
    before = paths()
    report = await append(
        store, *tenant_events(tenant, b.payment("5.00", "P1", allocations={"I1": "5.00"}))
    )
    assert [r["code"] for r in report.as_json()["rejected"]] == ["allocation_exceeds_open_amount"]
    assert since(before) == {"one_round_trip": 0, "two_round_trips": 1, "missed": 1}


async def test_a_retry_is_a_duplicate_and_a_reused_id_a_conflict(
    writers: Writers,
) -> None:
    """A key assumed absent that exists: the guess is not written and the stored state answers.
    (After a batch, which the writer does not learn, the customer it registered is unknown.)"""
    store, _ = writers
    tenant = new_tenant()
    registered, *invoices = tenant_events(
        tenant,
        b.customer("C1"),
        *[b.invoice(f"I{n}", amount="10.00") for n in range(known_events_max)],
    )
    first = await append(store, registered, *invoices)
    assert first.ok
    before = paths()
    again = await append(store, registered)
    position = first.as_json()["appended"][0]["position"]
    assert again.as_json()["duplicates"] == [
        {"index": 0, "id": registered["id"], "position": position}
    ]
    assert since(before) == {"one_round_trip": 0, "two_round_trips": 1, "missed": 1}
    changed = await append(store, {**registered, "time": "2026-01-16T10:00:00Z"})
    assert [r["code"] for r in changed.as_json()["rejected"]] == ["exists_with_different_content"]
    assert len(await store.read(tenant)) == 1 + known_events_max


async def test_a_batch_is_not_learnt_and_what_follows_reads_what_it_needs(
    url: str, writers: Writers
) -> None:
    store, _ = writers
    tenant = new_tenant()
    memory = MemoryEventStore()
    batch = tenant_events(
        tenant,
        b.customer("C1"),
        *[b.invoice(f"I{n}", amount="10.00") for n in range(known_events_max)],
    )
    before = paths()
    report = await append(store, *batch)
    assert report.ok and (await append(memory, *batch)).ok
    assert since(before)["two_round_trips"] == 1
    # Known: only the head. C1 and its invoices are read again by the payment's transaction.
    payment = tenant_events(tenant, b.payment("25.00", "P1"))[0]
    paid = await append(store, payment)
    assert paid.ok
    await append(memory, payment)
    assert refs_of(url, tenant) == {
        key: ref_row(value) for key, value in memory._state[tenant].refs.items()
    }


async def test_a_failed_transaction_forgets_everything(url: str, writers: Writers) -> None:
    """A transaction that failed may or may not have committed: nothing known is trusted."""
    store, _ = writers
    tenant = new_tenant()
    assert (await append(store, *tenant_events(tenant, b.customer("C1")))).ok
    assert store._writer is not None and store._known.head is not None
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [store._writer.info.backend_pid])
    with pytest.raises(StoreUnavailableError):
        await append(store, *tenant_events(tenant, b.invoice("I1", amount="5.00")))
    assert store._known.head is None and store._known.refs == {}
    before = paths()
    report = await append(store, *tenant_events(tenant, b.invoice("I2", amount="5.00")))
    assert report.ok, report.as_json()
    assert since(before) == {"one_round_trip": 0, "two_round_trips": 1, "missed": 0}
    assert [e.data.get("invoice_id") for e in await store.read(tenant)] == [None, "I2"]


def test_knowledge_is_bounded() -> None:
    """Past `keys_max` the older half goes (references and streams by when they were learnt),
    and every customer's set."""
    known = KnownState(keys_max=10)
    known.customers[("t", "C1")] = OpenInvoices([], None)
    state = {"t": TenantState()}
    for number in range(6):
        state["t"].refs[("customer", f"C{number}")] = True
        state["t"].dirty.add(("customer", f"C{number}"))
    known.learn_written(state, [("t", f"s{n}", 1) for n in range(6)], head=12, stamp=7)
    assert len(known.refs) == 3 and len(known.streams) == 3 and known.customers == {}
    assert set(known.streams) == {("t", "s3"), ("t", "s4"), ("t", "s5")}
    assert (known.head, known.stamp) == (12, 7)
    state["t"].dirty = {("customer", "C1")}
    known.learn_written(state, [], head=14, stamp=8)
    assert ("t", "customer", "C1") in known.refs and len(known.refs) <= 4


# --- a property: two writers, retries and refusals, against the in-memory store --------------

Operation = tuple[int, str, int, bool]  # (writer, what, size or index, atomic)


@st.composite
def operations(draw: st.DrawFn) -> tuple[Stream, list[Operation]]:
    stream = draw(streams(late=True))
    operations: list[Operation] = []
    sent = 0
    while sent < len(stream.events):
        writer = draw(st.sampled_from([0, 0, 0, 1]))  # mostly one writer: guesses hold
        what = draw(st.sampled_from(["next", "next", "next", "retry", "reuse", "rename"]))
        if what == "next" or sent == 0:
            size = draw(st.integers(1, 4))
            operations.append((writer, "next", size, draw(st.booleans())))
            sent += size
        else:
            operations.append((writer, what, draw(st.integers(0, sent - 1)), True))
    return stream, operations


@pytest.fixture(scope="module")
async def module_writers(database_url: str) -> AsyncIterator[Writers]:
    async with two_writers(database_url) as pair:
        yield pair


def relative(report: AppendReport, offset: int) -> dict[str, Any]:
    """The answer with positions counted from `offset` (the shared database's head before)."""
    answer = report.as_json()
    for name in ("appended", "duplicates"):
        answer[name] = [{**row, "position": row["position"] - offset} for row in answer[name]]
    answer["rejected"] = [
        {
            **row,
            "message": re.sub(
                r"\(position (\d+)\)",
                lambda found: f"(position {int(found[1]) - offset})",
                row["message"],
            ),
        }
        for row in answer["rejected"]
    ]
    return answer


def relative_state(state: Any, offset: int) -> Any:
    """An invoice's state keeps its position (auto-allocation's tie-break)."""
    if isinstance(state, dict) and "position" in state:
        return {**state, "position": state["position"] - offset}
    return state


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param(None, id="prefixes-as-configured"),
        # One open invoice per payment, doubling: nearly every automatic allocation goes past
        # what was loaded or guessed, and loads again.
        pytest.param((1, 2), id="prefixes-of-one"),
    ],
)
@property_settings(40)
@given(case=operations())
async def test_two_writers_answer_and_store_what_the_rules_say(
    database_url: str,
    module_writers: Writers,
    case: tuple[Stream, list[Operation]],
    prefix: tuple[int, int] | None,
) -> None:
    with contextlib.ExitStack() as stack:
        if prefix is not None:
            stack.enter_context(mock.patch.object(decide, "open_invoices_per_payment", prefix[0]))
            stack.enter_context(mock.patch.object(decide, "open_invoices_growth", prefix[1]))
        await two_writers_and_the_rules(database_url, module_writers, case)


async def two_writers_and_the_rules(
    database_url: str, module_writers: Writers, case: tuple[Stream, list[Operation]]
) -> None:
    stream, plan = case
    tenant = new_tenant()
    events = tenant_events(tenant, *stream.events)
    memory = MemoryEventStore()
    offset = await module_writers[0].head()
    sent = 0
    for writer, what, value, atomic in plan:
        if what == "next":
            chosen = events[sent : sent + value]
            sent += value
        else:
            earlier = events[value]
            chosen = [
                earlier
                if what == "retry"
                else {**earlier, "time": "2026-12-31T00:00:00Z"}
                if what == "reuse"
                else {**earlier, "id": f"{earlier['id']}-again"}
            ]
        stored = await append(module_writers[writer], *chosen, atomic=atomic)
        expected = await append(memory, *chosen, atomic=atomic)
        assert relative(stored, offset) == relative(expected, 0), (what, chosen)
    stored_refs = {
        key: (customer, is_open, relative_state(state, offset))
        for key, (customer, is_open, state) in refs_of(database_url, tenant).items()
    }
    assert stored_refs == {key: ref_row(value) for key, value in memory._state[tenant].refs.items()}
    got = [
        (e.event_id, e.stream_version, e.metadata, e.hash)
        for e in await module_writers[1].read(tenant)
    ]
    assert got == [
        (e.event_id, e.stream_version, e.metadata, e.hash) for e in await memory.read(tenant)
    ]
