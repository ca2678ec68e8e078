"""What only the PostgreSQL event store promises, proved against a real server: state survives a
restart; concurrent writers (separate connections, event loops and threads) never let a follower
see a gap or a position twice; the append rules stay exact across writers; one caller's failed
request does not fail the others it shared a group commit with; row-level security and the
append-only trigger hold even for direct SQL; NOTIFY carries the new head; migrations are
idempotent and safe to run concurrently.

Why a follower can never skip a position: every append transaction first locks the single row of
`ledger_position` (SELECT ... FOR UPDATE), then reads the head, assigns positions above it, inserts
and moves the head. A second writer blocks on that row until the first commits; PostgreSQL makes a
commit visible to new snapshots before it releases the committing transaction's locks, so when the
second writer gets the lock the first one's rows are already visible to everyone and its own
positions are all above them. Positions therefore become visible in position order, and a rolled
back writer leaves the head where it was. With a plain sequence instead, writer A could take 7,
writer B take 8 and commit first, and a follower that read 8 would never go back for 7.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from ledger.decide import Accepted, Duplicate, Refused
from ledger.errors import RejectionCode, StoreError
from ledger.store import RecordedEvent, Unit
from ledger.store import postgres as postgres_store
from ledger.store.postgres import (
    PostgresEventStore,
    app_role,
    configure_connection,
    migrate,
    notify_channel,
    scoped_position_read,
    select_events,
)
from projections.core import ProjectedEvent
from tests.ledger.store_builders import Book, credit_note, customer, invoice, payment

all_versions = [int(name.split("_", 1)[0]) for name in postgres_store._migrations]

# The concurrency test: 16 stores in this event loop, each with two tasks (so group commit happens
# inside a store too), and two more stores in threads with their own event loops: 2,000 events.
loop_writers = 16
loop_writer_tasks = 2
loop_task_events = 50
thread_writers = 2
thread_writer_events = 200
# Unit sizes cycle through 1..unit_events_max, so transactions carry from 1 to many events.
unit_events_max = 7
follower_page_events_max = 500
concurrency_timeout_s = 60
# Far below the ~400 transactions the writers commit, far above a follower that read only at the end.
follower_pages_while_writing_min = 20
notify_timeout_s = 5
# How long to listen to be sure that no notification comes.
silence_s = 0.3


# --- restarts and concurrent writers ---------------------------------------------------------


async def test_state_survives_a_restart(database_url: str) -> None:
    first = await PostgresEventStore.open(database_url)
    book = Book(first)
    issued = invoice("INV-1")
    _, issued_outcome = await book.accept(customer(), issued)
    await book.accept(invoice("INV-2", due_date="2026-03-01"))
    await book.accept(payment("60.00", allocations={"INV-1": "60.00"}))
    await first.close()

    second = await PostgresEventStore.open(database_url)
    try:
        book.store = second
        head = await second.head()
        assert await book.append(issued) == [Duplicate(issued["id"], issued_outcome.position)]
        over = await book.refuse(payment("40.01", "PAY-2", allocations={"INV-1": "40.01"}))
        assert (over.code, over.field) == (
            RejectionCode.allocation_exceeds_open_amount,
            "data.allocations[0].amount",
        )
        assert "40.00 open" in over.message
        again = await book.refuse(customer())
        assert again.code is RejectionCode.customer_exists
        # The open-invoice index survived too: automatic allocation finds both invoices.
        [paid] = await book.accept(payment("140.00", "PAY-3"))
        assert await book.ledger_metadata(paid) == {
            "allocation": "oldest_due_first",
            "allocations": [
                {"invoice_id": "INV-1", "amount": "40.00"},
                {"invoice_id": "INV-2", "amount": "100.00"},
            ],
            "unapplied": "0.00",
        }
        [stream_moved_on] = await book.accept({**credit_note("10.00"), "expectedversion": 1})
        assert stream_moved_on.stream_version == 2
        assert await second.head() == head + 2
    finally:
        await second.close()


async def test_rules_stay_exact_across_concurrent_writers(database_url: str) -> None:
    """Eight stores (eight connections) each allocate 30.00 of one 100.00 invoice at once."""
    stores = [await PostgresEventStore.open(database_url) for _ in range(8)]
    try:
        book = Book(stores[0])
        await book.accept(customer(), invoice("INV-1"))
        books = [Book(store, book.tenant) for store in stores]
        attempts = [
            each.append(payment("30.00", f"PAY-{index}", allocations={"INV-1": "30.00"}))
            for index, each in enumerate(books)
        ]
        answers = await asyncio.gather(*attempts)
    finally:
        for store in stores:
            await store.close()
    outcomes = [outcomes[0] for outcomes in answers]
    accepted = [outcome for outcome in outcomes if isinstance(outcome, Accepted)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, Refused)]
    assert (len(accepted), len(refused)) == (3, 5)
    assert {outcome.rejection.code for outcome in refused} == {
        RejectionCode.allocation_exceeds_open_amount
    }
    # The refusals name what was still open when each writer got the lock: 10.00.
    assert all("10.00 open" in outcome.rejection.message for outcome in refused)


async def _write_customers(
    store: PostgresEventStore, tenant: str, count: int, prefix: str
) -> list[tuple[str, int]]:
    """Append `count` customers in units of 1..unit_events_max; answer (event id, position)."""
    book = Book(store, tenant)
    appended: list[tuple[str, int]] = []
    sizes = iter(range(10**6))
    while len(appended) < count:
        size = min(next(sizes) % unit_events_max + 1, count - len(appended))
        raws = [customer(f"{prefix}-{len(appended) + index}") for index in range(size)]
        for outcome in await book.accept(*raws):
            appended.append((outcome.event.event_id, outcome.position))
    return appended


def _write_in_own_loop(database_url: str, tenant: str) -> list[tuple[str, int]]:
    async def run() -> list[tuple[str, int]]:
        store = await PostgresEventStore.open(database_url)
        try:
            return await _write_customers(store, tenant, thread_writer_events, "thread")
        finally:
            await store.close()

    return asyncio.run(run())


@dataclasses.dataclass
class Followed:
    seen: list[RecordedEvent] = dataclasses.field(default_factory=list)
    violations: list[str] = dataclasses.field(default_factory=list)
    pages_while_writing: int = 0


async def _follow(store: PostgresEventStore, after: int, writers_done: asyncio.Event) -> Followed:
    """Poll from the last position seen; record every poll that did not continue it exactly."""
    followed = Followed()
    last = after
    while True:
        finished = writers_done.is_set()  # before the read: an empty read after it is final
        page = await store.read(None, from_position=last + 1, limit=follower_page_events_max)
        if not page:
            if finished:
                return followed
            await asyncio.sleep(0.001)
            continue
        positions = [event.position for event in page]
        if positions != list(range(last + 1, last + 1 + len(page))):
            followed.violations.append(f"after {last} a poll returned {positions[:5]}...")
        followed.seen.extend(page)
        followed.pages_while_writing += not finished
        last = positions[-1]


async def test_follower_sees_every_position_once_under_concurrent_writers(
    database_url: str,
) -> None:
    follower_store = await PostgresEventStore.open(database_url)
    stores = [await PostgresEventStore.open(database_url) for _ in range(loop_writers)]
    tenants = [f"t{uuid.uuid4().hex[:12]}" for _ in range(loop_writers + thread_writers)]
    head = await follower_store.head()
    writers_done = asyncio.Event()
    try:
        follower = asyncio.create_task(_follow(follower_store, head, writers_done))
        in_loop = [
            _write_customers(store, tenants[index], loop_task_events, f"task{task}")
            for index, store in enumerate(stores)
            for task in range(loop_writer_tasks)
        ]
        in_threads = [
            asyncio.to_thread(_write_in_own_loop, database_url, tenant)
            for tenant in tenants[loop_writers:]
        ]
        written = await asyncio.wait_for(
            asyncio.gather(*in_loop, *in_threads), concurrency_timeout_s
        )
        writers_done.set()
        followed = await asyncio.wait_for(follower, concurrency_timeout_s)
        final_head = await follower_store.head()
    finally:
        for store in [follower_store, *stores]:
            await store.close()

    total = (
        loop_writers * loop_writer_tasks * loop_task_events + thread_writers * thread_writer_events
    )
    assert total == 2000
    assert followed.violations == []
    # The follower read while the writers wrote, not only once they were done.
    assert followed.pages_while_writing >= follower_pages_while_writing_min
    assert final_head == head + total
    seen = followed.seen
    assert [event.position for event in seen] == list(range(head + 1, head + total + 1))
    # Pair assertion: what the writers were told is what the follower saw, event for event.
    told = {event_id: position for appended in written for event_id, position in appended}
    assert len(told) == total
    assert {event.event_id: event.position for event in seen} == told
    # Each writer's own events carry increasing positions and stream versions 1 (one stream each).
    by_tenant: dict[str, list[int]] = {}
    for event in seen:
        by_tenant.setdefault(event.tenant_id, []).append(event.position)
        assert event.stream_version == 1
    assert set(by_tenant) == set(tenants)
    assert all(positions == sorted(positions) for positions in by_tenant.values())


async def test_a_failed_request_fails_alone_in_a_group_commit(database_url: str) -> None:
    """PostgreSQL cannot store a NUL character in jsonb; the request carrying one must fail, and
    the requests that were sharing its transaction must not."""
    store = await PostgresEventStore.open(database_url)
    try:
        book = Book(store)
        good_before, good_after = book.event(customer("C1")), book.event(customer("C2"))
        valid = book.event(customer("C3"))
        unstorable = dataclasses.replace(valid, data={**valid.data, "name": "Acme\x00"})
        head = await store.head()
        answers = await asyncio.gather(
            store.append([Unit([good_before])]),
            store.append([Unit([unstorable])]),
            store.append([Unit([good_after])]),
            return_exceptions=True,
        )
        assert isinstance(answers[1], StoreError)
        assert [describe_positions(answer) for answer in (answers[0], answers[2])] == [
            [head + 1],
            [head + 2],
        ]
        assert [event.event_id for event in await book.events()] == [
            good_before.event_id,
            good_after.event_id,
        ]
    finally:
        await store.close()


def describe_positions(answer: Any) -> list[int]:
    assert isinstance(answer, list), answer
    return [outcome.position for outcomes in answer for outcome in outcomes]


# --- row-level security and the append-only trigger -------------------------------------------


async def _scoped(conn: AsyncConnection[Any], tenants: str) -> None:
    await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenants])


async def _insert_row(conn: AsyncConnection[Any], tenant: str) -> None:
    await conn.execute(
        "INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id, type, time,"
        " data, metadata, hash) VALUES (%s, %s, 's', 1, %s, 'x', now(), '{}', '{}', 'h')",
        [9_000_000_000 + uuid.uuid4().int % 10**9, tenant, uuid.uuid4().hex],
    )


async def test_row_level_security_shows_and_admits_only_the_scoped_tenants(
    database_url: str,
) -> None:
    store = await PostgresEventStore.open(database_url)
    try:
        mine, theirs = Book(store), Book(store)
        await mine.accept(customer("C1"), invoice("INV-1"))
        await theirs.accept(customer("C1"))
        my_ids = sorted(event.event_id for event in await mine.events())
    finally:
        await store.close()
    async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"SET ROLE {app_role}")
        async with conn.transaction():
            await _scoped(conn, mine.tenant)
            cursor = await conn.execute("SELECT tenant_id, event_id FROM events ORDER BY event_id")
            assert await cursor.fetchall() == [(mine.tenant, event_id) for event_id in my_ids]
            cursor = await conn.execute(
                "SELECT count(*) FROM events WHERE tenant_id = %s", [theirs.tenant]
            )
            assert await cursor.fetchone() == (0,)
            cursor = await conn.execute("SELECT DISTINCT tenant_id FROM ledger_refs")
            assert await cursor.fetchall() == [(mine.tenant,)]
        # Writing another tenant's row is refused; writing one's own is not (then rolled back).
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            async with conn.transaction():
                await _scoped(conn, mine.tenant)
                await _insert_row(conn, theirs.tenant)
        with pytest.raises(RollbackOnPurpose):
            async with conn.transaction():
                await _scoped(conn, mine.tenant)
                await _insert_row(conn, mine.tenant)
                raise RollbackOnPurpose
        # The role may not update or delete at all.
        for statement in ("UPDATE events SET type = 'x'", "DELETE FROM events"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                async with conn.transaction():
                    await _scoped(conn, mine.tenant)
                    await conn.execute(f"{statement} WHERE tenant_id = %s", [mine.tenant])
        # Outside any declared scope, nothing is visible.
        cursor = await conn.execute("SELECT count(*) FROM events")
        assert await cursor.fetchone() == (0,)


class RollbackOnPurpose(Exception):
    pass


async def test_events_are_append_only_even_for_a_superuser(database_url: str) -> None:
    store = await PostgresEventStore.open(database_url)
    try:
        book = Book(store)
        await book.accept(customer("C1"))
        before = await book.events()
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            )
            assert await cursor.fetchone() == (True,)
            for operation, statement in (
                ("UPDATE", "UPDATE events SET data = '{}' WHERE tenant_id = %s"),
                ("DELETE", "DELETE FROM events WHERE tenant_id = %s"),
                ("TRUNCATE", "TRUNCATE events"),
            ):
                with pytest.raises(
                    psycopg.errors.InsufficientPrivilege,
                    match=f"events are append-only: {operation} is not allowed",
                ):
                    await conn.execute(statement, [book.tenant] if "%s" in statement else None)
        assert await book.events() == before
    finally:
        await store.close()


async def test_times_read_back_in_utc_whatever_the_servers_time_zone(
    new_database: Callable[[], str],
) -> None:
    """A database (or server, or role) whose TimeZone is not UTC changes the offset psycopg gives
    the times it reads, not the instant: every connection the ledger configures reads in UTC, so
    an event's times render the same (`...Z`) to the API, the relay's headers and the projectors."""
    url = new_database()
    async with await AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("ALTER DATABASE {} SET TimeZone = 'Asia/Kolkata'").format(
                sql.Identifier(conn.info.dbname)
            )
        )
    store = await PostgresEventStore.open(url)
    try:
        book = Book(store)
        await book.accept(customer(time="2026-01-15T10:00:00Z"))
        [event] = await store.read(book.tenant)
        assert event.time == datetime(2026, 1, 15, 10, tzinfo=UTC)
        assert event.time.utcoffset() == event.recorded_at.utcoffset() == timedelta(0)
        rendered = event.as_json()
        assert rendered["time"] == "2026-01-15T10:00:00Z"
        assert rendered["recordedat"].endswith("Z")
        assert ProjectedEvent.from_recorded(event).time == "2026-01-15T10:00:00Z"
        # The connections the worker, replay's fold and the gateway open themselves.
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            await configure_connection(conn)
            async with conn.transaction():
                await conn.execute(scoped_position_read, ["*"])
                cursor = await conn.execute(select_events + "ORDER BY position")
                [row] = await cursor.fetchall()
        assert ProjectedEvent.from_row(row).time == "2026-01-15T10:00:00Z"
        assert ProjectedEvent.from_row(row).recorded_at == rendered["recordedat"]
    finally:
        await store.close()


# --- NOTIFY ----------------------------------------------------------------------------------


async def test_listeners_hear_the_new_head_after_each_committed_append(database_url: str) -> None:
    store = await PostgresEventStore.open(database_url)
    try:
        async with await AsyncConnection.connect(database_url, autocommit=True) as listener:
            await listener.execute(f"LISTEN {notify_channel}")
            book = Book(store)
            head = await store.head()
            await book.refuse(invoice("INV-1", customer_id="C9"))
            silent = [n async for n in listener.notifies(timeout=silence_s, stop_after=1)]
            assert silent == []

            await book.accept(customer("C1"), customer("C2"), customer("C3"))
            heard = [n async for n in listener.notifies(timeout=notify_timeout_s, stop_after=1)]
            assert [(n.channel, n.payload) for n in heard] == [(notify_channel, str(head + 3))]
            await book.accept(customer("C4"))
            heard = [n async for n in listener.notifies(timeout=notify_timeout_s, stop_after=1)]
            assert [n.payload for n in heard] == [str(head + 4)]
    finally:
        await store.close()


# --- migrations ------------------------------------------------------------------------------


async def _migrated_versions(conninfo: str) -> list[int]:
    async with await AsyncConnection.connect(conninfo) as conn:
        cursor = await conn.execute("SELECT version FROM ledger_schema_migrations ORDER BY 1")
        return [row[0] for row in await cursor.fetchall()]


async def test_migrations_apply_once(new_database: Callable[[], str]) -> None:
    conninfo = new_database()
    assert await migrate(conninfo) == all_versions
    assert await migrate(conninfo) == []
    assert await _migrated_versions(conninfo) == all_versions
    store = await PostgresEventStore.open(conninfo)  # migrates a third time, and works
    try:
        assert await store.head() == 0
        [accepted] = await Book(store).accept(customer())
        assert accepted.position == 1
    finally:
        await store.close()


async def test_concurrent_migrations_on_a_fresh_database_do_not_fail(
    new_database: Callable[[], str],
) -> None:
    conninfo = new_database()
    results = await asyncio.gather(*(migrate(conninfo) for _ in range(8)))
    assert sorted(results) == [[]] * 7 + [all_versions]
    assert await _migrated_versions(conninfo) == all_versions
    stores = await asyncio.gather(*(PostgresEventStore.open(conninfo) for _ in range(4)))
    try:
        answers = await asyncio.gather(*(Book(store).accept(customer()) for store in stores))
        assert sorted(outcomes[0].position for outcomes in answers) == [1, 2, 3, 4]
    finally:
        for store in stores:
            await store.close()


# --- plans as the store grows ----------------------------------------------------------------

# Past the plan cache's five custom plans, so PostgreSQL makes the generic plan on tiny tables.
tiny_store_appends = 6
grown_store_events = 4_000
grown_store_unit_events = 500
stats_flush_timeout_s = 15


async def _events_scans(conn: AsyncConnection[Any]) -> dict[str, int]:
    """Scans of `events` so far, as the statistics have them: sequential (`seq`) and by index."""
    cursor = await conn.execute(
        "SELECT 'seq', seq_scan FROM pg_stat_user_tables WHERE relname = 'events'"
        " UNION ALL SELECT indexrelname, idx_scan FROM pg_stat_user_indexes"
        " WHERE relname = 'events'"
    )
    return {name: int(count) for name, count in await cursor.fetchall()}


async def _scans_and_inserts(conninfo: str) -> tuple[dict[str, int], int]:
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        scans = await _events_scans(conn)
        cursor = await conn.execute(
            "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = 'events'"
        )
        row = await cursor.fetchone()
        assert row is not None
        return scans, row[0]


async def _flush_writer_stats(store: PostgresEventStore) -> None:
    """Have the store's writer backend report all of its statistics now. A backend reports them
    within a second of going idle, but that report takes only the entries it can lock without
    waiting and leaves the rest for a later one (PostgreSQL 15's shared-memory statistics): a
    reading could see the inserts and miss scans still pending, and count them as the next
    append's. `pg_stat_force_next_flush()` makes the report before this statement's
    ReadyForQuery wait for every lock."""
    conn = await store._writer_connection()
    await conn.execute("SELECT pg_stat_force_next_flush()")


async def _scans_once_flushed(conninfo: str, inserts_at_least: int) -> dict[str, int]:
    """The index scan counts once the writer's statistics include `inserts_at_least` inserts."""
    deadline = asyncio.get_running_loop().time() + stats_flush_timeout_s
    while True:
        scans, inserts = await _scans_and_inserts(conninfo)
        if inserts >= inserts_at_least:
            return scans
        assert asyncio.get_running_loop().time() < deadline, "the writer never reported its stats"
        await asyncio.sleep(0.1)


async def test_lookups_keep_to_the_unique_indexes_as_the_store_grows(
    new_database: Callable[[], str],
) -> None:
    """The writer's cached plans are remade whenever the store has doubled (migration 006). A plan
    kept from the tiny store looked event ids up through `events_tenant_position`, reading all of
    a tenant's events on every append (batched appends slowed quadratically); with replanning off
    (`replan_head_min` huge) this test sees exactly that scan."""
    conninfo = new_database()
    store = await PostgresEventStore.open(conninfo)
    try:
        book = Book(store)
        for index in range(tiny_store_appends):
            await book.accept(customer(f"C{index}"))
        for start in range(tiny_store_appends, grown_store_events, grown_store_unit_events):
            end = min(start + grown_store_unit_events, grown_store_events)
            await book.accept(*(customer(f"C{index}") for index in range(start, end)))
        await _flush_writer_stats(store)
        before = await _scans_once_flushed(conninfo, grown_store_events)
        await book.accept(customer("C-last"))
        await _flush_writer_stats(store)
        after = await _scans_once_flushed(conninfo, grown_store_events + 1)
    finally:
        await store.close()
    scanned = {name: after[name] - before[name] for name in after}
    assert scanned["events_event_id_unique"] >= 1, scanned
    assert scanned["events_tenant_position"] == 0, scanned


async def _reader_scans(store: PostgresEventStore) -> dict[str, int]:
    """`_events_scans` through the store's read pool (its one connection: reads one at a time
    never open a second), that connection's statistics reported first."""
    async with store._pool.connection() as pooled:
        await pooled.execute("SELECT pg_stat_force_next_flush()")
        return await _events_scans(pooled)


async def test_reads_in_position_order_walk_the_position_index(
    new_database: Callable[[], str],
) -> None:
    """An all-tenants read from the start of a store (the relay catching up, replay's catch-up)
    and the replay fold's read of a share of the tenants walk the primary key in order and stop
    at their limit. Under row-level security the planner thought they would see a few rows: here
    it read the share's tenants through `events_tenant_position` and sorted them, and at 1,000,000
    events it scanned the whole table and sorted it for every page (`position_order_settings`)."""
    from projections.replay_fold import FoldJob, _read

    conninfo = new_database()
    store = await PostgresEventStore.open(conninfo)
    books = [Book(store) for _ in range(4)]
    per_book = grown_store_unit_events // len(books)
    try:
        for start in range(0, grown_store_events, grown_store_unit_events):
            for book in books:
                await book.accept(
                    *(customer(f"C{index}") for index in range(start, start + per_book))
                )
        head = await store.head()
        assert head == grown_store_events
        await _flush_writer_stats(store)
        job = FoldJob(
            conninfo=conninfo,
            projections=[],
            partition=0,
            partitions=2,
            until=head,
            page_events=1000,
            suffix="",
            tenants=[books[0].tenant, books[2].tenant],
        )
        async with await AsyncConnection.connect(conninfo, autocommit=True) as reader:
            await postgres_store.configure_connection(reader)
            before = await _reader_scans(store)
            read = await store.read(None, 1, 1000)
            page = await _read(reader, job, 1)
            await reader.execute("SELECT pg_stat_force_next_flush()")
            after = await _reader_scans(store)
    finally:
        await store.close()
    assert [event.position for event in read] == list(range(1, 1001))
    assert len(page) == 1000 and {event.tenant_id for event in page} == set(job.tenants or [])
    scanned = {name: after[name] - before[name] for name in after}
    assert scanned == {name: 2 if name == "events_pkey" else 0 for name in after}, scanned
