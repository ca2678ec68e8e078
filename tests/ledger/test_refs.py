"""`ledger refs verify|rebuild`: the append rules' reference state (`ledger_refs`) derived again
from the events, compared with the stored one, and put in place; through the real CLI and
PostgreSQL. Each test has a database of its own (a rebuild without --tenant covers the store)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
import pytest
from psycopg.types.json import Jsonb

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from tests.ledger import store_builders as b
from tests.ledger.test_cli import ledger
from tests.projections.scenario import everything, with_tenant

Rows = dict[tuple[str, str, str], tuple[Any, ...]]


@pytest.fixture
async def loaded(new_database: Any) -> AsyncIterator[str]:
    """A store with every kind of event for two tenants (refunds, auto-allocated payments,
    credit notes, write-offs, voids, amended and cancelled contracts included)."""
    url = new_database()
    store = await PostgresEventStore.open(url)
    try:
        service = LedgerService(store)
        for tenant in ("acme", "globex"):
            report = await service.append(with_tenant(tenant, everything(tenant)))
            assert report.ok, report.as_json()
    finally:
        await store.close()
    yield url


def refs_rows(url: str) -> Rows:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ledger.tenants = '*'")
        rows = conn.execute(
            "SELECT tenant_id, kind, ref_id, customer_id, is_open, state FROM ledger_refs"
        ).fetchall()
    return {
        (r[0], r[1], r[2]): (r[3], r[4], orjson.dumps(r[5], option=orjson.OPT_SORT_KEYS))
        for r in rows
    }


def stamp(url: str) -> int:
    """The stored state's stamp (`ledger.store.known`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT stamp FROM ledger_position").fetchone()
    assert row is not None
    return int(row[0])


def run(url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = ledger(url, "refs", *args)
    assert result.stdout, result.stderr
    return result.returncode, orjson.loads(result.stdout.splitlines()[-1])


def corrupt(url: str) -> None:
    """Three ways the table can drift from the events: an invoice's open amount changed, a
    customer lost, a payment that was never received."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ledger.tenants = '*'")
        [(state,)] = conn.execute(
            "SELECT state FROM ledger_refs WHERE tenant_id = 'acme' AND kind = 'invoice'"
            " AND ref_id = 'INV-1'"
        ).fetchall()
        conn.execute(
            "UPDATE ledger_refs SET state = %s WHERE tenant_id = 'acme' AND kind = 'invoice'"
            " AND ref_id = 'INV-1'",
            [Jsonb({**state, "paid": "0.01"})],
        )
        deleted = conn.execute(
            "DELETE FROM ledger_refs WHERE tenant_id = 'acme' AND kind = 'customer'"
            " AND ref_id = 'C2'"
        ).rowcount
        assert deleted == 1
        conn.execute(
            "INSERT INTO ledger_refs (tenant_id, kind, ref_id, customer_id, is_open, state)"
            " VALUES ('acme', 'payment', 'PAY-GHOST', 'C1', false, %s)",
            [Jsonb({"customer_id": "C1"})],
        )


def test_verify_agrees_with_what_the_appends_kept(loaded: str) -> None:
    code, result = run(loaded, "verify")
    assert code == 0, result
    assert result["ok"] is True
    assert result["tenant"] == "*"
    assert result["events"] == 2 * len(everything("acme"))
    assert result["references"] == len(refs_rows(loaded)) > 20
    assert (result["missing"], result["unexpected"], result["different"]) == (0, 0, 0)
    code, one = run(loaded, "verify", "--tenant", "globex")
    assert code == 0 and one["ok"] is True
    assert one["events"] == len(everything("globex"))
    assert one["references"] == result["references"] // 2


def test_verify_names_every_difference_and_changes_nothing(loaded: str) -> None:
    corrupt(loaded)
    before = refs_rows(loaded)
    code, result = run(loaded, "verify")
    assert code == 2
    assert result["ok"] is False
    assert (result["missing"], result["unexpected"], result["different"]) == (1, 1, 1)
    found = {(e["difference"], e["tenant"], e["kind"], e["ref_id"]) for e in result["examples"]}
    assert found == {
        ("missing", "acme", "customer", "C2"),
        ("unexpected", "acme", "payment", "PAY-GHOST"),
        ("different", "acme", "invoice", "INV-1"),
    }
    [different] = [e for e in result["examples"] if e["difference"] == "different"]
    assert different["stored"]["state"]["paid"] == "0.01"
    assert different["derived"]["state"]["paid"] != "0.01"
    # The other tenant is not affected, and verifying wrote nothing.
    assert run(loaded, "verify", "--tenant", "globex")[1]["ok"] is True
    assert refs_rows(loaded) == before


async def test_rebuild_puts_back_what_the_events_say_and_appends_go_on(loaded: str) -> None:
    kept = refs_rows(loaded)
    corrupt(loaded)
    stamped = stamp(loaded)
    code, result = run(loaded, "rebuild", "--tenant", "acme")
    assert code == 0, result
    assert result["rebuilt"] is True
    assert (result["missing"], result["unexpected"], result["different"]) == (1, 1, 1)
    assert refs_rows(loaded) == kept
    # References changed under an unmoved head: a new stamp, so no writer trusts what it knew.
    assert stamp(loaded) != stamped
    stamped = stamp(loaded)
    code, again = run(loaded, "rebuild")
    assert code == 0 and again["ok"] is True and again["rebuilt"] is False
    assert stamp(loaded) == stamped
    # The rules read the rebuilt state: C2 is known again, INV-1's open amount is right.
    store = await PostgresEventStore.open(loaded)
    try:
        service = LedgerService(store)
        accepted = await service.append(
            with_tenant("acme", [b.contract("K9", "C2", "2026-03-01", "2027-03-01")])
        )
        assert accepted.ok, accepted.as_json()
        ghost = await service.append(
            with_tenant("acme", [b.refund("1.00", payment_id="PAY-GHOST", date="2026-12-01")])
        )
        assert not ghost.ok
    finally:
        await store.close()
    assert run(loaded, "verify")[1]["ok"] is True


def test_an_event_the_rules_do_not_explain_stops_both_and_nothing_changes(loaded: str) -> None:
    """A stored payment whose recorded allocations differ from what the rules decide (here: the
    append-only trigger switched off by a superuser to edit it)."""
    with psycopg.connect(loaded, autocommit=True) as conn:
        conn.execute("SET ledger.tenants = '*'")
        [(position, metadata)] = conn.execute(
            "SELECT position, metadata FROM events WHERE tenant_id = 'acme'"
            " AND type = 'ledger.payment.received.v1' ORDER BY position LIMIT 1"
        ).fetchall()
        assert metadata.get("ledger"), metadata
        edited = {**metadata, "ledger": {**metadata["ledger"], "edited": True}}
        conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
        try:
            conn.execute(
                "UPDATE events SET metadata = %s WHERE position = %s", [Jsonb(edited), position]
            )
        finally:
            conn.execute("ALTER TABLE events ENABLE TRIGGER USER")
    corrupt(loaded)
    before = refs_rows(loaded)
    for command in ("verify", "rebuild"):
        code, result = run(loaded, command, "--tenant", "acme")
        assert code == 2
        assert result["ok"] is False
        assert result["error"]["position"] == position
        assert "ledger decisions" in result["error"]["message"]
        assert refs_rows(loaded) == before
    # Another tenant's events still derive.
    assert run(loaded, "rebuild", "--tenant", "globex")[1]["ok"] is True


def test_a_bad_tenant_is_named_and_nothing_runs(loaded: str) -> None:
    result = ledger(loaded, "refs", "rebuild", "--tenant", "no spaces")
    assert result.returncode == 2
    assert b"--tenant 'no spaces' is not a valid tenant id" in result.stderr
    assert result.stdout == b""


async def test_a_rebuild_beside_appends_misses_none_of_them(
    new_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends go on while a rebuild reads the store and compares it with the table (one
    snapshot, no lock), and wait only for its last part: 20 events appended after the unlocked
    read and 20 more after the snapshot are all in the rebuilt state, the row that had drifted
    is put back, and the rules after it decide as the events say."""
    import ledger.refs

    url = new_database()
    store = await PostgresEventStore.open(url)
    service = LedgerService(store)
    tenant = "busy"
    fold_from = ledger.refs._fold_from
    calls = 0

    async def fold_then_append(*args: Any) -> None:
        nonlocal calls
        await fold_from(*args)
        calls += 1
        if calls in (1, 2):  # after the unlocked read, then after the snapshot
            for n in range(20):
                number = 100 + 20 * calls + n
                event = b.invoice(
                    f"INV-{number}", f"C{number}", "10.00", "2026-01-10", "2026-02-09"
                )
                report = await service.append(with_tenant(tenant, [event]))
                assert report.ok, report.as_json()

    try:
        first = [b.customer(f"C{n}") for n in range(1500)]
        assert (await service.append(with_tenant(tenant, first))).ok
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET ledger.tenants = '*'")
            conn.execute("DELETE FROM ledger_refs WHERE kind = 'customer' AND ref_id = 'C5'")
        monkeypatch.setattr(ledger.refs, "_fold_from", fold_then_append)
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            started = time.monotonic()
            result = await ledger.refs.derive(conn, None, rebuild=True)
            elapsed_s = time.monotonic() - started
        finally:
            await conn.close()
        assert calls == 3
        assert result["events"] == 1500 + 40
        assert (result["missing"], result["unexpected"], result["different"]) == (1, 0, 0)
        assert result["rebuilt"] is True
        # Appends waited only for the last part: less than the whole.
        assert 0 < result["locked_seconds"] < elapsed_s
        code, verified = run(url, "verify")
        assert code == 0 and verified["ok"] is True, verified
        assert verified["events"] == 1540
        paid = {"INV-159": "10.00"}
        pays = await service.append(
            with_tenant(tenant, [b.payment("10.00", "PAY-1", "C159", "2026-01-20", paid)])
        )
        assert pays.ok, pays.as_json()
        over = await service.append(
            with_tenant(
                tenant, [b.payment("5.00", "PAY-2", "C159", "2026-01-21", {"INV-159": "5.00"})]
            )
        )
        assert not over.ok  # INV-159 is paid
        known = await service.append(with_tenant(tenant, [b.contract("K5", "C5")]))
        assert known.ok, known.as_json()  # C5 is known again
    finally:
        await store.close()
