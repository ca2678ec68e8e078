"""The write side's reference state (`ledger_refs`) derived again from the events: checked or
rebuilt (`ledger refs verify`, `ledger refs rebuild`).

`ledger_refs` is what the append rules know of earlier events (the currency, customers, contracts,
invoices with their open amounts, payments, expenses), kept up to date in each append transaction.
It is derived from the store like any read model, so it can be derived again: every stored event,
in position order, is put to the rules of this code (`decide_unit`) on a state built from the
events before it. An event must come out as it was stored: accepted at its own position and stream
version, with the same content hash and the same decisions (`metadata.ledger`, e.g. a payment's
allocations). Anything else stops the derivation with the event named: the rules decide
differently today, or the stored event differs from what the store wrote, and rebuilding from
it would put a state in place that the events do not explain.

Both commands derive the state up to the store's head without blocking appends, then fold the
events appended meanwhile and read the table in one snapshot (an append writes its events and its
references in one transaction, so the two agree there) and compare: no lock. A rebuild that found
differences then takes the append lock, folds the events appended since the snapshot and writes
only the rows that differed or that those events changed, in one transaction: a failure leaves
them as they were, and appends wait for that part alone (`locked_seconds`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger.contract import parse_event
from ledger.decide import (
    Accepted,
    Outcome,
    PositionCounter,
    Refused,
    TenantState,
    decide_unit,
    ref_row,
)
from ledger.errors import LedgerError
from ledger.store import RecordedEvent, read_limit_max
from ledger.store.known import new_stamp

# (tenant, kind, ref_id) -> (customer_id, is_open, state as JSON): a `ledger_refs` row.
RefRows = dict[tuple[str, str, str], tuple[str | None, bool, Any]]
Keys = list[tuple[str, str, str]]


class RefsDerivationError(LedgerError):
    """A stored event that today's rules do not explain as it was stored."""

    def __init__(self, event: RecordedEvent, reason: str) -> None:
        super().__init__(
            f"the event at position {event.position} (tenant {event.tenant_id}, id "
            f"{event.event_id!r}) does not derive as stored: {reason}"
        )
        self.position = event.position
        self.reason = reason


def stored_envelope(event: RecordedEvent) -> dict[str, Any]:
    """The CloudEvent a stored event was parsed from, as far as the rules see it: the envelope's
    optional attributes the store keeps in `metadata`; `subject` is the stream (what the parser
    makes of a missing subject, and part of the content hash either way)."""
    envelope: dict[str, Any] = {
        "specversion": "1.0",
        "id": event.event_id,
        "source": event.metadata.get("source", ""),
        "type": event.type,
        "subject": event.stream_id,
        "time": event.time.isoformat(),
        "tenantid": event.tenant_id,
        "data": event.data,
    }
    for optional in ("dataschema", "traceparent", "tracestate"):
        if optional in event.metadata:
            envelope[optional] = event.metadata[optional]
    return envelope


class RefsFold:
    """The reference state of the events folded so far, per tenant."""

    def __init__(self) -> None:
        self.state: dict[str, TenantState] = {}
        self.position = 0
        self.events = 0

    def apply(self, event: RecordedEvent) -> None:
        if event.position <= self.position:
            raise RefsDerivationError(event, f"positions must rise (after {self.position})")
        proposed = parse_event(stored_envelope(event))
        if isinstance(proposed, list):
            reasons = "; ".join(f"{r.field or 'event'}: {r.message}" for r in proposed)
            raise RefsDerivationError(event, f"today's contract rejects it ({reasons})")
        positions = PositionCounter(event.position - 1)
        [outcome] = decide_unit(self.state, [proposed], positions)
        self._check(event, outcome, proposed.content_hash)
        # Event ids are unique in the store: the rules' duplicate check needs none of them here,
        # and a million ids would cost ~200 MB.
        self.state[event.tenant_id].events.clear()
        self.position = event.position
        self.events += 1

    @staticmethod
    def _check(event: RecordedEvent, outcome: Outcome, content_hash: str) -> None:
        if isinstance(outcome, Refused):
            rejection = outcome.rejection
            raise RefsDerivationError(
                event,
                f"today's rules refuse it ({rejection.code}, {rejection.field or 'event'}: "
                f"{rejection.message})",
            )
        if not isinstance(outcome, Accepted):
            raise RefsDerivationError(event, "the rules call it a duplicate")
        stored, derived = event.metadata.get("ledger"), outcome.metadata.get("ledger")
        for what, was, now in (
            ("position", event.position, outcome.position),
            ("stream version", event.stream_version, outcome.stream_version),
            ("content hash", event.hash, content_hash),
            ("ledger decisions", _canonical(stored), _canonical(derived)),
        ):
            if was != now:
                raise RefsDerivationError(event, f"its {what} was {was!r}, now {now!r}")

    def rows(self, tenants: Iterable[str] | None = None) -> RefRows:
        """The `ledger_refs` rows of the state (of `tenants`, or all)."""
        wanted = None if tenants is None else set(tenants)
        rows: RefRows = {}
        for tenant, tenant_state in self.state.items():
            if wanted is not None and tenant not in wanted:
                continue
            for (kind, ref_id), value in tenant_state.refs.items():
                rows[(tenant, kind, ref_id)] = ref_row(value)
        return rows


def _canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


_after_position = (
    "WHERE position > %(after)s AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s)"
    " ORDER BY position LIMIT %(limit)s"
)


# progress(position, head, elapsed seconds), as `ledger replay` shows it
Progress = Callable[[int, int, float], None]


async def _fold_from(
    conn: AsyncConnection[TupleRow],
    fold: RefsFold,
    tenant: str | None,
    progress: Progress | None,
    head: int,
    started: float,
) -> None:
    """Fold every event after `fold.position` (of `tenant`, or all) that `conn` sees."""
    from ledger.store.postgres import event_page, position_order_settings, recorded_from_row

    await conn.execute("SELECT " + position_order_settings)  # for the rest of the transaction
    while True:
        cursor = await conn.execute(
            event_page(_after_position),
            {"after": fold.position, "tenant": tenant, "limit": read_limit_max},
        )
        rows = await cursor.fetchall()
        for row in rows:
            fold.apply(recorded_from_row(row))
        if not rows:  # a short page may end at its size in bytes: only an empty one is the end
            fold.position = max(fold.position, head)
        if progress is not None:
            progress(fold.position, head, time.monotonic() - started)
        if not rows:
            return


async def _stored_rows(conn: AsyncConnection[TupleRow], tenant: str | None) -> RefRows:
    cursor = await conn.execute(
        "SELECT tenant_id, kind, ref_id, customer_id, is_open, state FROM ledger_refs"
        " WHERE %(tenant)s::text IS NULL OR tenant_id = %(tenant)s",
        {"tenant": tenant},
    )
    return {(r[0], r[1], r[2]): (r[3], bool(r[4]), r[5]) for r in await cursor.fetchall()}


def differences(
    stored: RefRows, derived: RefRows, differing: tuple[Keys, Keys, Keys], limit: int = 100
) -> dict[str, Any]:
    """What differs between the stored rows and the derived ones (`differing`: `_differing`'s
    answer for them): counts, and up to `limit` examples, each with both versions."""
    missing, unexpected, changed = differing
    examples: list[dict[str, Any]] = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("different", changed)):
        for tenant, kind, ref_id in keys[: max(0, limit - len(examples))]:
            key = (tenant, kind, ref_id)
            examples.append(
                {
                    "difference": what,
                    "tenant": tenant,
                    "kind": kind,
                    "ref_id": ref_id,
                    "stored": _row_json(stored.get(key)),
                    "derived": _row_json(derived.get(key)),
                }
            )
    return {
        "missing": len(missing),
        "unexpected": len(unexpected),
        "different": len(changed),
        "examples": examples,
    }


def _differing(stored: RefRows, derived: RefRows) -> tuple[Keys, Keys, Keys]:
    """The keys derived and not stored, stored and not derived, and in both but different."""
    missing = sorted(key for key in derived if key not in stored)
    unexpected = sorted(key for key in stored if key not in derived)
    changed = sorted(
        key for key in derived if key in stored and _row_key(stored[key]) != _row_key(derived[key])
    )
    return missing, unexpected, changed


def _row_key(row: tuple[str | None, bool, Any]) -> tuple[str | None, bool, bytes]:
    return row[0], row[1], _canonical(row[2])


def _row_json(row: tuple[str | None, bool, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"customer_id": row[0], "is_open": row[1], "state": row[2]}


async def derive(
    conn: AsyncConnection[TupleRow],
    tenant: str | None,
    *,
    rebuild: bool,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Derive the reference state of `tenant` (or of every tenant) from the events, compare it
    with `ledger_refs`, and with `rebuild` put it in place. `conn`: autocommit, allowed to read
    every table it touches (and to delete from `ledger_refs` for a rebuild). Raises
    `RefsDerivationError` for an event the rules do not explain as stored (nothing changed)."""
    scope = "*" if tenant is None else tenant
    fold = RefsFold()
    started = time.monotonic()
    # Up to the head of now, appends going on.
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [scope])
        await _fold_from(conn, fold, tenant, progress, await _head(conn), started)
    # The events since and the table in one snapshot: an append writes its events and its
    # references in one transaction, so the two agree at the snapshot's head. No lock.
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [scope])
        head = await _head(conn)
        await _fold_from(conn, fold, tenant, progress, head, started)
        stored = await _stored_rows(conn, tenant)
    derived = fold.rows(None if tenant is None else [tenant])
    differing = _differing(stored, derived)
    missing, unexpected, changed = differing
    found = differences(stored, derived, differing)
    replaced, locked_s = False, 0.0
    if rebuild and (missing or unexpected or changed):
        for tenant_state in fold.state.values():
            tenant_state.dirty.clear()
        async with conn.transaction():
            await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [scope])
            locked_at = time.monotonic()
            # The append lock: no event is appended, and no reference changed, until this
            # commits. The events appended since the snapshot are folded, then only the rows
            # that differed at the snapshot or that those events changed are written: every
            # other row is as the snapshot had it, where it agreed.
            cursor = await conn.execute("SELECT head FROM ledger_position FOR UPDATE")
            head_row = await cursor.fetchone()
            head = int(head_row[0]) if head_row else 0
            await _fold_from(conn, fold, tenant, progress, head, started)
            keys = {*missing, *unexpected, *changed}
            for name, tenant_state in fold.state.items():
                if tenant is None or name == tenant:
                    keys.update((name, kind, ref_id) for kind, ref_id in tenant_state.dirty)
            rows: RefRows = {}
            for key in keys:
                found_state = fold.state.get(key[0])
                value = None if found_state is None else found_state.refs.get(key[1:], None)
                if value is not None:
                    rows[key] = ref_row(value)
            await _write(conn, rows)
            await _delete(conn, sorted(key for key in keys if key not in rows))
            # References changed with the head where it was: a new stamp tells every writer
            # that what it knows of them is stale (ledger.store.known).
            await conn.execute("UPDATE ledger_position SET stamp = %s", [new_stamp()])
            locked_s = time.monotonic() - locked_at
        replaced = True
    references = sum(
        len(tenant_state.refs)
        for name, tenant_state in fold.state.items()
        if tenant is None or name == tenant
    )
    return {
        "tenant": scope,
        "position": head,
        "events": fold.events,
        "references": references,
        "ok": not (missing or unexpected or changed),
        **found,
        **({"rebuilt": replaced, "locked_seconds": round(locked_s, 3)} if rebuild else {}),
    }


async def _head(conn: AsyncConnection[TupleRow]) -> int:
    cursor = await conn.execute("SELECT head FROM ledger_position")
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def _write(conn: AsyncConnection[TupleRow], rows: RefRows) -> None:
    """Upsert `rows` into `ledger_refs`, as one JSON document."""
    if not rows:
        return
    document = [
        [key[0], key[1], key[2], customer_id, is_open, state]
        for key, (customer_id, is_open, state) in rows.items()
    ]
    await conn.execute(
        "INSERT INTO ledger_refs (tenant_id, kind, ref_id, customer_id, is_open, state)"
        " SELECT r ->> 0, r ->> 1, r ->> 2, r ->> 3, (r ->> 4)::boolean, r -> 5"
        " FROM jsonb_array_elements(%s::jsonb) AS r"
        " ON CONFLICT (tenant_id, kind, ref_id) DO UPDATE SET customer_id = excluded.customer_id,"
        " is_open = excluded.is_open, state = excluded.state",
        [orjson.dumps(document).decode()],
    )


async def _delete(conn: AsyncConnection[TupleRow], keys: list[tuple[str, str, str]]) -> None:
    if not keys:
        return
    await conn.execute(
        "DELETE FROM ledger_refs r USING jsonb_array_elements(%s::jsonb) AS k"
        " WHERE r.tenant_id = k ->> 0 AND r.kind = k ->> 1 AND r.ref_id = k ->> 2",
        [orjson.dumps(keys).decode()],
    )
