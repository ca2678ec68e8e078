"""The PostgreSQL event store (psycopg 3): gap-free positions, group commit, row-level security.

Why positions are gap-free in commit order
-------------------------------------------
A reader that has seen position N must never later see a committed event below N. A plain sequence
breaks this: writer A takes 7, writer B takes 8, B commits first, a reader sees 8, then A commits 7
behind it and the reader never goes back. Here every append transaction first locks the single row
of `ledger_position` (`SELECT ... FOR UPDATE`) and only then reads the head, decides, inserts and
moves the head. The next writer blocks on that row until the first has committed; PostgreSQL makes a
committed transaction visible before it releases its row locks, so by the time B can read the head,
A's rows are visible to everyone, and B's positions are all above A's. A writer that rolls back
leaves the head where it was, so no position is ever skipped. Readers take no lock.

The same lock makes the append rules exact: the reference state (`ledger_refs`) is read after the
lock is taken, so two payments to one invoice can never both pass the over-application check.

Group commit: one writer task per process drains every request that arrived while the previous
transaction ran into the next one, so 16 callers pay for one lock, two round trips and one commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from ledger.decide import (
    Accepted,
    Existing,
    InvoiceState,
    Key,
    Outcome,
    PositionCounter,
    TenantState,
    decide_unit,
    decode_state,
    encode_state,
    needs_of,
)
from ledger.errors import StoreError, StoreUnavailableError, invariant
from ledger.store import RecordedEvent, Unit, append_batch_events_max, read_limit_max

logger = logging.getLogger(__name__)

# The role the store works as, so that row-level security applies even when the configured user is
# a superuser (superusers bypass RLS). Created by `migrate` when the connecting user may.
app_role = "ledger_app"
notify_channel = "ledger_events"
# Readers share a small pool: reports and the relay read, one writer connection appends.
read_pool_size_max = 8
connect_timeout_s = 10
# A migration lock id of our own: concurrent `ledger migrate` runs wait for each other.
migration_lock_id = 0x1ED6E5
_migrations = ("001_events.sql",)

_select_events = """
SELECT position, tenant_id, stream_id, stream_version, event_id, type, time, recorded_at,
       data, metadata, hash
FROM events
"""


def _sql_files() -> list[tuple[int, str]]:
    package = resources.files("ledger.store") / "sql"
    return [
        (int(name.split("_", 1)[0]), (package / name).read_text(encoding="utf-8"))
        for name in _migrations
    ]


async def migrate(conninfo: str) -> list[int]:
    """Apply pending migrations; return the versions applied. Safe to run concurrently."""
    async with await AsyncConnection.connect(conninfo, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", [migration_lock_id])
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS ledger_schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor = await conn.execute("SELECT version FROM ledger_schema_migrations")
            done = {row[0] for row in await cursor.fetchall()}
            applied = []
            for version, text in _sql_files():
                if version in done:
                    continue
                await conn.execute(text.encode())
                await conn.execute(
                    "INSERT INTO ledger_schema_migrations (version) VALUES (%s)", [version]
                )
                applied.append(version)
            # Under the migration lock too: concurrent GRANTs on one table fail with "tuple
            # concurrently updated". A savepoint inside, so a refused GRANT keeps the migration.
            await _ensure_app_role(conn)
    return applied


async def _ensure_app_role(conn: AsyncConnection[TupleRow]) -> None:
    """Create the RLS role and grant it exactly what the store does: no UPDATE or DELETE on events."""
    try:
        async with conn.transaction():
            cursor = await conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [app_role])
            if await cursor.fetchone() is None:
                await conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(app_role))
                )
            role = sql.Identifier(app_role)
            for statement in (
                "GRANT SELECT, INSERT ON events TO {}",
                "GRANT SELECT, UPDATE ON ledger_position TO {}",
                "GRANT SELECT, INSERT, UPDATE ON ledger_refs TO {}",
                "GRANT SELECT ON ledger_schema_migrations TO {}",
            ):
                await conn.execute(sql.SQL(statement).format(role))
    except psycopg.errors.InsufficientPrivilege:
        logger.warning(
            "cannot create or grant role %s; row-level security relies on the connecting user "
            "not being a superuser",
            app_role,
        )


async def _configure(conn: AsyncConnection[Any]) -> None:
    set_json_loads(orjson.loads, conn)
    set_json_dumps(lambda value: orjson.dumps(value).decode(), conn)
    cursor = await conn.execute(
        "SELECT 1 FROM pg_roles WHERE rolname = %s AND pg_has_role(current_user, oid, 'MEMBER')",
        [app_role],
    )
    if await cursor.fetchone() is not None:
        await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(app_role)))
    if not conn.autocommit:
        await conn.commit()


def _tenant_scope(tenants: Iterable[str] | None) -> str:
    return "*" if tenants is None else ",".join(sorted(tenants))


class PostgresEventStore:
    """An `EventStore` over PostgreSQL. Open with `await PostgresEventStore.open(conninfo)`."""

    def __init__(self, conninfo: str, pool: AsyncConnectionPool[AsyncConnection[TupleRow]]) -> None:
        self.conninfo = conninfo
        self._pool = pool
        self._writer: AsyncConnection[TupleRow] | None = None
        self._pending: list[tuple[list[Unit], asyncio.Future[list[list[Outcome]]]]] = []
        self._wakeup = asyncio.Event()
        self._closed = False
        self._writer_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, conninfo: str, *, run_migrations: bool = True) -> PostgresEventStore:
        try:
            if run_migrations:
                await migrate(conninfo)
            pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=read_pool_size_max,
                configure=_configure,
                kwargs={"autocommit": True, "connect_timeout": connect_timeout_s},
                open=False,
            )
            await pool.open(wait=True, timeout=connect_timeout_s)
        except (psycopg.OperationalError, psycopg_pool_errors()) as error:
            raise StoreUnavailableError(
                f"cannot reach the event store database: {error}"
            ) from error
        store = cls(conninfo, pool)
        store._writer_task = asyncio.create_task(store._write_loop(), name="ledger-group-commit")
        return store

    # --- appending -------------------------------------------------------------------------

    async def append(self, units: list[Unit]) -> list[list[Outcome]]:
        if self._closed:
            raise StoreError("the event store is closed")
        future: asyncio.Future[list[list[Outcome]]] = asyncio.get_running_loop().create_future()
        self._pending.append((units, future))
        self._wakeup.set()
        return await future

    def _take_group(self) -> list[tuple[list[Unit], asyncio.Future[list[list[Outcome]]]]]:
        group: list[tuple[list[Unit], asyncio.Future[list[list[Outcome]]]]] = []
        events = 0
        while self._pending:
            units, future = self._pending[0]
            size = sum(len(unit.events) for unit in units)
            if group and events + size > append_batch_events_max:
                break
            group.append(self._pending.pop(0))
            events += size
        return group

    async def _write_loop(self) -> None:
        while not self._closed:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                group = self._take_group()
                units = [unit for request, _ in group for unit in request]
                try:
                    results = await self._append_transaction(units)
                except Exception as error:  # every waiter must hear about the failure
                    failure = _as_store_error(error)
                    if len(group) > 1 and not isinstance(failure, StoreUnavailableError):
                        # Callers share a transaction, never a failure: the group rolled back
                        # whole, so each request is retried alone and only the bad one fails.
                        for request, future in group:
                            await self._append_alone(request, future)
                        continue
                    for _, future in group:
                        if not future.done():
                            future.set_exception(failure)
                    continue
                offset = 0
                for request, future in group:
                    if not future.done():
                        future.set_result(results[offset : offset + len(request)])
                    offset += len(request)

    async def _append_alone(
        self, request: list[Unit], future: asyncio.Future[list[list[Outcome]]]
    ) -> None:
        try:
            results = await self._append_transaction(request)
        except Exception as error:
            if not future.done():
                future.set_exception(_as_store_error(error))
            return
        if not future.done():
            future.set_result(results)

    async def _writer_connection(self) -> AsyncConnection[TupleRow]:
        if self._writer is None or self._writer.closed or self._writer.broken:
            self._writer = await AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=connect_timeout_s
            )
            await _configure(self._writer)
        return self._writer

    async def _append_transaction(self, units: list[Unit]) -> list[list[Outcome]]:
        events = [event for unit in units for event in unit.events]
        if not events:
            return [[] for _ in units]
        conn = await self._writer_connection()
        needs = needs_of(events)
        try:
            # Round trip 1: take the position lock, then load what the rules need. Pipelined, so
            # the loads run right after the lock is granted and see every earlier commit.
            async with conn.pipeline():
                await conn.execute("BEGIN")
                await conn.execute(
                    "SELECT set_config('ledger.tenants', %s, true)", [_tenant_scope(needs.refs)]
                )
                head_cursor = await conn.execute("SELECT head FROM ledger_position FOR UPDATE")
                loads = await _load_state(conn, needs)
            head_row = await head_cursor.fetchone()
            if head_row is None:
                raise StoreError("ledger_position is empty: the schema was not migrated")
            state = await _state_from(loads)
            positions = PositionCounter(int(head_row[0]))
            results = [
                decide_unit(state, unit.events, positions, validate_only=unit.validate_only)
                for unit in units
            ]
            accepted = [
                outcome
                for outcomes in results
                for outcome in outcomes
                if isinstance(outcome, Accepted)
            ]
            first_position = int(head_row[0]) + 1
            invariant(
                [outcome.position for outcome in accepted]
                == list(range(first_position, positions.head + 1)),
                "accepted positions must continue the head without a gap",
            )
            # Round trip 2: write the events, the changed references, the head; notify; commit.
            async with conn.pipeline():
                if accepted:
                    await _insert_events(conn, accepted)
                    await _upsert_refs(conn, state)
                    await conn.execute("UPDATE ledger_position SET head = %s", [positions.head])
                    await conn.execute(
                        "SELECT pg_notify(%s, %s)", [notify_channel, str(positions.head)]
                    )
                await conn.execute("COMMIT")
        except BaseException:
            await _rollback_quietly(conn)
            raise
        return results

    # --- reading ---------------------------------------------------------------------------

    async def read(
        self, tenant_id: str | None, from_position: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        limit = max(0, min(limit, read_limit_max))
        query = _select_events + (
            "WHERE position >= %s ORDER BY position LIMIT %s"
            if tenant_id is None
            else "WHERE tenant_id = %s AND position >= %s ORDER BY position LIMIT %s"
        )
        params: list[Any] = [from_position, limit]
        if tenant_id is not None:
            params.insert(0, tenant_id)
        rows = await self._read_rows(tenant_id, query, params)
        return [_recorded(row) for row in rows]

    async def _read_rows(self, tenant_id: str | None, query: str, params: list[Any]) -> list[Any]:
        scope = _tenant_scope(None if tenant_id is None else [tenant_id])
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [scope])
                cursor = await conn.execute(query.encode(), params)
                return await cursor.fetchall()
        except psycopg.Error as error:
            raise _as_store_error(error) from error

    async def head(self) -> int:
        rows = await self._read_rows(None, "SELECT head FROM ledger_position", [])
        return int(rows[0][0])

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._writer_task is not None:
            self._writer_task.cancel()
            try:
                await self._writer_task
            except asyncio.CancelledError:
                pass
        for _, future in self._pending:
            if not future.done():
                future.set_exception(StoreError("the event store was closed"))
        self._pending.clear()
        if self._writer is not None:
            await self._writer.close()
        await self._pool.close()


def psycopg_pool_errors() -> type[Exception]:
    from psycopg_pool import PoolTimeout

    return PoolTimeout


def _as_store_error(error: BaseException) -> StoreError:
    if isinstance(error, StoreError):
        return error
    if isinstance(error, psycopg.OperationalError):
        return StoreUnavailableError(f"the event store database is unavailable: {error}")
    return StoreError(f"the event store failed: {error}")


async def _rollback_quietly(conn: AsyncConnection[TupleRow]) -> None:
    if conn.closed or conn.broken:
        return
    try:
        await conn.execute("ROLLBACK")
    except psycopg.Error:
        await conn.close()


# --- loading the reference state -------------------------------------------------------------


def _pairs(values: dict[str, set[Any]]) -> tuple[list[str], list[Any]]:
    tenants, items = [], []
    for tenant, keys in values.items():
        for key in keys:
            tenants.append(tenant)
            items.append(key)
    return tenants, items


async def _load_state(conn: AsyncConnection[TupleRow], needs: Any) -> dict[str, Any]:
    """Queue the loads in the current pipeline; the caller fetches after the pipeline syncs."""
    tenants, event_ids = _pairs(needs.event_ids)
    existing = await conn.execute(
        "SELECT e.tenant_id, e.event_id, e.position, e.hash FROM events e"
        " JOIN unnest(%s::text[], %s::text[]) AS u(t, i) ON e.tenant_id = u.t AND e.event_id = u.i",
        [tenants, event_ids],
    )
    tenants, stream_ids = _pairs(needs.streams)
    streams = await conn.execute(
        "SELECT u.t, u.s, (SELECT max(stream_version) FROM events e"
        "  WHERE e.tenant_id = u.t AND e.stream_id = u.s)"
        " FROM unnest(%s::text[], %s::text[]) AS u(t, s)",
        [tenants, stream_ids],
    )
    tenants, keys = _pairs(needs.refs)
    kinds = [kind for kind, _ in keys]
    ref_ids = [ref_id for _, ref_id in keys]
    refs = await conn.execute(
        "SELECT r.tenant_id, r.kind, r.ref_id, r.state FROM ledger_refs r"
        " JOIN unnest(%s::text[], %s::text[], %s::text[]) AS u(t, k, i)"
        "   ON r.tenant_id = u.t AND r.kind = u.k AND r.ref_id = u.i",
        [tenants, kinds, ref_ids],
    )
    # Invoices a refund may reopen: those its payment was applied to.
    payment_tenants = [t for t, (kind, _) in zip(tenants, keys, strict=True) if kind == "payment"]
    payment_ids = [i for (kind, i) in keys if kind == "payment"]
    followed = await conn.execute(
        "SELECT r.tenant_id, r.kind, r.ref_id, r.state FROM ledger_refs p"
        " JOIN unnest(%s::text[], %s::text[]) AS u(t, i)"
        "   ON p.tenant_id = u.t AND p.kind = 'payment' AND p.ref_id = u.i"
        " CROSS JOIN LATERAL jsonb_array_elements(p.state -> 'allocations') AS a(pair)"
        " JOIN ledger_refs r ON r.tenant_id = p.tenant_id AND r.kind = 'invoice'"
        "   AND r.ref_id = a.pair ->> 0",
        [payment_tenants, payment_ids],
    )
    tenants, customers = _pairs(needs.customers_for_auto_allocation)
    open_invoices = await conn.execute(
        "SELECT r.tenant_id, r.kind, r.ref_id, r.state FROM ledger_refs r"
        " JOIN unnest(%s::text[], %s::text[]) AS u(t, c)"
        "   ON r.tenant_id = u.t AND r.customer_id = u.c"
        " WHERE r.kind = 'invoice' AND r.is_open",
        [tenants, customers],
    )
    return {
        "existing": existing,
        "streams": streams,
        "refs": [refs, followed, open_invoices],
    }


async def _state_from(loads: dict[str, Any]) -> dict[str, TenantState]:
    state: dict[str, TenantState] = {}
    for tenant, event_id, position, content_hash in await loads["existing"].fetchall():
        tenant_state = state.setdefault(tenant, TenantState())
        tenant_state.events[event_id] = Existing(int(position), content_hash)
    for tenant, stream_id, version in await loads["streams"].fetchall():
        state.setdefault(tenant, TenantState()).stream_versions[stream_id] = int(version or 0)
    for cursor in loads["refs"]:
        for tenant, kind, ref_id, encoded in await cursor.fetchall():
            tenant_state = state.setdefault(tenant, TenantState())
            decoded = decode_state(kind, encoded)
            tenant_state.refs[(kind, ref_id)] = decoded
            if isinstance(decoded, InvoiceState):
                tenant_state.invoices_by_customer.setdefault(decoded.customer_id, set()).add(ref_id)
    return state


# --- writing ---------------------------------------------------------------------------------


async def _insert_events(conn: AsyncConnection[TupleRow], accepted: list[Accepted]) -> None:
    columns: list[list[Any]] = [[] for _ in range(10)]
    for outcome in accepted:
        event = outcome.event
        for column, value in zip(
            columns,
            (
                outcome.position,
                event.tenant_id,
                event.stream_id,
                outcome.stream_version,
                event.event_id,
                event.type,
                event.time,
                orjson.dumps(event.data).decode(),
                orjson.dumps(outcome.metadata).decode(),
                event.content_hash,
            ),
            strict=True,
        ):
            column.append(value)
    await conn.execute(
        "INSERT INTO events (position, tenant_id, stream_id, stream_version, event_id, type, time,"
        " data, metadata, hash)"
        " SELECT p, t, s, v, i, y, m, d::jsonb, x::jsonb, h FROM unnest("
        "  %s::bigint[], %s::text[], %s::text[], %s::integer[], %s::text[], %s::text[],"
        "  %s::timestamptz[], %s::text[], %s::text[], %s::text[]) AS u(p, t, s, v, i, y, m, d, x, h)",
        columns,
    )


def _ref_row(tenant: str, key: Key, value: Any) -> tuple[str, str, str, str | None, bool, str]:
    kind, ref_id = key
    customer_id = getattr(value, "customer_id", None)
    is_open = isinstance(value, InvoiceState) and value.open_amount > 0
    return tenant, kind, ref_id, customer_id, is_open, orjson.dumps(encode_state(value)).decode()


async def _upsert_refs(conn: AsyncConnection[TupleRow], state: dict[str, TenantState]) -> None:
    rows = [
        _ref_row(tenant, key, tenant_state.refs[key])
        for tenant, tenant_state in state.items()
        for key in tenant_state.dirty
    ]
    if not rows:
        return
    columns = [list(column) for column in zip(*rows, strict=True)]
    await conn.execute(
        "INSERT INTO ledger_refs (tenant_id, kind, ref_id, customer_id, is_open, state)"
        " SELECT t, k, i, c, o, s::jsonb FROM unnest("
        "  %s::text[], %s::text[], %s::text[], %s::text[], %s::boolean[], %s::text[])"
        "  AS u(t, k, i, c, o, s)"
        " ON CONFLICT (tenant_id, kind, ref_id) DO UPDATE SET customer_id = excluded.customer_id,"
        "  is_open = excluded.is_open, state = excluded.state",
        columns,
    )


def _recorded(row: Any) -> RecordedEvent:
    return RecordedEvent(
        position=int(row[0]),
        tenant_id=row[1],
        stream_id=row[2],
        stream_version=int(row[3]),
        event_id=row[4],
        type=row[5],
        time=row[6],
        recorded_at=row[7],
        data=row[8],
        metadata=row[9],
        hash=row[10],
    )
