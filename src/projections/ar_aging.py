"""Accounts receivable aging: open amounts per invoice as of any date, by days past due.

Tables:
- `ar_invoices`: each invoice with its current open amount (indexed on the open ones by due date);
- `ar_changes`: every change to an invoice's open amount, dated by its business date (payments
  applied, credit notes, write-offs, voids; refunds that reopen are negative), append-only;
- `ar_credits`: per customer and day, the change in unapplied cash and customer credit;
- `ar_payments`: the customer of each payment, which a refund names only by payment id;
- `ar_open_by_due_date`, `ar_open_by_customer`, `ar_open_by_customer_and_due_date`: the current
  open amount and the number of open invoices (open amount not zero), kept by increments as each
  invoice's open amount changes (O(1) per change, no read), so a report sums a few hundred due
  dates or a row per customer instead of every open invoice.

As of a date D the open amount of an invoice issued by D is its total minus the changes dated by D,
which is its current open amount plus the changes dated after D: a report sums the aggregates (the
current state) and corrects them by the few invoices whose open amount on D differs from today's,
those issued after D or changed after D. Buckets by days past the
due date: current (not yet due), 1-30, 31-60, 61-90, 91-120, over 120. Payments are applied as the
ledger decided when it accepted them (explicitly, or oldest due date first: `metadata.ledger`).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from sqlalchemy import BigInteger, Column, Date, Index, Integer, Numeric, Table, Text, text

from projections import accounting as acc
from projections.core import ProjectedEvent
from projections.general_ledger import source_of
from projections.tables import Key, Row, Rows, tenant_table

ar_invoices = tenant_table(
    "ar_invoices",
    Column("invoice_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("contract_id", Text),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("total", Numeric, nullable=False),
    Column("open", Numeric, nullable=False),
    Column("voided_on", Date),
    Column("position", BigInteger, nullable=False),
)
# The listing's order (oldest due date first), so a page of it is the head of an index scan.
Index(
    "ar_invoices_open_by_due_date",
    ar_invoices.c.tenant_id,
    ar_invoices.c.due_date,
    ar_invoices.c.position,
    postgresql_where=text("open <> 0"),
)
# Invoices issued after an as-of date: not yet receivable on it.
Index("ar_invoices_by_issue_date", ar_invoices.c.tenant_id, ar_invoices.c.issue_date)
ar_changes = tenant_table(
    "ar_changes",
    Column("position", BigInteger, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("invoice_id", Text, nullable=False),
    Column("day", Date, nullable=False),
    Column("amount", Numeric, nullable=False),
    Column("kind", Text, nullable=False),
)
Index("ar_changes_by_day", ar_changes.c.tenant_id, ar_changes.c.day)
ar_credits = tenant_table(
    "ar_credits",
    Column("customer_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("amount", Numeric, nullable=False),
)
ar_payments = tenant_table(
    "ar_payments",
    Column("payment_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
)

ar_open_by_due_date = tenant_table(
    "ar_open_by_due_date",
    Column("due_date", Date, primary_key=True),
    Column("open", Numeric, nullable=False),
    Column("invoices", Integer, nullable=False),
)
ar_open_by_customer = tenant_table(
    "ar_open_by_customer",
    Column("customer_id", Text, primary_key=True),
    Column("open", Numeric, nullable=False),
    Column("invoices", Integer, nullable=False),
)
ar_open_by_customer_and_due_date = tenant_table(
    "ar_open_by_customer_and_due_date",
    Column("customer_id", Text, primary_key=True),
    Column("due_date", Date, primary_key=True),
    Column("open", Numeric, nullable=False),
    Column("invoices", Integer, nullable=False),
)

BUCKETS = ("current", "1-30", "31-60", "61-90", "91-120", "over-120")


def bucket_of(days_past_due: int) -> str:
    if days_past_due <= 0:
        return "current"
    if days_past_due <= 30:
        return "1-30"
    if days_past_due <= 60:
        return "31-60"
    if days_past_due <= 90:
        return "61-90"
    if days_past_due <= 120:
        return "91-120"
    return "over-120"


class ArAging:
    name = "ar_aging"
    tables = (
        ar_invoices,
        ar_changes,
        ar_credits,
        ar_payments,
        ar_open_by_due_date,
        ar_open_by_customer,
        ar_open_by_customer_and_due_date,
    )

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        invoice_id = event.data.get("invoice_id")
        if isinstance(invoice_id, str):
            yield ar_invoices, (invoice_id,)
        for name in ("allocations", "reversed_allocations"):
            for allocation in event.ledger.get(name, []):
                yield ar_invoices, (allocation["invoice_id"],)
        if event.type.endswith(".payment.refunded.v1"):
            yield ar_payments, (event.data["payment_id"],)

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        data, ledger = event.data, event.ledger
        changes = _Changes(rows, event.position)
        match source_of(event.type):
            case "invoice.issued":
                total = sum(
                    (
                        acc.money(line["amount"]) + acc.money(line.get("tax_amount") or "0")
                        for line in data["lines"]
                    ),
                    acc.zero,
                )
                issued = {
                    "invoice_id": data["invoice_id"],
                    "customer_id": data["customer_id"],
                    "contract_id": data.get("contract_id"),
                    "issue_date": acc.day(data["issue_date"]),
                    "due_date": acc.day(data["due_date"]),
                    "total": total,
                    "open": total,
                    "voided_on": None,
                    "position": event.position,
                }
                rows.put(ar_invoices, issued)
                add_open(rows, issued, total, 1 if total else 0)
            case "payment.received":
                when = acc.day(data["date"])
                for allocation in ledger.get("allocations", []):
                    changes.reduce(
                        allocation["invoice_id"], when, acc.money(allocation["amount"]), "payment"
                    )
                rows.put(
                    ar_payments,
                    {"payment_id": data["payment_id"], "customer_id": data["customer_id"]},
                )
                unapplied = acc.money(ledger.get("unapplied", "0"))
                if unapplied:
                    rows.add(
                        ar_credits,
                        {"customer_id": data["customer_id"], "day": when, "amount": unapplied},
                    )
            case "payment.refunded":
                when = acc.day(data["date"])
                for allocation in ledger.get("reversed_allocations", []):
                    changes.reduce(
                        allocation["invoice_id"], when, -acc.money(allocation["amount"]), "refund"
                    )
                from_unapplied = acc.money(ledger.get("from_unapplied", "0"))
                payment = rows.get(ar_payments, data["payment_id"])
                if from_unapplied and payment is not None:
                    rows.add(
                        ar_credits,
                        {
                            "customer_id": payment["customer_id"],
                            "day": when,
                            "amount": -from_unapplied,
                        },
                    )
            case "credit_note.issued":
                when = acc.day(data["date"])
                amount = acc.money(data["amount"])
                applied = acc.money(ledger.get("applied", amount))
                invoice = changes.reduce(data["invoice_id"], when, applied, "credit_note")
                to_credit = acc.money(ledger.get("to_customer_credit", "0"))
                if to_credit and invoice is not None:
                    rows.add(
                        ar_credits,
                        {"customer_id": invoice["customer_id"], "day": when, "amount": to_credit},
                    )
            case "invoice.written_off":
                changes.reduce(
                    data["invoice_id"],
                    acc.day(data["date"]),
                    acc.money(data["amount"]),
                    "write_off",
                )
            case "invoice.voided":
                when = acc.day(data["date"])
                invoice = rows.get(ar_invoices, data["invoice_id"])
                if invoice is not None:
                    changes.reduce(
                        data["invoice_id"], when, invoice["open"], "void", voided_on=when
                    )
            case _:
                return


class _Changes:
    def __init__(self, rows: Rows, position: int) -> None:
        self.rows = rows
        self.position = position
        self.seq = 0

    def reduce(
        self,
        invoice_id: str,
        when: object,
        amount: Decimal,
        kind: str,
        voided_on: object = None,
    ) -> Row | None:
        invoice = self.rows.get(ar_invoices, invoice_id)
        if invoice is None:  # unreachable for an event the store accepted
            return None
        was_open = 1 if invoice["open"] else 0
        invoice["open"] = invoice["open"] - amount
        add_open(self.rows, invoice, -amount, (1 if invoice["open"] else 0) - was_open)
        if voided_on is not None:
            invoice["voided_on"] = voided_on
        self.rows.put(ar_invoices, invoice)
        self.seq += 1
        self.rows.insert(
            ar_changes,
            {
                "position": self.position,
                "seq": self.seq,
                "invoice_id": invoice_id,
                "day": when,
                "amount": amount,
                "kind": kind,
            },
        )
        return invoice


def add_open(rows: Rows, invoice: Row, amount: Decimal, invoices: int) -> None:
    """Add a change of an invoice's open amount, and of the count of open invoices, to the
    aggregates of its due date, its customer, and both."""
    customer_id, due_date = invoice["customer_id"], invoice["due_date"]
    change = {"open": amount, "invoices": invoices}
    rows.add(ar_open_by_due_date, {"due_date": due_date, **change})
    rows.add(ar_open_by_customer, {"customer_id": customer_id, **change})
    rows.add(
        ar_open_by_customer_and_due_date,
        {"customer_id": customer_id, "due_date": due_date, **change},
    )
