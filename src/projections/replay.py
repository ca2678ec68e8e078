"""Feeding projectors straight from the event store: catch-up and replay.

`catch_up` applies what the read models have not seen yet (the writer skips the rest) and returns.

`replay` rebuilds read models from position 1 into fresh tables and swaps them in atomically:
reports answer from the old tables until the swap commits and from the new ones after it, never
from an empty or half-filled table. For each table of the chosen table projectors:

1. prepare: `<table>__rebuild` is created from the live table's definition (`LIKE ... INCLUDING
   ALL EXCLUDING INDEXES`: columns, defaults, check constraints, storage, comments); what a failed
   run left behind is dropped first;
2. fold: every event up to the store's head (as it is now) is applied in memory, by one process
   per core, each taking a share of the tenants (`projections.replay_fold`); appended rows
   (`Changes.inserts`: journal lines, AR changes, audit links) are COPYed page by page as they are
   made, keyed rows once at the end;
3. finish: the live table's indexes, primary key and unique constraints are built (one sort each,
   faster than keeping them during the load; two tables at a time, largest first, on two
   connections, since a sort takes one core), row-level security is enabled and forced with the
   live table's policies, grants, options and owner, and the table is analysed. COPY works because
   replay works as the tables' owner (`RESET ROLE`), and the fresh tables get row-level security
   only once they are filled;
4. catch up, without any lock: what was committed meanwhile (the live worker may be running) is
   applied to the fresh tables as the live writer does it (rows loaded, changed, written back), pass
   after pass until a pass finds few events;
5. swap, in one transaction: lock `projection_state` (the live worker waits at its next batch), then
   the live tables (readers wait, for as long as the rest takes: milliseconds); apply the last
   events; rename live -> `__old` and `__rebuild` -> live, the fresh indexes and constraints to the
   live ones' names (so later migrations find them); replace the rebuilt projections' positions in
   `projection_state`; drop `__old`.

Why each event counts exactly once: under the `projection_state` lock no worker batch is in flight,
and every event a worker has applied was committed to the store first; the swap applies the store
to its end under that lock and stores, per (projection, tenant), the last position applied. After
the commit the worker skips what is at or below those positions (the writer's usual rule) and
applies the rest to the new tables. Positions are assigned in commit order (`ledger.store.postgres`),
so reading on from the last position applied misses nothing.

Why readers never see an empty table: a query that waits for the lock looks the table's name up
again once it has it, so it reads the rebuilt table, with a snapshot taken after the swap committed.
The lock waits are bounded (`swap_lock_timeout_s`): a long report holding a table makes replay retry
the swap rather than queue every other reader behind it.

Memory: the fold holds every keyed row (per invoice, contract, payment, customer and day, account
and day and source, ...) of its tenants until it copies them, so O(entities), not O(events), split
between the fold processes; appended rows and events are held one page (`replay_page_events`
events) at a time. This process holds positions and state documents per tenant only. Measured in
bench/RESULTS.md.

Errors: `ReplayError` (a `ledger.errors.LedgerError`) when replay cannot start (another replay
runs, a table is missing, not owned, or has what `LIKE` does not copy: triggers, foreign keys,
column privileges) or a fold process fails; anything else from PostgreSQL propagates. Either way
the fresh tables are dropped and the live ones are untouched.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from sqlalchemy import Table

from ledger.errors import LedgerError
from ledger.store.postgres import PostgresEventStore
from projections import registry
from projections.core import ProjectedEvent, ProjectionWriter, State, fold, is_table_projector
from projections.replay_fold import FoldJob, FoldResult, fold_partition, tenant_shares
from projections.tables import (
    Changes,
    apply_batch,
    load_rows,
    metadata,
    needed_keys,
    write_changes,
)

logger = logging.getLogger(__name__)

# Events read from the store per page: large pages keep the per-call cost negligible, and bound the
# appended rows replay holds at once.
replay_page_events = 5000
# The fold runs in one child process per available core, up to this many: each holds its share
# of the tenants' keyed rows and two connections, and the gain flattens out with PostgreSQL's own
# share of the work.
fold_processes_max = 8
# ... when the store has at least this many events: a child takes about a second to start.
fold_processes_events_min = 50_000
# The fresh tables get their indexes on this many connections at once (each index build is a sort
# on one core; replay runs where the fold used every core).
fill_connections = 2
# A child's result (positions and state documents of its tenants) is one JSON line.
fold_message_bytes_max = 1 << 30
# Before the swap, catch-up passes without a lock repeat while a pass folds more than this many
# events: what is left for the locked swap is then tens of milliseconds of the writer's work
# (~3,000 events/s: rows loaded, changed and written back).
quiet_pass_events_max = 100
# ... but no more passes than this: a store appended to faster than replay folds must still swap.
catch_up_passes_max = 10
# A swap waits this long for each lock before it gives way and retries: a long report transaction
# holding a live table must not make every other reader queue behind the swap's lock.
swap_lock_timeout_s = 1.0
swap_attempts_max = 30
swap_retry_pause_s = 0.2
# Table names of a rebuild and of the live table while it is swapped out.
rebuild_suffix = "__rebuild"
old_suffix = "__old"
# PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1).
identifier_bytes_max = 63
# A session advisory lock: two replays at once would build into the same fresh tables.
replay_lock_id = 0x1ED6E5_0001

Progress = Callable[[int, int, float], None]  # (position, head, seconds elapsed)


class ReplayError(LedgerError):
    """Replay cannot run (see the module docstring); nothing was changed."""


async def catch_up(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    projectors: Sequence[Any],
    progress: Progress | None = None,
    *,
    tenant: str | None = None,
) -> int:
    """Bring the read models to the store's head; return the head reached. With `tenant`, only
    that tenant's events, from the lowest position the projectors have applied for it."""
    writer = ProjectionWriter(conn, projectors)
    head = await store.head()
    position, started = 1, time.monotonic()
    if tenant is not None:
        position = await _lowest_applied(conn, [p.name for p in projectors], tenant) + 1
    while position <= head:
        events = await store.read(tenant, position, replay_page_events)
        if not events:
            break
        await writer.apply([ProjectedEvent.from_recorded(event) for event in events])
        position = events[-1].position + 1
        if progress:
            progress(position - 1, head, time.monotonic() - started)
    return head


async def _lowest_applied(conn: AsyncConnection[TupleRow], names: list[str], tenant: str) -> int:
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
        cursor = await conn.execute(
            "SELECT projection, position FROM projection_state"
            " WHERE tenant_id = %s AND projection = ANY(%s)",
            [tenant, names],
        )
        positions: dict[str, int] = {row[0]: int(row[1]) for row in await cursor.fetchall()}
    return min(positions.get(name, 0) for name in names)


async def replay(
    store: PostgresEventStore,
    conn: AsyncConnection[TupleRow],
    projectors: Sequence[Any],
    progress: Progress | None = None,
    *,
    processes: int | None = None,
) -> int:
    """Rebuild the projectors' read models from the store into fresh tables and swap them in;
    return the last position folded. The fold runs in `processes` child processes (default: one
    per available core, at most `fold_processes_max`; 1: in this process). `conn` works as the
    session user (the tables' owner) for the duration; its role is restored after."""
    tables = [table for p in projectors if is_table_projector(p) for table in p.tables]
    async with _as_owner(conn), _replay_lock(conn):
        shapes = [await _describe(conn, table) for table in tables]
        await _drop_rebuilds(conn, tables)
        try:
            run = _Run(store, conn, projectors, shapes, progress)
            return await run.execute(processes)
        except BaseException:
            await _drop_rebuilds_quietly(conn, tables)
            raise


def _processes(projectors: Sequence[Any], asked: int | None, events: int) -> int:
    """How many partitions the fold gets: children build their projectors by name from the
    registry, so projectors that are not the registry's fold here."""
    if asked is not None:
        count = asked
    elif events < fold_processes_events_min:
        count = 1
    else:
        count = min(_available_cores(), fold_processes_max)
    if count <= 1:
        return 1
    try:
        fresh = registry.select([projector.name for projector in projectors])
    except ValueError:
        return 1
    if any(type(mine) is not type(theirs) for mine, theirs in zip(projectors, fresh, strict=True)):
        return 1
    return count


def _available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):  # Linux: the cores this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


# --- the run ----------------------------------------------------------------------------------


class _Run:
    """One replay: where each projection got to, and the connection that builds and swaps."""

    def __init__(
        self,
        store: PostgresEventStore,
        conn: AsyncConnection[TupleRow],
        projectors: Sequence[Any],
        shapes: list[_Shape],
        progress: Progress | None,
    ) -> None:
        self.store = store
        self.conn = conn
        self.projectors = projectors
        self.table_projectors = [p for p in projectors if is_table_projector(p)]
        self.shapes = shapes
        self.progress = progress
        # (projection, tenant) -> last position applied: tables, and state documents with states.
        self.positions: dict[tuple[str, str], int] = {}
        self.states: dict[tuple[str, str], tuple[int, State]] = {}
        self.position = 1  # the next position to fold
        self.head = 0
        self.started = time.monotonic()

    async def execute(self, processes: int | None) -> int:
        for shape in self.shapes:
            await self.conn.execute(shape.create())
        self.head = await self.store.head()
        await self.fold(_processes(self.projectors, processes, self.head))
        self.position = self.head + 1
        self.log("folded")
        await self.fill()
        self.log("indexed")
        for _ in range(catch_up_passes_max):
            if await self.catch_up() <= quiet_pass_events_max:
                break
        self.log("caught up")
        await self.swap()
        self.log("swapped")
        return self.position - 1

    def log(self, step: str) -> None:
        elapsed_s = time.monotonic() - self.started
        logger.info("replay: %s to position %d at %.1f s", step, self.position - 1, elapsed_s)

    async def fold(self, processes: int) -> None:
        """Everything up to the head as it was at the start, in memory, COPYed to the fresh tables."""
        job = FoldJob(
            conninfo=self.store.conninfo,
            projections=[projector.name for projector in self.projectors],
            partition=0,
            partitions=processes,
            until=self.head,
            page_events=replay_page_events,
            suffix=rebuild_suffix,
        )
        logger.info("replay: folding %d events in %d process(es)", self.head, processes)
        if processes == 1:
            results = [await fold_partition(job, self.projectors, self.show)]
        else:
            shares = await tenant_shares(self.conn, self.head, processes)
            results = await _fold_in_children(job, shares, self.show)
        for result in results:
            for name, tenant, position in result.positions:
                self.positions[(name, tenant)] = position
            for name, tenant, position, state in result.states:
                self.states[(name, tenant)] = (position, state)

    def show(self, position: int) -> None:
        if self.progress:
            self.head = max(self.head, position)
            self.progress(position, self.head, time.monotonic() - self.started)

    async def fill(self) -> None:
        """Give the filled tables the live ones' indexes, constraints and security: the largest
        first, on `fill_connections` connections at once (building an index is a sort on one
        core; the tables are independent)."""
        sizes = {}
        cursor = await self.conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class"
            " WHERE relname = ANY(%s) AND relkind = 'r' AND pg_table_is_visible(oid)",
            [[shape.rebuild for shape in self.shapes]],
        )
        for name, size in await cursor.fetchall():
            sizes[name] = int(size)
        waiting = sorted(self.shapes, key=lambda shape: -sizes.get(shape.rebuild, 0))

        async def finish(conn: AsyncConnection[TupleRow]) -> None:
            while waiting:
                shape = waiting.pop(0)
                logger.debug("replay: indexing %s", shape.rebuild)
                for statement in shape.finish():
                    await conn.execute(statement)

        helpers = []
        try:
            for _ in range(min(fill_connections, len(waiting)) - 1):
                # As the session user, like `self.conn` now and the fold's writers: the owner of
                # the fresh tables until `finish` hands them to the live tables' owner.
                helpers.append(await AsyncConnection.connect(self.store.conninfo, autocommit=True))
            try:
                async with asyncio.TaskGroup() as group:  # one fails: the others are cancelled
                    for conn in (self.conn, *helpers):
                        group.create_task(finish(conn))
            except BaseExceptionGroup as failed:  # the first failure, as a sequential fill's
                raise failed.exceptions[0] from None
        finally:
            for helper in helpers:
                await helper.close()

    async def catch_up(self) -> int:
        """Fold what the store got since, into the fresh tables as the live writer does (rows
        loaded, changed, written back); return the events folded."""
        folded = 0
        self.head = max(self.head, await self.store.head())
        while True:
            events = await self.store.read(None, self.position, replay_page_events)
            if not events:
                return folded
            await self._apply([ProjectedEvent.from_recorded(event) for event in events])
            self.position = events[-1].position + 1
            folded += len(events)
            self.show(self.position - 1)

    async def _apply(self, events: list[ProjectedEvent]) -> None:
        fold(self.projectors, self.states, events)
        unseen = [
            event
            for event in events
            if any(
                event.position > self.positions.get((p.name, event.tenant_id), 0)
                for p in self.table_projectors
            )
        ]
        if not unseen:
            return
        async with self.conn.transaction():
            await self.conn.execute("SELECT set_config('ledger.tenants', '*', true)")
            cache: dict[Any, Any] = {}
            needed = needed_keys(self.table_projectors, unseen)
            await load_rows(self.conn, needed, cache, suffix=rebuild_suffix)
            changes = Changes()
            apply_batch(self.table_projectors, self.positions, unseen, cache, changes)
            await write_changes(self.conn, changes, suffix=rebuild_suffix)

    async def swap(self) -> None:
        for attempt in range(1, swap_attempts_max + 1):
            locked = False
            try:
                async with self.conn.transaction():
                    await self._lock()
                    locked = True
                    await self._swap_locked()
                return
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected):
                # Retried only while taking the locks, before anything is folded or written: what
                # `_swap_locked` folds into this process's positions would not survive a rollback.
                if locked or attempt == swap_attempts_max:
                    raise
                logger.info("replay: the tables are busy; swap attempt %d failed", attempt)
                await asyncio.sleep(swap_retry_pause_s)

    async def _lock(self) -> None:
        await self.conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        await self.conn.execute(
            "SELECT set_config('lock_timeout', %s, true)", [f"{int(swap_lock_timeout_s * 1000)}ms"]
        )
        # projection_state first, as the writer takes it first: the two never deadlock.
        await self.conn.execute("LOCK TABLE projection_state IN EXCLUSIVE MODE")
        if self.shapes:
            await self.conn.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(shape.table.name) for shape in self.shapes)
                )
            )
        await self.conn.execute("SELECT set_config('lock_timeout', '0', true)")

    async def _swap_locked(self) -> None:
        # What was committed since the last pass (the live worker may have applied it to the old
        # tables already, and will not deliver it again): folded into the fresh tables, under the
        # lock, so that the positions stored below cover it.
        await self.catch_up()
        for shape in self.shapes:
            for statement in shape.swap():
                await self.conn.execute(statement)
        names = [projector.name for projector in self.projectors]
        stored: list[tuple[str, str, int, State]] = [
            (name, tenant, at, {}) for (name, tenant), at in self.positions.items()
        ]
        stored += [(name, tenant, at, state) for (name, tenant), (at, state) in self.states.items()]
        await self.conn.execute("DELETE FROM projection_state WHERE projection = ANY(%s)", [names])
        await self.conn.cursor().executemany(
            "INSERT INTO projection_state (projection, tenant_id, position, state)"
            " VALUES (%s, %s, %s, %s)",
            [(name, tenant, at, Jsonb(state)) for name, tenant, at, state in stored],
        )


async def _fold_in_children(
    job: FoldJob, shares: list[list[str]], show: Callable[[int], None]
) -> list[FoldResult]:
    """One child process per share of the tenants (`python -m projections.replay_fold`); progress
    is the slowest partition's position. A failed child stops the others."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(path for path in sys.path if path)
    children: list[asyncio.subprocess.Process] = []
    positions = [0] * job.partitions

    def report(partition: int, position: int) -> None:
        positions[partition] = position
        if min(positions):  # every partition has folded a page
            show(min(positions))

    try:
        for partition in range(job.partitions):
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "projections.replay_fold",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=environment,
                limit=fold_message_bytes_max,
            )
            children.append(child)
            assert child.stdin is not None
            # The job (with the conninfo, which may hold a password) on stdin, not on argv.
            share = dataclasses.replace(job, partition=partition, tenants=shares[partition])
            child.stdin.write(orjson.dumps(share) + b"\n")
            await child.stdin.drain()
            child.stdin.close()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_follow(child, partition, report))
                for partition, child in enumerate(children)
            ]
        return [task.result() for task in tasks]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None  # the first partition to fail says why
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def _follow(
    child: asyncio.subprocess.Process, partition: int, report: Callable[[int, int], None]
) -> FoldResult:
    assert child.stdout is not None
    result, error = None, None
    async for line in child.stdout:
        message = orjson.loads(line)
        if "position" in message:
            report(partition, message["position"])
        elif "result" in message:
            result = FoldResult(**message["result"])
        elif "error" in message:
            error = message["error"]
    status = await child.wait()
    if result is None or status != 0:
        raise ReplayError(f"the fold failed: {error or f'partition {partition} exited {status}'}")
    return result


# --- the fresh tables' definitions, from the live ones -----------------------------------------


@dataclass(frozen=True)
class _Index:
    name: str  # the live one's
    temporary: str  # the fresh one's until the swap
    unique: bool
    constraint: str | None  # ADD CONSTRAINT's definition, for a primary key, unique or exclusion
    method: str  # CREATE INDEX's text after USING, for a plain index


@dataclass(frozen=True)
class _Policy:
    name: str
    permissive: bool
    command: str  # ALL, SELECT, INSERT, UPDATE, DELETE
    roles: list[str]  # PUBLIC for everyone
    using: str | None
    check: str | None

    def create(self, table: sql.Identifier) -> sql.Composed:
        roles = sql.SQL(", ").join(
            sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role) for role in self.roles
        )
        statement = sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
            sql.Identifier(self.name),
            table,
            sql.SQL("PERMISSIVE" if self.permissive else "RESTRICTIVE"),
            sql.SQL(self.command),
            roles,
        )
        # The expressions come from the catalog (pg_get_expr), so they are SQL already.
        if self.using is not None:
            statement += sql.SQL(" USING ({})").format(sql.SQL(self.using))
        if self.check is not None:
            statement += sql.SQL(" WITH CHECK ({})").format(sql.SQL(self.check))
        return statement


@dataclass
class _Shape:
    """What a fresh table takes from the live one's definition."""

    table: Table
    owner: str
    row_security: bool
    force_row_security: bool
    options: list[str]
    indexes: list[_Index] = field(default_factory=list)
    policies: list[_Policy] = field(default_factory=list)
    grants: list[tuple[str, str, bool]] = field(default_factory=list)  # privilege, role, option

    @property
    def live(self) -> sql.Identifier:
        return sql.Identifier(self.table.name)

    @property
    def rebuild(self) -> str:
        return self.table.name + rebuild_suffix

    def create(self) -> sql.Composed:
        return sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(
            sql.Identifier(self.rebuild), self.live
        )

    def finish(self) -> Iterator[sql.Composed]:
        """After the load: indexes, options, security, statistics, owner."""
        rebuild = sql.Identifier(self.rebuild)
        for index in self.indexes:
            if index.constraint is not None:
                yield sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    rebuild, sql.Identifier(index.temporary), sql.SQL(index.constraint)
                )
            else:
                yield sql.SQL("CREATE {}INDEX {} ON {} USING {}").format(
                    sql.SQL("UNIQUE " if index.unique else ""),
                    sql.Identifier(index.temporary),
                    rebuild,
                    sql.SQL(index.method),
                )
        if self.options:
            yield sql.SQL("ALTER TABLE {} SET ({})").format(
                rebuild, sql.SQL(", ").join(sql.SQL(option) for option in self.options)
            )
        for policy in self.policies:
            yield policy.create(rebuild)
        if self.row_security:
            yield sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(rebuild)
        if self.force_row_security:
            yield sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(rebuild)
        for privilege, role, grantable in self.grants:
            yield sql.SQL("GRANT {} ON {} TO {}{}").format(
                sql.SQL(privilege),
                rebuild,
                sql.SQL("PUBLIC") if role == "PUBLIC" else sql.Identifier(role),
                sql.SQL(" WITH GRANT OPTION" if grantable else ""),
            )
        # Statistics now: the planner must not meet the swapped-in table blind.
        yield sql.SQL("ANALYZE {}").format(rebuild)
        yield sql.SQL("ALTER TABLE {} OWNER TO {}").format(rebuild, sql.Identifier(self.owner))

    def swap(self) -> Iterator[sql.Composed]:
        """Inside the swap transaction, with the live table locked."""
        old = sql.Identifier(self.table.name + old_suffix)
        yield sql.SQL("ALTER TABLE {} RENAME TO {}").format(self.live, old)
        yield sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(self.rebuild), self.live)
        yield sql.SQL("DROP TABLE {}").format(old)
        for index in self.indexes:
            if index.constraint is not None:
                # Renaming a constraint renames its index too.
                yield sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
                    self.live, sql.Identifier(index.temporary), sql.Identifier(index.name)
                )
            else:
                yield sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(index.temporary), sql.Identifier(index.name)
                )


def _temporary_name(name: str) -> str:
    """`name__rebuild`, or a digest of it where that would be longer than PostgreSQL keeps."""
    candidate = name + rebuild_suffix
    if len(candidate.encode()) <= identifier_bytes_max:
        return candidate
    return "r" + hashlib.sha256(name.encode()).hexdigest()[:32] + rebuild_suffix


_policy_commands = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


async def _describe(conn: AsyncConnection[TupleRow], table: Table) -> _Shape:
    """Read the live table's definition from the catalog; refuse what replay cannot rebuild."""
    cursor = await conn.execute(
        "SELECT c.oid, pg_get_userbyid(c.relowner), c.relrowsecurity, c.relforcerowsecurity,"
        " coalesce(c.reloptions, '{}'), pg_has_role(c.relowner, 'USAGE'),"
        " has_schema_privilege(c.relnamespace, 'CREATE'),"
        " (SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid AND NOT t.tgisinternal),"
        " (SELECT count(*) FROM pg_constraint f WHERE f.contype = 'f'"
        "  AND (f.conrelid = c.oid OR f.confrelid = c.oid)),"
        " (SELECT count(*) FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL),"
        " (SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
        "  WHERE d.refobjid = c.oid AND r.ev_class <> c.oid)"
        " FROM pg_class c WHERE c.oid = to_regclass(%s) AND c.relkind = 'r'",
        [table.name],
    )
    found = await cursor.fetchone()
    if found is None:
        raise ReplayError(f"table {table.name} does not exist: run `ledger migrate` first")
    oid, owner, row_security, force, options, owned, may_create = found[:7]
    if not owned or not may_create:
        raise ReplayError(
            f"replay must connect as the owner of {table.name} ({owner}), with CREATE on its schema"
        )
    unsupported = [
        what
        for what, count in zip(
            ("triggers", "foreign keys", "column privileges", "views or rules"),
            found[7:],
            strict=True,
        )
        if count
    ]
    if unsupported:
        raise ReplayError(f"cannot rebuild {table.name}: it has {', '.join(unsupported)}")
    shape = _Shape(table, owner, row_security, force, list(options))
    cursor = await conn.execute(
        "SELECT i.relname, x.indisunique, pg_get_indexdef(x.indexrelid),"
        " pg_get_constraintdef(k.oid)"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " LEFT JOIN pg_constraint k ON k.conindid = x.indexrelid AND k.conrelid = x.indrelid"
        "  AND k.contype IN ('p', 'u', 'x')"
        " WHERE x.indrelid = %s ORDER BY i.relname",
        [oid],
    )
    for name, unique, definition, constraint in await cursor.fetchall():
        _head, separator, method = definition.partition(" USING ")
        if constraint is None and not separator:
            raise ReplayError(f"cannot read the definition of index {name}: {definition}")
        shape.indexes.append(_Index(name, _temporary_name(name), unique, constraint, method))
    cursor = await conn.execute(
        "SELECT p.polname, p.polpermissive, p.polcmd,"
        " ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(r) END"
        "  FROM unnest(p.polroles) AS r),"
        " pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)"
        " FROM pg_policy p WHERE p.polrelid = %s ORDER BY p.polname",
        [oid],
    )
    for name, permissive, command, roles, using, check in await cursor.fetchall():
        shape.policies.append(
            _Policy(name, permissive, _policy_commands[command], roles, using, check)
        )
    cursor = await conn.execute(
        "SELECT a.privilege_type,"
        " CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
        " a.is_grantable"
        " FROM pg_class c, aclexplode(c.relacl) AS a WHERE c.oid = %s AND a.grantee <> c.relowner"
        " ORDER BY 2, 1",
        [oid],
    )
    shape.grants = [
        (privilege, role, grantable) for privilege, role, grantable in await cursor.fetchall()
    ]
    return shape


# --- the connection -----------------------------------------------------------------------------


@asynccontextmanager
async def _as_owner(conn: AsyncConnection[TupleRow]) -> AsyncIterator[None]:
    """Work as the session user (the owner: `configure_connection` switched to the app role,
    under which COPY and ALTER are refused); switch back after."""
    if not conn.autocommit:
        raise ReplayError("replay needs a connection in autocommit mode (it commits in steps)")
    cursor = await conn.execute("SELECT current_user, session_user")
    found = await cursor.fetchone()
    assert found is not None
    role, session_user = found
    await conn.execute("RESET ROLE")
    try:
        yield
    finally:
        if role != session_user and not conn.closed:
            await conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


@asynccontextmanager
async def _replay_lock(conn: AsyncConnection[TupleRow]) -> AsyncIterator[None]:
    cursor = await conn.execute("SELECT pg_try_advisory_lock(%s)", [replay_lock_id])
    found = await cursor.fetchone()
    if found is None or not found[0]:
        raise ReplayError("another replay is running on this database")
    try:
        yield
    finally:
        if not conn.closed:
            await conn.execute("SELECT pg_advisory_unlock(%s)", [replay_lock_id])


async def _drop_rebuilds(conn: AsyncConnection[TupleRow], tables: Sequence[Table]) -> None:
    """Drop the fresh tables of this run, and of any table a crashed run left behind."""
    names = {table.name for table in tables} | set(metadata.tables)
    for name in sorted(names):
        await conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name + rebuild_suffix))
        )


async def _drop_rebuilds_quietly(conn: AsyncConnection[TupleRow], tables: Sequence[Table]) -> None:
    """On the way out of a failure: clean up if the connection still works, never mask the error."""
    try:
        if not conn.closed:
            await _drop_rebuilds(conn, tables)
    except psycopg.Error as error:
        logger.warning("replay: could not drop the fresh tables: %s", error)
