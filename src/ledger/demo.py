"""The demo stream behind `ledger up --demo`: a few software companies doing business in simulated
time, so that every read model (general ledger, AR aging, deferred revenue, MRR, KPIs) moves.

Two layers, as everywhere in ledger:

- `DemoWorld` is pure and deterministic: a seeded `random.Random` per tenant, no clock, no I/O.
  `events_for_day(day)` returns the CloudEvents of one simulated day, days one after another from
  the world's start. Each tenant's world keeps what the write side will check (customers, live
  contracts and their lines, each invoice's open amount, expenses, duplicate payments) and emits
  only events the ledger accepts: payments within open amounts, oldest-due-first payments mirrored
  exactly as `ledger.decide` applies them, amendments and cancellations inside the term and after
  the last change, credit notes within what is left to credit, and so on.
- `run_demo` is the thin runner: it appends a quick history up to today, then one simulated day
  every `seconds_per_day`, its events spread over that interval, until `stop` is set.

Event ids are `demo-s<seed>-d<day>-<sequence>`: unique within a tenant, and the same for the same
seed and start, so appending a day twice answers "duplicate" instead of doubling it. On a restart
`run_demo` reads its world back from the store instead of from its arguments: the seed and the
start date from the first stored demo event of each tenant, and the newest stored demo day from the
end of each tenant's stream. It regenerates the days before that without appending them (pure and
quick), appends the newest stored day again (duplicates, plus whatever a crash left unappended),
and carries on. Days before today go in large batches; from today on at the live pace. Simulated
time does not wait for the wall clock: after an hour at the default pace the demo is about 6.5
years ahead, which the reports handle like any other date.

What the companies do, each month, with the rates named below: new customers sign 12-month
contracts (a ratable recurring subscription, often with a point-in-time onboarding line satisfied
weeks later), billed monthly or annually in advance; on anniversaries some upgrade or downgrade
(amendments), some cancel, at the end of the term most renew and some churn; churned customers
sometimes come back. Invoices are paid on time, late, or in two parts; a few customers stop paying,
are cancelled, and written off months later. Now and then a service credit (credit note), a wrong
invoice voided and reissued, a duplicate payment refunded. Expenses (rent, payroll, hosting,
software, travel, ...) are recorded with due dates and paid around them; a loan is repaid monthly
through journal entries.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import partial
from typing import Any, Literal

from ledger.contract import type_name
from ledger.errors import RejectionCode, StoreError, invariant
from ledger.money import minor_digits
from ledger.service import AppendReport, LedgerService
from ledger.store import EventStore, read_limit_max

logger = logging.getLogger(__name__)

Event = dict[str, Any]
zero = Decimal(0)
one_day = timedelta(days=1)

# --- the runner's pace and sizes --------------------------------------------------------------

seed_default = 2026
# Six months of history: long enough for receivables to reach every aging bucket (over 120 days
# past due included) and for MRR to show half a year of movements; ~10k events, a few seconds.
history_days_default = 180
# One simulated day every 1.5 s: a month passes in 45 s, so month-to-date figures, MRR movements
# and aging visibly change while someone watches, and the KPIs update several times a second.
seconds_per_day_default = 1.5
# A live day's events go in at most this many appends, evenly spaced over the day's interval: the
# dashboard moves within a day, without one transaction per event.
live_appends_per_day_max = 6
# Events per append while catching up (history): one transaction of tens of milliseconds, far
# below the store's `append_batch_events_max`, so the API sharing the database stays responsive.
history_batch_events = 1000
# Yield to the event loop every this many generated days: `ledger up` runs the API, relay and
# gateway in the same loop, and a day costs 2-25 ms to generate (more customers, more work), so
# regenerating a long-running demo on restart takes seconds to a minute; the loop is never held
# for longer than a day's worth.
regenerate_yield_days = 1
# A store outage is retried from this wait, doubling up to the maximum: quick after a blip, one
# line in the log every half minute during a long outage.
retry_initial_s = 0.5
retry_max_s = 30.0
# Finding the newest stored demo event: read the tenant's events among the last this many
# positions, four times as many until one is found (other tenants' events may be interleaved).
resume_scan_window_events = 5000
resume_scan_growth = 4

# --- how the companies behave -------------------------------------------------------------------

# Every contract runs a year: the common SaaS commitment, and MRR = amount / 12 months.
contract_months = 12
# Business hours of the simulated day: the first event at 08:00, then one every 20 s.
day_first_event_s = 8 * 3600
event_spacing_s = 20
# Customers by how they pay (shares of new customers): most on time, a fifth late, some in parts.
behaviour_weights: dict[str, int] = {"prompt": 68, "late": 22, "partial": 10}
# Share of customers who pay without naming invoices (the ledger applies oldest due first).
auto_allocation_share = 0.3
# A prompt payer still pays this share of invoices late.
prompt_late_probability = 0.1
# Per invoice issued: the customer stops paying from now on (dunning, cancellation, write-off).
delinquency_probability = 0.004
dunning_cancel_days_past_due = (45, 75)
write_off_days_past_due = (100, 170)
# Per contract anniversary (a monthly one for monthly billing): cancel (monthly billing only),
# upgrade or downgrade (an amendment from that day on).
cancel_probability = 0.015
upgrade_probability = 0.04
downgrade_probability = 0.015
# At the end of the term: renew (a new contract from the same day), sometimes at a higher price.
renewal_probability = 0.85
renewal_uplift_probability = 0.5
renewal_uplift_max = Decimal("0.07")
# Share of new contracts with an onboarding line (point in time), its fee in monthly prices, and
# when the onboarding is done (days after the start).
onboarding_share = 0.5
onboarding_fee_months = 2
onboarding_done_days = (7, 45)
# Per invoice: a service credit (credit note) for this share of it, some days after issue.
service_credit_probability = 0.02
service_credit_share = (Decimal("0.05"), Decimal("0.25"))
# Per payment: the customer pays twice by mistake (unapplied cash), refunded some days later.
duplicate_payment_probability = 0.01
refund_days = (3, 15)
# Per day: a one-off professional services invoice; some are wrong, voided and issued again.
services_per_day = 0.2
services_hours = (4, 40)
services_void_share = 0.15
# Per day: a churned customer comes back (reactivation); the pool of candidates is bounded.
winback_per_day = 0.03
winback_pool_max = 50
# Per day: an expense outside the monthly ones (travel, marketing, legal, office).
one_off_expense_per_day = 0.3
# Expenses are paid this many days around their due date; large ones sometimes in two parts.
expense_payment_days = (-3, 10)
expense_split_probability = 0.1
# A ceiling on live contracts per tenant: new signups pause there, so a demo left running for
# days keeps a steady event rate and memory (churn alone keeps most tenants well below it).
live_contracts_max = 800

# --- the companies ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    monthly_price: Decimal
    weight: int  # relative share of new customers
    segment: str


@dataclass(frozen=True, slots=True)
class RecurringCost:
    """A monthly bill: a fixed part plus a share of the tenant's MRR (payroll and hosting grow with
    the business)."""

    vendor: str
    category: str
    day_of_month: int
    fixed_amount: Decimal
    mrr_share: Decimal
    terms_days: int
    taxed: bool


@dataclass(frozen=True, slots=True)
class OneOffCost:
    vendor: str
    category: str
    typical_amount: Decimal


@dataclass(frozen=True, slots=True)
class TenantProfile:
    tenant: str
    currency: str
    plans: tuple[Plan, ...]
    tax_rate: Decimal
    # "net" = issue date + payment_terms_days; "end_of_next_month" is the Japanese 月末締め翌月末払い.
    terms: Literal["net", "end_of_next_month"]
    payment_terms_days: int
    annual_billing_share: float
    initial_customers: int  # signed over the first month
    new_customers_per_month: float
    services_hourly_rate: Decimal
    opening_equity: Decimal
    loan_amount: Decimal
    loan_months: int
    loan_annual_rate: Decimal
    recurring_costs: tuple[RecurringCost, ...]
    one_off_costs: tuple[OneOffCost, ...]
    company_suffixes: tuple[str, ...]

    def due_date(self, issue: date) -> date:
        if self.terms == "end_of_next_month":
            return _month_end(add_months(issue.replace(day=1), 1))
        return issue + timedelta(days=self.payment_terms_days)


def _costs(scale: Decimal, taxed: bool) -> tuple[tuple[RecurringCost, ...], tuple[OneOffCost, ...]]:
    """Costs of a small software company in US dollars, scaled to a tenant's currency."""
    recurring = (
        RecurringCost("Harbor Street Properties", "rent", 1, 5000 * scale, zero, 0, taxed),
        RecurringCost("Payroll", "payroll", 25, 12000 * scale, Decimal("0.30"), 0, False),
        RecurringCost("Nimbus Cloud", "hosting", 3, 1000 * scale, Decimal("0.08"), 15, taxed),
        RecurringCost("Stackware Tools", "software", 10, 800 * scale, Decimal("0.02"), 30, taxed),
    )
    one_off = (
        OneOffCost("Skyways Travel", "travel", 800 * scale),
        OneOffCost("Brightline Ads", "marketing", 2500 * scale),
        OneOffCost("Morgan & Pike", "legal", 1800 * scale),
        OneOffCost("Paper Trail Supplies", "office", 250 * scale),
    )
    return recurring, one_off


_usd_costs = _costs(Decimal(1), taxed=False)
_eur_costs = _costs(Decimal(1), taxed=True)
_jpy_costs = _costs(Decimal(150), taxed=True)

tenant_profiles: tuple[TenantProfile, ...] = (
    TenantProfile(
        tenant="acme",
        currency="USD",
        plans=(
            Plan("Starter", Decimal(49), 40, "smb"),
            Plan("Team", Decimal(199), 35, "smb"),
            Plan("Business", Decimal(799), 20, "mid-market"),
            Plan("Enterprise", Decimal(2500), 5, "enterprise"),
        ),
        tax_rate=zero,  # sold from a state without sales tax on software
        terms="net",
        payment_terms_days=30,
        annual_billing_share=0.3,
        initial_customers=40,
        new_customers_per_month=9,
        services_hourly_rate=Decimal(180),
        opening_equity=Decimal(300000),
        loan_amount=Decimal(100000),
        loan_months=36,
        loan_annual_rate=Decimal("0.06"),
        recurring_costs=_usd_costs[0],
        one_off_costs=_usd_costs[1],
        company_suffixes=("Inc.", "LLC", "Corp.", "Labs"),
    ),
    TenantProfile(
        tenant="globex",
        currency="EUR",
        plans=(
            Plan("Basic", Decimal(39), 40, "smb"),
            Plan("Professional", Decimal(149), 35, "smb"),
            Plan("Business", Decimal(590), 20, "mid-market"),
            Plan("Corporate", Decimal(1900), 5, "enterprise"),
        ),
        tax_rate=Decimal("0.20"),  # VAT
        terms="net",
        payment_terms_days=14,
        annual_billing_share=0.5,
        initial_customers=30,
        new_customers_per_month=7,
        services_hourly_rate=Decimal(150),
        opening_equity=Decimal(250000),
        loan_amount=Decimal(80000),
        loan_months=48,
        loan_annual_rate=Decimal("0.045"),
        recurring_costs=_eur_costs[0],
        one_off_costs=_eur_costs[1],
        company_suffixes=("GmbH", "B.V.", "S.A.", "AG"),
    ),
    TenantProfile(
        tenant="initech",
        currency="JPY",  # no minor unit: every amount is a whole yen
        plans=(
            Plan("Light", Decimal(4980), 40, "smb"),
            Plan("Standard", Decimal(19800), 35, "smb"),
            Plan("Pro", Decimal(59800), 20, "mid-market"),
            Plan("Enterprise", Decimal(198000), 5, "enterprise"),
        ),
        tax_rate=Decimal("0.10"),  # consumption tax
        terms="end_of_next_month",
        payment_terms_days=0,
        annual_billing_share=0.2,
        initial_customers=35,
        new_customers_per_month=8,
        services_hourly_rate=Decimal(20000),
        opening_equity=Decimal(40000000),
        loan_amount=Decimal(15000000),
        loan_months=60,
        loan_annual_rate=Decimal("0.015"),
        recurring_costs=_jpy_costs[0],
        one_off_costs=_jpy_costs[1],
        company_suffixes=("K.K.", "G.K.", "Holdings"),
    ),
)
# The demo's tenants, for `ledger up --demo` to print a token for each.
demo_tenants: tuple[str, ...] = tuple(profile.tenant for profile in tenant_profiles)

_name_first = (
    "Blue", "North", "Bright", "Silver", "Red", "Green", "Iron", "Summit", "Harbor", "Pioneer",
    "Cedar", "Atlas", "Nova", "Orbit", "Quartz", "Maple", "Falcon", "Vertex", "Lumen", "Granite",
)  # fmt: skip
_name_second = (
    "River", "Peak", "Field", "Stone", "Bridge", "Lake", "Wave", "Forge", "Grove", "Point",
    "Path", "Ridge", "Works", "Logistics", "Analytics", "Foods", "Health", "Studios", "Robotics",
)  # fmt: skip

# --- dates ----------------------------------------------------------------------------------------


def add_months(day: date, months: int) -> date:
    """The same day `months` later, on the month's last day when it is shorter (Jan 31 -> Feb 28)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


# --- one tenant's world ---------------------------------------------------------------------------

_id_pattern = re.compile(r"^demo-s([0-9]+)-d([0-9]+)-[0-9]+$")


def demo_event_id(seed: int, day_index: int, sequence: int) -> str:
    return f"demo-s{seed}-d{day_index:05d}-{sequence:04d}"


def parse_demo_event_id(event_id: str) -> tuple[int, int] | None:
    """(seed, day index) of a demo event id; None for any other id."""
    match = _id_pattern.match(event_id)
    return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(slots=True)
class _Customer:
    customer_id: str
    behaviour: str
    auto_allocation: bool
    delinquent: bool = False
    # Lists, not sets: a set of strings iterates in a per-process order (hash randomisation).
    contracts: list[str] = field(default_factory=list)  # live ones
    invoices: list[str] = field(default_factory=list)  # open ones, in the order issued


@dataclass(slots=True)
class _Contract:
    contract_id: str
    customer_id: str
    start: date
    end: date
    plan: int
    price: Decimal  # the monthly price now
    billing: Literal["monthly", "annual"]
    subscription_amount: Decimal  # the subscription line's total over the term
    onboarding_amount: Decimal | None
    value_before: Decimal = zero  # what the months before the current anniversary are worth
    last_change: date = date.min


@dataclass(slots=True)
class _Invoice:
    customer_id: str
    issue_date: date
    due_date: date
    total: Decimal
    sequence: int  # the order issued: the ledger's tie-break between equal due dates
    paid: Decimal = zero
    credited: Decimal = zero
    credit_notes_total: Decimal = zero
    written_off: Decimal = zero
    voided: bool = False

    @property
    def open_amount(self) -> Decimal:
        if self.voided:
            return zero
        return self.total - self.paid - self.credited - self.written_off


Action = Callable[[date], None]


class _TenantWorld:
    """One tenant's business, day by day. Every `emit` is an event the ledger accepts, because
    the state here follows the same rules `ledger.decide` checks."""

    def __init__(self, profile: TenantProfile, seed: int, start: date) -> None:
        self.profile = profile
        self.seed = seed
        self.start = start
        self.rng = random.Random(f"ledger-demo:{seed}:{profile.tenant}")
        self.unit = Decimal(1).scaleb(-minor_digits(profile.currency))
        self.customers: dict[str, _Customer] = {}
        self.contracts: dict[str, _Contract] = {}  # live ones: signed, not cancelled, not ended
        self.invoices: dict[str, _Invoice] = {}
        self.expenses: dict[str, Decimal] = {}  # expense_id -> open amount
        self.agenda: dict[date, list[Action]] = {}
        self.winback_pool: list[str] = []
        self.loan_balance = zero
        self.counters: dict[str, int] = {}
        self.events: list[Event] = []
        self.day_index = 0

    # --- plumbing ---------------------------------------------------------------------------

    def next_id(self, prefix: str, width: int = 5) -> str:
        number = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = number
        return f"{prefix}-{number:0{width}d}"

    def money(self, amount: Decimal) -> str:
        """An amount as the contract wants it; every amount is rounded before it gets here, so
        invoice totals add up to the minor unit."""
        text = amount.quantize(self.unit)
        invariant(text == amount, f"{amount} has more digits than {self.profile.currency} allows")
        return f"{text:f}"

    def round(self, amount: Decimal, rounding: str = ROUND_HALF_UP) -> Decimal:
        return amount.quantize(self.unit, rounding=rounding)

    def between(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def schedule(self, day: date, action: Action) -> None:
        self.agenda.setdefault(day, []).append(action)

    def emit(self, kind: str, source: str, day: date, data: dict[str, Any]) -> None:
        sequence = len(self.events)
        seconds = min(day_first_event_s + sequence * event_spacing_s, 86399)
        moment = datetime.combine(day, datetime.min.time()) + timedelta(seconds=seconds)
        self.events.append(
            {
                "specversion": "1.0",
                "id": demo_event_id(self.seed, self.day_index, sequence),
                "source": f"ledger-demo/{source}",
                "type": type_name(kind),
                "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "tenantid": self.profile.tenant,
                "data": data,
            }
        )

    def money_event(self, kind: str, source: str, day: date, data: dict[str, Any]) -> None:
        self.emit(kind, source, day, {**data, "currency": self.profile.currency})

    # --- one day ----------------------------------------------------------------------------

    def events_for_day(self, day: date) -> list[Event]:
        self.events = []
        self.day_index = (day - self.start).days
        if day == self.start:
            self.open_books(day)
        self.run_agenda(day)
        self.new_customers(day)
        if self.rng.random() < winback_per_day:
            self.win_back(day)
        if self.rng.random() < services_per_day:
            self.services_invoice(day)
        self.expenses_of_day(day)
        self.run_agenda(day)  # what the day's own events scheduled for the same day
        if day.day == 1:
            self.forget_former_customers()
        return self.events

    def run_agenda(self, day: date) -> None:
        while actions := self.agenda.pop(day, None):
            for action in actions:
                action(day)

    def forget_former_customers(self) -> None:
        """Keep memory flat on a long run: a customer with no contract, nothing open and no chance
        of a win-back is of no further use to the generator."""
        for customer_id in [
            customer.customer_id
            for customer in self.customers.values()
            if not customer.contracts
            and not customer.invoices
            and customer.customer_id not in self.winback_pool
        ]:
            del self.customers[customer_id]

    def open_books(self, day: date) -> None:
        profile = self.profile
        self.loan_balance = profile.loan_amount
        self.journal(
            day,
            "Opening balances: share capital and a bank loan",
            [
                ("cash", profile.opening_equity + profile.loan_amount, None),
                ("equity", None, profile.opening_equity),
                ("loan_payable", None, profile.loan_amount),
            ],
        )
        # The first customers arrive over the first month, not all on one day.
        for _ in range(profile.initial_customers):
            self.schedule(day + timedelta(days=self.between(0, 29)), self.sign_new_customer)
        for month in range(1, profile.loan_months + 1):
            self.schedule(add_months(day, month), self.repay_loan)

    def journal(
        self, day: date, memo: str, lines: list[tuple[str, Decimal | None, Decimal | None]]
    ) -> None:
        self.money_event(
            "journal.posted",
            "accounting",
            day,
            {
                "entry_id": self.next_id("JE", 4),
                "date": day.isoformat(),
                "memo": memo,
                "lines": [
                    {"account": account, "debit": self.money(debit)}
                    if debit is not None
                    else {"account": account, "credit": self.money(credit or zero)}
                    for account, debit, credit in lines
                ],
            },
        )

    def repay_loan(self, day: date) -> None:
        profile = self.profile
        if self.loan_balance <= 0:
            return
        interest = self.round(self.loan_balance * profile.loan_annual_rate / 12)
        principal = min(self.loan_balance, self.round(profile.loan_amount / profile.loan_months))
        self.loan_balance -= principal
        self.journal(
            day,
            "Loan repayment",
            [
                ("loan_payable", principal, None),
                ("expense:interest", interest, None),
                ("cash", None, principal + interest),
            ],
        )

    # --- customers and contracts ------------------------------------------------------------

    def mrr(self) -> Decimal:
        return sum((contract.price for contract in self.contracts.values()), zero)

    def new_customers(self, day: date) -> None:
        # Bernoulli trials whose expected sum is the monthly rate / 30: a Poisson-like arrival.
        expected = self.profile.new_customers_per_month / 30
        while expected > 0:
            if self.rng.random() < min(expected, 1.0):
                self.sign_new_customer(day)
            expected -= 1

    def sign_new_customer(self, day: date) -> None:
        if len(self.contracts) >= live_contracts_max:
            return
        profile = self.profile
        plan = self.rng.choices(range(len(profile.plans)), [p.weight for p in profile.plans])[0]
        behaviour = self.rng.choices(list(behaviour_weights), list(behaviour_weights.values()))[0]
        customer = _Customer(
            self.next_id("CUS"), behaviour, self.rng.random() < auto_allocation_share
        )
        self.customers[customer.customer_id] = customer
        name = (
            f"{self.rng.choice(_name_first)} {self.rng.choice(_name_second)} "
            f"{self.rng.choice(profile.company_suffixes)}"
        )
        self.emit(
            "customer.registered",
            "crm",
            day,
            {
                "customer_id": customer.customer_id,
                "name": name,
                "segment": profile.plans[plan].segment,
            },
        )
        billing: Literal["monthly", "annual"] = (
            "annual" if self.rng.random() < profile.annual_billing_share else "monthly"
        )
        with_onboarding = self.rng.random() < onboarding_share
        self.sign(customer, day, plan, profile.plans[plan].monthly_price, billing, with_onboarding)

    def win_back(self, day: date) -> None:
        while self.winback_pool:
            customer = self.customers.get(self.winback_pool.pop(0))
            if customer is None or customer.delinquent or customer.contracts:
                continue
            plan = self.rng.randrange(len(self.profile.plans))
            price = self.profile.plans[plan].monthly_price
            self.sign(customer, day, plan, price, "monthly", with_onboarding=False)
            return

    def lines(self, contract: _Contract) -> list[dict[str, Any]]:
        plan = self.profile.plans[contract.plan]
        lines = [
            {
                "line_id": "SUB",
                "description": f"{plan.name} plan subscription, {contract_months} months",
                "amount": self.money(contract.subscription_amount),
                "recognition": "ratable",
                "recurring": True,
            }
        ]
        if contract.onboarding_amount is not None:
            lines.append(
                {
                    "line_id": "ONB",
                    "description": "Onboarding and data migration",
                    "amount": self.money(contract.onboarding_amount),
                    "recognition": "point_in_time",
                    "recurring": False,
                }
            )
        return lines

    def sign(
        self,
        customer: _Customer,
        day: date,
        plan: int,
        price: Decimal,
        billing: Literal["monthly", "annual"],
        with_onboarding: bool,
    ) -> None:
        contract = _Contract(
            contract_id=self.next_id("CTR"),
            customer_id=customer.customer_id,
            start=day,
            end=add_months(day, contract_months),
            plan=plan,
            price=price,
            billing=billing,
            subscription_amount=price * contract_months,
            onboarding_amount=price * onboarding_fee_months if with_onboarding else None,
            last_change=day,
        )
        self.contracts[contract.contract_id] = contract
        customer.contracts.append(contract.contract_id)
        self.money_event(
            "contract.signed",
            "crm",
            day,
            {
                "contract_id": contract.contract_id,
                "customer_id": customer.customer_id,
                "start_date": contract.start.isoformat(),
                "end_date": contract.end.isoformat(),
                "lines": self.lines(contract),
            },
        )
        if with_onboarding:
            done = day + timedelta(days=self.between(*onboarding_done_days))
            self.schedule(done, partial(self.satisfy_onboarding, contract.contract_id))
        self.anniversary(contract.contract_id, 0, day)

    def satisfy_onboarding(self, contract_id: str, day: date) -> None:
        contract = self.contracts.get(contract_id)
        # Cancelled (the ledger refuses obligations of cancelled contracts): stays deferred.
        if contract is None or contract.onboarding_amount is None:
            return
        self.emit(
            "obligation.satisfied",
            "crm",
            day,
            {"contract_id": contract_id, "line_id": "ONB", "date": day.isoformat()},
        )

    def anniversary(self, contract_id: str, month: int, day: date) -> None:
        """Month `month` of a contract begins: end of term, or a change, then the month's bill."""
        contract = self.contracts.get(contract_id)
        if contract is None:  # cancelled
            return
        customer = self.customers[contract.customer_id]
        if month == contract_months:
            self.end_of_term(contract, customer, day)
            return
        if month > 0 and not customer.delinquent:
            roll = self.rng.random()
            monthly = contract.billing == "monthly"
            if roll < cancel_probability and monthly:
                self.cancel(contract, customer, day)
                return
            roll -= cancel_probability
            if roll < upgrade_probability:
                self.change_plan(contract, customer, day, month, upgrade=True)
            elif roll < upgrade_probability + downgrade_probability and monthly:
                # Annual contracts are paid up front: a downgrade waits for the renewal.
                self.change_plan(contract, customer, day, month, upgrade=False)
        if contract.billing == "monthly" or month == 0:
            self.bill(contract, customer, month, day)
        contract.value_before += contract.price
        self.schedule(
            add_months(contract.start, month + 1), partial(self.anniversary, contract_id, month + 1)
        )

    def end_of_term(self, contract: _Contract, customer: _Customer, day: date) -> None:
        del self.contracts[contract.contract_id]
        customer.contracts.remove(contract.contract_id)
        if not customer.delinquent and self.rng.random() < renewal_probability:
            price = contract.price
            if self.rng.random() < renewal_uplift_probability:
                uplift = Decimal(self.rng.uniform(0, float(renewal_uplift_max)))
                price = (price * (1 + uplift)).quantize(Decimal(1))
            self.sign(customer, day, contract.plan, price, contract.billing, with_onboarding=False)
        elif not customer.contracts:
            self.churned(customer)

    def churned(self, customer: _Customer) -> None:
        if customer.delinquent:
            return
        self.winback_pool.append(customer.customer_id)
        if len(self.winback_pool) > winback_pool_max:
            self.winback_pool.pop(0)

    def cancel(self, contract: _Contract, customer: _Customer, day: date) -> None:
        self.emit(
            "contract.cancelled",
            "crm",
            day,
            {"contract_id": contract.contract_id, "effective_date": day.isoformat()},
        )
        del self.contracts[contract.contract_id]
        customer.contracts.remove(contract.contract_id)
        if not customer.contracts:
            self.churned(customer)

    def changed_price(self, contract: _Contract, upgrade: bool) -> tuple[int, Decimal]:
        """The plan and monthly price after an upgrade (next plan, or more seats on the top one)
        or a downgrade (previous plan, or fewer seats on the first one)."""
        plans = self.profile.plans
        if upgrade and contract.plan + 1 < len(plans):
            return contract.plan + 1, plans[contract.plan + 1].monthly_price
        if not upgrade and contract.plan > 0:
            return contract.plan - 1, plans[contract.plan - 1].monthly_price
        seats = Decimal(self.rng.randint(10, 50)) / 100
        factor = 1 + seats if upgrade else 1 - seats / 2
        return contract.plan, (contract.price * factor).quantize(Decimal(1))

    def change_plan(
        self, contract: _Contract, customer: _Customer, day: date, month: int, upgrade: bool
    ) -> None:
        plan, price = self.changed_price(contract, upgrade)
        if price <= 0 or price == contract.price:
            return
        before = contract.subscription_amount
        # The line's amount is its total over the whole term: the months so far at what they were
        # worth, the rest at the new price (DESIGN section 6: amendments are prospective).
        contract.plan, contract.price = plan, price
        contract.subscription_amount = contract.value_before + price * (contract_months - month)
        contract.last_change = day
        self.money_event(
            "contract.amended",
            "crm",
            day,
            {
                "contract_id": contract.contract_id,
                "effective_date": day.isoformat(),
                "lines": self.lines(contract),
            },
        )
        if contract.billing == "annual" and contract.subscription_amount > before:
            # Paid up front: the upgrade's rest of the term is billed now, pro rata.
            true_up = contract.subscription_amount - before
            description = f"Upgrade to {self.profile.plans[plan].name}, {day} to {contract.end}"
            self.issue_invoice(customer, day, [(description, true_up, "SUB")], contract.contract_id)

    # --- receivables ------------------------------------------------------------------------

    def bill(self, contract: _Contract, customer: _Customer, month: int, day: date) -> None:
        plan = self.profile.plans[contract.plan]
        if contract.billing == "annual":
            amount, period_end = contract.subscription_amount, contract.end
        else:
            amount, period_end = contract.price, add_months(contract.start, month + 1)
        items: list[tuple[str, Decimal, str | None]] = [
            (f"{plan.name} plan, {day} to {period_end - one_day}", amount, "SUB")
        ]
        if month == 0 and contract.onboarding_amount is not None:
            items.append(("Onboarding and data migration", contract.onboarding_amount, "ONB"))
        self.issue_invoice(customer, day, items, contract.contract_id)

    def issue_invoice(
        self,
        customer: _Customer,
        day: date,
        items: list[tuple[str, Decimal, str | None]],
        contract_id: str | None,
        *,
        collect: bool = True,
    ) -> str:
        lines = []
        total = zero
        for description, amount, line_id in items:
            line: dict[str, Any] = {"description": description, "amount": self.money(amount)}
            total += self.round(amount)
            if self.profile.tax_rate:
                tax = self.round(amount * self.profile.tax_rate)
                line["tax_amount"] = self.money(tax)
                total += tax
            if line_id is not None:
                line["line_id"] = line_id
            lines.append(line)
        invoice_id = self.next_id("INV", 6)
        due = self.profile.due_date(day)
        data: dict[str, Any] = {
            "invoice_id": invoice_id,
            "customer_id": customer.customer_id,
            "issue_date": day.isoformat(),
            "due_date": due.isoformat(),
            "lines": lines,
            "total": self.money(total),
        }
        if contract_id is not None:
            data["contract_id"] = contract_id
        self.money_event("invoice.issued", "billing", day, data)
        sequence = self.counters["INV"]
        self.invoices[invoice_id] = _Invoice(customer.customer_id, day, due, total, sequence)
        customer.invoices.append(invoice_id)
        if collect:
            self.plan_collection(invoice_id, customer)
        return invoice_id

    def settle(self, invoice_id: str) -> None:
        """Forget an invoice once nothing is open on it: no later event of the demo needs it."""
        invoice = self.invoices.get(invoice_id)
        if invoice is not None and invoice.open_amount <= 0:
            del self.invoices[invoice_id]
            customer = self.customers.get(invoice.customer_id)
            if customer is not None:
                customer.invoices.remove(invoice_id)

    def plan_collection(self, invoice_id: str, customer: _Customer) -> None:
        """Decide now how this invoice will be paid (or not), and put it on the agenda."""
        invoice = self.invoices[invoice_id]
        due = invoice.due_date
        if not customer.delinquent and self.rng.random() < delinquency_probability:
            customer.delinquent = True
            dunning = due + timedelta(days=self.between(*dunning_cancel_days_past_due))
            write_off = due + timedelta(days=self.between(*write_off_days_past_due))
            self.schedule(dunning, partial(self.dunning, customer.customer_id))
            self.schedule(write_off, partial(self.write_off_customer, customer.customer_id))
        if self.rng.random() < service_credit_probability:
            credit_day = invoice.issue_date + timedelta(days=self.between(2, 20))
            self.schedule(credit_day, partial(self.service_credit, invoice_id))
        if customer.delinquent:
            return
        behaviour = customer.behaviour
        if behaviour == "prompt" and self.rng.random() < prompt_late_probability:
            behaviour = "late"
        payments: list[tuple[int, Decimal | None]]  # (days from the due date, share or all open)
        if behaviour == "prompt":
            payments = [(-self.between(0, 20), None)]
        elif behaviour == "late":
            payments = [(self.between(3, 80), None)]
        else:
            payments = [(self.between(-5, 10), Decimal("0.5")), (self.between(20, 60), None)]
        earliest = invoice.issue_date + one_day
        remaining = invoice.total
        for days, share in payments:
            pay_day = max(due + timedelta(days=days), earliest)
            if customer.auto_allocation:
                # Paid on account: the invoice's amount, applied by the ledger oldest due first,
                # so it may settle an older invoice; each invoice's amount is paid once either way.
                planned = remaining if share is None else self.round(remaining * share, ROUND_DOWN)
                remaining -= planned
                self.schedule(pay_day, partial(self.pay_on_account, customer.customer_id, planned))
            else:
                self.schedule(pay_day, partial(self.collect, invoice_id, share))
            earliest = pay_day + one_day

    def auto_allocations(
        self, customer: _Customer, amount: Decimal, day: date
    ) -> list[tuple[str, Decimal]]:
        """What the ledger does with a payment that names no invoice (`ledger.decide`): open
        invoices issued by the payment's date, oldest due date first, then oldest issued."""
        candidates = sorted(
            (invoice.due_date, invoice.sequence, invoice_id)
            for invoice_id in customer.invoices
            if (invoice := self.invoices[invoice_id]).open_amount > 0 and invoice.issue_date <= day
        )
        allocations = []
        for _due, _sequence, invoice_id in candidates:
            if amount <= 0:
                break
            applied = min(amount, self.invoices[invoice_id].open_amount)
            allocations.append((invoice_id, applied))
            amount -= applied
        return allocations

    def collect(self, invoice_id: str, share: Decimal | None, day: date) -> None:
        """A payment that names its invoice: all that is open on it, or a share."""
        invoice = self.invoices.get(invoice_id)
        if invoice is None:  # settled already (credited in full)
            return
        customer = self.customers[invoice.customer_id]
        if customer.delinquent:
            return
        open_amount = invoice.open_amount
        amount = open_amount if share is None else self.round(open_amount * share, ROUND_DOWN)
        allocation = {"invoice_id": invoice_id, "amount": self.money(amount)}
        self.receive(customer, day, [(invoice_id, amount)], {"allocations": [allocation]})

    def pay_on_account(self, customer_id: str, planned: Decimal, day: date) -> None:
        """A payment that names no invoice, never more than the customer has open (the rest of
        a planned amount was credited): no unapplied cash by accident."""
        customer = self.customers.get(customer_id)
        if customer is None or customer.delinquent:
            return
        self.receive(customer, day, self.auto_allocations(customer, planned, day), {})

    def receive(
        self,
        customer: _Customer,
        day: date,
        allocations: list[tuple[str, Decimal]],
        extra: dict[str, Any],
    ) -> None:
        amount = sum((applied for _, applied in allocations), zero)
        if amount <= 0:
            return
        data: dict[str, Any] = {
            "payment_id": self.next_id("PAY", 6),
            "customer_id": customer.customer_id,
            "date": day.isoformat(),
            "amount": self.money(amount),
            **extra,
        }
        self.money_event("payment.received", "bank", day, data)
        for invoice_id, applied in allocations:
            self.invoices[invoice_id].paid += applied
            self.settle(invoice_id)
        if self.rng.random() < duplicate_payment_probability:
            self.duplicate_payment(customer, amount, day)

    def duplicate_payment(self, customer: _Customer, amount: Decimal, day: date) -> None:
        """The customer pays the same amount twice: the second payment, applied to nothing, is
        unapplied cash (a customer credit) until it is refunded."""
        payment_id = self.next_id("PAY", 6)
        self.money_event(
            "payment.received",
            "bank",
            day,
            {
                "payment_id": payment_id,
                "customer_id": customer.customer_id,
                "date": day.isoformat(),
                "amount": self.money(amount),
                "allocations": [],
            },
        )
        refund_day = day + timedelta(days=self.between(*refund_days))
        self.schedule(refund_day, partial(self.refund, payment_id, amount))

    def refund(self, payment_id: str, amount: Decimal, day: date) -> None:
        # All of it comes out of the payment's unapplied cash: no invoice is reopened.
        self.money_event(
            "payment.refunded",
            "bank",
            day,
            {"payment_id": payment_id, "date": day.isoformat(), "amount": self.money(amount)},
        )

    def service_credit(self, invoice_id: str, day: date) -> None:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return
        low, high = service_credit_share
        share = low + (high - low) * Decimal(self.rng.random())
        creditable = invoice.total - invoice.credit_notes_total - invoice.written_off
        amount = min(self.round(invoice.total * share, ROUND_DOWN), creditable)
        if amount <= 0:
            return
        self.money_event(
            "credit_note.issued",
            "billing",
            day,
            {
                "credit_note_id": self.next_id("CN", 5),
                "invoice_id": invoice_id,
                "date": day.isoformat(),
                "amount": self.money(amount),
            },
        )
        # Beyond what is open the credit becomes customer credit (`ledger.decide`).
        invoice.credited += min(amount, invoice.open_amount)
        invoice.credit_notes_total += amount
        self.settle(invoice_id)

    def dunning(self, customer_id: str, day: date) -> None:
        """A customer who stopped paying loses service: every live contract is cancelled."""
        customer = self.customers.get(customer_id)
        if customer is None:
            return
        for contract_id in list(customer.contracts):
            contract = self.contracts[contract_id]
            if contract.last_change <= day < contract.end:
                self.cancel(contract, customer, day)

    def write_off_customer(self, customer_id: str, day: date) -> None:
        customer = self.customers.get(customer_id)
        if customer is None:
            return
        for invoice_id in list(customer.invoices):
            invoice = self.invoices[invoice_id]
            amount = invoice.open_amount
            if amount <= 0 or invoice.issue_date > day:
                continue
            self.money_event(
                "invoice.written_off",
                "billing",
                day,
                {"invoice_id": invoice_id, "date": day.isoformat(), "amount": self.money(amount)},
            )
            invoice.written_off += amount
            self.settle(invoice_id)

    def services_invoice(self, day: date) -> None:
        """Professional services billed by the hour; now and then the first invoice is wrong,
        voided straight away and issued again."""
        candidates = [
            customer
            for customer in self.customers.values()
            if customer.contracts and not customer.delinquent
        ]
        if not candidates:
            return
        customer = self.rng.choice(candidates)
        hours = self.between(*services_hours)
        rate = self.profile.services_hourly_rate
        if self.rng.random() < services_void_share:
            wrong_hours = hours + self.between(1, 10)
            wrong = self.issue_invoice(
                customer,
                day,
                [(f"Professional services, {wrong_hours} hours", rate * wrong_hours, None)],
                None,
                collect=False,
            )
            self.emit(
                "invoice.voided", "billing", day, {"invoice_id": wrong, "date": day.isoformat()}
            )
            self.invoices[wrong].voided = True
            self.settle(wrong)
        self.issue_invoice(
            customer, day, [(f"Professional services, {hours} hours", rate * hours, None)], None
        )

    # --- payables ---------------------------------------------------------------------------

    def expenses_of_day(self, day: date) -> None:
        last_day = calendar.monthrange(day.year, day.month)[1]
        for cost in self.profile.recurring_costs:
            if day.day == min(cost.day_of_month, last_day):
                amount = (cost.fixed_amount + cost.mrr_share * self.mrr()).quantize(Decimal(1))
                self.record_expense(
                    cost.vendor, cost.category, day, amount, cost.taxed, cost.terms_days
                )
        if self.rng.random() < one_off_expense_per_day:
            one_off = self.rng.choice(self.profile.one_off_costs)
            factor = Decimal(self.rng.randint(40, 180)) / 100
            amount = (one_off.typical_amount * factor).quantize(Decimal(1))
            taxed = bool(self.profile.tax_rate)
            self.record_expense(one_off.vendor, one_off.category, day, amount, taxed, 30)

    def record_expense(
        self, vendor: str, category: str, day: date, amount: Decimal, taxed: bool, terms_days: int
    ) -> None:
        expense_id = self.next_id("BILL", 5)
        due = day + timedelta(days=terms_days)
        data: dict[str, Any] = {
            "expense_id": expense_id,
            "vendor": vendor,
            "category": category,
            "incurred_date": day.isoformat(),
            "due_date": due.isoformat(),
            "amount": self.money(amount),
        }
        total = self.round(amount)
        if taxed and self.profile.tax_rate:
            tax = self.round(amount * self.profile.tax_rate)
            data["tax_amount"] = self.money(tax)
            total += tax
        self.money_event("expense.recorded", "payables", day, data)
        self.expenses[expense_id] = total
        # Rent and payroll are paid on the day; bills around their due date.
        pay_day = (
            day
            if terms_days == 0
            else max(day, due + timedelta(days=self.between(*expense_payment_days)))
        )
        if terms_days and self.rng.random() < expense_split_probability:
            self.schedule(pay_day, partial(self.pay_expense, expense_id, Decimal("0.5")))
            pay_day += timedelta(days=self.between(10, 30))
        self.schedule(pay_day, partial(self.pay_expense, expense_id, None))

    def pay_expense(self, expense_id: str, share: Decimal | None, day: date) -> None:
        open_amount = self.expenses.get(expense_id, zero)
        amount = open_amount if share is None else self.round(open_amount * share, ROUND_DOWN)
        if amount <= 0:
            return
        self.money_event(
            "expense.paid",
            "payables",
            day,
            {"expense_id": expense_id, "date": day.isoformat(), "amount": self.money(amount)},
        )
        if amount == open_amount:
            del self.expenses[expense_id]
        else:
            self.expenses[expense_id] = open_amount - amount


# --- every tenant, day by day -------------------------------------------------------------------


class DemoWorld:
    """The demo's tenants in simulated time: pure and deterministic for a seed and a start date.

    `events_for_day` must be called for consecutive days from `start`; it returns that day's
    events of every tenant, in the order they must be appended (each tenant's in causal order).
    """

    def __init__(
        self,
        start: date,
        *,
        seed: int = seed_default,
        profiles: Sequence[TenantProfile] = tenant_profiles,
    ) -> None:
        self.start = start
        self.seed = seed
        self.profiles = tuple(profiles)
        self.next_day = start
        self._tenants = [_TenantWorld(profile, seed, start) for profile in self.profiles]

    def events_for_day(self, day: date) -> list[Event]:
        if day != self.next_day:
            raise ValueError(f"the demo runs day after day: expected {self.next_day}, not {day}")
        self.next_day = day + one_day
        merged = [
            (event["time"], tenant_index, sequence, event)
            for tenant_index, tenant in enumerate(self._tenants)
            for sequence, event in enumerate(tenant.events_for_day(day))
        ]
        merged.sort(key=lambda item: item[:3])
        return [item[3] for item in merged]

    def open_receivables(self, tenant: str) -> dict[str, Decimal]:
        """Invoice id -> open amount, as the generator sees them: what the ledger's AR aging must
        show (the tests compare the two)."""
        world = self._tenant(tenant)
        return {
            invoice_id: invoice.open_amount
            for invoice_id, invoice in world.invoices.items()
            if invoice.open_amount > 0
        }

    def open_payables(self, tenant: str) -> Decimal:
        return sum(self._tenant(tenant).expenses.values(), zero)

    def _tenant(self, tenant: str) -> _TenantWorld:
        return next(world for world in self._tenants if world.profile.tenant == tenant)

    def stream(self) -> Iterator[tuple[date, list[Event]]]:
        """Every day from the next one on, forever."""
        while True:
            day = self.next_day
            yield day, self.events_for_day(day)


# --- the runner ---------------------------------------------------------------------------------


class DemoWorldMismatchError(Exception):
    """The store holds demo events with the same ids and different content: written by another
    version of this module (or other rates). Continuing would only produce conflicts."""


@dataclass(frozen=True, slots=True)
class StoredDemo:
    """What the store says about a demo written earlier: its seed and start, the tenants the demo
    may write to, and the newest day of which every tenant has events (None: nothing stored)."""

    seed: int
    start: date
    profiles: tuple[TenantProfile, ...]
    newest_day_index: int | None


async def _newest_demo_day(store: EventStore, tenant: str) -> int | None:
    """The highest day index among the tenant's demo events: read from the end of the store,
    widening the window until one is found (other tenants' events may be interleaved)."""
    head = await store.head()
    window = resume_scan_window_events
    while True:
        low = max(1, head - window + 1)
        newest: int | None = None
        position = low
        while True:
            page = await store.read(tenant, position, read_limit_max)
            for event in page:
                parsed = parse_demo_event_id(event.event_id)
                if parsed is not None and (newest is None or parsed[1] > newest):
                    newest = parsed[1]
            if not page:  # a short page may end at its size in bytes
                break
            position = page[-1].position + 1
        if newest is not None or low == 1:
            return newest
        window *= resume_scan_growth


async def find_stored_demo(
    store: EventStore,
    *,
    seed: int,
    start: date,
    profiles: Sequence[TenantProfile] = tenant_profiles,
) -> StoredDemo:
    """The demo to continue: the stored one when there is one (its seed and start win over the
    arguments, or every event would conflict), else a new one from `seed` and `start`."""
    usable: list[TenantProfile] = []
    found: list[tuple[int, date]] = []
    for profile in profiles:
        first = await store.read(profile.tenant, 1, 1)
        parsed = parse_demo_event_id(first[0].event_id) if first else None
        if first and (parsed is None or parsed[1] != 0):
            logger.warning(
                "demo: tenant %r already holds events the demo did not write; leaving it alone",
                profile.tenant,
            )
            continue
        if parsed is not None and found and (parsed[0], first[0].time.date()) != found[0]:
            logger.warning(
                "demo: tenant %r holds another demo (seed %d from %s); leaving it alone",
                profile.tenant,
                parsed[0],
                first[0].time.date(),
            )
            continue
        if parsed is not None and not found:
            found.append((parsed[0], first[0].time.date()))
        usable.append(profile)
    if found and found[0] != (seed, start):
        logger.info("demo: continuing the stored demo (seed %d from %s)", *found[0])
    seed, start = found[0] if found else (seed, start)
    newest: int | None = None
    if found:
        days = [await _newest_demo_day(store, profile.tenant) for profile in usable]
        # A tenant with nothing stored yet (one added since) starts the replay from day 0.
        newest = min(day if day is not None else 0 for day in days)
    return StoredDemo(seed, start, tuple(usable), newest)


async def _stopped(stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `stop`; True when it is set."""
    if timeout_s <= 0 or stop.is_set():
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), timeout_s)
    except TimeoutError:
        return False
    return True


async def _retrying(stop: asyncio.Event, what: str, attempt: Callable[[], Any]) -> Any:
    """Run `attempt` until the store answers; None when `stop` is set first."""
    wait_s = retry_initial_s
    while not stop.is_set():
        try:
            return await attempt()
        except StoreError as error:
            logger.warning("demo: %s failed (%s); retrying in %.1f s", what, error, wait_s)
            if await _stopped(stop, wait_s):
                break
            wait_s = min(wait_s * 2, retry_max_s)
    return None


def _log_rejections(report: AppendReport, events: Sequence[Event]) -> None:
    for entry in report.rejected:
        event = events[entry["index"]]
        if entry["code"] == RejectionCode.exists_with_different_content:
            raise DemoWorldMismatchError(
                f"event {event['id']} of tenant {event['tenantid']} is stored with other content"
            )
        logger.error(
            "demo: %s event %s (%s) rejected: %s at %s: %s",
            event.get("tenantid"),
            event.get("id"),
            event.get("type"),
            entry["code"],
            entry["field"],
            entry["message"],
        )


async def _append(service: LedgerService, events: list[Event], stop: asyncio.Event) -> bool:
    """Append (each event on its own: one bad event does not hold back the others), retrying a
    store outage with backoff. False when `stop` was set before the store took the events."""
    report: AppendReport | None = await _retrying(
        stop, "appending", lambda: service.append(events, atomic=False)
    )
    if report is None:
        return False
    _log_rejections(report, events)
    return True


async def _regenerate(world: DemoWorld, until: date) -> None:
    """Bring the world's state up to `until` without appending: those days are stored."""
    while world.next_day < until:
        world.events_for_day(world.next_day)
        if (world.next_day - world.start).days % regenerate_yield_days == 0:
            await asyncio.sleep(0)


async def _append_history(
    service: LedgerService, stop: asyncio.Event, world: DemoWorld, today: date
) -> bool:
    """Every day before `today`, in batches; False when stopped."""
    batch: list[Event] = []
    appended_days = 0
    while world.next_day < today:
        if stop.is_set():
            return False
        batch.extend(world.events_for_day(world.next_day))
        appended_days += 1
        if len(batch) >= history_batch_events:
            if not await _append(service, batch, stop):
                return False
            batch = []
        elif appended_days % regenerate_yield_days == 0:
            await asyncio.sleep(0)
    if batch and not await _append(service, batch, stop):
        return False
    if appended_days:
        logger.info("demo: appended %d days of history, up to %s", appended_days, today)
    return not stop.is_set()


def _slices(events: list[Event], count_max: int) -> list[list[Event]]:
    """The day's events in at most `count_max` contiguous slices of nearly equal size (one empty
    slice for a quiet day, so the day still takes its time)."""
    count = max(1, min(count_max, len(events)))
    bounds = [len(events) * index // count for index in range(count + 1)]
    return [events[bounds[index] : bounds[index + 1]] for index in range(count)]


async def _append_live(
    service: LedgerService, stop: asyncio.Event, world: DemoWorld, seconds_per_day: float
) -> None:
    """One simulated day every `seconds_per_day`, its events spread over the interval."""
    loop = asyncio.get_running_loop()
    day_started = loop.time()
    while not stop.is_set():
        slices = _slices(world.events_for_day(world.next_day), live_appends_per_day_max)
        for index, events in enumerate(slices):
            if events and not await _append(service, events, stop):
                return
            deadline = day_started + seconds_per_day * (index + 1) / len(slices)
            if await _stopped(stop, deadline - loop.time()):
                return
        # After an outage the next day starts now, rather than rushing through the missed ones.
        day_started = max(day_started + seconds_per_day, loop.time())


async def run_demo(
    service: LedgerService,
    stop: asyncio.Event,
    *,
    start: date | None = None,
    seconds_per_day: float = seconds_per_day_default,
    history_days: int = history_days_default,
    seed: int = seed_default,
    today: date | None = None,
    profiles: Sequence[TenantProfile] = tenant_profiles,
) -> None:
    """Append the demo's history up to today, then one simulated day every `seconds_per_day`
    until `stop` is set. Never raises (but for cancellation): a rejected event is logged with its
    code, field and message and the demo goes on; a store outage is retried with backoff.

    A new demo starts at `start` (default: `history_days` before today); a stored one continues
    where it stopped, with its own seed and start. `today` is the wall clock's date (UTC) unless
    given; `profiles` are the tenants (`tenant_profiles`: acme USD, globex EUR, initech JPY).
    """
    if seconds_per_day <= 0:
        raise ValueError("seconds_per_day must be positive")
    today = today or datetime.now(UTC).date()
    try:
        await _run_demo(
            service,
            stop,
            seed=seed,
            start=start or today - timedelta(days=history_days),
            seconds_per_day=seconds_per_day,
            today=today,
            profiles=profiles,
        )
    except DemoWorldMismatchError as error:
        logger.error(
            "demo: stopped: %s. The stored demo was written by another version of the demo "
            "generator; start with an empty data folder (or other tenants) to run this one",
            error,
        )
    except Exception:
        logger.exception("demo: stopped by an unexpected error; the rest of ledger keeps running")


async def _run_demo(
    service: LedgerService,
    stop: asyncio.Event,
    *,
    seed: int,
    start: date,
    seconds_per_day: float,
    today: date,
    profiles: Sequence[TenantProfile],
) -> None:
    stored: StoredDemo | None = await _retrying(
        stop,
        "reading the stored demo",
        lambda: find_stored_demo(service.store, seed=seed, start=start, profiles=profiles),
    )
    if stored is None:
        return
    if not stored.profiles:
        logger.error("demo: every demo tenant holds other events; the demo does not run")
        return
    world = DemoWorld(stored.start, seed=stored.seed, profiles=stored.profiles)
    if stored.newest_day_index is not None:
        # The newest stored day is appended again: its stored events answer "duplicate", and
        # whatever a stop in the middle of that day left out is appended now.
        resume = stored.start + timedelta(days=stored.newest_day_index)
        logger.info("demo: resuming at %s (day %d)", resume, stored.newest_day_index)
        await _regenerate(world, resume)
    tenants = ", ".join(profile.tenant for profile in stored.profiles)
    logger.info("demo: tenants %s, seed %d, from %s", tenants, stored.seed, stored.start)
    if await _append_history(service, stop, world, today):
        await _append_live(service, stop, world, seconds_per_day)
