"""The gateway for real: websocket clients, the session's Redis, the read models in PostgreSQL and
the worker's KPI publisher. A token that is missing, bad or expired is refused with 4401; a client
gets a snapshot computed from the read models, then a `kpi:update` after the worker applies new
events; another tenant's figures never reach it; two gateway processes send the same seq; a
resumed client is answered by `since`; a client that stops reading does not slow the others."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import date
from typing import Any

import jwt
import orjson
import psycopg
import pytest
import redis.asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.server import RunningGateway, start_gateway, write_buffer_bytes_max
from ledger.auth import issue_token
from ledger.embedded import free_loopback_port
from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore, configure_connection
from projections import live
from projections.registry import all_projectors
from projections.replay import catch_up
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.ledger.test_cli import ledger, src_dir
from tests.projections.scenario import with_tenant

secret = "gateway-test-secret-of-at-least-32-bytes"
frame_timeout_s = 10.0
# Time in which a frame that must not come would have come (the path is Redis on loopback).
silence_s = 0.5


@pytest.fixture
async def gateway(database_url: str, redis_url: str) -> AsyncIterator[RunningGateway]:
    running = await start_gateway("127.0.0.1", 0, redis_url, secret, database_url)
    yield running
    await running.close()


@pytest.fixture
async def publisher(database_url: str, redis_url: str) -> AsyncIterator[live.KpiPublisher]:
    opened = live.KpiPublisher(database_url, redis_url)
    yield opened
    await opened.close()


Project = Callable[[str], Awaitable[None]]


@pytest.fixture
def project(store: PostgresEventStore, publisher: live.KpiPublisher) -> Project:
    """What the worker does after a batch: apply it, then let the publisher publish the KPIs."""

    async def run(tenant: str) -> None:
        async with store.connection() as conn:
            position = await catch_up(store, conn, all_projectors(), tenant=tenant)
        await publisher.changed({tenant: position}, [])
        await publisher.wait_idle()

    return run


async def append(store: PostgresEventStore, tenant: str, *events: dict[str, Any]) -> None:
    report = await LedgerService(store).append(with_tenant(tenant, list(events)))
    assert not report.rejected, report.rejected


def url(running: RunningGateway, query: str = "") -> str:
    return f"ws://127.0.0.1:{running.port}/v1/stream{query}"


def bearer(tenant: str, ttl_s: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(secret, tenant, ttl_s)}"}


async def next_frame(client: ClientConnection) -> dict[str, Any]:
    frame: dict[str, Any] = orjson.loads(await asyncio.wait_for(client.recv(), frame_timeout_s))
    return frame


async def no_frame(client: ClientConnection) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.recv(), silence_s)


async def subscribed(
    running: RunningGateway, token_tenant: str, **extra: Any
) -> tuple[ClientConnection, dict[str, Any]]:
    client = await connect(url(running), additional_headers=bearer(token_tenant))
    await client.send(
        orjson.dumps({"type": "subscribe", "channel": "kpi:update", **extra}).decode()
    )
    return client, await next_frame(client)


@pytest.mark.parametrize(
    "headers_or_query",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Bearer {jwt.encode({'tenant': 'acme'}, 'another-secret' * 3)}"},
        {"Authorization": f"Bearer {issue_token(secret, 'acme', ttl_s=-120)}"},
        "?token=garbage",
    ],
    ids=["missing", "malformed", "badly-signed", "expired", "bad-query-token"],
)
async def test_a_missing_bad_or_expired_token_is_refused_with_4401(
    gateway: RunningGateway, headers_or_query: dict[str, str] | str
) -> None:
    if isinstance(headers_or_query, str):
        client = await connect(url(gateway, headers_or_query))
    else:
        client = await connect(url(gateway), additional_headers=headers_or_query)
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), frame_timeout_s)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason


async def test_snapshot_from_the_read_models_then_an_update_per_change(
    gateway: RunningGateway, store: PostgresEventStore, project: Project
) -> None:
    tenant = new_tenant()
    await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
    async with store.connection() as conn:
        await catch_up(store, conn, all_projectors(), tenant=tenant)
    # Redis has no state for this tenant yet: the gateway computes it from the read models.
    token = issue_token(secret, tenant)
    client = await connect(url(gateway, f"?token={token}"))  # the browser's way
    await client.send(orjson.dumps({"type": "subscribe", "channel": "kpi:update"}).decode())
    snapshot = await next_frame(client)
    head = await store.head()
    assert snapshot["type"] == "snapshot" and snapshot["tenant"] == tenant
    assert snapshot["seq"] == 1 and snapshot["position"] == head
    assert snapshot["as_of"] == date.today().isoformat() or snapshot["as_of"] > "2026-01-15"
    assert snapshot["kpis"]["ar"] == "100.00" and snapshot["currency"] == "USD"
    assert snapshot["updated_at"].endswith("Z")

    await append(store, tenant, b.payment("40.00", "PAY-1", "C1", "2026-01-20"))
    await project(tenant)
    update = await next_frame(client)
    assert (update["type"], update["seq"]) == ("kpi:update", 2)
    assert update["position"] == await store.head() > head
    assert update["kpis"]["ar"] == "60.00" and update["kpis"]["cash"] == "40.00"
    await client.close()


async def test_a_gateway_that_loses_redis_reconnects_and_sends_what_it_missed(
    gateway: RunningGateway, store: PostgresEventStore, project: Project, redis_url: str
) -> None:
    """Redis drops the gateway's pub/sub connection (as a Redis restart or a network cut would):
    the state published meanwhile reaches the client once the gateway is back (it reloads every
    subscribed tenant), and later states come through the new subscription."""
    tenant = new_tenant()
    await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
    await project(tenant)
    client, snapshot = await subscribed(gateway, tenant)
    assert snapshot["kpis"]["ar"] == "100.00"
    admin = redis.asyncio.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await append(store, tenant, b.payment("40.00", "PAY-1", "C1", "2026-01-20"))
        await project(tenant)  # published while the gateway may not be listening
        missed = await next_frame(client)
        assert missed["seq"] > snapshot["seq"] and missed["kpis"]["ar"] == "60.00"
        await append(store, tenant, b.payment("10.00", "PAY-2", "C1", "2026-01-21"))
        await project(tenant)
        later = await next_frame(client)
        assert (later["type"], later["kpis"]["ar"]) == ("kpi:update", "50.00")
        assert later["seq"] > missed["seq"]
    finally:
        await admin.aclose()
        await client.close()


async def test_another_tenant_s_figures_never_reach_a_client(
    gateway: RunningGateway, store: PostgresEventStore, project: Project
) -> None:
    mine, theirs = new_tenant(), new_tenant()
    for tenant in (mine, theirs):
        await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
        await project(tenant)
    client, snapshot = await subscribed(gateway, mine)
    assert snapshot["tenant"] == mine
    await client.send(
        orjson.dumps({"type": "subscribe", "channel": "kpi:update", "tenant": theirs}).decode()
    )
    error = await next_frame(client)
    assert (error["type"], error["code"], error["field"]) == ("error", "tenant_forbidden", "tenant")
    await append(store, theirs, b.invoice("INV-2", amount="7.00"))
    await project(theirs)
    await no_frame(client)
    # The system token may watch both.
    watcher, first = await subscribed(gateway, "*", tenant=theirs)
    assert first["tenant"] == theirs and first["kpis"]["ar"] == "107.00"
    await client.close()
    await watcher.close()


async def test_two_gateway_processes_send_the_same_seq(
    gateway: RunningGateway,
    database_url: str,
    redis_url: str,
    store: PostgresEventStore,
    project: Project,
) -> None:
    other = await start_gateway("127.0.0.1", 0, redis_url, secret, database_url)
    try:
        tenant = new_tenant()
        await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
        await project(tenant)
        first, first_snapshot = await subscribed(gateway, tenant)
        second, second_snapshot = await subscribed(other, tenant)
        assert first_snapshot["seq"] == second_snapshot["seq"] == 1
        await append(store, tenant, b.invoice("INV-2", amount="5.00"))
        await project(tenant)
        updates = [await next_frame(first), await next_frame(second)]
        assert [(u["seq"], u["kpis"]["ar"]) for u in updates] == [(2, "105.00"), (2, "105.00")]
        await first.close()
        await second.close()
    finally:
        await other.close()


async def test_resume_with_since(
    gateway: RunningGateway, store: PostgresEventStore, project: Project
) -> None:
    tenant = new_tenant()
    await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
    await project(tenant)
    client, snapshot = await subscribed(gateway, tenant)
    await client.close()
    # Nothing changed: resuming with the seq it has brings no snapshot, only later updates.
    client = await connect(url(gateway), additional_headers=bearer(tenant))
    await client.send(
        orjson.dumps(
            {"type": "subscribe", "channel": "kpi:update", "since": snapshot["seq"]}
        ).decode()
    )
    await no_frame(client)
    await client.close()
    # It missed an update: a fresh snapshot.
    await append(store, tenant, b.invoice("INV-2", amount="5.00"))
    await project(tenant)
    client, resumed = await subscribed(gateway, tenant, since=snapshot["seq"])
    assert (resumed["type"], resumed["seq"], resumed["kpis"]["ar"]) == ("snapshot", 2, "105.00")
    await client.close()


def _stalled_client(port: int, token: str) -> socket.socket:
    """A client that completes the handshake, subscribes, and never reads again, with a small
    receive buffer so the gateway's socket buffer for it fills quickly."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    raw.sendall(
        (
            f"GET /v1/stream?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += raw.recv(1)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    payload = b'{"type":"subscribe","channel":"kpi:update"}'
    mask = b"\x00\x00\x00\x00"
    raw.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)
    return raw


async def test_a_client_that_stops_reading_does_not_slow_the_others(
    gateway: RunningGateway, redis_url: str, store: PostgresEventStore, project: Project
) -> None:
    tenant = new_tenant()
    await append(store, tenant, b.customer("C1"))
    await project(tenant)
    # A thread: its blocking handshake needs this event loop, where the gateway runs, to answer.
    stalled = await asyncio.to_thread(_stalled_client, gateway.port, issue_token(secret, tenant))
    client, snapshot = await subscribed(gateway, tenant)
    states = live.KpiStates(redis.asyncio.Redis.from_url(redis_url))
    # Big states fill the stalled client's buffers sooner: the kernel's socket buffers on loopback
    # take a few MiB before the gateway's own buffer grows past write_buffer_bytes_max.
    padding = "x" * 20_000
    count = (8 * 1024 * 1024 + write_buffer_bytes_max) // len(padding)
    started = time.monotonic()
    try:
        for number in range(1, count + 1):
            position = snapshot["position"] + number
            body = {"tenant": tenant, "position": position, "kpis": {"note": padding}}
            await states.publish({"type": "kpi:update", **body})
            frame = await next_frame(client)
            assert frame["position"] == position  # every state, in order, without waiting
        elapsed_s = time.monotonic() - started
    finally:
        stalled.close()
        await client.close()
        await states.client.aclose()
    stats = gateway.gateway.stats
    # The stalled client fell to the slow path, where its states coalesce: of the `count` states
    # it was sent at most the one its writer task is stuck on.
    assert stats.slow_clients == 1 and stats.frames_sent_by_writer <= 1, stats
    # The reader was never held back by it (the loop above is Redis round trips on loopback:
    # about a millisecond each when nothing waits).
    assert elapsed_s < count * 0.05, elapsed_s


async def test_the_gateway_s_limits(
    gateway: RunningGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame over message_bytes_max closes with 1009; a connection that subscribes to nothing
    is closed when idle; a full gateway refuses with 1013 (try again later, elsewhere)."""
    from gateway import server

    client = await connect(url(gateway), additional_headers=bearer("acme"))
    await client.send("x" * (server.message_bytes_max + 1))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(client.recv(), frame_timeout_s)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

    monkeypatch.setattr(server, "unsubscribed_idle_timeout_s", 0.2)
    idle = await connect(url(gateway), additional_headers=bearer("acme"))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(idle.recv(), frame_timeout_s)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == server.close_idle

    monkeypatch.setattr(server, "unsubscribed_idle_timeout_s", 30.0)
    monkeypatch.setattr(server, "clients_per_process_max", 1)
    first = await connect(url(gateway), additional_headers=bearer("acme"))
    await asyncio.sleep(0.1)  # the gateway counts it once its handler runs
    second = await connect(url(gateway), additional_headers=bearer("acme"))
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(second.recv(), frame_timeout_s)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    await first.close()


async def test_publishing_numbers_states_and_drops_stale_or_identical_ones(redis_url: str) -> None:
    """The Lua script is the only place seq is assigned: a state from an older read-model position
    (a worker that lost its partition) or identical to the stored one is not published."""
    client = redis.asyncio.Redis.from_url(redis_url)
    states = live.KpiStates(client)
    tenant = new_tenant()
    listener = client.pubsub()
    await listener.subscribe(live.channel(tenant))

    def body(position: int, as_of: str = "2026-11-23") -> dict[str, Any]:
        return {"type": "kpi:update", "tenant": tenant, "position": position, "as_of": as_of}

    try:
        assert (await states.publish(body(10)))[0] is True
        assert (await states.publish(body(9)))[0] is False  # stale
        assert (await states.publish(body(10)))[0] is False  # identical
        published, message = await states.publish(body(10, as_of="2026-11-24"))  # a new day
        assert published and orjson.loads(message)["seq"] == 2
        assert await states.current(tenant) == message
        received = []
        while len(received) < 2:
            got = await listener.get_message(ignore_subscribe_messages=True, timeout=5)
            if got is not None:
                received.append(orjson.loads(got["data"]))
        assert [(m["seq"], m["position"], m["as_of"]) for m in received] == [
            (1, 10, "2026-11-23"),
            (2, 10, "2026-11-24"),
        ]
    finally:
        await listener.aclose()
        await client.aclose()


async def test_a_dashboard_is_as_of_today_or_the_newest_event_when_that_is_later(
    store: PostgresEventStore, database_url: str
) -> None:
    """The demo stream runs ahead of the clock: the KPI state is as of its newest event's date
    (UTC), and as of today once today is later; the figures are computed as of that date."""
    tenant = new_tenant()
    issued = b.invoice("INV-1", amount="100.00", issue_date="2031-03-11", due_date="2031-04-10")
    issued["time"] = "2031-03-10T23:30:00-02:00"  # 2031-03-11 in UTC
    await append(store, tenant, b.customer("C1"), issued)
    async with store.connection() as conn:
        await catch_up(store, conn, all_projectors(), tenant=tenant)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await configure_connection(conn)
        ahead = await live.kpi_body(conn, tenant, date(2030, 1, 1))
        later = await live.kpi_body(conn, tenant, date(2032, 1, 1))
    assert ahead["as_of"] == "2031-03-11" and later["as_of"] == "2032-01-01"
    assert ahead["position"] == later["position"] > 0
    assert ahead["kpis"]["ar"] == later["kpis"]["ar"] == "100.00"
    # Due 2031-04-10: not overdue on the event's day, overdue by 2032.
    assert (ahead["kpis"]["ar_overdue"], later["kpis"]["ar_overdue"]) == ("0.00", "100.00")


# Past the plan cache's five custom plans, so PostgreSQL makes the generic plans on tiny tables.
tiny_store_states = 6
grown_tenant_invoices = 2_000
grown_unit_invoices = 500
stats_flush_timeout_s = 15


async def _events_reads(conninfo: str) -> tuple[int, int]:
    """Scans of `events` (index and sequential) and the tuples they read, from the statistics."""
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT idx_scan + seq_scan, idx_tup_fetch + seq_tup_read"
            " FROM pg_stat_user_tables WHERE relname = 'events'"
        )
        row = await cursor.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


async def _events_reads_settled(conninfo: str) -> tuple[int, int]:
    """`_events_reads` once no backend has more to report (two readings 0.3 s apart agree)."""
    deadline = asyncio.get_running_loop().time() + stats_flush_timeout_s
    last = await _events_reads(conninfo)
    while True:
        await asyncio.sleep(0.3)
        now = await _events_reads(conninfo)
        if now == last:
            return now
        assert asyncio.get_running_loop().time() < deadline, "the statistics never settled"
        last = now


async def test_a_long_lived_connections_kpi_states_keep_to_the_indexes_as_the_store_grows(
    new_database: Callable[[], str],
) -> None:
    """The KPI publisher computes every state on one connection for as long as the worker runs,
    with the plans it made on a tiny store. The dashboard's date was the tenant's newest event by
    `ORDER BY position DESC LIMIT 1`, which (under row-level security) a generic plan answered by
    reading all of the tenant's events and sorting them: 16-18 ms instead of 1.8 of every state at
    20,000 events. The event is now looked up by the read models' position."""
    conninfo = new_database()
    store = await PostgresEventStore.open(conninfo)
    tenant = new_tenant()
    as_of = date(2026, 3, 1)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as publisher:
        await configure_connection(publisher)
        try:
            await append(store, tenant, b.customer("C1"), b.invoice("INV-0", amount="1.00"))
            async with store.connection() as conn:
                await catch_up(store, conn, all_projectors(), tenant=tenant)
            for _ in range(tiny_store_states):
                await live.kpi_body(publisher, tenant, as_of)
            for start in range(1, grown_tenant_invoices, grown_unit_invoices):
                end = min(start + grown_unit_invoices, grown_tenant_invoices)
                await append(
                    store,
                    tenant,
                    *(b.invoice(f"INV-{n}", amount="1.00") for n in range(start, end)),
                )
            async with store.connection() as conn:
                await catch_up(store, conn, all_projectors(), tenant=tenant)
        finally:
            await store.close()  # its backends report their statistics as they exit
        grown = await live.kpi_body(publisher, tenant, as_of)
        assert grown["position"] > 2 * tiny_store_states
        await publisher.execute("SELECT pg_stat_force_next_flush()")
        scans_before, reads_before = await _events_reads_settled(conninfo)
        state = await live.kpi_body(publisher, tenant, as_of)
        await publisher.execute("SELECT pg_stat_force_next_flush()")
        scans_after, reads_after = await _events_reads_settled(conninfo)
    assert state["kpis"]["ar"] == f"{grown_tenant_invoices}.00"
    assert scans_after > scans_before  # the state did look at the events
    # It reads the one event at the read models' position, not all ~2,000 of the tenant's.
    assert reads_after - reads_before <= 2, reads_after - reads_before


async def test_a_new_day_republishes_every_tenant_the_publisher_knows(
    store: PostgresEventStore, database_url: str, redis_url: str
) -> None:
    """Aging moves at midnight without an event: the first batch of a new day republishes every
    tenant already published, as of the new date."""
    days = iter([date(2030, 1, 1), date(2030, 1, 2)])
    today = [next(days)]
    publisher = live.KpiPublisher(database_url, redis_url, today=lambda: today[0])
    first, second = new_tenant(), new_tenant()
    try:
        for tenant in (first, second):
            await append(store, tenant, b.customer("C1"), b.invoice("INV-1", amount="100.00"))
            async with store.connection() as conn:
                await catch_up(store, conn, all_projectors(), tenant=tenant)
        await publisher.changed({first: 1}, [])
        await publisher.wait_idle()
        today[0] = next(days)
        await publisher.changed({second: 1}, [])
        await publisher.wait_idle()
        states = publisher.states
        first_state = orjson.loads(await states.current(first) or b"{}")
        second_state = orjson.loads(await states.current(second) or b"{}")
        assert (first_state["seq"], first_state["as_of"]) == (2, "2030-01-02")
        assert (second_state["seq"], second_state["as_of"]) == (1, "2030-01-02")
        assert first_state["kpis"]["ar_overdue"] == "100.00"
    finally:
        await publisher.close()


async def test_ledger_gateway_as_a_process(database_url: str, redis_url: str) -> None:
    """`ledger gateway` (on uvloop) serves the state Redis holds and stops on SIGTERM; without a
    secret it refuses to start, saying which setting is missing."""
    refused = ledger(database_url, "gateway")
    assert refused.returncode == 2 and b"LEDGER_JWT_SECRET" in refused.stderr

    tenant = new_tenant()
    client = redis.asyncio.Redis.from_url(redis_url)
    await live.KpiStates(client).publish(
        {"type": "kpi:update", "tenant": tenant, "position": 5, "kpis": {"ar": "1.00"}}
    )
    await client.aclose()
    port = free_loopback_port()
    environment = dict(
        os.environ, LEDGER_JWT_SECRET=secret, LEDGER_REDIS_URL=redis_url, PYTHONPATH=str(src_dir)
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", "gateway", "--port", str(port)], env=environment
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                websocket = await connect(
                    f"ws://127.0.0.1:{port}/v1/stream", additional_headers=bearer(tenant)
                )
                break
            except OSError:
                assert time.monotonic() < deadline, "ledger gateway did not start"
                await asyncio.sleep(0.2)
        await websocket.send('{"type": "subscribe", "channel": "kpi:update"}')
        snapshot = await next_frame(websocket)
        assert (snapshot["type"], snapshot["seq"], snapshot["kpis"]) == (
            "snapshot",
            1,
            {"ar": "1.00"},
        )
        await websocket.close()
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 0


async def test_first_subscriptions_at_once_all_receive_updates(
    database_url: str, redis_url: str
) -> None:
    """Dashboards reconnecting together to a fresh gateway: each tenant's first subscription comes
    at the same moment, and every one of them gets its snapshot and then its updates."""
    running = await start_gateway("127.0.0.1", 0, redis_url, secret, database_url)
    client = redis.asyncio.Redis.from_url(redis_url)
    states = live.KpiStates(client)
    tenants = [new_tenant() for _ in range(5)]
    try:
        for tenant in tenants:
            await states.publish({"type": "kpi:update", "tenant": tenant, "position": 1})
        connected = await asyncio.wait_for(
            asyncio.gather(*(subscribed(running, tenant) for tenant in tenants)), frame_timeout_s
        )
        assert [snapshot["tenant"] for _, snapshot in connected] == tenants
        for tenant in tenants:
            await states.publish({"type": "kpi:update", "tenant": tenant, "position": 2})
        for (websocket, _), tenant in zip(connected, tenants, strict=True):
            update = await next_frame(websocket)
            assert (update["tenant"], update["type"], update["position"]) == (
                tenant,
                "kpi:update",
                2,
            )
            await websocket.close()
    finally:
        await client.aclose()
        await running.close()
