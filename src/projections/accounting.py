"""The accounting shared by the read models: account names, how an invoice is booked, how a credit
note reverses it, and recognition by day. Pure functions; DESIGN sections 6 and 7.

Choices where DESIGN is silent (what accountants and the revenue tools do):
- An invoice line tied to a contract line (`line_id`) is booked to deferred revenue whatever the
  line's recognition: the contract's schedule, ratable or point in time, is what moves it to revenue
  (ASC 606 / IFRS 15). Booking a point-in-time line straight to revenue would count it twice, once
  billed and once satisfied. Other lines are revenue when invoiced.
- A credit note (amount only) reverses the invoice's booking pro rata over its revenue, deferred
  revenue and tax components, rounded to the minor unit, the remainder to revenue; the last credit
  note takes exactly what is left of each component.
- Recognition never leaves a contract's deferred balance negative: recognition beyond what was
  billed is unbilled revenue (a contract asset), computed per contract as of the date.
"""

from __future__ import annotations

import calendar
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from ledger.money import minor_digits

zero = Decimal(0)
one_day = timedelta(days=1)

CASH = "cash"
RECEIVABLE = "accounts_receivable"
CUSTOMER_CREDITS = "customer_credits"
DEFERRED = "deferred_revenue"
UNBILLED = "unbilled_revenue"
REVENUE = "revenue"
TAX_PAYABLE = "tax_payable"
TAX_RECEIVABLE = "tax_receivable"
PAYABLE = "accounts_payable"
BAD_DEBT = "bad_debt_expense"
EXPENSE_PREFIX = "expense:"

# Debit-normal accounts (assets and expenses); everything else is credit-normal.
ASSETS = {CASH, RECEIVABLE, UNBILLED, TAX_RECEIVABLE}


def is_debit_normal(account: str) -> bool:
    return account in ASSETS or account == BAD_DEBT or account.startswith(EXPENSE_PREFIX)


def day(text: str) -> date:
    return date.fromisoformat(text)


def money(text: Any) -> Decimal:
    return text if isinstance(text, Decimal) else Decimal(str(text))


def round_money(amount: Decimal, digits: int) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN)


def digits_of(currency: str) -> int:
    return minor_digits(currency)


# --- invoices ----------------------------------------------------------------------------------


def invoice_booking(data: dict[str, Any]) -> dict[str, Decimal]:
    """How an invoice is booked: revenue, deferred (lines tied to a contract line) and tax."""
    revenue = deferred = tax = zero
    for line in data["lines"]:
        amount = money(line["amount"])
        if line.get("line_id") is not None and data.get("contract_id") is not None:
            deferred += amount
        else:
            revenue += amount
        if line.get("tax_amount") is not None:
            tax += money(line["tax_amount"])
    return {"revenue": revenue, "deferred": deferred, "tax": tax}


def split_credit(remaining: dict[str, Decimal], amount: Decimal, digits: int) -> dict[str, Decimal]:
    """The part of a credit note that reverses each booked component still on the invoice."""
    total = remaining["revenue"] + remaining["deferred"] + remaining["tax"]
    if amount >= total:
        return dict(remaining)
    if total == 0:
        return {"revenue": amount, "deferred": zero, "tax": zero}
    deferred = min(
        round_money(amount * remaining["deferred"] / total, digits), remaining["deferred"]
    )
    tax = min(round_money(amount * remaining["tax"] / total, digits), remaining["tax"])
    revenue = amount - deferred - tax
    if revenue > remaining["revenue"]:  # rounding pushed past what is left: move the excess over
        excess = revenue - remaining["revenue"]
        revenue = remaining["revenue"]
        moved = min(excess, remaining["deferred"] - deferred)
        deferred += moved
        tax += excess - moved
    return {"revenue": revenue, "deferred": deferred, "tax": tax}


# --- recognition by day ------------------------------------------------------------------------


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def whole_months(start: date, end: date) -> int:
    """Whole calendar months in [start, end), at least 1: Jan 1 to Jan 1 is 12, Jan 15 to Feb 14 is 1."""
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if end.day < start.day:
        months -= 1
    return max(months, 1)


class SegmentRecognition:
    """One segment of a line's schedule, its fields read once: what it has recognised, in full
    precision, by the end of any day (`recognised`). A segment covers [seg_start, seg_end): `base`
    was recognised before it; a ratable segment adds `amount` evenly by day over its days, a
    point-in-time one adds `amount` from `satisfied_on`. Deferred revenue asks one segment for
    many days; `recognised_in_segment` asks it once."""

    __slots__ = ("amount", "base", "complete", "days", "point_in_time", "satisfied_on", "start")

    def __init__(self, segment: dict[str, Any]) -> None:
        self.base, self.amount = money(segment["base"]), money(segment["amount"])
        self.complete = self.base + self.amount
        self.start = _as_date(segment["seg_start"])
        self.days = (_as_date(segment["seg_end"]) - self.start).days
        self.point_in_time = segment["recognition"] == "point_in_time"
        satisfied = segment.get("satisfied_on")
        self.satisfied_on = None if satisfied is None else _as_date(satisfied)

    def recognised(self, through: date) -> Decimal:
        """Full precision recognised by the end of day `through`."""
        if self.point_in_time:
            satisfied = self.satisfied_on
            return self.complete if satisfied is not None and satisfied <= through else self.base
        days = self.days
        if days <= 0:
            return self.complete
        elapsed = min(max((through - self.start).days + 1, 0), days)
        if elapsed == days:
            return self.complete
        return self.base + self.amount * elapsed / days


def recognised_in_segment(segment: dict[str, Any], through: date) -> Decimal:
    """Full precision recognised by the end of day `through`, by one segment of a line's schedule
    (`SegmentRecognition`)."""
    return SegmentRecognition(segment).recognised(through)


def recognised_by_line(segments: list[dict[str, Any]], through: date) -> Decimal:
    """Full precision recognised by a line: the latest segment starting on or before `through`."""
    current = None
    for segment in segments:
        if _as_date(segment["seg_start"]) <= through and (
            current is None or _as_date(segment["seg_start"]) >= _as_date(current["seg_start"])
        ):
            current = segment
    return zero if current is None else recognised_in_segment(current, through)


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)
