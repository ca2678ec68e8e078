"""General ledger: balanced journal entries for every event (DESIGN section 6), balances by day.

Tables:
- `gl_lines`: every journal line, append-only (position, line_no), with its date, account, debit or
  credit, the event type that posted it and the customer, contract and document it concerns;
- `gl_daily`: per account, day and posting source, the day's debits and credits, kept by
  increments: a balance as of any date is a sum over days, never a rescan of the journal;
- `gl_invoices`: what is still booked of each invoice (revenue, deferred, tax), so credit notes and
  voids reverse it as it was booked;
- `gl_tenants`: the tenant's currency (fixed by its first money event).

Recognition of deferred revenue (deferred revenue -> revenue, by day) is derived, not posted: it
depends on the as-of date, so the trial balance adds it from the deferred revenue read model's
schedules (see `projections.reports`). Recognition beyond billing is unbilled revenue, per contract.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Date, Integer, Numeric, Table, Text

from projections import accounting as acc
from projections.core import ProjectedEvent
from projections.tables import Key, Rows, tenant_table

gl_lines = tenant_table(
    "gl_lines",
    Column("position", BigInteger, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("entry_date", Date, nullable=False),
    Column("account", Text, nullable=False),
    Column("debit", Numeric, nullable=False),
    Column("credit", Numeric, nullable=False),
    Column("source", Text, nullable=False),
    Column("customer_id", Text),
    Column("contract_id", Text),
    Column("document_id", Text),
)
gl_daily = tenant_table(
    "gl_daily",
    Column("account", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("source", Text, primary_key=True),
    Column("debit", Numeric, nullable=False),
    Column("credit", Numeric, nullable=False),
)
gl_invoices = tenant_table(
    "gl_invoices",
    Column("invoice_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("contract_id", Text),
    Column("revenue", Numeric, nullable=False),
    Column("deferred", Numeric, nullable=False),
    Column("tax", Numeric, nullable=False),
)
gl_tenants = tenant_table("gl_tenants", Column("currency", Text, nullable=False))
# Payables by the date they fall due, for the cash alert's "payables due within 30 days": each
# expense's due date (its own, else the day it was incurred), and every movement of the
# `accounts_payable` account (expenses recorded +, paid -, journal entries credit - debit, due the
# day they are posted) per due date and business day. As of a date D the payables due by D + 30
# are the rows with day <= D and due_date <= D + 30; all rows with day <= D add up to the
# account's balance on D.
gl_payables = tenant_table(
    "gl_payables",
    Column("expense_id", Text, primary_key=True),
    Column("due_date", Date, nullable=False),
)
gl_payables_by_due_date = tenant_table(
    "gl_payables_by_due_date",
    Column("due_date", Date, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("amount", Numeric, nullable=False),
)


# Event types are a closed set (the contract refuses others): every projector asks for each event.
@functools.lru_cache(maxsize=256)
def source_of(event_type: str) -> str:
    """`ledger.invoice.issued.v1` -> `invoice.issued`."""
    parts = event_type.split(".")
    return ".".join(parts[1:-1]) if len(parts) > 2 else event_type


class GeneralLedger:
    name = "general_ledger"
    tables = (gl_lines, gl_daily, gl_invoices, gl_tenants, gl_payables, gl_payables_by_due_date)

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        yield gl_tenants, ()
        invoice_id = event.data.get("invoice_id")
        if isinstance(invoice_id, str):
            yield gl_invoices, (invoice_id,)
        if event.type == "ledger.expense.paid.v1":
            yield gl_payables, (event.data["expense_id"],)

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        data = event.data
        currency = data.get("currency")
        if isinstance(currency, str) and rows.get(gl_tenants) is None:
            rows.put(gl_tenants, {"currency": currency})
        source = source_of(event.type)
        entry = _Entry(source)
        match source:
            case "invoice.issued":
                booking = acc.invoice_booking(data)
                total = booking["revenue"] + booking["deferred"] + booking["tax"]
                entry.debit(acc.RECEIVABLE, total)
                entry.credit(acc.DEFERRED, booking["deferred"])
                entry.credit(acc.REVENUE, booking["revenue"])
                entry.credit(acc.TAX_PAYABLE, booking["tax"])
                rows.put(
                    gl_invoices,
                    {
                        "invoice_id": data["invoice_id"],
                        "customer_id": data["customer_id"],
                        "contract_id": data.get("contract_id"),
                        **booking,
                    },
                )
                entry.refs(data["customer_id"], data.get("contract_id"), data["invoice_id"])
                entry.post(rows, event.position, acc.day(data["issue_date"]))
            case "invoice.voided" | "credit_note.issued":
                invoice = rows.get(gl_invoices, data["invoice_id"])
                if invoice is None:  # unreachable for an event the store accepted
                    return
                remaining = {name: invoice[name] for name in ("revenue", "deferred", "tax")}
                if source == "invoice.voided":
                    parts = remaining
                    applied, to_credit = sum(remaining.values(), acc.zero), acc.zero
                    document = data["invoice_id"]
                else:
                    amount = acc.money(data["amount"])
                    parts = acc.split_credit(remaining, amount, acc.digits_of(data["currency"]))
                    applied = acc.money(event.ledger.get("applied", amount))
                    to_credit = acc.money(event.ledger.get("to_customer_credit", "0"))
                    document = data["credit_note_id"]
                entry.debit(acc.DEFERRED, parts["deferred"])
                entry.debit(acc.REVENUE, parts["revenue"])
                entry.debit(acc.TAX_PAYABLE, parts["tax"])
                entry.credit(acc.RECEIVABLE, applied)
                entry.credit(acc.CUSTOMER_CREDITS, to_credit)
                rows.put(
                    gl_invoices,
                    {**invoice, **{name: remaining[name] - parts[name] for name in remaining}},
                )
                entry.refs(invoice["customer_id"], invoice["contract_id"], document)
                entry.post(rows, event.position, acc.day(data["date"]))
            case "invoice.written_off":
                invoice = rows.get(gl_invoices, data["invoice_id"])
                amount = acc.money(data["amount"])
                entry.debit(acc.BAD_DEBT, amount)
                entry.credit(acc.RECEIVABLE, amount)
                if invoice is not None:
                    entry.refs(invoice["customer_id"], invoice["contract_id"], data["invoice_id"])
                entry.post(rows, event.position, acc.day(data["date"]))
            case "payment.received":
                amount = acc.money(data["amount"])
                unapplied = acc.money(event.ledger.get("unapplied", "0"))
                entry.debit(acc.CASH, amount)
                entry.credit(acc.RECEIVABLE, amount - unapplied)
                entry.credit(acc.CUSTOMER_CREDITS, unapplied)
                entry.refs(data["customer_id"], None, data["payment_id"])
                entry.post(rows, event.position, acc.day(data["date"]))
            case "payment.refunded":
                amount = acc.money(data["amount"])
                from_unapplied = acc.money(event.ledger.get("from_unapplied", "0"))
                entry.debit(acc.CUSTOMER_CREDITS, from_unapplied)
                entry.debit(acc.RECEIVABLE, amount - from_unapplied)
                entry.credit(acc.CASH, amount)
                entry.refs(None, None, data["payment_id"])
                entry.post(rows, event.position, acc.day(data["date"]))
            case "expense.recorded":
                amount = acc.money(data["amount"])
                tax = acc.money(data.get("tax_amount") or "0")
                entry.debit(acc.EXPENSE_PREFIX + data["category"], amount)
                entry.debit(acc.TAX_RECEIVABLE, tax)
                entry.credit(acc.PAYABLE, amount + tax)
                entry.refs(None, None, data["expense_id"])
                incurred = acc.day(data["incurred_date"])
                due = acc.day(data["due_date"]) if data.get("due_date") else incurred
                rows.put(gl_payables, {"expense_id": data["expense_id"], "due_date": due})
                rows.add(
                    gl_payables_by_due_date,
                    {"due_date": due, "day": incurred, "amount": amount + tax},
                )
                entry.post(rows, event.position, incurred)
            case "expense.paid":
                amount = acc.money(data["amount"])
                paid_on = acc.day(data["date"])
                payable = rows.get(gl_payables, data["expense_id"])
                # The rules accept a payment only for a recorded expense; were the row missing,
                # the payment still lowers what falls due (as of its own day).
                due = paid_on if payable is None else payable["due_date"]
                rows.add(
                    gl_payables_by_due_date, {"due_date": due, "day": paid_on, "amount": -amount}
                )
                entry.debit(acc.PAYABLE, amount)
                entry.credit(acc.CASH, amount)
                entry.refs(None, None, data["expense_id"])
                entry.post(rows, event.position, paid_on)
            case "journal.posted":
                entry_date = acc.day(data["date"])
                posted_payable = acc.zero
                for line in data["lines"]:
                    debit = acc.money(line.get("debit") or "0")
                    credit = acc.money(line.get("credit") or "0")
                    entry.debit(line["account"], debit)
                    entry.credit(line["account"], credit)
                    if line["account"] == acc.PAYABLE:
                        posted_payable += credit - debit
                if posted_payable:
                    # A payable posted by hand has no due date: due the day it is posted.
                    rows.add(
                        gl_payables_by_due_date,
                        {"due_date": entry_date, "day": entry_date, "amount": posted_payable},
                    )
                entry.refs(None, None, data["entry_id"])
                entry.post(rows, event.position, entry_date)
            case _:  # customers and contracts post nothing; recognition is derived by date
                return


class _Entry:
    """One event's journal entry, checked to balance before it is posted."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: list[tuple[str, Decimal, Decimal]] = []
        self.customer_id: str | None = None
        self.contract_id: str | None = None
        self.document_id: str | None = None

    def debit(self, account: str, amount: Decimal) -> None:
        if amount:
            self.lines.append((account, amount, acc.zero))

    def credit(self, account: str, amount: Decimal) -> None:
        if amount:
            self.lines.append((account, acc.zero, amount))

    def refs(self, customer_id: Any, contract_id: Any, document_id: Any) -> None:
        self.customer_id, self.contract_id, self.document_id = customer_id, contract_id, document_id

    def post(self, rows: Rows, position: int, entry_date: Any) -> None:
        debits = sum((line[1] for line in self.lines), acc.zero)
        credits = sum((line[2] for line in self.lines), acc.zero)
        if debits != credits:  # a bug in the rules above, never in the data: fail loudly
            raise AssertionError(f"unbalanced entry at position {position}: {self.lines}")
        for line_no, (account, debit, credit) in enumerate(self.lines, start=1):
            rows.insert(
                gl_lines,
                {
                    "position": position,
                    "line_no": line_no,
                    "entry_date": entry_date,
                    "account": account,
                    "debit": debit,
                    "credit": credit,
                    "source": self.source,
                    "customer_id": self.customer_id,
                    "contract_id": self.contract_id,
                    "document_id": self.document_id,
                },
            )
            rows.add(
                gl_daily,
                {
                    "account": account,
                    "day": entry_date,
                    "source": self.source,
                    "debit": debit,
                    "credit": credit,
                },
            )
