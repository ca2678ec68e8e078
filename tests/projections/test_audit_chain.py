"""The audit chain is tamper-evident: built live from the relay's Kafka form of each event, it is
verified against the real PostgreSQL store, which a superuser then changes behind the ledger's back
(append-only trigger disabled, row-level security bypassed). Each kind of tampering (a row changed,
deleted, the newest deleted, inserted, two rows swapped, a row forged above the ledger's head, a
careless edit of a row the chain has not seen yet) is named with its position, in process and by
`ledger audit verify` (exit 2). The store and Kafka forms of an event hash alike, every column
counts, and the test runner, the live writer, catch-up and replay build identical tables."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
import rfc8785
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from ledger.api import make_app
from ledger.auth import issue_token
from ledger.contract import canonical_json
from ledger.errors import InvariantError
from ledger.relay import to_message
from ledger.service import LedgerService
from ledger.store import RecordedEvent
from ledger.store.postgres import PostgresEventStore
from projections import audit_chain
from projections.audit_chain import (
    AuditChain,
    Head,
    Link,
    audit_heads,
    audit_links,
    chain_hash,
    check_head,
    diagnose,
    fingerprint,
    genesis_hash,
    hashed_document,
)
from projections.audit_verify import verify
from projections.core import ProjectedEvent, ProjectionWriter
from projections.replay import catch_up, replay
from projections.tables import Changes, MemoryTables, Rows, read_rows
from tests.ledger.events import customer, new_tenant
from tests.projections.scenario import everything

# Every test on a database of its own (`store` in tests/conftest.py): they read every tenant
# of the store or change the database.
own_database = True

src_dir = Path(__file__).resolve().parents[2] / "src"
jwt_secret = "audit-test-secret-0123456789abcdef0123"
# The live writer gets the Kafka form in batches of this many (not a divisor of the event count,
# so batches straddle tenants and pages).
live_batch_events = 7
cli_timeout_s = 120


def traced_customer(tenant: str) -> dict[str, Any]:
    """An event with every optional envelope attribute, so `metadata` holds more than the source."""
    return customer(
        tenant,
        "C-TRACED",
        subject="customer/C-TRACED",
        dataschema="https://example.com/schemas/customer.registered.v1.json",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate="vendor=opaque",
    )


async def seed(store: PostgresEventStore) -> tuple[str, str]:
    """A tenant with every kind of event, interleaved with another tenant's, so neither tenant's
    positions are contiguous. Returns (tenant, other)."""
    tenant, other = new_tenant(), new_tenant()
    story = [*everything(tenant), traced_customer(tenant)]
    service = LedgerService(store)
    for index, start in enumerate(range(0, len(story), 5)):
        for batch in (story[start : start + 5], [customer(other, f"C{index}")]):
            report = await service.append(batch)
            assert not report.rejected, report.rejected
    return tenant, other


def kafka_form(event: RecordedEvent) -> ProjectedEvent:
    message = to_message(event)
    return ProjectedEvent.from_kafka(message.value, message.headers)


async def project_live(store: PostgresEventStore, conn: AsyncConnection[Any]) -> None:
    """What the live worker does: the relay's messages, decoded, through the writer in batches;
    one batch delivered twice (delivery is at least once)."""
    events = [kafka_form(event) for event in await store.read(None, 1, 10_000)]
    writer = ProjectionWriter(conn, [AuditChain()])
    for start in range(0, len(events), live_batch_events):
        await writer.apply(events[start : start + live_batch_events])
    await writer.apply(events[live_batch_events : 2 * live_batch_events])


async def positions_of(store: PostgresEventStore, tenant: str) -> list[int]:
    return [event.position for event in await store.read(tenant, 1, 10_000)]


def superuser(store: PostgresEventStore) -> psycopg.Connection[Any]:
    """A connection that bypasses row-level security and may change `events` (the test's own
    database; the append-only trigger is disabled for it)."""
    connection = psycopg.connect(store.conninfo, autocommit=True)
    connection.execute("ALTER TABLE events DISABLE TRIGGER events_append_only")
    return connection


def ledger_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    environment = dict(os.environ)
    environment["LEDGER_DATABASE_URL"] = database_url
    environment["PYTHONPATH"] = os.pathsep.join([str(src_dir), environment.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "ledger.cli", *args],
        capture_output=True,
        env=environment,
        timeout=cli_timeout_s,
        check=False,
    )


def forged_from(event: RecordedEvent, position: int) -> RecordedEvent:
    """A row as a careful forger writes it: a new id and stream, and a fingerprint that matches."""
    forged = dataclasses.replace(
        event,
        position=position,
        event_id=f"forged-{uuid.uuid4().hex[:8]}",
        stream_id=f"forged/{uuid.uuid4().hex[:8]}",
        stream_version=1,
        data={**event.data, "name": "Mallory Ltd"},
    )
    return dataclasses.replace(forged, hash=fingerprint(ProjectedEvent.from_recorded(forged)))


def insert_row(connection: psycopg.Connection[Any], event: RecordedEvent) -> None:
    connection.execute(
        "INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id, type,"
        " time, recorded_at, data, metadata, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s,"
        " %s, %s)",
        [
            event.position,
            event.tenant_id,
            event.stream_id,
            event.stream_version,
            event.event_id,
            event.type,
            event.time,
            event.recorded_at,
            Jsonb(event.data),
            Jsonb(event.metadata),
            event.hash,
        ],
    )


# --- the chain's content ----------------------------------------------------------------------


async def test_store_and_kafka_forms_hash_alike_and_every_column_counts(
    store: PostgresEventStore,
) -> None:
    await seed(store)
    events = await store.read(None, 1, 10_000)
    assert any("traceparent" in event.metadata for event in events)
    assert any("ledger" in event.metadata for event in events)
    india = timezone(timedelta(hours=5, minutes=30))
    for event in events:
        from_store, from_kafka = ProjectedEvent.from_recorded(event), kafka_form(event)
        assert from_kafka == from_store
        document = hashed_document(from_store)
        assert canonical_json(hashed_document(from_kafka)) == canonical_json(document)
        assert canonical_json(document) == rfc8785.dumps(document)  # RFC 8785, byte for byte
        # A reader whose session is in another time zone hashes the same instants.
        elsewhere = dataclasses.replace(
            event,
            time=event.time.astimezone(india),
            recorded_at=event.recorded_at.astimezone(india),
        )
        assert hashed_document(ProjectedEvent.from_recorded(elsewhere)) == document
        # The store's fingerprint is reproducible from the row (verification checks it).
        assert fingerprint(from_store) == event.hash
    # Every column of the row is hashed: changing any one changes the link.
    event = ProjectedEvent.from_recorded(events[-1])
    changes: dict[str, Any] = {
        "position": event.position + 1,
        "tenant_id": "someone-else",
        "event_id": "another-id",
        "type": "ledger.customer.updated.v1",
        "stream_id": "customer/other",
        "stream_version": event.stream_version + 1,
        "time": "2027-01-01T00:00:00Z",
        "recorded_at": "2027-01-01T00:00:00Z",
        "data": {**event.data, "name": "Changed"},
        "metadata": {**event.metadata, "traceparent": "changed"},
        "content_hash": "0" * 64,
    }
    assert set(changes) | {"ledger"} == {f.name for f in dataclasses.fields(ProjectedEvent)}
    original = chain_hash(genesis_hash, event)
    for name, value in changes.items():
        assert chain_hash(genesis_hash, dataclasses.replace(event, **{name: value})) != original, (
            name
        )


async def test_test_runner_live_writer_catch_up_and_replay_build_the_same_chain(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    events = await store.read(None, 1, 10_000)
    memory = MemoryTables()
    memory.apply([AuditChain()], [ProjectedEvent.from_recorded(event) for event in events])
    from_kafka = MemoryTables()
    from_kafka.apply([AuditChain()], [kafka_form(event) for event in events])
    expected = {table.name: memory.rows(table) for table in AuditChain.tables}
    assert {table.name: from_kafka.rows(table) for table in AuditChain.tables} == expected
    assert len(expected["audit_links"]) == len(events)
    assert {row["tenant_id"]: row["n"] for row in expected["audit_heads"]} == {
        tenant: len(await positions_of(store, tenant)),
        other: len(await positions_of(store, other)),
    }

    async def stored() -> dict[str, Any]:
        return {table.name: await read_rows(conn, table) for table in AuditChain.tables}

    await project_live(store, conn)
    assert await stored() == expected
    await catch_up(store, conn, [AuditChain()])  # nothing new: everything is skipped
    assert await stored() == expected
    await replay(store, conn, [AuditChain()])
    assert await stored() == expected
    for name in (tenant, other):
        assert (await verify(store, conn, name))["ok"]


# --- verification ---------------------------------------------------------------------------


async def test_an_intact_chain_verifies_and_verification_catches_up_first(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    await project_live(store, conn)
    positions = await positions_of(store, tenant)
    answer = await verify(store, conn, tenant)
    assert answer == {
        "ok": True,
        "tenant": tenant,
        "events": len(positions),
        "head": answer["head"],
        "broken_at_position": None,
        "code": None,
        "reason": None,
        "caught_up": 0,
    }
    assert answer["head"]["position"] == positions[-1] and answer["head"]["n"] == len(positions)
    # Appended since the worker last ran: verification chains it first, then verifies.
    report = await LedgerService(store).append([customer(tenant, "C-LATE")])
    assert not report.rejected
    later = await verify(store, conn, tenant)
    assert later["ok"] and later["caught_up"] == 1 and later["events"] == len(positions) + 1
    assert later["head"]["position"] == await store.head()
    assert (await verify(store, conn, tenant))["caught_up"] == 0  # the chain now has it
    assert (await verify(store, conn, other))["ok"]
    assert (await verify(store, conn, new_tenant()))["events"] == 0  # no events, nothing broken
    result = ledger_cli(store.conninfo, "audit", "verify", "--tenant", tenant)
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) == {**later, "caught_up": 0}


def change_row(store: PostgresEventStore, positions: list[int]) -> int:
    with superuser(store) as connection:
        connection.execute(
            "UPDATE events SET data = jsonb_set(data, '{name}', '\"Mallory Ltd\"')"
            " WHERE position = %s",
            [positions[1]],
        )
    return positions[1]


def delete_middle_row(store: PostgresEventStore, positions: list[int]) -> int:
    with superuser(store) as connection:
        connection.execute("DELETE FROM events WHERE position = %s", [positions[10]])
    return positions[10]


def delete_newest_row(store: PostgresEventStore, positions: list[int]) -> int:
    with superuser(store) as connection:
        connection.execute("DELETE FROM events WHERE position = %s", [positions[-1]])
    return positions[-1]


def delete_newest_row_and_its_link(store: PostgresEventStore, positions: list[int]) -> int:
    """A tamperer who also knows the read model: only the stored head still names the event."""
    with superuser(store) as connection:
        connection.execute("DELETE FROM events WHERE position = %s", [positions[-1]])
        connection.execute("DELETE FROM audit_links WHERE position = %s", [positions[-1]])
    return positions[-1]


def insert_row_in_the_middle(store: PostgresEventStore, positions: list[int]) -> int:
    """Make room at a position (every later row moves up one, the head too) and forge a row
    there, fingerprint and all: the store stays gap-free and consistent."""
    at = positions[12]
    with superuser(store) as connection, connection.transaction():
        original = connection.execute(
            "SELECT position, tenant_id, stream_id, stream_version, event_id, type, time,"
            " recorded_at, data, metadata, hash FROM events WHERE position = %s",
            [positions[0]],
        ).fetchone()
        assert original is not None
        connection.execute(
            "UPDATE events SET position = position + 1000000 WHERE position >= %s", [at]
        )
        connection.execute(
            "UPDATE events SET position = position - 999999 WHERE position >= 1000000"
        )
        insert_row(connection, forged_from(RecordedEvent(*original), at))
        connection.execute("UPDATE ledger_position SET head = head + 1")
    return at


def swap_two_rows(store: PostgresEventStore, positions: list[int]) -> int:
    first, second = positions[3], positions[8]
    parked = 999_999_999
    with superuser(store) as connection, connection.transaction():
        connection.execute("UPDATE events SET position = %s WHERE position = %s", [parked, first])
        connection.execute("UPDATE events SET position = %s WHERE position = %s", [first, second])
        connection.execute("UPDATE events SET position = %s WHERE position = %s", [second, parked])
    return first


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (change_row, "row_changed"),
        (delete_middle_row, "row_deleted"),
        (delete_newest_row, "row_deleted"),
        (delete_newest_row_and_its_link, "head_mismatch"),
        (insert_row_in_the_middle, "row_inserted"),
        (swap_two_rows, "row_moved"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
async def test_tampering_behind_the_ledgers_back_is_named_by_position(
    store: PostgresEventStore,
    conn: AsyncConnection[Any],
    tamper: Callable[[PostgresEventStore, list[int]], int],
    code: str,
) -> None:
    tenant, _other = await seed(store)
    await project_live(store, conn)
    positions = await positions_of(store, tenant)
    head_before = (await verify(store, conn, tenant))["head"]
    chain_before = {table.name: await read_rows(conn, table) for table in AuditChain.tables}
    position = tamper(store, positions)
    # An honest append after the tampering: verification must not chain it onto a broken chain.
    assert not (await LedgerService(store).append([customer(tenant, "C-AFTER")])).rejected

    answer = await verify(store, conn, tenant)
    assert (answer["ok"], answer["broken_at_position"], answer["code"]) == (False, position, code)
    assert str(position) in answer["reason"]
    assert answer["caught_up"] == 0 and answer["head"] == head_before
    assert answer["events"] == sum(1 for p in positions if p < position)
    # Nothing was chained, the honest append included: the evidence is as the tamperer left it.
    if code == "head_mismatch":
        chain_before["audit_links"] = [
            row for row in chain_before["audit_links"] if row["position"] != position
        ]
    assert {table.name: await read_rows(conn, table) for table in AuditChain.tables} == chain_before

    result = ledger_cli(store.conninfo, "audit", "verify", "--tenant", tenant)
    assert result.returncode == 2, result.stderr
    assert orjson.loads(result.stdout) == answer


async def test_replay_refuses_to_rebuild_a_broken_chain_unless_told(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, other = await seed(store)
    await project_live(store, conn)
    assert ledger_cli(store.conninfo, "replay").returncode == 0  # intact chains: rebuilt
    position = change_row(store, await positions_of(store, tenant))
    chain_before = {table.name: await read_rows(conn, table) for table in AuditChain.tables}

    refused = ledger_cli(store.conninfo, "replay")
    assert refused.returncode == 2, refused.stderr
    answer = orjson.loads(refused.stdout)
    assert answer["refused"] and [
        (broken["tenant"], broken["broken_at_position"], broken["code"])
        for broken in answer["broken_audit_chains"]
    ] == [(tenant, position, "row_changed")]  # the other tenant's chain is intact
    message = refused.stderr.decode().splitlines()[-1]
    assert f"{tenant} at position {position} (row_changed)" in message
    assert "--rebuild-broken-audit-chain" in message and b"Traceback" not in refused.stderr
    # Nothing was rebuilt: the evidence stands, and verification still finds it.
    assert {table.name: await read_rows(conn, table) for table in AuditChain.tables} == chain_before
    assert (await verify(store, conn, tenant))["broken_at_position"] == position

    # Projections other than the chain are rebuilt as asked; catch-up only extends the chain.
    assert ledger_cli(store.conninfo, "replay", "--projection", "event_counts").returncode == 0
    assert ledger_cli(store.conninfo, "catch-up").returncode == 0
    assert (await verify(store, conn, tenant))["broken_at_position"] == position

    forced = ledger_cli(store.conninfo, "replay", "--rebuild-broken-audit-chain")
    assert forced.returncode == 0, forced.stderr
    assert b"erasing their evidence" in forced.stderr
    # The chain is now the store's as it is: the changed row is chained, and only the row's own
    # fingerprint (which this careless edit left stale) still gives it away.
    after = await verify(store, conn, tenant)
    assert (after["broken_at_position"], after["code"]) == (position, "fingerprint_mismatch")
    assert (await verify(store, conn, other))["ok"]


async def test_a_row_forged_above_the_ledgers_head_is_refused_not_chained(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, _other = await seed(store)
    await project_live(store, conn)
    [newest] = await store.read(tenant, (await positions_of(store, tenant))[-1], 1)
    above = await store.head() + 1
    with superuser(store) as connection:
        insert_row(connection, forged_from(newest, above))
    answer = await verify(store, conn, tenant)
    assert (answer["broken_at_position"], answer["code"]) == (above, "beyond_ledger_head")
    heads = await read_rows(conn, audit_heads)
    assert [row["position"] for row in heads if row["tenant_id"] == tenant] == [newest.position]


async def test_a_row_forged_at_the_end_with_the_head_moved_is_chained_like_an_append(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    """The documented limit (see `projections.audit_verify`): nothing in the database tells a
    careful forger's row at the end from an append. The answer counts it as caught up, and the
    chain witnesses it from then on: changing it later is found like any other change."""
    tenant, _other = await seed(store)
    await project_live(store, conn)
    [newest] = await store.read(tenant, (await positions_of(store, tenant))[-1], 1)
    above = await store.head() + 1
    with superuser(store) as connection, connection.transaction():
        insert_row(connection, forged_from(newest, above))
        connection.execute("UPDATE ledger_position SET head = %s", [above])
    answer = await verify(store, conn, tenant)
    assert answer["ok"] and answer["caught_up"] == 1 and answer["head"]["position"] == above
    with superuser(store) as connection:
        connection.execute("DELETE FROM events WHERE position = %s", [above])
    answer = await verify(store, conn, tenant)
    assert (answer["broken_at_position"], answer["code"]) == (above, "row_deleted")


async def test_a_careless_edit_of_a_row_not_yet_chained_is_found_by_its_fingerprint(
    store: PostgresEventStore, conn: AsyncConnection[Any]
) -> None:
    tenant, _other = await seed(store)
    await project_live(store, conn)
    report = await LedgerService(store).append([customer(tenant, "C-UNSEEN")])
    unseen = report.appended[0]["position"]
    with superuser(store) as connection:
        connection.execute(
            "UPDATE events SET data = jsonb_set(data, '{name}', '\"Mallory Ltd\"')"
            " WHERE position = %s",
            [unseen],
        )
    answer = await verify(store, conn, tenant)
    assert (answer["broken_at_position"], answer["code"]) == (unseen, "fingerprint_mismatch")
    links = await read_rows(conn, audit_links)
    assert unseen not in {row["position"] for row in links}  # not chained


def test_diagnose_names_each_kind_of_disagreement() -> None:
    """The pure half of verification, for the cases the store tests cannot set up cheaply."""
    chained = Link(5, 2, "A", "h")
    other = Link(5, 2, "B", "g")
    cases = [
        # (stored, recomputed, recomputed id chained at, stored id found in the store at)
        ((chained, other, None, None), (5, "row_replaced")),
        ((chained, other, None, 9), (5, "row_inserted")),
        ((chained, other, 7, None), (5, "row_moved")),
        ((chained, Link(5, 2, "A", "x"), 5, 5), (5, "row_changed")),
        ((chained, Link(8, 2, "B", "g"), None, 8), (5, "row_moved")),
        ((chained, Link(8, 2, "B", "g"), None, None), (5, "row_deleted")),
        ((chained, None, None, None), (5, "row_deleted")),
        ((None, Link(8, 2, "B", "g"), None, None), (8, "row_inserted")),
        ((Link(9, 2, "A", "h"), Link(8, 2, "B", "g"), 3, None), (8, "row_moved")),
    ]
    for arguments, expected in cases:
        found = diagnose(*arguments)
        assert (found.position, found.code) == expected, arguments
        assert str(found.position) in found.reason
    head = Head(3, "h", 9)
    assert check_head(head, Link(9, 3, "A", "h")) is None
    assert check_head(None, None) is None
    for stored_head, newest in (
        (head, Link(7, 2, "A", "g")),
        (head, None),
        (None, Link(9, 3, "A", "h")),
    ):
        found = check_head(stored_head, newest)
        assert found is not None and (found.position, found.code) == (9, "head_mismatch")


# --- entry points ---------------------------------------------------------------------------


def test_cli_refuses_a_missing_or_invalid_tenant_naming_the_field(database_url: str) -> None:
    missing = ledger_cli(database_url, "audit", "verify")
    assert missing.returncode == 2 and b"--tenant" in missing.stderr
    invalid = ledger_cli(database_url, "audit", "verify", "--tenant", "not a tenant!")
    assert invalid.returncode == 2
    assert invalid.stderr.count(b"\n") == 1 and b"--tenant" in invalid.stderr
    assert b"Traceback" not in missing.stderr + invalid.stderr


async def test_http_verify_checks_the_token_tenant(store: PostgresEventStore) -> None:
    tenant, other = await seed(store)
    app = make_app(LedgerService(store), jwt_secret)
    mine = {"Authorization": f"Bearer {issue_token(jwt_secret, tenant)}"}
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/v1/audit/verify", params={"tenant": tenant}, headers=mine)
        assert response.status == 200
        answer = await response.json()
        assert answer["ok"] and answer["events"] == len(await positions_of(store, tenant))
        response = await client.get("/v1/audit/verify", params={"tenant": other}, headers=mine)
        assert response.status == 403
        response = await client.get("/v1/audit/verify", params={"tenant": tenant})
        assert response.status == 401
        everyone = {"Authorization": f"Bearer {issue_token(jwt_secret, '*')}"}
        response = await client.get("/v1/audit/verify", headers=everyone)
        assert response.status == 400
        assert (await response.json())["rejected"][0]["field"] == "tenant"


def test_the_projector_is_registered() -> None:
    from projections.registry import all_projectors

    assert [p for p in all_projectors() if isinstance(p, audit_chain.AuditChain)]


def test_the_projector_links_each_event_to_the_head_and_refuses_to_go_back() -> None:
    """Applied in memory: link n's hash is `chain_hash` of link n-1's (the genesis hash first),
    the head follows, and an event at or below the head's position is refused, naming both."""

    def event(position: int) -> ProjectedEvent:
        return ProjectedEvent(
            position, "t", f"e{position}", "ledger.customer.registered.v1", "customer/C",
            "2026-01-15T10:00:00Z", {"customer_id": "C"}, {},
        )  # fmt: skip

    tables = MemoryTables()
    tables.apply([AuditChain()], [event(3), event(7)])
    first = chain_hash(genesis_hash, event(3))
    second = chain_hash(first, event(7))
    assert tables.rows(audit_links) == [
        {"tenant_id": "t", "position": 3, "n": 1, "event_id": "e3", "hash": first},
        {"tenant_id": "t", "position": 7, "n": 2, "event_id": "e7", "hash": second},
    ]
    assert tables.rows(audit_heads) == [{"tenant_id": "t", "n": 2, "hash": second, "position": 7}]
    cache = {("audit_heads", "t", ()): {"n": 2, "hash": second, "position": 7}}
    for position in (7, 5):
        with pytest.raises(InvariantError, match=f"position {position} after 7"):
            AuditChain().apply(Rows("t", dict(cache), Changes()), event(position))


def _rendered_again(text: str) -> str:
    """What `utc_rfc3339` gives without its shortcut for text already in the one rendering."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return text
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@settings(max_examples=400, deadline=None)
@given(
    moment=st.datetimes(
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5, minutes=-30))])
    ),
    zero_micros=st.booleans(),
    form=st.sampled_from(["isoformat", "z", "z-micros", "space"]),
)
def test_one_rendering_of_an_instant_whatever_form_it_arrived_in(
    moment: datetime, zero_micros: bool, form: str
) -> None:
    """The hashed rendering of `time` and `recordedat` is the same whether the text was already
    rendered (the shortcut) or not: offsets, `+00:00`, a zero fraction written out, a space."""
    if zero_micros:
        moment = moment.replace(microsecond=0)
    text = moment.isoformat()
    if form == "z":
        text = text.replace("+00:00", "Z")
    elif form == "z-micros":
        text = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    elif form == "space":
        text = text.replace("T", " ")
    assert audit_chain.utc_rfc3339(text) == _rendered_again(text)
    assert audit_chain.utc_rfc3339(_rendered_again(text)) == _rendered_again(text)
    with pytest.raises(ValueError):
        audit_chain.utc_rfc3339("2026-13-01T00:00:00Z")
