"""The reports as first written, kept as the oracle the fast ones must equal to the character.

`projections.reports` answers from aggregates the projectors keep and from SQL that reproduces
Python's rounding; this is the straightforward version it replaced (commit 610c0e9): every open
invoice and every contract line read into Python, recognition with `accounting` per line and date.
It reads only the base tables (ar_invoices, ar_changes, ar_credits, dr_contracts, dr_billing,
gl_daily, mrr_segments), which the projectors still keep, and, for the payables falling due, the
expense events themselves. Slow, and meant to be: it is what the figures mean.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from projections import accounting as acc
from projections.ar_aging import BUCKETS, bucket_of
from projections.deferred_revenue import segments_with_recognition
from projections.reports import REPORT_PROJECTIONS, parse_kind

zero = Decimal(0)


async def reference_report(
    conn: AsyncConnection[TupleRow],
    kind: str,
    tenant: str,
    as_of: date,
    *,
    limit: int | None = None,
    after: str | None = None,
    invoices_after: str | None = None,
) -> dict[str, Any]:
    """`projections.reports.report` as it was, and its lists paged after the fact."""
    parse_kind(kind)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        await conn.execute("SELECT set_config('ledger.tenants', %s, true)", [tenant])
        reader = _Reader(conn, tenant, as_of)
        await reader.start()
        match kind:
            case "kpi":
                return await reader.kpi()
            case "ar-aging":
                aging = await reader.ar_aging(limit, invoices_after)
                return _paged(aging, "customers", limit, after)
            case "deferred-revenue":
                return _paged(await reader.deferred_revenue(), "contracts", limit, after)
            case "trial-balance":
                return await reader.trial_balance()
            case _:
                return _paged(await reader.mrr_movements(), "customers", limit, after)


def _paged(data: dict[str, Any], name: str, limit: int | None, after: str | None) -> dict[str, Any]:
    """The report with its list `name` cut to the entries after `after` (by id, in code point
    order), at most `limit` of them; `<name>_total` counts them all and `<name>_next` is the last
    id listed when more follow."""
    key = "contract_id" if name == "contracts" else "customer_id"
    entries = sorted(data[name], key=lambda entry: entry[key].encode())
    following = [
        entry for entry in entries if after is None or entry[key].encode() > after.encode()
    ]
    listed = following if limit is None else following[:limit]
    more = len(following) > len(listed)
    paged = {
        name: listed,
        f"{name}_total": len(entries),
        f"{name}_next": listed[-1][key] if more and listed else None,
    }
    return {**data, **paged}


class _Reader:
    def __init__(self, conn: AsyncConnection[TupleRow], tenant: str, as_of: date) -> None:
        self.conn = conn
        self.tenant = tenant
        self.as_of = as_of
        self.currency: str | None = None
        self.digits = 2
        self.position = 0
        self._contract_rows: list[tuple[Any, ...]] | None = None

    async def start(self) -> None:
        rows = await self._all(
            "SELECT currency FROM gl_tenants WHERE tenant_id = %s", [self.tenant]
        )
        if rows:
            self.currency = rows[0][0]
            self.digits = acc.digits_of(rows[0][0])
        rows = await self._all(
            "SELECT coalesce(max(position), 0) FROM projection_state"
            " WHERE tenant_id = %s AND projection = ANY(%s)",
            [self.tenant, list(REPORT_PROJECTIONS)],
        )
        self.position = int(rows[0][0])

    async def _all(self, query: str, params: Any) -> list[tuple[Any, ...]]:
        cursor = await self.conn.execute(query, params)
        return await cursor.fetchall()

    def money(self, amount: Decimal) -> str:
        return f"{self.round(amount):f}"

    def round(self, amount: Decimal) -> Decimal:
        return acc.round_money(amount, self.digits)

    def head(self, **fields: Any) -> dict[str, Any]:
        return {"tenant": self.tenant, **fields, "currency": self.currency}

    # --- general ledger --------------------------------------------------------------------

    async def balances(
        self, through: date, contracts: list[dict[str, Any]] | None = None
    ) -> dict[str, tuple[Decimal, Decimal]]:
        """account -> (debits, credits) by the end of `through`, recognition included
        (`contracts`: this reader's `contracts(through)`, when the caller has them already)."""
        rows = await self._all(
            "SELECT account, sum(debit), sum(credit) FROM gl_daily"
            " WHERE tenant_id = %s AND day <= %s GROUP BY account",
            [self.tenant, through],
        )
        totals = {row[0]: (row[1], row[2]) for row in rows}
        if contracts is None:
            contracts = await self.contracts(through)
        recognised = sum((c["recognized"] for c in contracts), zero)
        from_deferred = sum((min(c["recognized"], c["billed"]) for c in contracts), zero)
        unbilled = sum((max(c["recognized"] - c["billed"], zero) for c in contracts), zero)

        def move(account: str, debit: Decimal, credit: Decimal) -> None:
            old = totals.get(account, (zero, zero))
            totals[account] = (old[0] + debit, old[1] + credit)

        if recognised:
            move(acc.REVENUE, zero, recognised)
            move(acc.DEFERRED, from_deferred, zero)
            move(acc.UNBILLED, unbilled, zero)
        return totals

    def balance(self, totals: dict[str, tuple[Decimal, Decimal]], account: str) -> Decimal:
        debit, credit = totals.get(account, (zero, zero))
        return debit - credit if acc.is_debit_normal(account) else credit - debit

    async def trial_balance(self) -> dict[str, Any]:
        totals = await self.balances(self.as_of)
        accounts = []
        total_debit = total_credit = zero
        for account in sorted(totals):
            debit, credit = totals[account]
            net = debit - credit
            column_debit, column_credit = (net, zero) if net >= 0 else (zero, -net)
            total_debit += column_debit
            total_credit += column_credit
            accounts.append(
                {
                    "account": account,
                    "debit": self.money(column_debit),
                    "credit": self.money(column_credit),
                    "balance": self.money(self.balance(totals, account)),
                }
            )
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            "accounts": accounts,
            "total_debit": self.money(total_debit),
            "total_credit": self.money(total_credit),
            "balanced": self.round(total_debit) == self.round(total_credit),
        }

    async def flows(
        self, start: date, end: date, accounts: Sequence[str], sources: Sequence[str] | None = None
    ) -> Decimal:
        """Credits - debits over [start, end] on accounts (prefix match with a trailing ':')."""
        exact = [a for a in accounts if not a.endswith(":")]
        prefixes = [a + "%" for a in accounts if a.endswith(":")]
        query = (
            "SELECT coalesce(sum(credit - debit), 0) FROM gl_daily WHERE tenant_id = %s"
            " AND day BETWEEN %s AND %s AND (account = ANY(%s) OR account LIKE ANY(%s))"
        )
        params: list[Any] = [self.tenant, start, end, exact, prefixes]
        if sources is not None:
            query += " AND source = ANY(%s)"
            params.append(list(sources))
        rows = await self._all(query, params)
        return Decimal(rows[0][0])

    # --- deferred revenue ------------------------------------------------------------------

    async def contracts(self, through: date) -> list[dict[str, Any]]:
        """Per contract: billed (to deferred) and recognised by the end of `through`, rounded per
        line; only contracts started by then or with billing or recognition."""
        billed = {
            row[0]: row[1]
            for row in await self._all(
                "SELECT contract_id, sum(amount) FROM dr_billing"
                " WHERE tenant_id = %s AND day <= %s GROUP BY contract_id",
                [self.tenant, through],
            )
        }
        if self._contract_rows is None:  # read once per report, however many dates it needs
            self._contract_rows = await self._all(
                "SELECT contract_id, customer_id, start_date, end_date, cancelled_on, lines"
                " FROM dr_contracts WHERE tenant_id = %s ORDER BY contract_id",
                [self.tenant],
            )
        contracts = []
        for contract_id, customer_id, start, end, cancelled_on, lines in self._contract_rows:
            recognised = sum(
                (
                    self.round(acc.recognised_by_line(segments_with_recognition(line), through))
                    for line in lines.values()
                ),
                zero,
            )
            bill = billed.get(contract_id, zero)
            if start > through and not bill and not recognised:
                continue
            contracts.append(
                {
                    "contract_id": contract_id,
                    "customer_id": customer_id,
                    "start_date": start,
                    "end_date": end,
                    "cancelled_on": cancelled_on,
                    "lines": lines,
                    "billed": bill,
                    "recognized": recognised,
                }
            )
        return contracts

    async def deferred_revenue(self) -> dict[str, Any]:
        contracts = await self.contracts(self.as_of)
        listed = []
        totals = {"billed": zero, "recognized": zero, "deferred": zero, "unbilled": zero}
        for contract in contracts:
            figures = {
                "billed": contract["billed"],
                "recognized": contract["recognized"],
                "deferred": max(contract["billed"] - contract["recognized"], zero),
                "unbilled": max(contract["recognized"] - contract["billed"], zero),
            }
            for name, amount in figures.items():
                totals[name] += amount
            listed.append(
                {
                    "contract_id": contract["contract_id"],
                    "customer_id": contract["customer_id"],
                    **{name: self.money(amount) for name, amount in figures.items()},
                }
            )
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            **{name: self.money(amount) for name, amount in totals.items()},
            "contracts": listed,
            "waterfall": self.waterfall(contracts),
        }

    def waterfall(self, contracts: list[dict[str, Any]]) -> list[dict[str, str]]:
        """What the schedules known on as_of still recognise, per month after as_of."""
        months: dict[str, Decimal] = {}
        as_of = self.as_of.isoformat()
        for contract in contracts:
            for line in contract["lines"].values():
                known = [s for s in segments_with_recognition(line) if s["seg_start"] <= as_of]
                # As the line stood on as_of: a later amendment may change its recognition.
                if (
                    not known
                    or max(known, key=lambda s: s["seg_start"])["recognition"] != "ratable"
                ):
                    continue
                last_end = max(date.fromisoformat(s["seg_end"]) for s in known) - acc.one_day
                previous = self.round(acc.recognised_by_line(known, self.as_of))
                month_end = _month_end(self.as_of)
                while True:
                    boundary = min(month_end, last_end)
                    if boundary > self.as_of:
                        current = self.round(acc.recognised_by_line(known, boundary))
                        key = boundary.strftime("%Y-%m")
                        months[key] = months.get(key, zero) + current - previous
                        previous = current
                    if month_end >= last_end:
                        break
                    month_end = _month_end(month_end + acc.one_day)
        return [
            {"month": month, "amount": self.money(amount)}
            for month, amount in sorted(months.items())
            if amount
        ]

    # --- AR aging --------------------------------------------------------------------------

    async def open_invoices(self, through: date) -> list[tuple[str, str, date, Decimal, int]]:
        """(invoice_id, customer_id, due_date, open, position) of invoices open at the end of
        `through`, by due date and position."""
        return [
            (row[0], row[1], row[2], row[3], row[4])
            for row in await self._all(
                """
                WITH later AS MATERIALIZED (
                    SELECT invoice_id, sum(amount) AS amount FROM ar_changes
                    WHERE tenant_id = %(tenant)s AND day > %(as_of)s GROUP BY invoice_id
                ), candidates AS MATERIALIZED (
                    SELECT invoice_id FROM ar_invoices
                    WHERE tenant_id = %(tenant)s AND open <> 0
                    UNION SELECT invoice_id FROM later
                )
                SELECT i.invoice_id, i.customer_id, i.due_date,
                       i.open + coalesce(l.amount, 0) AS open, i.position
                FROM candidates c
                JOIN ar_invoices i ON i.tenant_id = %(tenant)s AND i.invoice_id = c.invoice_id
                LEFT JOIN later l ON l.invoice_id = c.invoice_id
                WHERE i.issue_date <= %(as_of)s AND i.open + coalesce(l.amount, 0) <> 0
                ORDER BY i.due_date, i.position
                """,
                {"tenant": self.tenant, "as_of": through},
            )
        ]

    async def unapplied(self, through: date) -> dict[str, Decimal]:
        return {
            row[0]: row[1]
            for row in await self._all(
                "SELECT customer_id, sum(amount) FROM ar_credits"
                " WHERE tenant_id = %s AND day <= %s GROUP BY customer_id HAVING sum(amount) <> 0",
                [self.tenant, through],
            )
        }

    async def ar_aging(
        self, limit: int | None = None, invoices_after: str | None = None
    ) -> dict[str, Any]:
        invoices = await self.open_invoices(self.as_of)
        cursor = None
        if invoices_after is not None:
            due, _, position = invoices_after.partition(":")
            cursor = (date.fromisoformat(due), int(position))
        following = [i for i in invoices if cursor is None or (i[2], i[4]) > cursor]
        page = following if limit is None else following[:limit]
        more = len(following) > len(page)
        unapplied = await self.unapplied(self.as_of)
        buckets = dict.fromkeys(BUCKETS, zero)
        customers: dict[str, dict[str, Decimal]] = {}
        listed: list[dict[str, Any]] = []
        for _invoice_id, customer_id, due_date, open_amount, _position in invoices:
            days = (self.as_of - due_date).days
            bucket = bucket_of(days)
            buckets[bucket] += open_amount
            per_customer = customers.setdefault(customer_id, dict.fromkeys(BUCKETS, zero))
            per_customer[bucket] += open_amount
        for invoice_id, customer_id, due_date, open_amount, _position in page:
            days = (self.as_of - due_date).days
            listed.append(
                {
                    "invoice_id": invoice_id,
                    "customer_id": customer_id,
                    "due_date": due_date.isoformat(),
                    "days_past_due": max(days, 0),
                    "open": self.money(open_amount),
                    "bucket": bucket_of(days),
                }
            )
        total = sum(buckets.values(), zero)
        unapplied_total = sum(unapplied.values(), zero)
        return {
            **self.head(as_of=self.as_of.isoformat(), position=self.position),
            "buckets": {name: self.money(amount) for name, amount in buckets.items()},
            "total": self.money(total),
            "overdue": self.money(total - buckets["current"]),
            "unapplied": self.money(unapplied_total),
            "net": self.money(total - unapplied_total),
            "customers": [
                {
                    "customer_id": customer_id,
                    "buckets": {name: self.money(amount) for name, amount in amounts.items()},
                    "total": self.money(sum(amounts.values(), zero)),
                    "unapplied": self.money(unapplied.get(customer_id, zero)),
                }
                for customer_id, amounts in sorted(customers.items())
            ],
            "invoices": listed,
            "invoices_total": len(invoices),
            "invoices_next": f"{page[-1][2].isoformat()}:{page[-1][4]}" if more and page else None,
        }

    # --- MRR -------------------------------------------------------------------------------

    async def mrr_by_customer(self, *days: date) -> dict[str, list[Decimal]]:
        """customer -> MRR at the end of each day, rounded per customer."""
        columns = ", ".join(
            "coalesce(sum(mrr) FILTER (WHERE seg_start <= %s AND %s < seg_end), 0)" for _ in days
        )
        params: list[Any] = []
        for day in days:
            params += [day, day]
        rows = await self._all(
            f"SELECT customer_id, {columns} FROM mrr_segments"
            " WHERE tenant_id = %s AND seg_start <= %s GROUP BY customer_id",
            [*params, self.tenant, max(days)],
        )
        return {row[0]: [self.round(value) for value in row[1:]] for row in rows}

    async def mrr_movements(self) -> dict[str, Any]:
        month_start = self.as_of.replace(day=1)
        before = month_start - acc.one_day
        end = min(_month_end(self.as_of), self.as_of)
        mrr = await self.mrr_by_customer(before, end)
        earlier = {
            row[0]
            for row in await self._all(
                "SELECT DISTINCT customer_id FROM mrr_segments WHERE tenant_id = %s"
                " AND seg_start <= %s AND mrr > 0",
                [self.tenant, before],
            )
        }
        movements = dict.fromkeys(
            ("new", "reactivation", "expansion", "contraction", "churn"), zero
        )
        customers = []
        starting = ending = zero
        for customer_id, (start, finish) in sorted(mrr.items()):
            starting += start
            ending += finish
            if start == finish:
                continue
            if start == 0:
                kind = "reactivation" if customer_id in earlier else "new"
            elif finish == 0:
                kind = "churn"
            else:
                kind = "expansion" if finish > start else "contraction"
            movements[kind] += abs(finish - start)
            customers.append(
                {
                    "customer_id": customer_id,
                    "starting_mrr": self.money(start),
                    "ending_mrr": self.money(finish),
                    "movement": kind,
                    "change": self.money(finish - start),
                }
            )
        return {
            **self.head(month=month_start.strftime("%Y-%m"), as_of=self.as_of.isoformat()),
            "position": self.position,
            "starting_mrr": self.money(starting),
            **{name: self.money(amount) for name, amount in movements.items()},
            "ending_mrr": self.money(ending),
            "customers": customers,
        }

    # --- KPIs ------------------------------------------------------------------------------

    async def payables_due(self, through: date) -> Decimal:
        """What was payable on as_of and falls due by `through` (an expense without a due date
        is due the day it was incurred), straight from the expense events the read models
        reflect."""
        rows = await self._all(
            "SELECT type, data FROM events WHERE tenant_id = %s AND position <= %s"
            " AND type = ANY(%s) ORDER BY position",
            [
                self.tenant,
                self.position,
                ["ledger.expense.recorded.v1", "ledger.expense.paid.v1"],
            ],
        )
        due: dict[str, date] = {}
        open_amounts: dict[str, Decimal] = {}
        for event_type, data in rows:
            expense_id = data["expense_id"]
            if event_type == "ledger.expense.recorded.v1":
                incurred = date.fromisoformat(data["incurred_date"])
                if incurred > self.as_of:
                    continue
                due[expense_id] = date.fromisoformat(data.get("due_date") or data["incurred_date"])
                open_amounts[expense_id] = Decimal(data["amount"]) + Decimal(
                    data.get("tax_amount") or "0"
                )
            elif date.fromisoformat(data["date"]) <= self.as_of:
                open_amounts[expense_id] -= Decimal(data["amount"])
        return sum(
            (amount for expense_id, amount in open_amounts.items() if due[expense_id] <= through),
            zero,
        )

    async def kpi(self) -> dict[str, Any]:
        as_of = self.as_of
        month_start, year_start = as_of.replace(day=1), as_of.replace(month=1, day=1)
        last_90 = as_of - timedelta(days=89)
        contracts_now = await self.contracts(as_of)
        totals = await self.balances(as_of, contracts_now)

        async def recognised_between(start: date) -> Decimal:
            before = await self.contracts(start - acc.one_day)
            return sum((c["recognized"] for c in contracts_now), zero) - sum(
                (c["recognized"] for c in before), zero
            )

        direct_revenue_mtd = await self.flows(month_start, as_of, [acc.REVENUE])
        direct_revenue_ytd = await self.flows(year_start, as_of, [acc.REVENUE])
        revenue_mtd = direct_revenue_mtd + await recognised_between(month_start)
        revenue_ytd = direct_revenue_ytd + await recognised_between(year_start)
        billing_sources = ["invoice.issued", "credit_note.issued", "invoice.voided"]
        billings_mtd = await self.flows(
            month_start, as_of, [acc.REVENUE, acc.DEFERRED], billing_sources
        )
        billings_90_gross = await self.flows(
            last_90, as_of, [acc.REVENUE, acc.DEFERRED, acc.TAX_PAYABLE], billing_sources
        )
        expenses_mtd = -await self.flows(month_start, as_of, [acc.EXPENSE_PREFIX, acc.BAD_DEBT])
        expenses_90_gross = await self.flows(last_90, as_of, [acc.PAYABLE], ["expense.recorded"])
        invoices = await self.open_invoices(as_of)
        ar = sum((invoice[3] for invoice in invoices), zero)
        overdue = sum((i[3] for i in invoices if (as_of - i[2]).days > 0), zero)
        over_90 = sum((i[3] for i in invoices if (as_of - i[2]).days > 90), zero)
        due_30 = sum((i[3] for i in invoices if (i[2] - as_of).days <= 30), zero)
        cash = self.balance(totals, acc.CASH)
        ap = self.balance(totals, acc.PAYABLE)
        deferred = self.balance(totals, acc.DEFERRED)
        unbilled = self.balance(totals, acc.UNBILLED)
        tax_payable = self.balance(totals, acc.TAX_PAYABLE)
        unapplied = self.balance(totals, acc.CUSTOMER_CREDITS)
        window_start = _months_before(as_of, 12)
        mrr = await self.mrr_by_customer(window_start, as_of)
        mrr_now = sum((values[1] for values in mrr.values()), zero)
        cohort = {customer: values for customer, values in mrr.items() if values[0] > 0}
        cohort_start = sum((values[0] for values in cohort.values()), zero)
        live = [
            c
            for c in contracts_now
            if c["start_date"] <= as_of < c["end_date"]
            and (c["cancelled_on"] is None or as_of < c["cancelled_on"])
        ]
        customers = {c["customer_id"] for c in live} | {i[1] for i in invoices}
        share_over_90 = over_90 / ar if ar else None
        alerts = []
        if share_over_90 is not None and share_over_90 > Decimal("0.2"):
            alerts.append(
                {
                    "code": "ar_over_90_days",
                    "message": f"{_ratio(share_over_90 * 100)} % of receivables are over 90 days "
                    "past due (threshold 20 %)",
                }
            )
        payables_due = await self.payables_due(as_of + timedelta(days=30))
        projected = cash + due_30 - payables_due
        if projected < 0:
            alerts.append(
                {
                    "code": "cash_negative_30_days",
                    "message": f"cash may go negative within 30 days: {self.money(cash)} cash + "
                    f"{self.money(due_30)} receivables due - {self.money(payables_due)} "
                    f"payables due = {self.money(projected)}",
                }
            )
        liabilities = ap + deferred + tax_payable
        net_income = revenue_mtd - expenses_mtd
        kpis = {
            "revenue_mtd": self.money(revenue_mtd),
            "revenue_ytd": self.money(revenue_ytd),
            "billings_mtd": self.money(billings_mtd),
            "expenses_mtd": self.money(expenses_mtd),
            "net_income_mtd": self.money(net_income),
            "margin_mtd": _ratio(net_income / revenue_mtd) if revenue_mtd else None,
            "cash": self.money(cash),
            "ar": self.money(ar),
            "ar_overdue": self.money(overdue),
            "ar_over_90_share": _ratio(share_over_90) if share_over_90 is not None else None,
            "unapplied": self.money(unapplied),
            "ap": self.money(ap),
            "deferred_revenue": self.money(deferred),
            "unbilled_revenue": self.money(unbilled),
            "dso": _days(ar / billings_90_gross * 90) if billings_90_gross > 0 else None,
            "dpo": _days(ap / expenses_90_gross * 90) if expenses_90_gross > 0 else None,
            "current_ratio": _ratio((cash + ar) / liabilities) if liabilities > 0 else None,
            "mrr": self.money(mrr_now),
            "arr": self.money(mrr_now * 12),
            "nrr": _ratio(sum((v[1] for v in cohort.values()), zero) / cohort_start)
            if cohort_start
            else None,
            "grr": _ratio(sum((min(v) for v in cohort.values()), zero) / cohort_start)
            if cohort_start
            else None,
            "customers": len(customers),
            "active_contracts": len(live),
        }
        return {
            **self.head(as_of=as_of.isoformat(), position=self.position),
            "kpis": kpis,
            "alerts": alerts,
        }


def _month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def _months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _ratio(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):f}"


def _days(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN):f}"
