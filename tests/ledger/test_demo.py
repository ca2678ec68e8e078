"""The demo stream (`ledger.demo`) is something the ledger accepts whole and that moves every read
model: over 400 simulated days (two seeds) every generated event goes through the real write side
(`LedgerService` over the in-memory store, and once over PostgreSQL) with no rejection, ids are
unique and the same for a seed; what the generator believes is open (each invoice, the payables)
is what the ledger's AR aging and AP show; the events folded by the test runner fill every
read-model table, and the reports over PostgreSQL show revenue, AR in several aging buckets,
deferred revenue with a waterfall, MRR movements of every kind, expenses and AP, and a balanced
trial balance. `run_demo`
appends the history, then live days, stops promptly, continues after a restart without sending the
history again, logs a rejected event and goes on, and rides out a store outage."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from ledger import demo
from ledger.contract import event_types
from ledger.decide import Outcome
from ledger.demo import DemoWorld, add_months, parse_demo_event_id, run_demo, tenant_profiles
from ledger.errors import StoreUnavailableError
from ledger.money import minor_digits
from ledger.service import AppendReport, LedgerService
from ledger.store import EventStore, RecordedEvent, Unit, read_limit_max
from ledger.store.memory import MemoryEventStore
from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent, is_table_projector, run_in_memory
from projections.registry import all_projectors
from projections.reports import fresh_report
from projections.tables import MemoryTables
from tests.servers import create_database, drop_database

Event = dict[str, Any]

# 400 days: more than a contract's year, so terms end, renew or churn, and receivables age past
# 120 days; about 8,000 events, a second or two through the in-memory write side.
simulated_days = 400
world_start = date(2025, 3, 1)
seeds = (2026, 7)
# run_demo tests: a short history and a fast pace keep each run well under a second.
history_days = 20
test_seconds_per_day = 0.05
stop_within_s = 1.0
wait_timeout_s = 20.0


def generate(seed: int, days: int = simulated_days, start: date = world_start) -> list[Event]:
    return run_world(seed, days, start)[1]


def run_world(
    seed: int, days: int = simulated_days, start: date = world_start
) -> tuple[DemoWorld, list[Event]]:
    world = DemoWorld(start, seed=seed)
    events: list[Event] = []
    for _ in range(days):
        events.extend(world.events_for_day(world.next_day))
    return world, events


@pytest.fixture(scope="module")
def worlds() -> dict[int, tuple[DemoWorld, list[Event]]]:
    return {seed: run_world(seed) for seed in seeds}


@pytest.fixture(scope="module")
def streams(worlds: dict[int, tuple[DemoWorld, list[Event]]]) -> dict[int, list[Event]]:
    return {seed: events for seed, (_world, events) in worlds.items()}


async def append_in_batches(service: LedgerService, events: Sequence[Event]) -> AppendReport:
    report = AppendReport()
    for start in range(0, len(events), 2000):
        report.extend(await service.append(list(events[start : start + 2000]), atomic=False))
    return report


async def stored_events(store: EventStore, tenant: str | None = None) -> list[RecordedEvent]:
    events: list[RecordedEvent] = []
    position = 1
    while page := await store.read(tenant, position, read_limit_max):
        events.extend(page)
        position = page[-1].position + 1
    return events


# --- the generator ------------------------------------------------------------------------------


def test_a_seed_gives_the_same_events_and_ids_are_unique_per_tenant(
    streams: dict[int, list[Event]],
) -> None:
    for seed, events in streams.items():
        assert generate(seed) == events
        ids = Counter((event["tenantid"], event["id"]) for event in events)
        assert max(ids.values()) == 1
        assert all(parse_demo_event_id(event["id"]) is not None for event in events)
    assert streams[seeds[0]][:200] != streams[seeds[1]][:200]


def test_a_world_runs_day_after_day() -> None:
    world = DemoWorld(world_start)
    world.events_for_day(world_start)
    with pytest.raises(ValueError, match="day after day"):
        world.events_for_day(world_start + timedelta(days=2))


def test_amounts_carry_their_currency_s_minor_digits(streams: dict[int, list[Event]]) -> None:
    currencies = {profile.tenant: profile.currency for profile in tenant_profiles}
    assert sorted(minor_digits(currency) for currency in currencies.values()) == [0, 2, 2]
    for event in streams[seeds[0]]:
        digits = minor_digits(currencies[event["tenantid"]])
        for amount in _amounts(event["data"]):
            assert isinstance(amount, str)
            assert len(amount.partition(".")[2]) == digits, (event["id"], amount)


def _amounts(value: Any) -> list[Any]:
    names = ("amount", "tax_amount", "total", "debit", "credit")
    if isinstance(value, dict):
        found = [value[name] for name in names if name in value]
        return found + [a for item in value.values() for a in _amounts(item)]
    if isinstance(value, list):
        return [amount for item in value for amount in _amounts(item)]
    return []


def test_every_event_type_of_the_contract_is_used(streams: dict[int, list[Event]]) -> None:
    for events in streams.values():
        used = {event["type"] for event in events}
        assert used == set(event_types), set(event_types) - used
        for profile in tenant_profiles:
            mine = {event["type"] for event in events if event["tenantid"] == profile.tenant}
            # Write-offs are rare enough that a tenant may have none in 400 days.
            assert len(mine) >= len(event_types) - 1, (profile.tenant, set(event_types) - mine)


# --- the write side accepts all of it -----------------------------------------------------------


async def test_the_write_side_accepts_every_event(streams: dict[int, list[Event]]) -> None:
    for events in streams.values():
        store = MemoryEventStore()
        report = await append_in_batches(LedgerService(store), events)
        assert report.rejected == []
        assert report.duplicates == []
        assert len(report.appended) == len(events)
        again = await append_in_batches(LedgerService(store), events[:500])
        assert len(again.duplicates) == 500  # appending a day again doubles nothing


@pytest.fixture(scope="module")
async def demo_store(
    database_url: str, streams: dict[int, list[Event]]
) -> AsyncIterator[PostgresEventStore]:
    """A fresh database holding the first seed's 400 days (the demo's tenant names are fixed, so
    it gets a database of its own rather than the session's shared one)."""
    conninfo = create_database(database_url)
    store = await PostgresEventStore.open(conninfo)
    try:
        report = await append_in_batches(LedgerService(store), streams[seeds[0]])
        assert report.rejected == []
        assert len(report.appended) == len(streams[seeds[0]])
        yield store
    finally:
        await store.close()
        drop_database(conninfo)


# --- every read model moves ---------------------------------------------------------------------


async def test_the_test_runner_fills_every_read_model(demo_store: PostgresEventStore) -> None:
    events = [ProjectedEvent.from_recorded(event) for event in await stored_events(demo_store)]
    projectors = all_projectors()
    tables = MemoryTables()
    tables.apply([p for p in projectors if is_table_projector(p)], events)
    documents = run_in_memory([p for p in projectors if not is_table_projector(p)], events)
    for profile in tenant_profiles:
        for projector in projectors:
            if is_table_projector(projector):
                for table in projector.tables:
                    rows = [r for r in tables.rows(table) if r["tenant_id"] == profile.tenant]
                    assert rows, (profile.tenant, table.name)
            else:
                assert documents[(projector.name, profile.tenant)][1], projector.name


def money(value: str) -> Decimal:
    return Decimal(value)


async def reports(store: PostgresEventStore, tenant: str, kind: str, as_of: date) -> dict[str, Any]:
    async with store.connection() as conn:
        return await fresh_report(store, conn, kind, tenant, as_of)


async def test_the_reports_move(demo_store: PostgresEventStore) -> None:
    last_day = world_start + timedelta(days=simulated_days - 1)
    for profile in tenant_profiles:
        tenant = profile.tenant
        kpis = (await reports(demo_store, tenant, "kpi", last_day))["kpis"]
        for name in ("revenue_mtd", "revenue_ytd", "billings_mtd", "expenses_mtd", "cash"):
            assert money(kpis[name]) > 0, (tenant, name)
        for name in ("ar", "ar_overdue", "ap", "deferred_revenue", "mrr"):
            assert money(kpis[name]) > 0, (tenant, name)
        assert kpis["customers"] > 50 and kpis["active_contracts"] > 50
        aging = await reports(demo_store, tenant, "ar-aging", last_day)
        assert sum(money(amount) > 0 for amount in aging["buckets"].values()) >= 4, aging
        deferred = await reports(demo_store, tenant, "deferred-revenue", last_day)
        assert money(deferred["deferred"]) > 0 and money(deferred["recognized"]) > 0
        assert len(deferred["waterfall"]) >= 11
        assert all(money(month["amount"]) > 0 for month in deferred["waterfall"][:11])
        trial_balance = await reports(demo_store, tenant, "trial-balance", last_day)
        assert trial_balance["balanced"]
        balances = {a["account"]: money(a["balance"]) for a in trial_balance["accounts"]}
        assert balances["revenue"] > 0 and balances["accounts_payable"] > 0
        assert sum(1 for a in balances if a.startswith("expense:")) >= 8
        moved = Counter[str]()
        month = world_start
        while month <= last_day:
            as_of = min(add_months(month, 1) - timedelta(days=1), last_day)
            movements = await reports(demo_store, tenant, "mrr-movements", as_of)
            for name in ("new", "reactivation", "expansion", "contraction", "churn"):
                moved[name] += money(movements[name]) > 0
            month = add_months(month, 1)
        assert moved["new"] >= 12 and moved["expansion"] >= 6 and moved["churn"] >= 3, moved
        assert moved["contraction"] >= 1 and moved["reactivation"] >= 1, moved


async def test_the_generator_sees_what_the_ledger_sees(
    demo_store: PostgresEventStore, worlds: dict[int, tuple[DemoWorld, list[Event]]]
) -> None:
    """Pair assertions: each invoice the generator believes open is open by that amount in AR
    aging (oldest-due-first payments, credit notes and write-offs mirrored exactly), nothing else
    is, and its open expenses are the ledger's accounts payable."""
    world = worlds[seeds[0]][0]
    last_day = world_start + timedelta(days=simulated_days - 1)
    for profile in tenant_profiles:
        aging = await reports(demo_store, profile.tenant, "ar-aging", last_day)
        ledger_open = {i["invoice_id"]: money(i["open"]) for i in aging["invoices"]}
        assert len(ledger_open) == aging["invoices_total"]
        assert ledger_open == world.open_receivables(profile.tenant)
        trial_balance = await reports(demo_store, profile.tenant, "trial-balance", last_day)
        payable = next(a for a in trial_balance["accounts"] if a["account"] == "accounts_payable")
        assert money(payable["balance"]) == world.open_payables(profile.tenant)


# --- run_demo -----------------------------------------------------------------------------------


class RecordingService(LedgerService):
    """A LedgerService that keeps what each append sent and how it was answered."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.calls: list[list[Event]] = []
        self.reports: list[AppendReport] = []

    async def append(self, raw_events: Sequence[Any], *, atomic: bool = True) -> AppendReport:
        report = await super().append(raw_events, atomic=atomic)
        self.calls.append(list(raw_events))
        self.reports.append(report)
        return report

    @property
    def sent(self) -> list[Event]:
        return [event for call in self.calls for event in call]


def day_of(event: RecordedEvent | Event) -> int:
    event_id = event.event_id if isinstance(event, RecordedEvent) else event["id"]
    parsed = parse_demo_event_id(event_id)
    assert parsed is not None, event_id
    return parsed[1]


async def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + wait_timeout_s
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def run_until_day(
    service: LedgerService, store: EventStore, today: date, day_index: int
) -> None:
    """Run the demo until the store holds events of `day_index`, then stop it; it must stop
    within `stop_within_s`."""
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_demo(
            service,
            stop,
            seconds_per_day=test_seconds_per_day,
            history_days=history_days,
            today=today,
        )
    )

    async def reached() -> bool:
        assert not running.done()
        events = await store.read("acme", max(1, await store.head() - 300), read_limit_max)
        days = [parse_demo_event_id(event.event_id) for event in events]
        return any(day[1] >= day_index for day in days if day is not None)

    await until(reached, f"day {day_index}")
    stop.set()
    started = time.monotonic()
    await asyncio.wait_for(running, stop_within_s)
    assert time.monotonic() - started < stop_within_s


async def test_run_demo_appends_history_then_live_days_and_continues_after_a_restart() -> None:
    await check_run_and_restart(MemoryEventStore())


async def test_run_demo_on_postgresql(new_database: Callable[[], str]) -> None:
    store = await PostgresEventStore.open(new_database())
    try:
        await check_run_and_restart(store)
    finally:
        await store.close()


async def check_run_and_restart(store: EventStore) -> None:
    today = date(2026, 3, 1)
    start = today - timedelta(days=history_days)
    first = RecordingService(store)
    await run_until_day(first, store, today, history_days + 2)
    assert all(report.rejected == [] for report in first.reports)
    stored = await stored_events(store)
    days = sorted({day_of(event) for event in stored})
    assert days == list(range(days[-1] + 1)) and days[-1] >= history_days + 2
    assert min(event.time.date() for event in stored) == start
    # The history went in one batch (under `history_batch_events`); live days in a few appends
    # each, spread over the day.
    history = [call for call in first.calls if max(map(day_of, call)) < history_days]
    assert len(history) == 1 and len(history[0]) < demo.history_batch_events
    live = Counter(day_of(call[0]) for call in first.calls if day_of(call[0]) >= history_days)
    assert 1 < max(live.values()) <= demo.live_appends_per_day_max

    newest = days[-1]
    # The demo continues from the oldest of the tenants' newest days: stopped within a day, some
    # tenants may not have that day's events yet (a CI run stopped it so: acme at 23, another at 22).
    resume = min(
        max(day_of(event) for event in stored if event.tenant_id == tenant)
        for tenant in {event.tenant_id for event in stored}
    )
    assert resume in (newest - 1, newest)
    second = RecordingService(store)
    await run_until_day(second, store, today, newest + 2)
    assert all(report.rejected == [] for report in second.reports)
    # Nothing before that day is sent again, and only from there on do appends answer duplicate.
    assert min(day_of(event) for event in second.sent) == resume
    duplicated = {day_of({"id": entry["id"]}) for r in second.reports for entry in r.duplicates}
    assert duplicated <= {resume, newest}
    # What is stored is what one uninterrupted run would have stored, day by day.
    after = await stored_events(store)
    last_complete = max(day_of(event) for event in after) - 1
    expected = generate(demo.seed_default, last_complete + 1, start)
    assert sorted((e.tenant_id, e.event_id) for e in after if day_of(e) <= last_complete) == sorted(
        (e["tenantid"], e["id"]) for e in expected
    )


def first_registration(start: date, tenant: str = "acme") -> tuple[Event, Event]:
    """The tenant's opening journal (its first event) and its first customer registration."""
    world = DemoWorld(start)
    events = [e for _ in range(30) for e in world.events_for_day(world.next_day)]
    mine = [event for event in events if event["tenantid"] == tenant]
    registration = next(e for e in mine if e["type"] == "ledger.customer.registered.v1")
    assert mine[0]["type"] == "ledger.journal.posted.v1"
    return mine[0], registration


async def test_a_rejected_event_is_logged_and_the_demo_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Stored before the demo runs: its opening journal, then a customer with the id the demo is
    about to register. The demo's registration is refused and logged, and the demo goes on."""
    store = MemoryEventStore()
    today = date(2026, 3, 1)
    opening, registration = first_registration(today - timedelta(days=history_days))
    squatter = {**registration, "id": "crm-77", "source": "crm"}
    assert (await LedgerService(store).append([opening, squatter])).rejected == []
    caplog.set_level(logging.ERROR, logger="ledger.demo")
    await run_until_day(LedgerService(store), store, today, history_days + 1)
    refused = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(refused) == 1
    assert "customer_exists" in refused[0] and registration["id"] in refused[0]


async def test_a_store_written_by_another_generator_stops_the_demo_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore()
    today = date(2026, 3, 1)
    opening, registration = first_registration(today - timedelta(days=history_days))
    changed = {**registration, "data": {**registration["data"], "name": "Someone Else Ltd"}}
    assert (await LedgerService(store).append([opening, changed])).rejected == []
    caplog.set_level(logging.ERROR, logger="ledger.demo")
    await asyncio.wait_for(
        run_demo(LedgerService(store), asyncio.Event(), history_days=history_days, today=today),
        wait_timeout_s,
    )
    assert any("another version" in record.getMessage() for record in caplog.records)


class FlakyStore:
    """The in-memory store, unavailable for its first `failures` appends."""

    def __init__(self, failures: int) -> None:
        self.inner = MemoryEventStore()
        self.failures = failures

    async def append(self, units: list[Unit]) -> list[list[Outcome]]:
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailableError("the database is restarting")
        return await self.inner.append(units)

    async def read(
        self, tenant_id: str | None, from_position: int = 1, limit: int = 1000
    ) -> list[RecordedEvent]:
        return await self.inner.read(tenant_id, from_position, limit)

    async def head(self) -> int:
        return await self.inner.head()

    async def close(self) -> None:
        await self.inner.close()


async def test_a_store_outage_is_retried(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(demo, "retry_initial_s", 0.01)
    store = FlakyStore(failures=3)
    caplog.set_level(logging.WARNING, logger="ledger.demo")
    await run_until_day(LedgerService(store), store, date(2026, 3, 1), history_days + 1)
    assert store.failures == 0
    assert sum("retrying" in record.getMessage() for record in caplog.records) == 3
    events = await stored_events(store)
    assert sorted({day_of(event) for event in events})[: history_days + 1] == list(
        range(history_days + 1)
    )


async def test_stop_during_an_outage_ends_the_demo_promptly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(demo, "retry_initial_s", 30.0)
    store = FlakyStore(failures=1000)
    stop = asyncio.Event()
    running = asyncio.create_task(
        run_demo(LedgerService(store), stop, history_days=history_days, today=date(2026, 3, 1))
    )
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(running, stop_within_s)
