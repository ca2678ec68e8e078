"""Properties of the reports over random valid event streams: the trial balance balances, the AR
aging and the deferred revenue report agree with the general ledger's accounts, MRR movements add
up, recognition schedules sum to their amounts, catch-up builds the same tables as the in-memory
test runner, a report for an earlier date ignores what happened after it, and every report is, to
the character, what the straightforward version of the reports (`reference_reports`) says.

How: a Hypothesis strategy walks through 2026 and, on the way, registers customers, signs
contracts (ratable and point-in-time lines, recurring or not, over random terms), amends and
cancels them, satisfies obligations, issues invoices (tied to contract lines or not, with taxes),
voids, credits and writes them off, takes payments (allocated, or oldest due first, over- and
under-paying), refunds them, records and pays expenses and posts journal entries, in a tenant
currency with 2, 0 or 3 minor digits. Each candidate event is put to the ledger's own pure rules
(`ledger.decide`, no I/O) and kept only if they accept it, so a stream appends whole and every
example means something. Streams are in business-date order, or (`late`) with events dated up to
a month before the ones appended earlier. Each example appends to a fresh tenant of one database
shared by the module, then reads reports through `fresh_report` for a few as-of dates.

Journal entries here touch only accounts no subledger keeps (cash, equity, loans, an expense,
revenue): a manual entry to accounts receivable or deferred revenue would, by design, make the
general ledger differ from the AR aging or the deferred revenue report.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ledger.contract import parse_event, type_name
from ledger.decide import (
    Accepted,
    ContractState,
    ExpenseState,
    InvoiceState,
    PaymentState,
    PositionCounter,
    TenantState,
    decide_unit,
)
from ledger.money import minor_digits
from ledger.refs import derive
from ledger.service import LedgerService
from ledger.store import read_limit_max
from ledger.store.postgres import PostgresEventStore
from projections.core import ProjectedEvent, ProjectionWriter, is_table_projector, read_states
from projections.live import KpiParts
from projections.registry import all_projectors
from projections.replay import catch_up
from projections.reports import (
    KINDS,
    PAGED,
    catch_up_tenant,
    fresh_report,
    mrr_movement_names,
    report,
)
from projections.tables import MemoryTables, read_rows
from tests.ledger.events import new_tenant
from tests.projections.reference_reports import reference_report
from tests.servers import create_database, drop_database

Event = dict[str, Any]
Report = dict[str, Any]

year_first_day = date(2026, 1, 1)
year_last_day = date(2026, 12, 31)
# The strategy's tenant: decisions do not depend on it; each example appends to a fresh one.
generator_tenant = "tgenerator"
# Steps of the walk through the year: enough for every kind of event to meet the others, few
# enough that an example appends and reports in well under a second.
steps_max = 30
step_days_max = 20
late_days_max = 30
# In minor units (cents, yen, fils): the tenant's currency is drawn, so is its rounding.
amount_minor_max = 500_000
currencies = ("USD", "JPY", "KWD")
# Each example costs a few database round trips per report; these keep the module near a minute.
examples_reconcile = 150
examples_schedules = 100
examples_replay = 50
examples_rerun = 80
examples_retype = 10
examples_reference = 120


def property_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# --- dates and money ---------------------------------------------------------------------------


def business_date(event: Event) -> date:
    """The day an event happened in the business, which decides which reports see it.

    The payload's own date where it has one (an amendment or cancellation by its effective date,
    an invoice by its issue date, an expense by the day it was incurred). `customer.registered`
    and `contract.signed` carry none: they are dated by the envelope's `time`, which the strategy
    sets to the day of registration (January 1st) and of signature (on or before the contract's
    start date, so that invoicing in advance is possible)."""
    data = event["data"]
    for name in ("issue_date", "effective_date", "incurred_date", "date"):
        if name in data:
            return date.fromisoformat(data[name])
    return date.fromisoformat(event["time"][:10])


def add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


# --- the strategy ------------------------------------------------------------------------------


def envelope(number: int, kind: str, data: dict[str, Any], day: date) -> Event:
    """A CloudEvent with a deterministic id (unique within its tenant) and `time` on `day`."""
    return {
        "specversion": "1.0",
        "id": f"evt-{number}-{kind}",
        "source": "tests/report-properties",
        "type": type_name(kind),
        "time": f"{day.isoformat()}T10:00:00Z",
        "data": data,
    }


@dataclass(frozen=True)
class Stream:
    """Events valid when appended in this order, and the as-of dates (sorted)."""

    events: list[Event]
    as_of: list[date]

    def in_date_order(self) -> bool:
        days = [business_date(event) for event in self.events]
        return days == sorted(days)


@dataclass
class _Line:
    recognition: str
    recurring: bool
    minor: int


@dataclass
class _Contract:
    customer_id: str
    lines: dict[str, _Line]
    recognitions: dict[str, str]  # every line it ever had -> the recognition it had last


@dataclass
class _Walk:
    """The generator's side of the ledger: the pure rules' state plus what they do not keep."""

    draw: Callable[[st.SearchStrategy[Any]], Any]
    amendments: bool
    retype: bool
    late: bool
    currency: str
    today: date = year_first_day
    state: dict[str, TenantState] = field(default_factory=dict)
    positions: PositionCounter = field(default_factory=lambda: PositionCounter(0))
    events: list[Event] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    contracts: dict[str, _Contract] = field(default_factory=dict)
    invoices: list[str] = field(default_factory=list)
    payments: list[str] = field(default_factory=list)
    expenses: list[str] = field(default_factory=list)
    journals: int = 0

    # --- keeping what the rules accept ---------------------------------------------------------

    def offer(self, kind: str, data: dict[str, Any], day: date) -> bool:
        event = envelope(len(self.events) + 1, kind, data, day)
        parsed = parse_event({**event, "tenantid": generator_tenant})
        assert not isinstance(parsed, list), (parsed, event)  # the strategy's own mistake
        [outcome] = decide_unit(self.state, [parsed], self.positions)
        if isinstance(outcome, Accepted):
            self.events.append(event)
            return True
        return False

    def ref(self, kind: str, ref_id: str) -> Any:
        tenant = self.state.get(generator_tenant)
        return None if tenant is None else tenant.refs.get((kind, ref_id))

    def day(self, *not_before: date) -> date:
        """The business date of the next event: today, or with `late` up to `late_days_max`
        earlier (an event that arrives late), but never before what it refers to."""
        day = self.today
        if self.late:
            day -= timedelta(days=self.draw(st.integers(0, late_days_max)))
        return max(day, year_first_day, *not_before)

    def money(self, minor: int) -> str:
        """A decimal string with the currency's minor digits, from an amount in minor units."""
        return f"{Decimal(minor).scaleb(-minor_digits(self.currency)):f}"

    def minor(self, amount: Decimal) -> int:
        return int(amount.scaleb(minor_digits(self.currency)))

    def amount(self, low: int = 0, high: int = amount_minor_max) -> int:
        if high <= low:
            return low
        # Odd amounts (where rounding mistakes show), the bounds, and round ones.
        choices = [st.integers(low, high), st.sampled_from([low, high])]
        if low <= 100 <= high:
            choices.append(st.integers(1, high // 100).map(lambda units: units * 100))
        return int(self.draw(st.one_of(choices)))

    # --- the actions ----------------------------------------------------------------------------

    def register(self, count: int) -> None:
        for index in range(1, count + 1):
            customer_id = f"C{index}"
            data = {"customer_id": customer_id, "name": f"Customer {index}"}
            if self.offer("customer.registered", data, year_first_day):
                self.customers.append(customer_id)

    def new_line(self, contract_lines: dict[str, _Line], line_id: str) -> None:
        contract_lines[line_id] = _Line(
            recognition=self.draw(st.sampled_from(["ratable", "point_in_time"])),
            recurring=self.draw(st.booleans()),
            minor=self.amount(),
        )

    def lines_data(self, lines: dict[str, _Line]) -> list[dict[str, Any]]:
        return [
            {
                "line_id": line_id,
                "description": f"Line {line_id}",
                "amount": self.money(line.minor),
                "recognition": line.recognition,
                "recurring": line.recurring,
            }
            for line_id, line in lines.items()
        ]

    def sign(self) -> None:
        contract_id = f"K{len(self.contracts) + 1}"
        customer_id = self.draw(st.sampled_from(self.customers))
        signed_on = self.day()
        start = signed_on + timedelta(days=self.draw(st.integers(0, 20)))
        if self.draw(st.booleans()):
            end = add_months(start, self.draw(st.sampled_from([1, 2, 3, 6, 12])))
        else:
            end = start + timedelta(days=self.draw(st.integers(1, 400)))
        lines: dict[str, _Line] = {}
        count = self.draw(st.integers(1, 3))
        for index in range(1, count + 1):
            self.new_line(lines, f"L{index}")
        data = {
            "contract_id": contract_id,
            "customer_id": customer_id,
            "start_date": start.isoformat(),
            "end_date": end.isoformat(),
            "currency": self.currency,
            "lines": self.lines_data(lines),
        }
        if self.offer("contract.signed", data, signed_on):
            recognitions = {line_id: line.recognition for line_id, line in lines.items()}
            self.contracts[contract_id] = _Contract(customer_id, lines, recognitions)

    def changeable(self) -> list[str]:
        """Contracts an amendment or cancellation may name today."""
        found = []
        for contract_id in self.contracts:
            state: ContractState = self.ref("contract", contract_id)
            if (
                state.live
                and state.start_date <= self.today < state.end_date
                and state.last_change_date <= self.today
            ):
                found.append(contract_id)
        return found

    def contract_change(self) -> tuple[str, date]:
        contract_id = self.draw(st.sampled_from(self.changeable()))
        state: ContractState = self.ref("contract", contract_id)
        return contract_id, self.day(state.last_change_date)

    def amend(self) -> None:
        contract_id, effective = self.contract_change()
        contract = self.contracts[contract_id]
        lines: dict[str, _Line] = {}
        for line_id, line in contract.lines.items():
            change = self.draw(st.sampled_from(["keep", "amount", "recurring", "drop"]))
            if change == "drop":
                continue
            recognition = line.recognition
            if self.retype and self.draw(st.booleans()):
                recognition = "point_in_time" if recognition == "ratable" else "ratable"
            lines[line_id] = _Line(
                recognition=recognition,
                recurring=(not line.recurring) if change == "recurring" else line.recurring,
                minor=self.amount() if change == "amount" else line.minor,
            )
        if not lines or self.draw(st.booleans()):
            # A new line, or one dropped before coming back (as it was recognised, unless retyped).
            dropped = sorted(set(contract.recognitions) - set(lines))
            line_id = self.draw(st.sampled_from([f"L{len(contract.recognitions) + 1}", *dropped]))
            self.new_line(lines, line_id)
            if line_id in contract.recognitions and not self.retype:
                lines[line_id].recognition = contract.recognitions[line_id]
        data = {
            "contract_id": contract_id,
            "effective_date": effective.isoformat(),
            "currency": self.currency,
            "lines": self.lines_data(lines),
        }
        if self.offer("contract.amended", data, effective):
            contract.lines = lines
            contract.recognitions.update((i, line.recognition) for i, line in lines.items())

    def cancel(self) -> None:
        contract_id, effective = self.contract_change()
        data = {"contract_id": contract_id, "effective_date": effective.isoformat()}
        self.offer("contract.cancelled", data, effective)

    def unsatisfied(self) -> list[tuple[str, str]]:
        found = []
        for contract_id, contract in self.contracts.items():
            state: ContractState = self.ref("contract", contract_id)
            if not state.live or state.start_date > self.today:
                continue
            for line_id, line in contract.lines.items():
                if line.recognition == "point_in_time" and line_id not in state.satisfied:
                    found.append((contract_id, line_id))
        return found

    def satisfy(self) -> None:
        contract_id, line_id = self.draw(st.sampled_from(self.unsatisfied()))
        state: ContractState = self.ref("contract", contract_id)
        day = self.day(state.start_date)
        data = {"contract_id": contract_id, "line_id": line_id, "date": day.isoformat()}
        self.offer("obligation.satisfied", data, day)

    def issue(self) -> None:
        invoice_id = f"INV-{len(self.invoices) + 1}"
        customer_id = self.draw(st.sampled_from(self.customers))
        theirs = [
            k for k, contract in self.contracts.items() if contract.customer_id == customer_id
        ]
        contract_id = None
        if theirs and self.draw(st.integers(0, 2)) > 0:
            contract_id = self.draw(st.sampled_from(theirs))
        lines = []
        for index in range(self.draw(st.integers(1, 3))):
            line: dict[str, Any] = {
                "description": f"Item {index + 1}",
                "amount": self.money(self.amount()),
            }
            if self.draw(st.integers(0, 2)) == 0:
                line["tax_amount"] = self.money(self.amount(0, 50_000))
            if contract_id is not None and self.draw(st.booleans()):
                line["line_id"] = self.draw(
                    st.sampled_from(sorted(self.contracts[contract_id].lines))
                )
            lines.append(line)
        total = sum(
            (Decimal(line["amount"]) + Decimal(line.get("tax_amount", "0")) for line in lines),
            Decimal(0),
        )
        issued_on = self.day()
        data: dict[str, Any] = {
            "invoice_id": invoice_id,
            "customer_id": customer_id,
            "issue_date": issued_on.isoformat(),
            "due_date": (issued_on + timedelta(days=self.draw(st.integers(0, 60)))).isoformat(),
            "currency": self.currency,
            "lines": lines,
            "total": f"{total:f}",
        }
        if contract_id is not None:
            data["contract_id"] = contract_id
        if self.offer("invoice.issued", data, issued_on):
            self.invoices.append(invoice_id)

    def invoice_states(self) -> list[tuple[str, InvoiceState]]:
        return [(invoice_id, self.ref("invoice", invoice_id)) for invoice_id in self.invoices]

    def voidable(self) -> list[str]:
        return [
            invoice_id
            for invoice_id, state in self.invoice_states()
            if not (state.voided or state.paid or state.credit_notes_total or state.written_off)
        ]

    def issued_on(self, invoice_id: str) -> date:
        state: InvoiceState = self.ref("invoice", invoice_id)
        return state.issue_date

    def void(self) -> None:
        invoice_id = self.draw(st.sampled_from(self.voidable()))
        day = self.day(self.issued_on(invoice_id))
        self.offer("invoice.voided", {"invoice_id": invoice_id, "date": day.isoformat()}, day)

    def creditable(self) -> list[tuple[str, int]]:
        found = []
        for invoice_id, state in self.invoice_states():
            left = state.total - state.credit_notes_total - state.written_off
            if not state.voided and left > 0:
                found.append((invoice_id, self.minor(left)))
        return found

    def credit(self) -> None:
        invoice_id, left = self.draw(st.sampled_from(self.creditable()))
        day = self.day(self.issued_on(invoice_id))
        data = {
            "credit_note_id": f"CN-{len(self.events) + 1}",
            "invoice_id": invoice_id,
            "date": day.isoformat(),
            "amount": self.money(self.amount(1, left)),
            "currency": self.currency,
        }
        self.offer("credit_note.issued", data, day)

    def open_invoices(self, customer_id: str | None = None) -> list[tuple[str, int]]:
        return [
            (invoice_id, self.minor(state.open_amount))
            for invoice_id, state in self.invoice_states()
            if state.open_amount > 0 and customer_id in (None, state.customer_id)
        ]

    def write_off(self) -> None:
        invoice_id, open_minor = self.draw(st.sampled_from(self.open_invoices()))
        day = self.day(self.issued_on(invoice_id))
        data = {
            "invoice_id": invoice_id,
            "date": day.isoformat(),
            "amount": self.money(self.amount(1, open_minor)),
            "currency": self.currency,
        }
        self.offer("invoice.written_off", data, day)

    def pay(self) -> None:
        customer_id = self.draw(st.sampled_from(self.customers))
        open_ones = self.open_invoices(customer_id)
        data: dict[str, Any] = {
            "payment_id": f"PAY-{len(self.payments) + 1}",
            "customer_id": customer_id,
            "currency": self.currency,
        }
        day = self.day()
        if open_ones and self.draw(st.booleans()):
            chosen = self.draw(st.lists(st.sampled_from(open_ones), min_size=1, unique=True))
            day = max([day, *(self.issued_on(invoice_id) for invoice_id, _ in chosen)])
            allocations = [
                {"invoice_id": invoice_id, "amount": self.money(self.amount(1, open_minor))}
                for invoice_id, open_minor in chosen
            ]
            allocated = sum(self.minor(Decimal(a["amount"])) for a in allocations)
            extra = self.draw(st.sampled_from([0, 0, self.amount(0, 50_000)]))
            data["allocations"] = allocations
            data["amount"] = self.money(allocated + extra)
        else:
            owed = sum(open_minor for _, open_minor in open_ones)
            data["amount"] = self.money(
                self.draw(st.sampled_from([owed, self.amount(1, owed + 100_000)])) or 1
            )
        data["date"] = day.isoformat()
        if self.offer("payment.received", data, day):
            self.payments.append(data["payment_id"])

    def refundable(self) -> list[tuple[str, int]]:
        found = []
        for payment_id in self.payments:
            state: PaymentState = self.ref("payment", payment_id)
            if state.amount > state.refunded:
                found.append((payment_id, self.minor(state.amount - state.refunded)))
        return found

    def refund(self) -> None:
        payment_id, left = self.draw(st.sampled_from(self.refundable()))
        state: PaymentState = self.ref("payment", payment_id)
        day = self.day(state.date)
        data = {
            "payment_id": payment_id,
            "date": day.isoformat(),
            "amount": self.money(self.amount(1, left)),
            "currency": self.currency,
        }
        self.offer("payment.refunded", data, day)

    def expense(self) -> None:
        expense_id = f"X-{len(self.expenses) + 1}"
        incurred_on = self.day()
        data: dict[str, Any] = {
            "expense_id": expense_id,
            "vendor": "Vendor",
            "category": self.draw(st.sampled_from(["hosting", "travel", "salaries"])),
            "incurred_date": incurred_on.isoformat(),
            "amount": self.money(self.amount()),
            "currency": self.currency,
        }
        if self.draw(st.booleans()):
            data["tax_amount"] = self.money(self.amount(0, 50_000))
        if self.draw(st.booleans()):
            data["due_date"] = (
                incurred_on + timedelta(days=self.draw(st.integers(0, 45)))
            ).isoformat()
        if self.offer("expense.recorded", data, incurred_on):
            self.expenses.append(expense_id)

    def payable(self) -> list[tuple[str, int]]:
        found = []
        for expense_id in self.expenses:
            state: ExpenseState = self.ref("expense", expense_id)
            if state.total > state.paid:
                found.append((expense_id, self.minor(state.total - state.paid)))
        return found

    def pay_expense(self) -> None:
        expense_id, left = self.draw(st.sampled_from(self.payable()))
        state: ExpenseState = self.ref("expense", expense_id)
        day = self.day(state.incurred_date)
        data = {
            "expense_id": expense_id,
            "date": day.isoformat(),
            "amount": self.money(self.amount(1, left)),
            "currency": self.currency,
        }
        self.offer("expense.paid", data, day)

    def journal(self) -> None:
        accounts = self.draw(
            st.lists(
                st.sampled_from(["cash", "equity", "loans", "expense:office", "revenue"]),
                min_size=2,
                max_size=3,
                unique=True,
            )
        )
        parts = [self.amount(1, 200_000) for _ in accounts[1:]]
        # One account on one side, the others on the other; which side is which is drawn.
        one, others = self.draw(st.sampled_from([("debit", "credit"), ("credit", "debit")]))
        lines = [{"account": accounts[0], one: self.money(sum(parts))}]
        lines += [
            {"account": account, others: self.money(minor)}
            for account, minor in zip(accounts[1:], parts, strict=True)
        ]
        self.journals += 1
        day = self.day()
        data = {
            "entry_id": f"J-{self.journals}",
            "date": day.isoformat(),
            "memo": "manual entry",
            "currency": self.currency,
            "lines": lines,
        }
        self.offer("journal.posted", data, day)

    # --- the walk -------------------------------------------------------------------------------

    def available(self) -> list[Callable[[], None]]:
        """The actions possible today, some listed twice to make them commoner."""
        actions: list[Callable[[], None]] = [self.sign, self.issue, self.issue, self.pay]
        actions += [self.pay, self.expense, self.journal]
        if self.amendments and self.changeable():
            actions += [self.amend, self.cancel]
        if self.unsatisfied():
            actions += [self.satisfy, self.satisfy]
        if self.voidable():
            actions.append(self.void)
        if self.creditable():
            actions += [self.credit, self.credit]
        if self.open_invoices():
            actions.append(self.write_off)
        if self.refundable():
            actions.append(self.refund)
        if self.payable():
            actions.append(self.pay_expense)
        return actions


@st.composite
def streams(
    draw: st.DrawFn, *, amendments: bool = True, retype: bool = False, late: bool = False
) -> Stream:
    """A valid stream for one tenant (in USD, JPY or KWD) with 1-3 as-of dates in 2026, in
    business-date order unless `late` (then an event may be dated up to `late_days_max` days
    before the one appended before it, as a late-arriving event is).

    `amendments=False` leaves contracts as signed; `retype=True` lets an amendment change a line's
    recognition (ratable <-> point in time)."""
    currency = draw(st.sampled_from(currencies))
    walk = _Walk(draw, amendments=amendments, retype=retype, late=late, currency=currency)
    walk.register(draw(st.integers(1, 3)))
    if draw(st.booleans()):
        walk.journal()
    for _ in range(draw(st.integers(1, steps_max))):
        walk.today = min(
            walk.today + timedelta(days=draw(st.integers(0, step_days_max))), year_last_day
        )
        draw(st.sampled_from(walk.available()))()
    # Any day of the year, or the day of an event (its effects are then part of the report).
    event_days = sorted({business_date(event) for event in walk.events})
    day = st.one_of(st.dates(year_first_day, year_last_day), st.sampled_from(event_days))
    as_of = draw(st.lists(day, min_size=1, max_size=3, unique=True))
    return Stream(walk.events, sorted(as_of))


# --- appending and reading ---------------------------------------------------------------------


@pytest.fixture(scope="module")
async def store(database_url: str) -> AsyncIterator[PostgresEventStore]:
    """One database for the module; every example appends to a tenant of its own."""
    conninfo = create_database(database_url)
    opened = await PostgresEventStore.open(conninfo)
    try:
        yield opened
    finally:
        await opened.close()
        drop_database(conninfo)


async def append(store: PostgresEventStore, tenant: str, events: list[Event]) -> None:
    if not events:
        return
    report = await LedgerService(store).append(
        [{**event, "tenantid": tenant} for event in events], atomic=False
    )
    # The strategy kept only what the pure rules accept; the store runs the same rules.
    assert not report.rejected, report.rejected
    assert len(report.appended) == len(events)


async def reports(
    store: PostgresEventStore, tenant: str, as_of: date, kinds: tuple[str, ...] = KINDS
) -> dict[str, Report]:
    async with store.connection() as conn:
        return {kind: await fresh_report(store, conn, kind, tenant, as_of) for kind in kinds}


def balance(trial_balance: Report, account: str) -> Decimal:
    for row in trial_balance["accounts"]:
        if row["account"] == account:
            return Decimal(row["balance"])
    return Decimal(0)


def figures(report: Report) -> Report:
    """What a report shows for its date, amounts as numbers. Not `position` (how far the read
    models had got) nor `currency`: that is the tenant's, known from its first money event whatever
    that event's date, and until then amounts are written with two decimals ("0.00" in a report
    for a date before the first event of a JPY tenant, "0" once it is appended)."""
    return {
        name: _numbers(value)
        for name, value in report.items()
        if name not in ("position", "currency")
    }


_decimal_pattern = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _numbers(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_numbers(item) for item in value]
    if isinstance(value, str) and _decimal_pattern.fullmatch(value):
        return Decimal(value)
    return value


# --- 6: catch-up gives what the in-memory test runner gives --------------------------------------
# First in the module: catch-up and `read_rows` go through every tenant of the database, which
# grows with each example of each test.


@property_settings(examples_replay)
@given(stream=streams(late=True), slices=st.lists(st.integers(1, 8), min_size=1, max_size=8))
async def test_catch_up_builds_the_tables_the_test_runner_builds(
    store: PostgresEventStore, stream: Stream, slices: list[int]
) -> None:
    tenant = new_tenant()
    table_projectors = [p for p in all_projectors() if is_table_projector(p)]
    async with store.connection() as conn:
        # Appended in slices of the drawn sizes (the rest in one), each caught up on its own: the
        # live tables are built over several batches (rows written by one, read and changed or
        # deleted by a later one), the test runner's one event at a time.
        bounds = sorted({0, len(stream.events), *itertools.accumulate(slices)})
        bounds = [bound for bound in bounds if bound <= len(stream.events)]
        for start, end in itertools.pairwise(bounds):
            await append(store, tenant, stream.events[start:end])
            await catch_up(store, conn, all_projectors())
        memory = MemoryTables()
        for event in await store.read(tenant, 1, read_limit_max):
            memory.apply(table_projectors, [ProjectedEvent.from_recorded(event)])
        for projector in table_projectors:
            for table in projector.tables:
                stored = [row for row in await read_rows(conn, table) if row["tenant_id"] == tenant]
                assert stored == memory.rows(table), table.name
        positions = {
            key: position
            for key, (position, _) in (await read_states(conn)).items()
            if key[1] == tenant and key[0] in memory_projection_names
        }
        assert positions == memory.positions


memory_projection_names = {p.name for p in all_projectors() if is_table_projector(p)}


# --- 1-4: the reports reconcile ------------------------------------------------------------------


movement_names = mrr_movement_names


@property_settings(examples_reconcile)
@given(stream=streams(late=True))
async def test_reports_reconcile_with_the_general_ledger(
    store: PostgresEventStore, stream: Stream
) -> None:
    tenant = new_tenant()
    await append(store, tenant, stream.events)
    for as_of in stream.as_of:
        found = await reports(
            store, tenant, as_of, ("trial-balance", "ar-aging", "deferred-revenue", "mrr-movements")
        )
        trial, aging = found["trial-balance"], found["ar-aging"]
        deferred, movements = found["deferred-revenue"], found["mrr-movements"]
        # 1. Debits equal credits, whatever happened.
        assert trial["total_debit"] == trial["total_credit"], trial
        assert trial["balanced"] is True, trial
        # 2. The AR subledger is the receivables and customer credits accounts.
        assert Decimal(aging["total"]) == balance(trial, "accounts_receivable"), (aging, trial)
        assert Decimal(aging["unapplied"]) == balance(trial, "customer_credits"), (aging, trial)
        # 3. The deferred revenue report is the deferred and unbilled revenue accounts.
        assert Decimal(deferred["deferred"]) == balance(trial, "deferred_revenue"), (
            deferred,
            trial,
        )
        assert Decimal(deferred["unbilled"]) == balance(trial, "unbilled_revenue"), (
            deferred,
            trial,
        )
        # 4. The payables by due date are the payables account, whatever their due dates.
        async with store.connection() as conn, conn.transaction():
            await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
            cursor = await conn.execute(
                "SELECT coalesce(sum(amount), 0) FROM gl_payables_by_due_date"
                " WHERE tenant_id = %s AND day <= %s",
                [tenant, as_of],
            )
            [(payables,)] = await cursor.fetchall()
        assert payables == balance(trial, "accounts_payable"), (payables, trial)
        # 5. MRR movements explain the change of MRR over the month, to the cent.
        mrr = {name: Decimal(value) for name, value in movements.items() if name in movement_names}
        assert mrr["ending_mrr"] == (
            mrr["starting_mrr"]
            + mrr["new"]
            + mrr["reactivation"]
            + mrr["expansion"]
            - mrr["contraction"]
            - mrr["churn"]
        ), movements


# --- 5: schedules sum to their amounts -----------------------------------------------------------


@dataclass(frozen=True)
class _Signed:
    contract_id: str
    start: date
    end: date
    ratable_total: Decimal
    point_in_time: dict[str, Decimal]  # line_id -> amount


def signed_contracts(events: list[Event]) -> tuple[list[_Signed], dict[str, dict[str, date]]]:
    """Contracts as signed, and contract -> line -> the day its obligation was satisfied."""
    signed, satisfied = [], {}
    for event in events:
        data = event["data"]
        if event["type"] == type_name("contract.signed"):
            lines = data["lines"]
            signed.append(
                _Signed(
                    contract_id=data["contract_id"],
                    start=date.fromisoformat(data["start_date"]),
                    end=date.fromisoformat(data["end_date"]),
                    ratable_total=sum(
                        (
                            Decimal(line["amount"])
                            for line in lines
                            if line["recognition"] == "ratable"
                        ),
                        Decimal(0),
                    ),
                    point_in_time={
                        line["line_id"]: Decimal(line["amount"])
                        for line in lines
                        if line["recognition"] == "point_in_time"
                    },
                )
            )
        elif event["type"] == type_name("obligation.satisfied"):
            satisfied.setdefault(data["contract_id"], {})[data["line_id"]] = date.fromisoformat(
                data["date"]
            )
    return signed, satisfied


def satisfied_by(contract: _Signed, satisfied: dict[str, dict[str, date]], day: date) -> Decimal:
    """What the contract's point-in-time lines recognised by the end of `day`."""
    return sum(
        (
            amount
            for line_id, amount in contract.point_in_time.items()
            if satisfied.get(contract.contract_id, {}).get(line_id, date.max) <= day
        ),
        Decimal(0),
    )


@property_settings(examples_schedules)
@given(stream=streams(amendments=False, late=True))
async def test_recognition_schedules_sum_to_their_amounts(
    store: PostgresEventStore, stream: Stream
) -> None:
    """Contracts never amended nor cancelled (the strategy makes none here)."""
    tenant = new_tenant()
    await append(store, tenant, stream.events)
    signed, satisfied = signed_contracts(stream.events)
    # By the last day of its term a contract recognised every ratable line whole, and every
    # point-in-time line satisfied by then.
    for contract in signed:
        last_day = contract.end - timedelta(days=1)
        [found] = (await reports(store, tenant, last_day, ("deferred-revenue",))).values()
        [row] = [c for c in found["contracts"] if c["contract_id"] == contract.contract_id]
        expected = contract.ratable_total + satisfied_by(contract, satisfied, last_day)
        assert Decimal(row["recognized"]) == expected, (contract, row)
    # On any day, the ratable lines' recognition to date plus the waterfall still to come is
    # their whole amount, over the contracts started by then.
    by_id = {contract.contract_id: contract for contract in signed}
    for as_of in stream.as_of:
        [found] = (await reports(store, tenant, as_of, ("deferred-revenue",))).values()
        assert all(month["month"] >= as_of.strftime("%Y-%m") for month in found["waterfall"])
        waterfall = sum((Decimal(month["amount"]) for month in found["waterfall"]), Decimal(0))
        ratable_recognised = sum(
            (
                Decimal(row["recognized"])
                - satisfied_by(by_id[row["contract_id"]], satisfied, as_of)
                for row in found["contracts"]
            ),
            Decimal(0),
        )
        started = sum((c.ratable_total for c in signed if c.start <= as_of), Decimal(0))
        assert ratable_recognised + waterfall == started, found


# --- 7: a report for an earlier date ignores later events ----------------------------------------


async def check_rerun(store: PostgresEventStore, stream: Stream) -> None:
    """Append the stream in slices cut at the as-of dates; each report, taken when its slice was
    the last one appended, is the same once everything is."""
    assert stream.in_date_order()
    tenant = new_tenant()
    first_seen: dict[date, dict[str, Report]] = {}
    remaining = stream.events
    for as_of in stream.as_of:
        cut = next(
            (index for index, event in enumerate(remaining) if business_date(event) > as_of),
            len(remaining),
        )
        await append(store, tenant, remaining[:cut])
        remaining = remaining[cut:]
        first_seen[as_of] = await reports(store, tenant, as_of)
    await append(store, tenant, remaining)
    for as_of, before in first_seen.items():
        after = await reports(store, tenant, as_of)
        for kind in KINDS:
            assert figures(after[kind]) == figures(before[kind]), (as_of, kind)
            assert before[kind]["currency"] in (None, after[kind]["currency"]), (as_of, kind)


@property_settings(examples_rerun)
@given(stream=streams())
async def test_a_report_for_an_earlier_date_ignores_later_events(
    store: PostgresEventStore, stream: Stream
) -> None:
    await check_rerun(store, stream)


def _retyped_line() -> Stream:
    """K1 from 2026-01-01 for a year: L1 ratable 1200.00, L2 point in time 500.00, satisfied on
    2026-02-01. On 2026-03-01 it has recognised 1200 x 60/365 + 500 = 697.26. An amendment
    effective 2026-04-01 makes L1 point in time and L2 ratable (same amounts); appended, the
    report for 2026-03-01 says 82.19 (500 x 60/365 for L2, nothing for L1)."""
    lines = [
        ("L1", "1200.00", "ratable"),
        ("L2", "500.00", "point_in_time"),
    ]

    def contract_lines(retyped: bool) -> list[dict[str, Any]]:
        flip = {"ratable": "point_in_time", "point_in_time": "ratable"}
        return [
            {
                "line_id": line_id,
                "description": f"Line {line_id}",
                "amount": amount,
                "recognition": flip[recognition] if retyped else recognition,
                "recurring": False,
            }
            for line_id, amount, recognition in lines
        ]

    signed = {
        "contract_id": "K1",
        "customer_id": "C1",
        "start_date": "2026-01-01",
        "end_date": "2027-01-01",
        "currency": "USD",
        "lines": contract_lines(retyped=False),
    }
    satisfied = {"contract_id": "K1", "line_id": "L2", "date": "2026-02-01"}
    amended = {
        "contract_id": "K1",
        "effective_date": "2026-04-01",
        "currency": "USD",
        "lines": contract_lines(retyped=True),
    }
    events = [
        envelope(1, "customer.registered", {"customer_id": "C1", "name": "C1"}, year_first_day),
        envelope(2, "contract.signed", signed, year_first_day),
        envelope(3, "obligation.satisfied", satisfied, date(2026, 2, 1)),
        envelope(4, "contract.amended", amended, date(2026, 4, 1)),
    ]
    return Stream(events, [date(2026, 3, 1)])


@property_settings(examples_retype)
@example(stream=_retyped_line())
@given(stream=streams(retype=True))
async def test_a_report_for_an_earlier_date_ignores_later_changes_of_recognition(
    store: PostgresEventStore, stream: Stream
) -> None:
    await check_rerun(store, stream)


# --- 8: the reports are the straightforward ones, read from aggregates ---------------------------


@property_settings(examples_reference)
@example(stream=_retyped_line(), limit=None, after=None)
@example(
    stream=Stream(
        _retyped_line().events,
        [date(2026, 1, 31), date(2026, 3, 31), date(2026, 4, 1), date(2026, 12, 31)],
    ),
    limit=1,
    after="K1",
)
@given(
    stream=st.one_of(streams(late=True), streams(retype=True, late=True), streams()),
    limit=st.sampled_from([None, 0, 1, 3]),
    # Ids are C0, C1, ... and K1, K2, ...: "C10" comes before "C2" in code point order.
    after=st.sampled_from([None, "C1", "C2", "K1", "K10"]),
)
async def test_every_report_equals_the_straightforward_one(
    store: PostgresEventStore, stream: Stream, limit: int | None, after: str | None
) -> None:
    """The fast reports read aggregates and round in SQL (`projections.reports`); the reference
    reads every invoice and contract line into Python. Every field of every report, for every
    as-of date, must be the same string; a page (`limit`, `after`) of a report's list is the
    same page of the reference's whole list, with the same totals; and so are the pages of AR
    aging's invoices that follow by `invoices_next`."""
    tenant = new_tenant()
    await append(store, tenant, stream.events)
    async with store.connection() as conn:
        await catch_up_tenant(store, conn, tenant)
        for as_of in stream.as_of:
            for kind in KINDS:
                cursor = after if kind in PAGED else None
                fast = await report(conn, kind, tenant, as_of, limit=limit, after=cursor)
                straightforward = await reference_report(
                    conn, kind, tenant, as_of, limit=limit, after=cursor
                )
                assert fast == straightforward, (kind, as_of)
                # AR aging's invoices, page after page by the answer's cursor.
                pages = 0
                while kind == "ar-aging" and fast["invoices_next"] is not None and pages < 4:
                    following = fast["invoices_next"]
                    fast = await report(
                        conn, kind, tenant, as_of, limit=limit, invoices_after=following
                    )
                    straightforward = await reference_report(
                        conn, kind, tenant, as_of, limit=limit, invoices_after=following
                    )
                    assert fast == straightforward, (kind, as_of, following)
                    pages += 1


# --- 9: the append rules' reference state derives again from the events -------------------------


examples_refs = 100


@property_settings(examples_refs)
@given(stream=st.one_of(streams(late=True), streams(retype=True), streams()))
async def test_the_reference_state_derives_again_from_the_events(
    store: PostgresEventStore, stream: Stream
) -> None:
    """`ledger_refs`, kept by the appends, is what `ledger refs verify` derives from the stored
    events alone (every rule path the strategy walks: allocations explicit and oldest due first,
    refunds reopening invoices, credit notes, write-offs, voids, amended and cancelled contracts,
    satisfied obligations); and a rebuild of a state that agrees changes nothing."""
    tenant = new_tenant()
    await append(store, tenant, stream.events)
    async with store.connection() as conn:
        found = await derive(conn, tenant, rebuild=False)
        assert found["ok"], found
        assert found["events"] == len(stream.events)
        rebuilt = await derive(conn, tenant, rebuild=True)
        assert rebuilt["ok"] and rebuilt["rebuilt"] is False


# --- 10: KPI states from kept parts are the states read whole ------------------------------------


examples_kpi_parts = 60


@property_settings(examples_kpi_parts)
@given(
    stream=st.one_of(streams(late=True), streams(retype=True), streams()),
    slices=st.lists(st.integers(1, 6), min_size=1, max_size=10),
)
async def test_kpi_states_from_kept_parts_are_the_states_read_whole(
    store: PostgresEventStore, stream: Stream, slices: list[int]
) -> None:
    """The worker's publisher reuses the KPI report's parts that no batch changed (`KpiParts`):
    after every batch of the drawn sizes, applied by the real writer, the state with the kept parts
    is, to the character, the state read whole, for each as-of date of the stream."""
    tenant = new_tenant()
    await append(store, tenant, stream.events)
    projected = [
        ProjectedEvent.from_recorded(event) for event in await store.read(tenant, 1, read_limit_max)
    ]
    parts = {as_of: KpiParts() for as_of in stream.as_of}
    bounds = sorted({0, len(projected), *itertools.accumulate(slices)})
    bounds = [bound for bound in bounds if bound <= len(projected)]
    async with store.connection() as writer_conn, store.connection() as conn:
        for start, end in itertools.pairwise(bounds):
            writer = ProjectionWriter(writer_conn, all_projectors())
            await writer.apply(projected[start:end])
            for as_of, kept in parts.items():
                if tenant in writer.touched:
                    kept.note(tenant, writer.touched[tenant])
                cached = await report(conn, "kpi", tenant, as_of, kpi_cache=kept.cache(tenant))
                assert cached == await report(conn, "kpi", tenant, as_of), (as_of, end)
