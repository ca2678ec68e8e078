"""Replay rebuilds into fresh tables and swaps them in atomically, on the real PostgreSQL: the rebuilt
tables equal what catch-up built, row for row, for every table projector, and keep the live tables'
definition (columns, keys, indexes and their names, row-level security, policies, grants); one
projection can be rebuilt alone; a reader on another connection gets full answers throughout; events
appended while replay runs, with a live writer applying them too, end up applied exactly once; a
failure leaves no fresh table behind and the live ones untouched; an unknown projection is refused
with nothing changed."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import AsyncConnection, sql

from ledger import cli
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections import replay as replay_module
from projections import replay_fold, reports
from projections.core import ProjectedEvent, ProjectionWriter, read_states, run_in_memory
from projections.general_ledger import GeneralLedger
from projections.registry import all_projectors, select
from projections.replay import ReplayError, catch_up, replay
from projections.replay_fold import FoldJob
from projections.tables import MemoryTables, Row, insert_json_rows, metadata, read_rows
from tests.ledger.events import customer, invoice, new_tenant, payment
from tests.projections.scenario import everything

# Every test on a database of its own (`store` in tests/conftest.py): they read every tenant
# of the store or change the database.
own_database = True

Snapshot = dict[str, list[Row]]


async def _connection(store: PostgresEventStore) -> AsyncConnection[Any]:
    connection = await AsyncConnection.connect(store.conninfo, autocommit=True)
    await configure_connection(connection)
    return connection


def _tables(projectors: list[Any] | None = None) -> list[Any]:
    chosen = all_projectors() if projectors is None else projectors
    return [table for p in chosen if hasattr(p, "tables") for table in p.tables]


async def _append(store: PostgresEventStore, events: list[dict[str, Any]]) -> None:
    report = await LedgerService(store).append(events)
    assert not report.rejected, report.rejected


async def _rows(conn: AsyncConnection[Any], projectors: list[Any] | None = None) -> Snapshot:
    return {table.name: await read_rows(conn, table) for table in _tables(projectors)}


async def _definition(conn: AsyncConnection[Any], table_name: str) -> dict[str, Any]:
    """What a migration or a reader depends on, from the catalog: the table's oid aside."""
    queries = {
        "columns": "SELECT attname, format_type(atttypid, atttypmod), attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d"
        " ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        " WHERE attrelid = %(t)s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        "indexes": "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
        " WHERE indrelid = %(t)s::regclass ORDER BY 1",
        "constraints": "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %(t)s::regclass ORDER BY 1",
        "policies": "SELECT policyname, permissive, roles, cmd, qual, with_check FROM pg_policies"
        " WHERE tablename = %(t)s ORDER BY 1",
        "table": "SELECT relrowsecurity, relforcerowsecurity, pg_get_userbyid(relowner),"
        " relacl::text, reloptions FROM pg_class WHERE oid = %(t)s::regclass",
    }
    found: dict[str, Any] = {}
    for name, query in queries.items():
        cursor = await conn.execute(query, {"t": table_name})
        found[name] = await cursor.fetchall()
    return found


async def _oid(conn: AsyncConnection[Any], table_name: str) -> int:
    cursor = await conn.execute("SELECT %s::regclass::oid", [table_name])
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def _leftovers(conn: AsyncConnection[Any]) -> list[str]:
    cursor = await conn.execute(
        "SELECT relname FROM pg_class WHERE relname LIKE '%%\\_\\_rebuild%%'"
        " OR relname LIKE '%%\\_\\_old%%' ORDER BY 1"
    )
    return [row[0] for row in await cursor.fetchall()]


async def _as_owner(store: PostgresEventStore, statements: list[str]) -> None:
    """Change the live tables behind the projections' back (as the owner, RLS aside)."""
    async with await AsyncConnection.connect(store.conninfo, autocommit=True) as owner:
        for statement in statements:
            await owner.execute(statement)


async def _expected(store: PostgresEventStore) -> tuple[Snapshot, dict[Any, Any]]:
    """What the test runner makes of every stored event: tables and state documents."""
    events = [ProjectedEvent.from_recorded(e) for e in await store.read(None, 1, 100_000)]
    projectors = all_projectors()
    memory = MemoryTables()
    memory.apply([p for p in projectors if hasattr(p, "tables")], events)
    return {table.name: memory.rows(table) for table in _tables()}, run_in_memory(
        projectors, events
    )


@pytest.mark.parametrize("processes", [1, 3])
async def test_replay_equals_catch_up_for_every_table_and_keeps_the_definitions(
    store: PostgresEventStore, conn: AsyncConnection[Any], processes: int
) -> None:
    await _append(store, everything(new_tenant()) + everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up, states = await _rows(conn), await read_states(conn)
    assert all(caught_up.values()), [name for name, rows in caught_up.items() if not rows]
    definitions = {name: await _definition(conn, name) for name in caught_up}
    oids = {name: await _oid(conn, name) for name in caught_up}
    # Damage every table, so that only a real rebuild can give the caught-up rows back.
    await _as_owner(
        store,
        [f"DELETE FROM {name} WHERE ctid IN (SELECT ctid FROM {name} LIMIT 1)" for name in oids]
        + [
            "UPDATE gl_daily SET debit = debit + 1",
            "INSERT INTO ar_payments VALUES ('t', 'p', 'c')",
        ],
    )

    assert await replay(store, conn, all_projectors(), processes=processes) == await store.head()

    assert await _rows(conn) == caught_up
    assert await read_states(conn) == states
    for name in caught_up:
        assert await _definition(conn, name) == definitions[name], name
        assert await _oid(conn, name) != oids[name], f"{name} was not rebuilt"
    assert await _leftovers(conn) == []
    cursor = await conn.execute("SELECT current_user")
    assert await cursor.fetchone() == ("ledger_app",)  # the caller's role is given back
    # The rebuilt tables take the live writer's next batch as the old ones would have.
    tenant = new_tenant()
    await _append(store, [customer(tenant, "C1"), invoice(tenant, "INV-1", customer_id="C1")])
    await catch_up(store, conn, all_projectors())
    expected_tables, expected_states = await _expected(store)
    assert await _rows(conn) == expected_tables
    assert await read_states(conn, "event_counts") == expected_states


async def test_schedule_months_that_fall_to_zero_are_dropped_live_and_in_replay(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    """An amendment takes a line's old schedule off `dr_schedule_months`, and its months fall to
    zero for good. To the waterfall's sums a zero is no row, so the live writer deletes a row that
    falls to zero (over two batches here: the signature's rows, then the amendment's), as
    replay's merge drops it: neither keeps one, and they agree row for row with the test runner,
    the deferred revenue report too."""
    tenant = new_tenant()
    events = everything(tenant)
    amended = next(i for i, event in enumerate(events) if event["type"].endswith("amended.v1"))
    await _append(store, events[:amended])
    await catch_up(store, conn, all_projectors())
    signed = {row["seg_start"] for row in (await _rows(conn))["dr_schedule_months"]}
    assert date(2026, 1, 1) in signed  # K1's line L1, as signed
    await _append(store, events[amended:])
    await catch_up(store, conn, all_projectors())
    live = (await _rows(conn))["dr_schedule_months"]
    assert live and all(row["amount"] != 0 for row in live)
    assert date(2026, 1, 1) not in {row["seg_start"] for row in live}  # taken off: gone
    await configure_connection(conn)
    report_before = await reports.report(conn, "deferred-revenue", tenant, date(2026, 4, 15))
    await replay(store, conn, all_projectors())
    assert (await _rows(conn))["dr_schedule_months"] == live
    assert (await _expected(store))[0]["dr_schedule_months"] == live
    await configure_connection(conn)
    assert (
        await reports.report(conn, "deferred-revenue", tenant, date(2026, 4, 15)) == report_before
    )


async def test_one_projection_is_rebuilt_alone(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up, states = await _rows(conn), await read_states(conn)
    oids = {name: await _oid(conn, name) for name in caught_up}
    await _as_owner(store, ["UPDATE gl_daily SET debit = debit + 1", "DELETE FROM ar_changes"])

    await replay(store, conn, select(["general_ledger"]))

    rows = await _rows(conn)
    ledger_tables = {table.name for table in GeneralLedger.tables}
    for name in caught_up:
        if name in ledger_tables:
            assert rows[name] == caught_up[name], name
            assert await _oid(conn, name) != oids[name], name
        else:
            assert await _oid(conn, name) == oids[name], f"{name} was rebuilt"
    assert rows["ar_changes"] == []  # the other projections' damage stays: they were not replayed
    after = await read_states(conn)
    assert {key: value for key, value in after.items() if key[0] != "general_ledger"} == {
        key: value for key, value in states.items() if key[0] != "general_ledger"
    }
    assert await _leftovers(conn) == []


async def _read_until(
    store: PostgresEventStore, stop: asyncio.Event, answers: list[dict[str, int]]
) -> None:
    """A report's reads, on a connection of their own, until `stop`: every table's row count."""
    reader = await _connection(store)
    try:
        while not stop.is_set():
            counts = {}
            for table in _tables():
                async with reader.transaction():
                    await reader.execute("SELECT set_config('ledger.tenants', '*', true)")
                    cursor = await reader.execute(
                        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table.name))
                    )
                    row = await cursor.fetchone()
                    assert row is not None
                    counts[table.name] = int(row[0])
            answers.append(counts)
            await asyncio.sleep(0)
    finally:
        await reader.close()


async def test_a_reader_gets_full_answers_while_replay_swaps(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _append(store, [e for _ in range(3) for e in everything(new_tenant())])
    await catch_up(store, conn, all_projectors())
    full = {name: len(rows) for name, rows in (await _rows(conn)).items()}
    oid = await _oid(conn, "gl_lines")
    monkeypatch.setattr(replay_module, "replay_page_events", 7)  # many pages: many reads between
    stop, answers = asyncio.Event(), []
    reading = asyncio.create_task(_read_until(store, stop, answers))
    try:
        while not answers:
            await asyncio.sleep(0.01)
        await replay(store, conn, all_projectors())
        before = len(answers)
        while len(answers) < before + 2:  # and reads after the swap, from the new tables
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await reading  # a failed read (an error, a missing grant or policy) fails here
    assert await _oid(conn, "gl_lines") != oid
    assert len(answers) > 5
    assert all(counts == full for counts in answers), [c for c in answers if c != full][:1]


class _LiveWorker:
    """The live worker as replay meets it: each event is delivered once (Kafka offsets move on),
    applied by `ProjectionWriter` to whatever tables are live at the time."""

    def __init__(self, store: PostgresEventStore, conn: AsyncConnection[Any]) -> None:
        self.store, self.writer, self.position = store, ProjectionWriter(conn, all_projectors()), 1

    async def step(self) -> None:
        events = await self.store.read(None, self.position, 1000)
        if events:
            await self.writer.apply([ProjectedEvent.from_recorded(event) for event in events])
            self.position = events[-1].position + 1


async def test_events_appended_during_replay_are_applied_exactly_once(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants = [new_tenant(), new_tenant()]
    await _append(store, [e for tenant in tenants for e in everything(tenant)])
    live = await _connection(store)
    worker = _LiveWorker(store, live)
    await worker.step()
    monkeypatch.setattr(replay_module, "replay_page_events", 5)
    appended, one_at_a_time = 0, asyncio.Lock()

    async def append_and_apply() -> None:
        nonlocal appended
        async with one_at_a_time:  # one appender and one worker, whoever calls
            appended += 1
            tenant = tenants[appended % 2]
            await _append(
                store,
                [
                    invoice(tenant, f"LATE-{appended}", customer_id="C1"),
                    payment(tenant, f"LATE-PAY-{appended}", amount="10.00", customer_id="C1"),
                ],
            )
            await worker.step()

    # Deterministically, events that the live worker applies to the old tables just before the
    # swap takes its locks: replay must fold them under the lock, as the worker will not again.
    lock = replay_module._Run._lock

    async def lock_after_a_late_batch(self: Any) -> None:
        await append_and_apply()
        await lock(self)

    monkeypatch.setattr(replay_module._Run, "_lock", lock_after_a_late_batch)
    stop = asyncio.Event()

    async def keep_appending() -> None:
        while not stop.is_set():
            await append_and_apply()
            await asyncio.sleep(0)

    working = asyncio.create_task(keep_appending())
    try:
        head_before = await store.head()
        replayed_to = await replay(store, conn, all_projectors())
    finally:
        stop.set()
        await working
    # The appender may have been between two appends when the swap ended: one more, for certain,
    # that the live worker applies to the swapped-in tables.
    await append_and_apply()
    await live.close()
    assert head_before < replayed_to < await store.head(), "appends did not overlap the replay"
    expected_tables, expected_states = await _expected(store)
    assert await _rows(conn) == expected_tables
    assert await read_states(conn, "event_counts") == expected_states
    assert await _leftovers(conn) == []


async def test_a_failed_replay_leaves_nothing_behind(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up, states = await _rows(conn), await read_states(conn)

    async def broken_swap(self: Any) -> None:
        raise RuntimeError("the swap broke")

    for stage in ("fill", "swap"):  # after the fresh tables are filled, then just before the swap
        monkeypatch.setattr(replay_module._Run, stage, broken_swap)
        with pytest.raises(RuntimeError, match="the swap broke"):
            await replay(store, conn, all_projectors())
        monkeypatch.undo()
        assert await _leftovers(conn) == []
        assert await _rows(conn) == caught_up
        assert await read_states(conn) == states
        cursor = await conn.execute("SELECT current_user")
        assert await cursor.fetchone() == ("ledger_app",)
    await replay(store, conn, all_projectors())  # the advisory lock was released
    assert await _rows(conn) == caught_up


async def test_a_failed_index_build_cancels_the_other_and_leaves_nothing_behind(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fresh tables are indexed on two connections: one fails while the other is busy; the
    busy one is cancelled, the failure is what replay raises, and the live tables stay."""
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up = await _rows(conn)
    finish = replay_module._Shape.finish
    started: list[str] = []

    def failing_finish(self: Any) -> Iterator[Any]:
        started.append(self.table.name)
        if len(started) == 1:
            yield sql.SQL("SELECT pg_sleep(30)")  # busy when the other fails
        elif len(started) == 2:
            yield sql.SQL("SELECT 1 / 0")
        yield from finish(self)

    monkeypatch.setattr(replay_module._Shape, "finish", failing_finish)
    begun = time.monotonic()
    with pytest.raises(psycopg.errors.DivisionByZero):
        await replay(store, conn, all_projectors())
    assert time.monotonic() - begun < 20  # the sleeping build was cancelled, not waited for
    monkeypatch.undo()
    assert await _leftovers(conn) == []
    assert await _rows(conn) == caught_up
    await replay(store, conn, all_projectors())
    assert await _rows(conn) == caught_up


async def test_a_failed_fold_process_stops_the_replay(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up = await _rows(conn)

    def failing_job(**fields: Any) -> FoldJob:
        # The children build their projectors by name: a name they do not know makes them fail.
        return FoldJob(**{**fields, "projections": ["no_such"]})

    monkeypatch.setattr(replay_module, "FoldJob", failing_job)
    with pytest.raises(ReplayError, match=r"the fold failed: partition \d: ValueError: unknown"):
        await replay(store, conn, all_projectors(), processes=2)
    assert await _leftovers(conn) == []
    assert await _rows(conn) == caught_up


async def test_the_partitions_read_what_the_store_reads(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    """Pair check of the fold's own reading (a share of the tenants) with the store's."""
    await _append(store, [e for _ in range(8) for e in everything(new_tenant())])
    head = await store.head()
    stored = [ProjectedEvent.from_recorded(e) for e in await store.read(None, 1, head)]
    tenants = await replay_fold.tenant_shares(conn, head - 2, 3)
    shares = []
    for partition in range(3):
        job = FoldJob(store.conninfo, [], partition, 3, head - 2, 4, "", tenants[partition])
        position, share = 1, []
        while page := await replay_fold._read(conn, job, position):
            share += page
            position = page[-1].position + 1
        shares.append(share)
    every = [event for share in shares for event in share]
    assert sorted(every, key=lambda event: event.position) == stored[: head - 2]
    assert all(shares)


def test_the_partitions_share_the_events_evenly() -> None:
    """Largest tenant first, each to the lightest share: 6 tenants of 60..10 events in two shares
    of 110 and 100 (a hash of the ids gave 56 of the bench's 100 equal tenants to one of two)."""
    counts = [("a", 10), ("b", 60), ("c", 30), ("d", 50), ("e", 20), ("f", 40)]
    shares = replay_fold.balanced_shares(counts, 2)
    assert shares == [["b", "c", "e"], ["d", "f", "a"]]
    equal = replay_fold.balanced_shares([(f"t{n}", 100) for n in range(100)], 2)
    assert [len(share) for share in equal] == [50, 50]
    assert replay_fold.balanced_shares([("big", 1000), ("x", 1), ("y", 1)], 3) == [
        ["big"],
        ["x"],
        ["y"],
    ]


async def test_a_second_replay_at_the_same_time_is_refused(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    async with await AsyncConnection.connect(store.conninfo, autocommit=True) as other:
        await other.execute("SELECT pg_advisory_lock(%s)", [replay_module.replay_lock_id])
        with pytest.raises(ReplayError, match="another replay"):
            await replay(store, conn, all_projectors())
    assert await _leftovers(conn) == []


async def test_an_unknown_projection_is_refused_and_nothing_changes(
    store: PostgresEventStore,
    conn: AsyncConnection[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up, states = await _rows(conn), await read_states(conn)
    oids = {name: await _oid(conn, name) for name in caught_up}
    monkeypatch.setenv("LEDGER_DATABASE_URL", store.conninfo)

    code = await asyncio.to_thread(
        cli.main, ["replay", "--projection", "general_ledger", "--projection", "no_such"]
    )

    assert code == cli.exit_usage
    error = capsys.readouterr().err
    assert "unknown projection(s) ['no_such']" in error and "general_ledger" in error
    assert await _rows(conn) == caught_up
    assert await read_states(conn) == states
    assert {name: await _oid(conn, name) for name in caught_up} == oids


async def test_the_cli_replays_one_projection(
    store: PostgresEventStore, conn: AsyncConnection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up = await _rows(conn)
    mrr_oid, ledger_oid = await _oid(conn, "mrr_segments"), await _oid(conn, "gl_lines")
    monkeypatch.setenv("LEDGER_DATABASE_URL", store.conninfo)

    assert await asyncio.to_thread(cli.main, ["replay", "--projection", "mrr"]) == 0

    assert await _rows(conn) == caught_up
    assert await _oid(conn, "mrr_segments") != mrr_oid
    assert await _oid(conn, "gl_lines") == ledger_oid


async def test_the_cli_replays_in_the_processes_asked_for(
    store: PostgresEventStore,
    conn: AsyncConnection[Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _append(store, everything(new_tenant()))
    await catch_up(store, conn, all_projectors())
    caught_up, ledger_oid = await _rows(conn), await _oid(conn, "gl_lines")
    monkeypatch.setenv("LEDGER_DATABASE_URL", store.conninfo)
    asked: list[tuple[int | None, int]] = []  # (asked for, fold processes started)
    real_processes = replay_module._processes

    def spy(projectors: Any, processes: int | None, events: int) -> int:
        count = real_processes(projectors, processes, events)
        asked.append((processes, count))
        return count

    monkeypatch.setattr(replay_module, "_processes", spy)

    refused = await asyncio.to_thread(cli.main, ["replay", "--processes", "0"])
    assert refused == cli.exit_usage
    assert "--processes must be 1 or more, not 0" in capsys.readouterr().err
    assert asked == [] and await _oid(conn, "gl_lines") == ledger_oid

    assert await asyncio.to_thread(cli.main, ["replay", "--processes", "2"]) == 0
    assert asked == [(2, 2)]
    assert await _rows(conn) == caught_up
    assert await _oid(conn, "gl_lines") != ledger_oid


async def test_json_rows_arrive_as_they_were(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    """The fold's bulk writes (one JSON document per batch): text with what SQL or COPY would give
    a meaning to, NULLs, nested JSON, exact decimals, dates."""
    tricky = ["a\tb", "line\nbreak", "back\\slash", "\\N", "", "quote'\"", "é ☃ ünïcödé"]
    rows = [
        {
            "tenant_id": "t1",
            "contract_id": text,
            "customer_id": f"C{index}",
            "start_date": date(2026, 1, 1),
            "end_date": date(2027, 1, 1),
            "cancelled_on": None,
            "lines": {"L1": {"say": text, "amount": "1.10", "segments": [{"base": "0"}]}},
            "position": index + 1,
            "currency": "USD",
        }
        for index, text in enumerate(tricky)
    ]
    await conn.execute("RESET ROLE")
    await conn.execute("CREATE TABLE json_check (LIKE dr_contracts)")
    await insert_json_rows(conn, metadata.tables["dr_contracts"], rows, "json_check")
    cursor = await conn.execute("SELECT * FROM json_check ORDER BY position")
    assert cursor.description is not None
    names = [column.name for column in cursor.description]
    assert [dict(zip(names, values, strict=True)) for values in await cursor.fetchall()] == rows
    await conn.execute("CREATE TABLE json_check_numbers (LIKE gl_daily)")
    amounts = {"debit": Decimal("1E+2"), "credit": Decimal("-0.000000000000000000001")}
    row = {"tenant_id": "t1", "account": "cash", "day": date(2026, 1, 1), "source": "x"}
    await insert_json_rows(
        conn, metadata.tables["gl_daily"], [{**row, **amounts}], "json_check_numbers"
    )
    cursor = await conn.execute("SELECT debit, credit FROM json_check_numbers")
    assert await cursor.fetchone() == (amounts["debit"], amounts["credit"])


async def test_replay_refuses_a_connection_outside_autocommit(store: PostgresEventStore) -> None:
    connection = await psycopg.AsyncConnection.connect(store.conninfo)
    try:
        with pytest.raises(ReplayError, match="autocommit"):
            await replay(store, connection, all_projectors())
    finally:
        await connection.close()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminal = _Terminal()
    show = cli._progress_printer("replay", terminal)
    show(250_000, 1_000_000, 10.0)
    show(250_001, 1_000_000, 10.01)  # too soon to redraw
    show(1_000_000, 1_000_000, 40.0)  # the end always shows
    frames = terminal.getvalue().split("\r")[1:]
    assert len(frames) == 2
    assert frames[0].startswith("[#######" + " " * 23 + "] 250,000/1,000,000 events")
    assert "25,000 events/s" in frames[0] and "ETA 30 s" in frames[0]
    assert frames[1].startswith("[" + "#" * 30 + "] 1,000,000/1,000,000")
    plain = io.StringIO()
    show = cli._progress_printer("replay", plain)
    with caplog.at_level(logging.INFO, logger="ledger"):
        for second in range(25):
            show(1000 * (second + 1), 100_000, float(second + 1))
    assert plain.getvalue() == ""
    assert [record.getMessage() for record in caplog.records] == [
        "replay: 1000/100000 events, 1000 events/s, ETA 99 s",
        "replay: 11000/100000 events, 1000 events/s, ETA 89 s",
        "replay: 21000/100000 events, 1000 events/s, ETA 79 s",
    ]
