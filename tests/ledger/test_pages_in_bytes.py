"""A page of events ends at its size in bytes as well as at its count (`page_bytes_max`), so a store
of large events is read a few MB at a time, not 5,000 events of up to 1 MiB each; a short page is
no longer the end, and every reader of pages goes on to an empty one: the store's reads (the API,
`ledger events`), the relay, replay's fold and catch-up, `ledger refs`' fold, audit verification.
Here the budget is made small enough that ordinary events fill a page after a few of them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import psycopg
import pytest
from psycopg import AsyncConnection

import ledger.refs
from ledger import cli
from ledger.relay import Relay
from ledger.service import LedgerService
from ledger.store import postgres as postgres_store
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.audit_chain import AuditChain
from projections.audit_verify import verify
from projections.core import read_states
from projections.event_counts import EventCounts
from projections.replay import replay
from tests.ledger.events import customer, invoice, new_tenant, payment
from tests.ledger.test_relay import FakePublisher

# A few ordinary events (~400-700 stored bytes each) to a page.
small_page_bytes = 2000


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_store, "page_bytes_max", small_page_bytes)


async def _append_story(store: PostgresEventStore) -> list[str]:
    tenants = [new_tenant(), new_tenant()]
    for tenant in tenants:
        batch = [customer(tenant)] + [invoice(tenant, f"INV-{i}") for i in range(20)]
        batch.append(payment(tenant, amount="150.00"))
        report = await LedgerService(store).append(batch)
        assert not report.rejected, report.rejected
    return tenants


def _stored_sizes(url: str) -> list[tuple[int, int]]:
    """(position, stored bytes of data and metadata) of every event, in position order."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            (int(position), int(size))
            for position, size in conn.execute(
                "SELECT position, pg_column_size(data) + pg_column_size(metadata) FROM events"
                " ORDER BY position"
            ).fetchall()
        ]


async def _paged(store: PostgresEventStore, tenant: str | None, limit: int) -> list[list[int]]:
    """The positions of each page read from 1 up to the first empty page."""
    pages, position = [], 1
    while page := await store.read(tenant, position, limit):
        pages.append([event.position for event in page])
        position = page[-1].position + 1
    return pages


async def test_a_page_ends_at_its_size_in_bytes_and_paging_reads_every_event(
    fresh_store: PostgresEventStore, small_pages: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fresh_store
    tenants = await _append_story(store)
    sizes = _stored_sizes(store.conninfo)
    head = await store.head()
    assert [position for position, _ in sizes] == list(range(1, head + 1))
    # The first page: the events that start within the budget (the one that crosses it too).
    expected, before = [], 0
    for position, size in sizes:
        if before >= small_page_bytes:
            break
        expected.append(position)
        before += size
    page = await store.read(None, 1, 1000)
    assert [event.position for event in page] == expected
    assert 1 < len(page) < head
    # Paged to an empty page: every event once, in order, all tenants or one.
    pages = await _paged(store, None, 1000)
    assert len(pages) > 3 and [p for page in pages for p in page] == list(range(1, head + 1))
    for tenant in tenants:
        ours = [event.position for event in await _all_of(store, tenant)]
        pages = await _paged(store, tenant, 1000)
        assert len(pages) > 1 and [p for page in pages for p in page] == ours
    # The count still ends a page first when it comes first.
    assert [event.position for event in await store.read(None, 1, 2)] == [1, 2]
    # An event larger than the whole budget is a page of its own.
    monkeypatch.setattr(postgres_store, "page_bytes_max", 1)
    assert [event.position for event in await store.read(None, 5, 1000)] == [5]


async def _all_of(store: PostgresEventStore, tenant: str) -> list[object]:
    """The tenant's events read with no byte budget to speak of."""
    saved = postgres_store.page_bytes_max
    postgres_store.page_bytes_max = 1 << 40
    try:
        return list(await store.read(tenant, 1, 10_000))
    finally:
        postgres_store.page_bytes_max = saved


async def test_every_reader_of_pages_reads_to_the_end(
    fresh_store: PostgresEventStore, small_pages: None
) -> None:
    store = fresh_store
    tenants = await _append_story(store)
    head = await store.head()
    # The relay publishes every event once, in order.
    broker = FakePublisher()
    relay = Relay(store, broker, topic="events")
    await relay.load_checkpoint()
    assert await relay.repair_broker() is True
    assert await relay.catch_up() == head
    published = [dict(message.headers)["ce_position"] for message in broker.topics["events"]]
    assert published == [str(position).encode() for position in range(1, head + 1)]
    conn = await AsyncConnection.connect(store.conninfo, autocommit=True)
    try:
        # Replay's fold (one process: this one, with the small budget) and its catch-up.
        assert await replay(store, conn, [EventCounts(), AuditChain()], processes=1) == head
        await configure_connection(conn)
        states = await read_states(conn, "event_counts")
        assert {tenant: state["events"] for (_, tenant), (_, state) in states.items()} == {
            tenant: 22 for tenant in tenants
        }
        # Audit verification walks every event of a tenant against its chain.
        for tenant in tenants:
            answer = await verify(store, conn, tenant)
            assert answer["ok"] and answer["events"] == 22, answer
    finally:
        await conn.close()
    # `ledger refs`' fold derives the references from every event.
    owner = await AsyncConnection.connect(store.conninfo, autocommit=True)
    try:
        derived = await ledger.refs.derive(owner, None, rebuild=False)
    finally:
        await owner.close()
    assert derived["events"] == head
    assert (derived["missing"], derived["unexpected"], derived["different"]) == (0, 0, 0)


def test_ledger_events_writes_every_event(
    new_database: Callable[[], str],
    small_pages: None,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    url = new_database()

    async def story() -> list[str]:
        opened = await PostgresEventStore.open(url)
        try:
            return await _append_story(opened)
        finally:
            await opened.close()

    tenant = asyncio.run(story())[0]
    monkeypatch.setenv("LEDGER_DATABASE_URL", url)
    assert cli.main(["events", "--tenant", tenant]) == 0
    written = [orjson.loads(line) for line in capsysbinary.readouterr().out.splitlines()]
    assert [event["tenantid"] for event in written] == [tenant] * 22
    assert [event["position"] for event in written] == list(range(1, 23))
