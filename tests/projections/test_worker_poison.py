"""The worker's batch handling against the real database: a message on the events topic that no
projector can apply (forged, or malformed data) is skipped, the rest of its batch is applied exactly
once, nothing of the bad message is half applied, and the worker keeps going; with Redis away the
batches are applied all the same and the KPI states follow once it is back."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import Callable

import orjson
import redis.asyncio
from psycopg import AsyncConnection

from ledger import metrics
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections.ar_aging import ar_invoices
from projections.core import ProjectedEvent
from projections.live import KpiPublisher, state_key
from projections.notify import Notifiers, RedisNotifier
from projections.registry import all_projectors
from projections.tables import read_rows
from projections.worker import _Projecting
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.scenario import with_tenant

# A batch must not wait for Redis; the publisher retries from 0.2 s, doubling.
redis_away_apply_timeout_s = 5
redis_back_timeout_s = 15
# Long enough for a few retries of a refused batch (0.2, 0.4, 0.8 s), then back within a 10 s pause.
refused_writes_s = 2.0
refused_writes_back_timeout_s = 20


async def _invoice_ids(url: str) -> list[str]:
    """The invoices in the AR aging read model, by id."""
    conn = await AsyncConnection.connect(url, autocommit=True)
    await configure_connection(conn)
    try:
        return [row["invoice_id"] for row in await read_rows(conn, ar_invoices)]
    finally:
        await conn.close()


async def test_a_message_no_projector_can_apply_is_skipped_and_the_rest_applied(
    new_database: Callable[[], str],
) -> None:
    url = new_database()
    store = await PostgresEventStore.open(url)
    try:
        tenant = new_tenant()
        report = await LedgerService(store).append(
            with_tenant(
                tenant,
                [b.customer("C1"), b.invoice("INV-1", "C1"), b.invoice("INV-2", "C1")],
            )
        )
        assert not report.rejected
        real = [ProjectedEvent.from_recorded(e) for e in await store.read(tenant, 1, 10)]
        # Forged: it claims a real event's position and carries data that misses the invoice's
        # required fields; it comes first, so the real event at that position must still apply.
        forged = ProjectedEvent(
            position=real[1].position,
            tenant_id=tenant,
            event_id="forged",
            type="ledger.invoice.issued.v1",
            stream_id="invoice/X",
            time="2026-01-15T10:00:00Z",
            data={"invoice_id": "X"},
            ledger={},
        )
        batch = [real[0], forged, *real[1:]]
        projecting = _Projecting(url, all_projectors(), None)
        skipped_before = metrics.events_skipped._value.get()
        await projecting.apply(batch)
        assert metrics.events_skipped._value.get() == skipped_before + 1
        assert await _invoice_ids(url) == ["INV-1", "INV-2"]
        await projecting.apply(real)  # redelivered: skipped by position, nothing doubles
        assert await _invoice_ids(url) == ["INV-1", "INV-2"]
    finally:
        await store.close()


async def test_a_database_refusing_writes_blocks_the_batch_instead_of_skipping_it(
    new_database: Callable[[], str],
) -> None:
    """A database that is up but refuses the writes for reasons of its own (read-only, as a
    standby is after a failover) is not the events' fault: the batch waits, retried on fresh
    connections, and is applied once the database takes writes again; nothing is skipped. Before,
    each event failed alone and was skipped as poison: the read models lost them until a replay."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    url = new_database()
    name = conninfo_to_dict(url)["dbname"]
    store = await PostgresEventStore.open(url)
    try:
        tenant = new_tenant()
        report = await LedgerService(store).append(
            with_tenant(tenant, [b.customer("C1"), b.invoice("INV-1", "C1")])
        )
        assert not report.rejected
        events = [ProjectedEvent.from_recorded(e) for e in await store.read(tenant, 1, 10)]

        def read_only(on: bool) -> None:
            # From another database: this one's connections are read-only while it is.
            with psycopg.connect(make_conninfo(url, dbname="postgres"), autocommit=True) as admin:
                statement = "ALTER DATABASE {} SET default_transaction_read_only = on"
                if not on:
                    statement = "ALTER DATABASE {} RESET default_transaction_read_only"
                admin.execute(sql.SQL(statement).format(sql.Identifier(name)))

        read_only(True)
        projecting = _Projecting(url, all_projectors(), None)
        skipped_before = metrics.events_skipped._value.get()
        applying = asyncio.create_task(projecting.apply(events))
        await asyncio.sleep(refused_writes_s)
        assert not applying.done(), "the batch ended while the database refused every write"
        assert metrics.events_skipped._value.get() == skipped_before
        read_only(False)
        await asyncio.wait_for(applying, refused_writes_back_timeout_s)
        assert metrics.events_skipped._value.get() == skipped_before
        assert await _invoice_ids(url) == ["INV-1"]
    finally:
        await store.close()


class _Switch:
    """A TCP proxy to Redis that can be cut: while down it closes every connection it has and
    refuses new ones at once, as a Redis that went away would."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.up = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers |= {writer, upstream_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def cut(self) -> None:
        self.up = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_projecting_goes_on_while_redis_is_away_and_kpis_follow_when_it_is_back(
    new_database: Callable[[], str], redis_url: str
) -> None:
    """Change notices and KPI states go through Redis, the read models do not: with Redis cut the
    worker's batch is applied at once (no wait, no error out of the worker), and the KPI state of
    that batch is published once Redis is back, by the publisher's retries."""
    url = new_database()
    target = urllib.parse.urlsplit(redis_url)
    switch = _Switch(target.hostname or "127.0.0.1", target.port or 6379)
    port = await switch.start()
    via_switch = f"redis://127.0.0.1:{port}{target.path}"
    store = await PostgresEventStore.open(url)
    publisher = KpiPublisher(url, via_switch)
    notices = RedisNotifier(via_switch)
    direct = redis.asyncio.Redis.from_url(redis_url)
    try:
        tenant = new_tenant()
        projecting = _Projecting(url, all_projectors(), Notifiers([notices, publisher]))
        report = await LedgerService(store).append(
            with_tenant(tenant, [b.customer("C1"), b.invoice("INV-1", "C1", amount="70.00")])
        )
        assert not report.rejected
        switch.cut()
        events = [ProjectedEvent.from_recorded(e) for e in await store.read(tenant, 1, 10)]
        await asyncio.wait_for(projecting.apply(events), redis_away_apply_timeout_s)
        assert await _invoice_ids(url) == ["INV-1"]
        await asyncio.sleep(0.5)  # the publisher tries and fails meanwhile
        assert await direct.hget(state_key(tenant), "position") is None
        switch.up = True
        deadline = asyncio.get_running_loop().time() + redis_back_timeout_s
        while (stored := await direct.hget(state_key(tenant), "message")) is None:
            assert asyncio.get_running_loop().time() < deadline, (
                "no KPI state after Redis came back"
            )
            await asyncio.sleep(0.1)
        state = orjson.loads(stored)
        assert state["position"] == events[-1].position and state["kpis"]["ar"] == "70.00"
    finally:
        await publisher.close()
        await notices.close()
        await direct.aclose()
        await switch.close()
        await store.close()


def test_errors_of_the_database_block_and_errors_of_an_event_skip() -> None:
    """Which errors block a batch (retried) and which make the worker look for the event that
    caused them (and skip it): by what the server says, not by psycopg's class alone."""
    import psycopg
    from psycopg import errors

    from projections.worker import _not_the_events

    blocking = [
        psycopg.OperationalError("connection refused"),
        errors.AdminShutdown(),
        errors.DiskFull(),
        errors.SerializationFailure(),
        errors.ReadOnlySqlTransaction(),
        errors.InsufficientPrivilege(),
        errors.UndefinedTable(),
        ConnectionResetError(),
    ]
    skipping = [
        errors.InvalidTextRepresentation(),
        errors.NumericValueOutOfRange(),
        errors.CheckViolation(),
        psycopg.ProgrammingError("cannot adapt type 'dict' using placeholder '%s'"),
        KeyError("lines"),
        ValueError("not a date"),
    ]
    assert [_not_the_events(error) for error in blocking] == [True] * len(blocking)
    assert [_not_the_events(error) for error in skipping] == [False] * len(skipping)
