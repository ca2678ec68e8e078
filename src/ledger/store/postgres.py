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
transaction ran into the next one, so 16 callers pay for one lock, one or two round trips and one
commit.

One round trip when the writer may trust what it knows (`ledger.store.known`): it decides on that,
and `ledger_append_known` takes the same lock and writes only if nobody appended since and every
key assumed new is absent. The rules are exactly as exact: under the lock, the stored state is the
state the events were decided on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from importlib import resources
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from ledger.contract import CustomerRegistered
from ledger.decide import (
    Accepted,
    Existing,
    NeedOpenInvoices,
    Needs,
    Outcome,
    PositionCounter,
    Refused,
    TenantState,
    decide_unit,
    decode_state,
    needs_of,
    ref_row,
)
from ledger.errors import StoreError, StoreUnavailableError, invariant
from ledger.metrics import append_paths, open_invoice_loads
from ledger.store import RecordedEvent, Unit, append_batch_events_max, read_limit_max
from ledger.store.known import KnownState, known_events_max, new_stamp, open_prefixes

logger = logging.getLogger(__name__)

# The role the store works as, so that row-level security applies even when the configured user is
# a superuser (superusers bypass RLS). Created by `migrate` when the connecting user may.
app_role = "ledger_app"
notify_channel = "ledger_events"
# Readers share a small pool: reports and the relay read, one writer connection appends.
read_pool_size_max = 8
# A read is tried this many times when the server drops its connection (see _read_rows).
read_attempts = 2
connect_timeout_s = 10
# The writer connection's cached plans are discarded whenever the store has grown this many times
# over since they were made (migration 006: a plan is only as good as the table sizes it was made
# for). From `replan_head_min` events on, so a fresh store replans at 128, 256, 512, ... events
# (a store opened on a large database replans once more, after its first commit).
replan_growth = 2
replan_head_min = 64
# A migration lock id of our own: concurrent `ledger migrate` runs wait for each other.
migration_lock_id = 0x1ED6E5
_migrations = (
    "001_events.sql",
    "002_append_functions.sql",
    "003_checkpoints.sql",
    "004_projection_state.sql",
    "005_lock_and_load_custom_plans.sql",
    "006_lock_and_load_generic_plans.sql",
    "007_one_round_trip.sql",
    "008_open_invoices_in_order.sql",
)

_event_columns = (
    "position, tenant_id, stream_id, stream_version, event_id, type, time, recorded_at,"
    " data, metadata, hash"
)
select_events = f"SELECT {_event_columns}\nFROM events\n"

# A page of events read in position order ends at its `limit` of events or at the event that
# brings it past this many bytes of stored data and metadata, whichever comes first (never
# before its first event). Pages of 1,000-10,000 events are a few MB of ordinary events, but an
# event may be 1 MiB: a page of 5,000 such was 5 GB of JSON before it was parsed into Python
# objects, in replay's fold, the relay or an API read. The bytes are PostgreSQL's stored sizes
# (`pg_column_size`, read without decompressing): a compressed event counts for less than its
# text, so a page holds at most a few times this in JSON.
page_bytes_max = 8 * 1024 * 1024


def event_page(where: str) -> str:
    """A statement reading a page of events (the columns of `select_events`) from `where`: its
    conditions, then `ORDER BY position LIMIT ...`. The page also ends at `page_bytes_max`: a
    running sum of the events' sizes, over the limited rows only (the limit still stops the
    walk of the position index), keeps the events that start within the budget. A short page
    therefore does not mean the end: an empty one does."""
    return (
        f"SELECT {_event_columns} FROM ("
        f"SELECT {_event_columns}, sum(pg_column_size(data) + pg_column_size(metadata))"
        " OVER (ORDER BY position ROWS UNBOUNDED PRECEDING)"
        " - pg_column_size(data) - pg_column_size(metadata) AS bytes_before"
        f" FROM events {where}) page WHERE bytes_before < {page_bytes_max} ORDER BY position"
    )


# What a transaction that reads events in position order (`ORDER BY position LIMIT n`) sets
# besides its tenant scope, in the same statement. The events' row-level security policy hides
# from the planner how many rows a reader sees: it estimates ~0.5% of them, where an all-tenants
# reader sees every one. So for a page from early in a large store it planned a scan of the whole
# table and a sort (at 1,000,000 events: 0.3-0.4 s a page of 5,000 on three processes, where the
# position index answers in 2-3 ms), and near the head a parallel index scan (10-20 ms a page,
# mostly starting workers, against 1-2 on one process). Without sorts and parallel workers the
# plan left is the walk of the primary key in order, which stops at the limit.
position_order_settings = (
    "set_config('enable_sort', 'off', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)"
)
scoped_position_read = "SELECT set_config('ledger.tenants', %s, true), " + position_order_settings


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
    # The read models' tables (SQLAlchemy Core + Alembic) come after the store's, whose role
    # they grant to. Alembic is synchronous: a thread keeps the caller's event loop free.
    from projections.schema import upgrade

    await asyncio.to_thread(upgrade, conninfo)
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
                "GRANT SELECT, INSERT, UPDATE ON ledger_checkpoints TO {}",
                "GRANT SELECT, INSERT, UPDATE, DELETE ON projection_state TO {}",
            ):
                await conn.execute(sql.SQL(statement).format(role))
    except psycopg.errors.InsufficientPrivilege:
        logger.warning(
            "cannot create or grant role %s; row-level security relies on the connecting user "
            "not being a superuser",
            app_role,
        )


async def configure_connection(conn: AsyncConnection[Any], *, app_role_too: bool = True) -> None:
    """JSON through orjson, no JIT, times in UTC, and (unless `app_role_too` is false: a
    maintenance command that must delete what the app role may not) the row-security app role."""
    set_json_loads(orjson.loads, conn)
    set_json_dumps(lambda value: orjson.dumps(value).decode(), conn)
    # Our statements are short lookups by key: JIT compilation only adds milliseconds to them.
    # psycopg gives a timestamptz in the session's time zone, which the server's, the database's
    # or the role's settings choose: the same instant, but rendered with their offset (an event's
    # `time` to the API, the relay's headers and the projectors). In UTC it is `...Z` everywhere.
    await conn.execute(
        "SELECT set_config('jit', 'off', false), set_config('TimeZone', 'UTC', false)"
    )
    if not app_role_too:
        return
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
        # The head after the writer's last commit, and the head its cached plans were made at.
        self._head_seen = 0
        self._plans_head = 0
        # What the writer knows of the stored state, for appends in one round trip.
        self._known = KnownState()

    @classmethod
    async def open(cls, conninfo: str, *, run_migrations: bool = True) -> PostgresEventStore:
        try:
            if run_migrations:
                await migrate(conninfo)
            pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=read_pool_size_max,
                configure=configure_connection,
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
            units, _future = self._pending[0]
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
            await configure_connection(self._writer)
            self._plans_head = self._head_seen
        return self._writer

    def _replan_due(self) -> bool:
        return self._head_seen > replan_growth * max(self._plans_head, replan_head_min)

    async def _append_transaction(self, units: list[Unit]) -> list[list[Outcome]]:
        events = [event for unit in units for event in unit.events]
        if not events:
            return [[] for _ in units]
        conn = await self._writer_connection()
        needs = needs_of(events)
        learn = len(events) <= known_events_max
        # Customers registered here: their open invoices (none, or a refusal) are loaded or
        # checked too, so that the writer knows every invoice of theirs from then on.
        registering = (
            {
                (event.tenant_id, event.payload.customer_id)
                for event in events
                if isinstance(event.payload, CustomerRegistered)
            }
            if learn
            else set()
        )
        try:
            if self._known.ready and learn:
                results = await self._append_on_knowledge(conn, units, needs, registering)
                if results is not None:
                    return results
            for tenant, customer_id in registering:
                needs.load_open_invoices(tenant, customer_id, 1)  # none, or a refusal
            return await self._append_locked(conn, units, needs, learn)
        except BaseException:
            self._known.forget()
            await _rollback_quietly(conn)
            raise

    async def _append_on_knowledge(
        self,
        conn: AsyncConnection[TupleRow],
        units: list[Unit],
        needs: Needs,
        registering: set[tuple[str, str]],
    ) -> list[list[Outcome]] | None:
        """One round trip: decide on what the writer knows, then lock, check that nothing it
        assumed changed, write and commit (`ledger.store.known`). None when no guess was written."""
        known = self._known
        while True:
            guess = known.guess(needs, registering)
            if guess is None or known.head is None:
                return None
            state = guess.state
            try:
                results, accepted, new_head = _decide(state, units, known.head)
                break
            except NeedOpenInvoices as need:
                if (need.tenant_id, need.customer_id) in guess.exhausted:
                    return None  # the writer knows no more of them: the load reads further
                needs.load_more_open_invoices(need.tenant_id, need.customer_id)
        if any(isinstance(outcome, Refused) for outcomes in results for outcome in outcomes):
            return None  # refusals often come from a key assumed absent: ask the stored state
        stamp = new_stamp()
        rows = _ref_rows(state)
        await self._replan_if_due(conn)
        # One statement on the autocommit connection is its own transaction: the function takes
        # the lock, checks and writes, and the statement's end commits (or, should it fail,
        # rolls back). No BEGIN and COMMIT around it: two statements fewer per append.
        cursor = await conn.execute(
            "SELECT ledger_append_known(%s, %s, %s, %s::jsonb, %s, %s, %s::jsonb, %s::jsonb)",
            [
                _tenant_scope(needs.refs),
                known.head,
                known.stamp,
                orjson.dumps(guess.assumed).decode(),
                new_head,
                stamp,
                _events_json(accepted),
                orjson.dumps(rows).decode(),
            ],
        )
        answer_row = await cursor.fetchone()
        missed = None if answer_row is None else answer_row[0]
        if missed is not None:
            known.missed(missed)
            append_paths.labels("missed").inc()
            return None
        append_paths.labels("one_round_trip").inc()
        if new_head > known.head:
            known.learn_guessed(guess)
            known.learn_written(state, _streams_of(accepted), new_head, stamp)
            self._head_seen = new_head
        return results

    async def _append_locked(
        self, conn: AsyncConnection[TupleRow], units: list[Unit], needs: Needs, learn: bool
    ) -> list[list[Outcome]]:
        """Two round trips: lock and load, then decide, write and commit."""
        # Round trip 1: take the position lock, then load what the rules need (one call; the
        # loads run after the lock is granted and see every earlier commit).
        async with conn.pipeline():
            await self._replan_if_due(conn)
            await conn.execute("BEGIN")
            loaded_cursor = await conn.execute(
                "SELECT ledger_lock_and_load(%s, %s::jsonb)",
                [_tenant_scope(needs.refs), _needs_json(needs)],
            )
        loaded_row = await loaded_cursor.fetchone()
        if loaded_row is None:
            raise StoreError("ledger_lock_and_load returned nothing")
        loaded = loaded_row[0]
        head, stamp = int(loaded["head"]), int(loaded["stamp"])
        self._known.seen(head, stamp)
        while True:
            state = _state_from(loaded)
            if learn:
                self._known.learn_loaded(loaded, needs, state)
            try:
                results, accepted, new_head = _decide(state, units, head)
                break
            except NeedOpenInvoices as need:
                # A payment to allocate past the prefix of its customer's open invoices that was
                # loaded: load a longer one, under the lock still held, and decide again.
                needs.load_more_open_invoices(need.tenant_id, need.customer_id)
                open_invoice_loads.inc()
                cursor = await conn.execute("SELECT ledger_load(%s::jsonb)", [_needs_json(needs)])
                reloaded = await cursor.fetchone()
                if reloaded is None:
                    raise StoreError("ledger_load returned nothing") from None
                loaded = {**reloaded[0], "head": head, "stamp": stamp}
        rows: list[list[Any]] = []
        # Round trip 2: write the events, the changed references and the head; notify; commit.
        async with conn.pipeline():
            if accepted:
                stamp = new_stamp()
                rows = _ref_rows(state)
                await conn.execute(
                    "SELECT ledger_write(%s, %s, %s::jsonb, %s::jsonb)",
                    [new_head, stamp, _events_json(accepted), orjson.dumps(rows).decode()],
                )
            await conn.execute("COMMIT")
        append_paths.labels("two_round_trips").inc()
        if learn:
            self._known.learn_written(state, _streams_of(accepted), new_head, stamp)
        elif accepted:
            self._known.written_unlearnt(new_head, stamp)
        self._head_seen = new_head
        return results

    async def _replan_if_due(self, conn: AsyncConnection[TupleRow]) -> None:
        """`DISCARD PLANS` before the next statements when the store has grown enough since."""
        if self._replan_due():
            await conn.execute("DISCARD PLANS")
            self._plans_head = self._head_seen

    # --- reading ---------------------------------------------------------------------------

    async def read(
        self, tenant_id: str | None, from_position: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        limit = max(0, min(limit, read_limit_max))
        query = event_page(
            "WHERE position >= %s ORDER BY position LIMIT %s"
            if tenant_id is None
            else "WHERE tenant_id = %s AND position >= %s ORDER BY position LIMIT %s"
        )
        params: list[Any] = [from_position, limit]
        if tenant_id is not None:
            params.insert(0, tenant_id)
        rows = await self._read_rows(tenant_id, query, params)
        return [recorded_from_row(row) for row in rows]

    async def _read_rows(self, tenant_id: str | None, query: str, params: list[Any]) -> list[Any]:
        scope = _tenant_scope(None if tenant_id is None else [tenant_id])
        for attempt in range(read_attempts):
            try:
                async with self._pool.connection() as conn, conn.transaction():
                    await conn.execute(scoped_position_read, [scope])
                    cursor = await conn.execute(query.encode(), params)
                    return list(await cursor.fetchall())
            except psycopg.OperationalError as error:
                # Pooled connections that outlived a server restart fail: the pool tests every
                # connection it holds and drops the dead, and a read, which changes nothing, is
                # asked again.
                if attempt + 1 == read_attempts:
                    raise _as_store_error(error) from error
                with contextlib.suppress(psycopg.Error):
                    await self._pool.check()
            except psycopg.Error as error:
                raise _as_store_error(error) from error
        raise StoreError("unreachable")  # pragma: no cover - the loop returns or raises

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection[TupleRow]]:
        """A pooled connection (autocommit, under the app role) for readers of the read models."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except psycopg.OperationalError as error:
            raise _as_store_error(error) from error

    async def head(self) -> int:
        rows = await self._read_rows(None, "SELECT head FROM ledger_position", [])
        return int(rows[0][0])

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer_task
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


# --- the JSON documents exchanged with ledger_lock_and_load and ledger_write ------------------
# One JSON parameter per call instead of one array per column: orjson encodes it in C and the server
# decodes it in C, where psycopg's array adaptation escapes each element in Python.


def _decide(
    state: dict[str, TenantState], units: list[Unit], head: int
) -> tuple[list[list[Outcome]], list[Accepted], int]:
    """Every unit's outcomes, the accepted events, and the head after them."""
    positions = PositionCounter(head)
    results = [
        decide_unit(state, unit.events, positions, validate_only=unit.validate_only)
        for unit in units
    ]
    accepted = [
        outcome for outcomes in results for outcome in outcomes if isinstance(outcome, Accepted)
    ]
    invariant(
        [outcome.position for outcome in accepted] == list(range(head + 1, positions.head + 1)),
        "accepted positions must continue the head without a gap",
    )
    return results, accepted, positions.head


def _needs_json(needs: Needs) -> str:
    document = {
        "event_ids": [[t, i] for t, ids in needs.event_ids.items() for i in ids],
        "streams": [[t, s] for t, streams in needs.streams.items() for s in streams],
        "refs": [[t, k, i] for t, keys in needs.refs.items() for k, i in keys],
        "customers": [
            [t, c, limit]
            for t, limits in needs.customers_for_auto_allocation.items()
            for c, limit in limits.items()
        ],
    }
    return orjson.dumps(document).decode()


def _state_from(loaded: dict[str, Any]) -> dict[str, TenantState]:
    state: dict[str, TenantState] = {}
    for tenant, event_id, position, content_hash in loaded["existing"]:
        tenant_state = state.setdefault(tenant, TenantState())
        tenant_state.events[event_id] = Existing(int(position), content_hash)
    for tenant, stream_id, version in loaded["streams"]:
        state.setdefault(tenant, TenantState()).stream_versions[stream_id] = int(version or 0)
    for tenant, kind, ref_id, encoded in loaded["refs"]:
        state.setdefault(tenant, TenantState()).put_loaded(
            kind, ref_id, decode_state(kind, encoded)
        )
    for tenant, customer_id, _keys, through in open_prefixes(loaded, state):
        if through is not None:
            state[tenant].open_through[customer_id] = through
    return state


def _events_json(accepted: list[Accepted]) -> str:
    rows = [
        [
            outcome.position,
            outcome.event.tenant_id,
            outcome.event.stream_id,
            outcome.stream_version,
            outcome.event.event_id,
            outcome.event.type,
            outcome.event.time.isoformat(),
            outcome.event.data,
            outcome.metadata,
            outcome.event.content_hash,
        ]
        for outcome in accepted
    ]
    return orjson.dumps(rows).decode()


def _ref_rows(state: dict[str, TenantState]) -> list[list[Any]]:
    """The `ledger_refs` rows the accepted units changed, as `ledger_write` takes them."""
    rows = []
    for tenant, tenant_state in state.items():
        for key in tenant_state.dirty:
            kind, ref_id = key
            rows.append([tenant, kind, ref_id, *ref_row(tenant_state.refs[key])])
    return rows


def _streams_of(accepted: list[Accepted]) -> list[tuple[str, str, int]]:
    return [
        (outcome.event.tenant_id, outcome.event.stream_id, outcome.stream_version)
        for outcome in accepted
    ]


def recorded_from_row(row: Any) -> RecordedEvent:
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
