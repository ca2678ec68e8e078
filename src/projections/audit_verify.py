"""Verifying a tenant's audit chain against the event store (`ledger audit verify`, HTTP
`GET /v1/audit/verify`).

`verify` recomputes the chain from the stored events (`projections.audit_chain`) and compares it,
link by link in position order, with the chain the projector stored, then the stored head with the
newest link. It stops at the first disagreement and names its position and kind:
- a row changed: same event id at the same position, another hash (`row_changed`);
- a row deleted: a chained event is no longer in the store (`row_deleted`); the newest one too,
  because its link is still stored; and if its link was deleted as well, the head still names it
  (`head_mismatch`);
- a row inserted: an event never chained sits among chained ones (`row_inserted`), or in a chained
  event's place (`row_replaced`);
- rows moved or reordered: an event is found at another position than the one it was chained at
  (`row_moved`).
After a break every later hash differs too, so the first break is the one worth reporting.

Catching up, and why it cannot legitimise what the chain has seen
------------------------------------------------------------------
The chain witnesses an event when the projector chains it; the live worker does so milliseconds
after the relay publishes it. Events committed since then are not yet chained, and verification
first chains them from the store as it is now (`caught_up` in the answer counts them). A row forged
at the end of the store is therefore chained, and nothing inside the database can tell it from an
append: the live worker would chain it as well, since the relay publishes whatever the store holds.
What verification does make sure of:
1. It verifies everything already chained *before* chaining anything. On a break it answers
   without catching up, so it never builds on a tampered prefix and changes none of the evidence.
2. Catching up only extends the chain past its head. The writer skips every position at or below
   the position the projection has applied, so a row inserted, changed or moved among chained rows
   is never chained; it stays a disagreement.
3. Every append moves `ledger_position.head` in the same transaction as its rows, so a row above
   that head was not appended by the ledger: it is reported (`beyond_ledger_head`), not chained.
   A forger has to move the head too.
4. The store's `hash` column is checked for every row, unwitnessed ones before they are chained
   (`fingerprint_mismatch`). It holds the idempotency fingerprint: SHA-256 of the publisher's
   content (id, tenant, type, source, subject, time, data), unkeyed. Anyone who can write a row can
   compute it, so it authenticates nothing and does not cover the position, stream version, commit
   time or the ledger's decisions: it catches only a careless edit. It is hashed into the chain
   like every other column.
What it cannot do: prove who wrote a row, or notice a chain rewritten whole (links and head) by
someone with the same access as the forger. For that the head must be kept elsewhere: `head.hash` in
the answer is what an auditor notes down and compares next time (DESIGN section 5: signed
checkpoints, later). For the same reason a rebuild of the chain from the store as it is would erase
the evidence: `ledger replay` verifies every chained tenant first (`broken_chains`) and refuses to
rebuild a broken chain unless told to (`--rebuild-broken-audit-chain`).

Reads are paged (`verify_page_events`), so memory stays flat however long the chain; the time is
one pass over the tenant's events and links.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger.store import RecordedEvent
from ledger.store.postgres import PostgresEventStore, scoped_position_read
from projections.audit_chain import (
    AuditChain,
    Break,
    Head,
    Link,
    beyond_ledger_head,
    check_head,
    diagnose,
    fingerprint,
    fingerprint_mismatch,
    head_of,
    next_link,
)
from projections.core import ProjectedEvent, ProjectionWriter

# Events (and links) read per query: large enough to amortise the round trip, small enough that a
# page of events (a few KiB each) stays a few MiB.
verify_page_events = 2000


@dataclass(frozen=True, slots=True)
class _StoredHead:
    head: Head | None
    newest: Link | None

    @property
    def position(self) -> int:
        return max(
            0 if self.head is None else self.head.position,
            0 if self.newest is None else self.newest.position,
        )


async def verify(
    store: PostgresEventStore, conn: AsyncConnection[TupleRow], tenant: str
) -> dict[str, Any]:
    """Bring the tenant's chain up to date, then verify it against the store:
    `{"ok", "tenant", "events", "head", "broken_at_position", "code", "reason", "caught_up"}`.
    `events` counts the events verified (up to the break, if any); `head` is the verified head
    when ok, the stored head when broken. `conn` is autocommit, configured like the store's."""
    stored = await _read_head(conn, tenant)
    # 1. What the chain has witnessed, before anything is added to it.
    verified, broken = await _walk(store, conn, tenant, Head(), stored.position)
    broken = broken or check_head(stored.head, stored.newest)
    if broken is not None:
        return _answer(tenant, verified, stored.head, broken, 0)
    # 2. What it has not: up to the ledger's head, never beyond it.
    ledger_head, beyond = await _ledger_head(conn, tenant)
    if beyond is not None:
        broken = Break(
            beyond,
            beyond_ledger_head,
            f"an event is stored at position {beyond}, above the ledger's head {ledger_head}: "
            "it was not appended by the ledger",
        )
        return _answer(tenant, verified, stored.head, broken, 0)
    caught_up, broken = await _catch_up(store, conn, tenant, stored.position, ledger_head)
    if broken is not None:
        return _answer(tenant, verified, stored.head, broken, 0)
    # 3. What was chained meanwhile (by us or by the live worker), and the head again.
    now = await _read_head(conn, tenant)
    verified, broken = await _walk(store, conn, tenant, verified, ledger_head)
    broken = broken or check_head(now.head, now.newest)
    return _answer(tenant, verified, now.head, broken, caught_up)


async def chained_tenants(conn: AsyncConnection[TupleRow]) -> list[str]:
    """Every tenant with a chain: a stored head or a stored link (a head deleted by a forger
    leaves its links)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        cursor = await conn.execute(
            "SELECT tenant_id FROM audit_heads UNION SELECT DISTINCT tenant_id FROM audit_links"
            " ORDER BY 1"
        )
        return [row[0] for row in await cursor.fetchall()]


async def broken_chains(
    store: PostgresEventStore, conn: AsyncConnection[TupleRow]
) -> list[dict[str, Any]]:
    """`verify` of every chained tenant; the answers of the broken ones. A rebuild of the chain
    (`ledger replay`) checks this first: it would chain the store as it is now and so erase the
    only evidence of a change behind the ledger's back."""
    broken = []
    for tenant in await chained_tenants(conn):
        answer = await verify(store, conn, tenant)
        if not answer["ok"]:
            broken.append(answer)
    return broken


def _answer(
    tenant: str, verified: Head, stored: Head | None, broken: Break | None, caught_up: int
) -> dict[str, Any]:
    if broken is None:
        head: dict[str, Any] | None = verified.as_json() if verified.n else None
    else:
        head = None if stored is None else stored.as_json()
    return {
        "ok": broken is None,
        "tenant": tenant,
        "events": verified.n,
        "head": head,
        "broken_at_position": None if broken is None else broken.position,
        "code": None if broken is None else broken.code,
        "reason": None if broken is None else broken.reason,
        "caught_up": caught_up,
    }


async def _walk(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    tenant: str,
    start: Head,
    through: int,
) -> tuple[Head, Break | None]:
    """Compare stored links with the chain recomputed from `start` over the events in
    (start.position, through]; return the last agreeing head and the first break."""
    head = start
    async with (
        aclosing(stored_links(conn, tenant, start.position, through)) as links,
        aclosing(_events(store, tenant, start.position, through)) as events,
    ):
        stored = await anext(links, None)
        event = await anext(events, None)
        while stored is not None or event is not None:
            projected = None if event is None else ProjectedEvent.from_recorded(event)
            recomputed = None if projected is None else next_link(head, projected)
            if projected is None or recomputed is None or stored != recomputed:
                return head, await _diagnosed(conn, tenant, stored, recomputed)
            if fingerprint(projected) != projected.content_hash:
                return head, _fingerprint_break(projected)
            head = head_of(recomputed)
            stored = await anext(links, None)
            event = await anext(events, None)
    return head, None


async def _catch_up(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    tenant: str,
    after: int,
    through: int,
) -> tuple[int, Break | None]:
    """Chain the tenant's events in (after, through] with the projector's own writer (it skips
    what the live worker applied meanwhile); check each row's fingerprint before it is chained."""
    writer = ProjectionWriter(conn, [AuditChain()])
    caught_up = 0
    async with aclosing(_event_pages(store, tenant, after, through)) as pages:
        async for page in pages:
            projected = [ProjectedEvent.from_recorded(event) for event in page]
            for event in projected:
                if fingerprint(event) != event.content_hash:
                    return caught_up, _fingerprint_break(event)
            await writer.apply(projected)
            caught_up += len(projected)
    return caught_up, None


def _fingerprint_break(event: ProjectedEvent) -> Break:
    return Break(
        event.position,
        fingerprint_mismatch,
        f"event {event.event_id!r} at position {event.position} does not match its stored "
        "fingerprint: the row was changed behind the ledger's back",
    )


async def _diagnosed(
    conn: AsyncConnection[TupleRow], tenant: str, stored: Link | None, recomputed: Link | None
) -> Break:
    chained_at = None
    if recomputed is not None:
        chained_at = await _one(
            conn,
            tenant,
            "SELECT position FROM audit_links WHERE tenant_id = %s AND event_id = %s"
            " ORDER BY position LIMIT 1",
            [tenant, recomputed.event_id],
        )
    stored_at = None
    if stored is not None:
        stored_at = await _one(
            conn,
            tenant,
            "SELECT position FROM events WHERE tenant_id = %s AND event_id = %s",
            [tenant, stored.event_id],
        )
    return diagnose(
        stored,
        recomputed,
        None if chained_at is None else int(chained_at[0]),
        None if stored_at is None else int(stored_at[0]),
    )


# --- reads ----------------------------------------------------------------------------------


async def _one(
    conn: AsyncConnection[TupleRow], tenant: str, query: str, params: list[Any]
) -> tuple[Any, ...] | None:
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
        cursor = await conn.execute(query, params)
        return await cursor.fetchone()


async def _read_head(conn: AsyncConnection[TupleRow], tenant: str) -> _StoredHead:
    """The stored head and the newest stored link, from one snapshot."""
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
        cursor = await conn.execute(
            "SELECT n, hash, position FROM audit_heads WHERE tenant_id = %s", [tenant]
        )
        head_row = await cursor.fetchone()
        cursor = await conn.execute(
            "SELECT position, n, event_id, hash FROM audit_links WHERE tenant_id = %s"
            " ORDER BY position DESC LIMIT 1",
            [tenant],
        )
        link_row = await cursor.fetchone()
    head = None if head_row is None else Head(int(head_row[0]), head_row[1], int(head_row[2]))
    newest = None if link_row is None else _link(link_row)
    return _StoredHead(head, newest)


async def _ledger_head(conn: AsyncConnection[TupleRow], tenant: str) -> tuple[int, int | None]:
    """The ledger's head and the lowest of the tenant's positions above it, in one statement
    (one snapshot: an append moves the head in the same transaction as it writes its rows)."""
    row = await _one(
        conn,
        tenant,
        "SELECT l.head, (SELECT min(e.position) FROM events e"
        " WHERE e.tenant_id = %s AND e.position > l.head) FROM ledger_position l",
        [tenant],
    )
    if row is None:  # the migration inserts the single row; without it nothing was appended
        return 0, None
    return int(row[0]), None if row[1] is None else int(row[1])


def _link(row: tuple[Any, ...]) -> Link:
    return Link(int(row[0]), int(row[1]), row[2], row[3])


async def stored_links(
    conn: AsyncConnection[TupleRow], tenant: str, after: int, through: int
) -> AsyncGenerator[Link, None]:
    """The tenant's chain as the projection stored it, links at positions in (after, through]
    in order, a page at a time."""
    while after < through:
        async with conn.transaction():
            # Walk `audit_links_pkey` in order: under row-level security the planner took the
            # tenant for a few rows and read all its links after `after`, then sorted them, for
            # every page (quadratic in a tenant's chain).
            await conn.execute(scoped_position_read, [tenant])
            cursor = await conn.execute(
                "SELECT position, n, event_id, hash FROM audit_links"
                " WHERE tenant_id = %s AND position > %s AND position <= %s"
                " ORDER BY position LIMIT %s",
                [tenant, after, through, verify_page_events],
            )
            rows = await cursor.fetchall()
        for row in rows:
            yield _link(row)
        if len(rows) < verify_page_events:
            return
        after = int(rows[-1][0])


async def _event_pages(
    store: PostgresEventStore, tenant: str, after: int, through: int
) -> AsyncGenerator[list[RecordedEvent], None]:
    while after < through:
        page = await store.read(tenant, after + 1, verify_page_events)
        events = [event for event in page if event.position <= through]
        if not events:  # a short page may end at its size in bytes: only an empty one is the end
            return
        yield events
        after = events[-1].position


async def _events(
    store: PostgresEventStore, tenant: str, after: int, through: int
) -> AsyncGenerator[RecordedEvent, None]:
    async with aclosing(_event_pages(store, tenant, after, through)) as pages:
        async for page in pages:
            for event in page:
                yield event
