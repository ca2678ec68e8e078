"""Read models kept in PostgreSQL tables, produced by pure table projectors.

A table projector is pure, as DESIGN section 5 asks: for one event it names the rows it may read
(`needs`), then `apply(rows, event)` reads exactly those through `Rows` and records its changes there:

- `put(table, row)`: the row's new content, keyed by the table's primary key;
- `delete(table, *key)`;
- `add(table, row)`: add the row's numeric columns to the stored row (created at zero when
  missing). Running totals such as daily account movements need no read, so they cost O(1);
- `insert(table, row)`: an append-only row (journal lines, audit chain links), never read back.

Runners do the I/O. `apply_batch` is the one interpreter of those changes: the live worker and
catch-up run it over rows loaded from PostgreSQL, the test runner over `MemoryTables`, replay over
a `MemoryTables` whose rows are then written to fresh tables (`insert_json_rows`), and over rows
loaded from those for the events that came during the rebuild. So they cannot disagree.

Every table has `tenant_id` as the first column of its primary key; row-level security applies to
all of them (see the migrations under `projections/migrations`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

import orjson
from psycopg import AsyncConnection, AsyncCursor, sql
from psycopg.rows import TupleRow
from sqlalchemy import BigInteger, Boolean, Column, Date, Integer, MetaData, Numeric, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from projections.core import ProjectedEvent

metadata = MetaData()
_zero = Decimal(0)

Row = dict[str, Any]
Key = tuple[Any, ...]  # the primary key's values after tenant_id


def tenant_table(name: str, *columns: Any, zero_is_absent: bool = False) -> Table:
    """A read model table: `tenant_id` first, then `columns` (mark key columns primary_key=True).
    `zero_is_absent`: a table of running totals (`Rows.add`) whose readers take a row of zeros for
    no row; a row brought to zero is deleted, by the live writer and by replay's merge alike."""
    return Table(
        name,
        metadata,
        Column("tenant_id", Text, primary_key=True),
        *columns,
        info={"zero_is_absent": zero_is_absent},
    )


@dataclass(frozen=True, slots=True)
class _Spec:
    """What the hot paths need of a table, worked out once: iterating a SQLAlchemy column
    collection costs microseconds per call, and replay writes millions of rows."""

    keys: tuple[str, ...]  # the key columns after tenant_id
    values: tuple[str, ...]  # the other columns
    key_of: Callable[[Mapping[str, Any]], Key]  # a row's key
    zero_is_absent: bool  # see `tenant_table`


_specs: dict[str, _Spec] = {}


def _spec(table: Table) -> _Spec:
    try:
        return _specs[table.name]
    except KeyError:
        # str(): SQLAlchemy's names are `quoted_name`, a str subclass that orjson refuses as a key.
        keys = tuple(
            str(column.name) for column in table.primary_key.columns if column.name != "tenant_id"
        )
        values = tuple(
            str(column.name)
            for column in table.columns
            if column.name not in keys and column.name != "tenant_id"
        )
        zero_is_absent = bool(table.info.get("zero_is_absent", False))
        return _specs.setdefault(table.name, _Spec(keys, values, _key_getter(keys), zero_is_absent))


def key_columns(table: Table) -> tuple[str, ...]:
    return _spec(table).keys


def value_columns(table: Table) -> tuple[str, ...]:
    return _spec(table).values


def key_of(table: Table, row: Mapping[str, Any]) -> Key:
    return _spec(table).key_of(row)


def _key_getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Key]:
    if not names:
        return lambda row: ()
    if len(names) == 1:
        (name,) = names
        return lambda row: (row[name],)
    # A tuple for two names or more: the getter itself, with no Python frame around it (this
    # runs for every row a projector puts or adds, ~10 per replayed event).
    getter: Callable[[Mapping[str, Any]], Key] = operator.itemgetter(*names)
    return getter


class TableProjector(Protocol):
    name: str
    tables: Sequence[Table]

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        """The rows `apply` may read for this event."""
        ...

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        """Pure: read the needed rows through `rows`, record the changes there."""
        ...


class UndeclaredRead(LookupError):
    """A projector read a row it did not name in `needs`: a bug in the projector."""


@dataclass
class Changes:
    """What a batch changed, per table: the runner writes this in one transaction."""

    # (table, tenant, key) -> row (None: deleted)
    puts: dict[tuple[str, str, Key], Row | None] = field(default_factory=dict)
    # (table, tenant, key) -> column -> amount to add
    adds: dict[tuple[str, str, Key], dict[str, Any]] = field(default_factory=dict)
    # table -> rows (tenant_id included)
    inserts: dict[str, list[Row]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.puts or self.adds or self.inserts)


class Rows:
    """What a projector sees of one tenant while it applies one event."""

    __slots__ = ("_cache", "_changes", "tenant_id")

    def __init__(
        self,
        tenant_id: str,
        cache: dict[tuple[str, str, Key], Row | None],
        changes: Changes,
    ) -> None:
        self.tenant_id = tenant_id
        self._cache = cache
        self._changes = changes

    def get(self, table: Table, *key: Any) -> Row | None:
        cache_key = (table.name, self.tenant_id, key)
        try:
            row = self._cache[cache_key]
        except KeyError:
            raise UndeclaredRead(f"{table.name} {key!r} was not declared in needs()") from None
        return None if row is None else dict(row)

    def put(self, table: Table, row: Row) -> None:
        stored = dict(row)
        stored.pop("tenant_id", None)
        cache_key = (table.name, self.tenant_id, _spec(table).key_of(stored))
        self._cache[cache_key] = stored
        self._changes.puts[cache_key] = stored

    def delete(self, table: Table, *key: Any) -> None:
        cache_key = (table.name, self.tenant_id, key)
        self._cache[cache_key] = None
        self._changes.puts[cache_key] = None

    def add(self, table: Table, row: Row) -> None:
        spec = _spec(table)
        cache_key = (table.name, self.tenant_id, spec.key_of(row))
        adds = self._changes.adds
        totals = adds.get(cache_key)
        if totals is None:
            totals = adds[cache_key] = {}
        for name in spec.values:
            amount = row.get(name)
            if amount:
                # 0 + amount, not amount: the same Decimal as the running total's first step.
                totals[name] = totals[name] + amount if name in totals else 0 + amount

    def insert(self, table: Table, row: Row) -> None:
        self._changes.inserts.setdefault(table.name, []).append(
            {"tenant_id": self.tenant_id, **row}
        )


def needed_keys(
    projectors: Sequence[TableProjector], events: Iterable[ProjectedEvent]
) -> dict[str, set[tuple[str, Key]]]:
    """table -> {(tenant, key)} that the events' projectors may read."""
    needed: dict[str, set[tuple[str, Key]]] = {}
    for event in events:
        for projector in projectors:
            for table, key in projector.needs(event):
                needed.setdefault(table.name, set()).add((event.tenant_id, tuple(key)))
    return needed


def apply_batch(
    projectors: Sequence[TableProjector],
    positions: dict[tuple[str, str], int],
    events: Iterable[ProjectedEvent],
    cache: dict[tuple[str, str, Key], Row | None],
    changes: Changes,
) -> dict[str, int]:
    """Apply events in position order, skipping what each (projection, tenant) has seen.

    `cache` holds the loaded rows (missing rows as None); `positions` is updated in place.
    Returns projection -> events applied."""
    names = [projector.name for projector in projectors]
    counts = [0] * len(projectors)
    for event in events:
        # One view per event: every projector sees the same tenant, cache and changes.
        rows = Rows(event.tenant_id, cache, changes)
        for index, projector in enumerate(projectors):
            position_key = (names[index], event.tenant_id)
            if event.position <= positions.get(position_key, 0):
                continue
            projector.apply(rows, event)
            positions[position_key] = event.position
            counts[index] += 1
    return {name: count for name, count in zip(names, counts, strict=True) if count}


class MemoryTables:
    """Read model tables in memory: the test runner's and replay's storage."""

    def __init__(self) -> None:
        self.keyed: dict[str, dict[tuple[str, Key], Row]] = {}
        self.appended: dict[str, list[Row]] = {}
        self.positions: dict[tuple[str, str], int] = {}

    def apply(
        self, projectors: Sequence[TableProjector], events: Sequence[ProjectedEvent]
    ) -> dict[str, int]:
        """Apply a batch with the same interpreter the PostgreSQL writer uses."""
        applied, changes = self.apply_changes(projectors, events)
        for table_name, rows in changes.inserts.items():
            self.appended.setdefault(table_name, []).extend(rows)
        return applied

    def apply_changes(
        self, projectors: Sequence[TableProjector], events: Sequence[ProjectedEvent]
    ) -> tuple[dict[str, int], Changes]:
        """Apply a batch to the keyed rows and return what it changed; its appended rows are in
        the changes only (replay streams them to PostgreSQL instead of keeping them)."""
        cache: dict[tuple[str, str, Key], Row | None] = {}
        nothing: dict[tuple[str, Key], Row] = {}
        for event in events:
            tenant = event.tenant_id
            for projector in projectors:
                for table, key in projector.needs(event):
                    cache_key = (table.name, tenant, tuple(key))
                    if cache_key not in cache:
                        stored = self.keyed.get(table.name, nothing)
                        cache[cache_key] = stored.get((tenant, cache_key[2]))
        changes = Changes()
        applied = apply_batch(projectors, self.positions, events, cache, changes)
        self.merge_keyed(changes)
        return applied, changes

    def merge(self, changes: Changes) -> None:
        self.merge_keyed(changes)
        for table_name, rows in changes.inserts.items():
            self.appended.setdefault(table_name, []).extend(rows)

    def merge_keyed(self, changes: Changes) -> None:
        for (table_name, tenant, key), row in changes.puts.items():
            stored = self.keyed.setdefault(table_name, {})
            if row is None:
                stored.pop((tenant, key), None)
            else:
                stored[(tenant, key)] = row
        specs: dict[str, tuple[_Spec, dict[tuple[str, Key], Row]]] = {}
        for (table_name, tenant, key), amounts in changes.adds.items():
            found = specs.get(table_name)
            if found is None:
                found = specs[table_name] = (
                    _spec(metadata.tables[table_name]),
                    self.keyed.setdefault(table_name, {}),
                )
            spec, stored = found
            current = stored.get((tenant, key))
            if current is None:
                current = dict(zip(spec.keys, key, strict=True))
                for name in spec.values:
                    current[name] = _zero
                stored[(tenant, key)] = current
            for name, amount in amounts.items():
                current[name] = current[name] + amount
            if spec.zero_is_absent and not any(current[name] for name in spec.values):
                del stored[(tenant, key)]

    def rows(self, table: Table) -> list[Row]:
        """Every row of a table, tenant_id included, sorted by primary key."""
        if table.name in self.appended:
            rows = self.appended[table.name]
            return sorted(rows, key=lambda row: _sort_key(table, row))
        return sorted(
            (
                {"tenant_id": tenant, **row}
                for (tenant, _key), row in self.keyed.get(table.name, {}).items()
            ),
            key=lambda row: _sort_key(table, row),
        )


def _sort_key(table: Table, row: Row) -> tuple[Any, ...]:
    return tuple(_comparable(row[column.name]) for column in table.primary_key.columns)


def _comparable(value: Any) -> Any:
    return (0, value) if value is not None else (-1, "")


# --- PostgreSQL -------------------------------------------------------------------------------

_array_types = {
    Text: "text[]",
    Date: "date[]",
    Integer: "integer[]",
    BigInteger: "bigint[]",
    Numeric: "numeric[]",
    Boolean: "boolean[]",
    JSONB: "jsonb[]",
}


def array_type(column: Column[Any]) -> str:
    for kind, name in _array_types.items():
        if isinstance(column.type, kind):
            return name
    raise TypeError(f"no array type for column {column.name} ({column.type})")


async def load_rows(
    conn: AsyncConnection[TupleRow],
    needed: dict[str, set[tuple[str, Key]]],
    cache: dict[tuple[str, str, Key], Row | None],
    *,
    suffix: str = "",
) -> None:
    """Load the needed rows into `cache` (missing rows as None): one query per table, from the
    tables or from those named with `suffix` (replay's fresh tables), all sent at once."""
    async with conn.pipeline():
        pending = await send_loads(conn, needed, cache, suffix=suffix)
    await receive_loads(pending, cache)


Pending = list[tuple[Table, AsyncCursor[TupleRow]]]


async def send_loads(
    conn: AsyncConnection[TupleRow],
    needed: dict[str, set[tuple[str, Key]]],
    cache: dict[tuple[str, str, Key], Row | None],
    *,
    suffix: str = "",
) -> Pending:
    """`load_rows`' queries, sent (in pipeline mode: queued) but not answered yet; the needed
    keys go into `cache` as missing until `receive_loads` fills in what exists."""
    pending: Pending = []
    for table_name, keys in needed.items():
        if not keys:
            continue
        table = metadata.tables[table_name]
        names = ["tenant_id", *key_columns(table)]
        ordered = sorted(keys, key=lambda item: (item[0], tuple(str(part) for part in item[1])))
        arrays = [[tenant for tenant, _ in ordered]]
        for index in range(len(names) - 1):
            arrays.append([key[index] for _, key in ordered])
        for tenant, key in ordered:
            cache[(table_name, tenant, key)] = None
        cursor = conn.cursor()
        await cursor.execute(_load_statement(table_name, table_name + suffix), arrays)
        pending.append((table, cursor))
    return pending


async def receive_loads(pending: Pending, cache: dict[tuple[str, str, Key], Row | None]) -> None:
    """The answers to `send_loads`' queries, into `cache`."""
    for table, cursor in pending:
        rows = await cursor.fetchall()
        assert cursor.description is not None
        result_names = [column.name for column in cursor.description]
        for values in rows:
            row = dict(zip(result_names, values, strict=True))
            tenant = row.pop("tenant_id")
            cache[(table.name, tenant, key_of(table, row))] = row


async def write_changes(
    conn: AsyncConnection[TupleRow], changes: Changes, *, suffix: str = ""
) -> None:
    """Write a batch's changes (inside the caller's transaction) to the tables, or to the tables
    named with `suffix` (replay's fresh tables)."""
    puts: dict[str, list[tuple[str, Key, Row | None]]] = {}
    for (table_name, tenant, key), row in changes.puts.items():
        puts.setdefault(table_name, []).append((tenant, key, row))
    for table_name, items in puts.items():
        table = metadata.tables[table_name]
        deletes = [(tenant, *key) for tenant, key, row in items if row is None]
        upserts = [{"tenant_id": tenant, **row} for tenant, _key, row in items if row is not None]
        if deletes:
            await conn.cursor().executemany(
                _delete_statement(table_name, table_name + suffix), deletes
            )
        if upserts:
            await _upsert(conn, table, upserts, add=False, name=table_name + suffix)
    adds: dict[str, list[Row]] = {}
    for (table_name, tenant, key), amounts in changes.adds.items():
        table = metadata.tables[table_name]
        added: Row = {"tenant_id": tenant, **dict(zip(key_columns(table), key, strict=True))}
        for name in value_columns(table):
            added[name] = amounts.get(name, 0)
        adds.setdefault(table_name, []).append(added)
    for table_name, rows in adds.items():
        await _upsert(conn, metadata.tables[table_name], rows, add=True, name=table_name + suffix)
    for table_name, rows in changes.inserts.items():
        await insert_json_rows(conn, metadata.tables[table_name], rows, table_name + suffix)


async def _upsert(
    conn: AsyncConnection[TupleRow], table: Table, rows: list[Row], *, add: bool, name: str
) -> None:
    """INSERT ... ON CONFLICT into `name` (`table` or its fresh copy): replace, or add to, the
    value columns. One statement per table, the rows as one JSON document (as `insert_json_rows`):
    a statement per row cost ~0.3 ms each, most of a batch's write. The rows' keys are distinct
    (they come from `Changes`), so no row is updated twice by the statement."""
    document = orjson.dumps(rows, default=_json_default).decode()
    await conn.execute(_upsert_statement(table.name, name, add), [document])
    if add and _spec(table).zero_is_absent:
        # The rows the batch brought to zero (or created at zero) go, as replay's merge drops
        # them: the same keys, in the same transaction, so the statement above is seen.
        await conn.execute(_drop_zero_statement(table.name, name), [document])


async def insert_json_rows(
    conn: AsyncConnection[TupleRow], table: Table, rows: Sequence[Row], name: str | None = None
) -> None:
    """INSERT rows (tenant_id included) into `name` (default: the table itself) as one JSON
    document that `json_populate_recordset` takes apart. orjson writes the document in C, about a
    quarter of what COPY's text format costs this process to build value by value; PostgreSQL
    does the parsing, on a core of its own. Decimals travel as JSON strings, so exactly."""
    statement = _insert_statement(table.name, name or table.name)
    await conn.execute(statement, [orjson.dumps(rows, default=_json_default).decode()])


# The statements, composed once per table and target: composing one costs ~0.1 ms of Python, and
# a batch of the live writer sends ~15 of them.


@functools.cache
def _load_statement(table_name: str, target: str) -> str:
    table = metadata.tables[table_name]
    names = ["tenant_id", *key_columns(table)]
    columns = {column.name: column for column in table.columns}
    return (
        sql.SQL("SELECT t.* FROM {table} t JOIN unnest({arrays}) AS k({names}) USING ({names})")
        .format(
            table=sql.Identifier(target),
            arrays=sql.SQL(", ").join(
                sql.SQL("%s::" + array_type(columns[name])) for name in names
            ),
            names=sql.SQL(", ").join(sql.Identifier(name) for name in names),
        )
        .as_string()
    )


@functools.cache
def _delete_statement(table_name: str, target: str) -> str:
    keys = ["tenant_id", *key_columns(metadata.tables[table_name])]
    return (
        sql.SQL("DELETE FROM {} WHERE {}")
        .format(
            sql.Identifier(target),
            sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(name)) for name in keys),
        )
        .as_string()
    )


@functools.cache
def _insert_statement(table_name: str, target: str) -> str:
    table = metadata.tables[table_name]
    names = sql.SQL(", ").join(sql.Identifier(column.name) for column in table.columns)
    return (
        sql.SQL(
            "INSERT INTO {target} ({names}) SELECT {names}"
            " FROM json_populate_recordset(NULL::{target}, %s::json)"
        )
        .format(target=sql.Identifier(target), names=names)
        .as_string()
    )


@functools.cache
def _drop_zero_statement(table_name: str, name: str) -> str:
    table = metadata.tables[table_name]
    target = sql.Identifier(name)
    keys = ["tenant_id", *key_columns(table)]
    conditions = [
        sql.SQL("t.{column} = k.{column}").format(column=sql.Identifier(column)) for column in keys
    ] + [
        sql.SQL("t.{column} = 0").format(column=sql.Identifier(column))
        for column in value_columns(table)
    ]
    return (
        sql.SQL(
            "DELETE FROM {target} t USING json_populate_recordset(NULL::{target}, %s::json) k"
            " WHERE "
        ).format(target=target)
        + sql.SQL(" AND ").join(conditions)
    ).as_string()


@functools.cache
def _upsert_statement(table_name: str, name: str, add: bool) -> str:
    table = metadata.tables[table_name]
    target = sql.Identifier(name)
    names = [column.name for column in table.columns]
    keys = ["tenant_id", *key_columns(table)]
    values = value_columns(table)
    if add:
        assignments = [
            sql.SQL("{column} = {table}.{column} + excluded.{column}").format(
                column=sql.Identifier(column), table=target
            )
            for column in values
        ]
    else:
        assignments = [
            sql.SQL("{column} = excluded.{column}").format(column=sql.Identifier(column))
            for column in values
        ]
    conflict = (
        sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(assignments)
        if assignments
        else sql.SQL("DO NOTHING")
    )
    columns = sql.SQL(", ").join(sql.Identifier(column) for column in names)
    return (
        sql.SQL(
            "INSERT INTO {target} ({columns}) SELECT {columns}"
            " FROM json_populate_recordset(NULL::{target}, %s::json) ON CONFLICT ({keys}) "
        ).format(
            target=target,
            columns=columns,
            keys=sql.SQL(", ").join(sql.Identifier(column) for column in keys),
        )
        + conflict
    ).as_string()


# What orjson cannot write itself: Decimals, as their exact text. The method itself, not a
# function around it: it is called for every amount of every row written (~10 per event in a
# replay), and a Python frame doubled the cost (344 against 178 ns per amount). Any other type
# fails as it should: orjson raises "Type is not JSON serializable: <type>".
_json_default = Decimal.__str__


async def read_rows(conn: AsyncConnection[TupleRow], table: Table) -> list[Row]:
    """Every row of a table (all tenants), sorted by primary key: for comparisons."""
    keys = sql.SQL(", ").join(sql.Identifier(column.name) for column in table.primary_key.columns)
    async with conn.transaction():
        await conn.execute("SELECT set_config('ledger.tenants', '*', true)")
        cursor = await conn.execute(
            sql.SQL("SELECT * FROM {} ORDER BY {}").format(sql.Identifier(table.name), keys)
        )
        assert cursor.description is not None
        names = [column.name for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in await cursor.fetchall()]
