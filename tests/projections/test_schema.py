"""The read models' Alembic migrations create exactly the tables the projectors' SQLAlchemy
definitions describe (no drift), with row-level security on every one of them; a migration that
fills a new column of existing rows fills what the projector writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal

import orjson
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, pool

from ledger.service import LedgerService
from ledger.store.postgres import PostgresEventStore
from projections import registry
from projections.reports import KINDS, catch_up_tenant, report
from projections.tables import _json_default, metadata
from tests.ledger import store_builders as b
from tests.ledger.events import new_tenant
from tests.projections.scenario import everything, journal, with_tenant


async def test_migrations_match_the_table_definitions(new_database: Callable[[], str]) -> None:
    url = new_database()
    store = await PostgresEventStore.open(url)  # runs the store's and the read models' migrations
    await store.close()
    registry.all_projectors()  # every projector module's tables are defined on `metadata`
    engine = create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(url), poolclass=pool.NullPool
    )
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={
                    "include_name": lambda name, type_, _parent: (
                        type_ != "table" or name in metadata.tables
                    )
                },
            )
            differences = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert differences == []
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relname = ANY(%s)"
            " AND relrowsecurity AND relforcerowsecurity",
            [list(metadata.tables)],
        ).fetchall()
    assert sorted(row[0] for row in rows) == sorted(metadata.tables)


async def test_migration_0004_fills_the_minor_units_of_existing_segments(
    new_database: Callable[[], str],
) -> None:
    """A database at 0003 with projected contracts (two currencies, one without minor digits, an
    amended line whose amounts carry 28 digits) gets, from migration 0004, the minor-unit columns
    the projector writes; and the reports do not depend on them: with them emptied (a row the
    migration could not fill) every report is the same, worked out in Python."""
    url = new_database()
    store = await PostgresEventStore.open(url)
    tenants = [new_tenant(), new_tenant()]
    yen = b.raw_event(
        "contract.signed",
        {
            "contract_id": "KY",
            "customer_id": "C1",
            "start_date": "2026-01-10",
            "end_date": "2026-04-17",
            "currency": "JPY",
            "lines": [
                {
                    "line_id": "L1",
                    "description": "Service",
                    "amount": "100001",
                    "recognition": "ratable",
                    "recurring": True,
                }
            ],
        },
    )
    for tenant, events in zip(tenants, [everything(tenant) for tenant in tenants], strict=True):
        if tenant == tenants[1]:
            events = [b.customer("C1"), yen]
        report_ = await LedgerService(store).append(with_tenant(tenant, events))
        assert not report_.rejected, report_.rejected
    columns = "base_minor, amount_minor, complete_minor"
    days = [date(2026, 2, 10), date(2026, 4, 20), date(2026, 6, 30)]

    async def reports() -> list[object]:
        async with store.connection() as conn:
            return [
                await report(conn, kind, tenant, day)
                for tenant in tenants
                for day in days
                for kind in KINDS
            ]

    async with store.connection() as conn:
        for tenant in tenants:
            await catch_up_tenant(store, conn, tenant)
    before = await reports()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ledger.tenants = '*'")
        key = "tenant_id, contract_id, line_id, seg_start"
        projected = conn.execute(
            f"SELECT {key}, {columns} FROM dr_segments ORDER BY {key}"
        ).fetchall()
        assert any(row[5] is None for row in projected)  # an amended amount: not whole
        assert any(row[1] == "KY" and row[5] == 100001 for row in projected)  # yen: 0 digits
        conn.execute(f"UPDATE dr_segments SET ({columns}) = (NULL, NULL, NULL)")
        assert await reports() == before  # every segment worked out in Python
        # Back to 0003: the columns and the function gone, the version with them.
        conn.execute(
            "ALTER TABLE dr_segments DROP COLUMN base_minor, DROP COLUMN amount_minor,"
            " DROP COLUMN complete_minor"
        )
        conn.execute("DROP FUNCTION ledger_spread_minor(bigint, integer, integer)")
        conn.execute("DROP TABLE gl_payables, gl_payables_by_due_date")  # 0005's
        conn.execute("UPDATE read_model_migrations SET version_num = '0003'")
    await store.close()
    store = await PostgresEventStore.open(url)  # migrates 0003 -> 0004
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET ledger.tenants = '*'")
            filled = conn.execute(
                f"SELECT {key}, {columns} FROM dr_segments ORDER BY {key}"
            ).fetchall()
        assert filled == projected
        assert await reports() == before
    finally:
        await store.close()


async def test_migration_0005_fills_the_payables_from_the_events(
    new_database: Callable[[], str],
) -> None:
    """A database at 0004 with projected expenses (with and without a due date, part paid, one
    paid in two) gets, from migration 0005, the payables by due date the projector writes; events
    appended but not yet applied by the general ledger are left to it."""
    url = new_database()
    store = await PostgresEventStore.open(url)
    tenants = [new_tenant(), new_tenant()]
    extra = [
        b.raw_event(
            "expense.recorded",
            {
                "expense_id": "X-2",
                "vendor": "Office Co",
                "category": "rent",
                "incurred_date": "2026-02-01",
                "due_date": "2026-03-15",
                "amount": "1000.00",
                "currency": "USD",
            },
        ),
        b.expense_paid("400.00", "X-2", "2026-02-20"),
        b.expense_paid("100.00", "X-2", "2026-03-20"),
        journal(
            "J-AP",
            "2026-02-28",
            [("expense:audit", "250.00", ""), ("accounts_payable", "", "250.00")],
        ),
        journal(
            "J-0",
            "2026-03-01",
            [("accounts_payable", "5.00", ""), ("accounts_payable", "", "5.00")],
        ),
    ]
    for tenant in tenants:
        report_ = await LedgerService(store).append(with_tenant(tenant, everything(tenant) + extra))
        assert not report_.rejected, report_.rejected
    async with store.connection() as conn:
        await catch_up_tenant(store, conn, tenants[0])  # tenants[1]: not applied yet
    names = ["gl_payables", "gl_payables_by_due_date"]

    def rows() -> dict[str, list[tuple[object, ...]]]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET ledger.tenants = '*'")
            return {
                name: conn.execute(f"SELECT * FROM {name} ORDER BY 1, 2, 3").fetchall()
                for name in names
            }

    projected = rows()
    assert {row[0] for row in projected["gl_payables"]} == {tenants[0]}
    # 2 rows, X-2: 3, J-AP: 1 (due the day posted); J-0 nets to nothing on payables.
    assert len(projected["gl_payables_by_due_date"]) == 6
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE gl_payables, gl_payables_by_due_date")
        conn.execute("UPDATE read_model_migrations SET version_num = '0004'")
    await store.close()
    store = await PostgresEventStore.open(url)  # migrates 0004 -> 0005
    try:
        assert rows() == projected
        async with store.connection() as conn:
            await catch_up_tenant(store, conn, tenants[1])
        both = rows()
        assert {row[0] for row in both["gl_payables"]} == set(tenants)
    finally:
        await store.close()


async def test_migration_0006_deletes_the_schedule_months_at_zero(
    new_database: Callable[[], str],
) -> None:
    """A database at 0005 whose `dr_schedule_months` holds rows at zero (as the projector left a
    schedule taken off before it deleted them) gets, from migration 0006, only the others: what
    a replay builds, with the same deferred revenue report."""
    url = new_database()
    store = await PostgresEventStore.open(url)
    tenant = new_tenant()
    report_ = await LedgerService(store).append(with_tenant(tenant, everything(tenant)))
    assert not report_.rejected, report_.rejected
    async with store.connection() as conn:
        await catch_up_tenant(store, conn, tenant)

    async def waterfall() -> object:
        async with store.connection() as conn:
            return await report(conn, "deferred-revenue", tenant, date(2026, 4, 15))

    def months() -> list[tuple[object, ...]]:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET ledger.tenants = '*'")
            return conn.execute("SELECT * FROM dr_schedule_months ORDER BY 1, 2, 3").fetchall()

    projected, before = months(), await waterfall()
    assert projected and all(row[3] != 0 for row in projected)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET ledger.tenants = '*'")
        conn.execute(
            "INSERT INTO dr_schedule_months VALUES (%s, '2026-01-01', '2026-02-01', 0.00),"
            " (%s, '2026-01-01', '2026-03-01', 0)",
            [tenant, tenant],
        )
        assert await waterfall() == before  # a zero changes no report
        conn.execute("UPDATE read_model_migrations SET version_num = '0005'")
    await store.close()
    store = await PostgresEventStore.open(url)  # migrates 0005 -> 0006
    try:
        assert months() == projected
        assert await waterfall() == before
    finally:
        await store.close()


def test_rows_are_written_with_decimals_exact_and_nothing_else_guessed() -> None:
    """The rows' JSON (`insert_json_rows`, the upserts): a Decimal as its exact text, dates as ISO
    8601, and any other type orjson does not know refused, not turned into some text."""
    rows: list[dict[str, object]] = [
        {"amount": Decimal("1.10"), "neg": Decimal("-0.00"), "big": Decimal("1E+3")}
    ]
    rows[0]["day"] = date(2026, 2, 28)
    assert orjson.dumps(rows, default=_json_default) == (
        b'[{"amount":"1.10","neg":"-0.00","big":"1E+3","day":"2026-02-28"}]'
    )
    with pytest.raises(TypeError, match="not JSON serializable"):
        orjson.dumps([{"amount": 1.1j}], default=_json_default)
