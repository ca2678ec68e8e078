"""Deferred revenue: per contract, its recognition schedule, what was billed into deferred revenue,
and so billed / recognised / deferred / unbilled as of any date, and a waterfall.

Tables:
- `dr_contracts`: each contract with its lines; each line's schedule is a list of segments (see
  `projections.accounting.recognised_in_segment`), one per signature, amendment or cancellation;
- `dr_billing`: per contract and day, what invoices booked to deferred revenue, net of credit notes
  and voids (increments);
- `dr_invoices`: what is still booked of each contract invoice, so credit notes reverse it as the
  general ledger does (the same `split_credit`);
- `dr_segments`: every segment of every line as a row, with the start of the line's next segment
  (none for its latest), so a report finds the segment that applies on a date in SQL;
- `dr_schedule_months`: per month, what the lines whose latest segment is ratable recognise in it
  by that segment, rounded per line, keyed by the day that segment starts: the waterfall as of a
  date is a sum over the months after it (see `projections.reports`). Kept by increments: a change
  to a line adds its new schedule and takes off its old one (O(months of the term)); a row that
  falls to zero is deleted;
- `dr_recognised_months`: per month, what every line recognised in it, rounded per line as of each
  month's end (the segment that applied then, point-in-time lines on their date), so the
  recognition to the end of any month is a sum of a few rows. Kept by increments the same way.

Both derived tables are rewritten from `dr_contracts.lines`, which stays the projector's own state.

Recognition follows DESIGN section 6: by day, A x days elapsed / days in term, in full precision,
rounded per line to the minor unit when reported, so a schedule sums exactly to its amount. An
amendment is prospective: each line's new segment starts at the effective date with what was
recognised before it as its base and spreads (new amount - base) evenly over the remaining days; a
line the amendment drops stops there. A cancellation stops every line at its date; what was billed
and not recognised stays deferred until credited. A point-in-time line is recognised whole on its
`obligation.satisfied` date. The waterfall is what the schedules known at the as-of date still
recognise, month by month (ratable lines; an unsatisfied point-in-time line has no date yet).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import BigInteger, Column, Date, Numeric, Table, Text
from sqlalchemy.dialects.postgresql import JSONB

from projections import accounting as acc
from projections.core import ProjectedEvent
from projections.general_ledger import source_of
from projections.tables import Key, Row, Rows, tenant_table

dr_contracts = tenant_table(
    "dr_contracts",
    Column("contract_id", Text, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("start_date", Date, nullable=False),
    Column("end_date", Date, nullable=False),
    Column("cancelled_on", Date),
    Column("lines", JSONB, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("currency", Text),  # the schedules are rounded to its minor unit
)
dr_billing = tenant_table(
    "dr_billing",
    Column("contract_id", Text, primary_key=True),
    Column("day", Date, primary_key=True),
    Column("amount", Numeric, nullable=False),
)
dr_invoices = tenant_table(
    "dr_invoices",
    Column("invoice_id", Text, primary_key=True),
    Column("contract_id", Text),
    Column("revenue", Numeric, nullable=False),
    Column("deferred", Numeric, nullable=False),
    Column("tax", Numeric, nullable=False),
)


dr_segments = tenant_table(
    "dr_segments",
    Column("contract_id", Text, primary_key=True),
    Column("line_id", Text, primary_key=True),
    Column("seg_start", Date, primary_key=True),
    Column("seg_end", Date, nullable=False),
    Column("recognition", Text, nullable=False),
    Column("base", Numeric, nullable=False),
    Column("amount", Numeric, nullable=False),
    # base + amount as `accounting.recognised_in_segment` adds them (28 digits): by the last day
    # of a ratable segment, or once a point-in-time one is satisfied.
    Column("recognised_when_complete", Numeric, nullable=False),
    Column("satisfied_on", Date),
    Column("next_start", Date),
    # The same in whole minor units of the contract's currency, for the reports' integer
    # arithmetic (`minor_units`): base and recognised_when_complete rounded half to even, amount
    # as it is when it is whole minor units. Null where a value does not fit (or, for amount, is
    # not whole): the reports then work that segment out in Python.
    Column("base_minor", BigInteger),
    Column("amount_minor", BigInteger),
    Column("complete_minor", BigInteger),
)
dr_schedule_months = tenant_table(
    "dr_schedule_months",
    Column("seg_start", Date, primary_key=True),
    Column("month", Date, primary_key=True),  # its first day
    Column("amount", Numeric, nullable=False),
    # A line amended or cancelled takes its old schedule off: those months fall to zero for
    # good (a third of the rows of a store with amendments), and the waterfall's sums read a
    # zero as no row.
    zero_is_absent=True,
)
dr_recognised_months = tenant_table(
    "dr_recognised_months",
    Column("month", Date, primary_key=True),  # its first day
    Column("amount", Numeric, nullable=False),
)


def _segment(start: date, end: date, base: Any, amount: Any, satisfied_on: Any) -> dict[str, Any]:
    return {
        "seg_start": start.isoformat(),
        "seg_end": end.isoformat(),
        "base": str(base),
        "amount": str(amount),
        "satisfied_on": satisfied_on,
    }


def _new_line(line: dict[str, Any], segments: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "recognition": line["recognition"],
        "recurring": bool(line.get("recurring", False)),
        "amount": str(line["amount"]),
        "description": line.get("description", ""),
        "segments": segments,
    }


def segments_with_recognition(line: dict[str, Any]) -> list[dict[str, Any]]:
    """A line's segments, each with its recognition: its own when an amendment changed the
    line's recognition (so the past keeps how it was recognised), else the line's."""
    return [{"recognition": line["recognition"], **segment} for segment in line["segments"]]


class DeferredRevenue:
    name = "deferred_revenue"
    tables = (
        dr_contracts,
        dr_billing,
        dr_invoices,
        dr_segments,
        dr_schedule_months,
        dr_recognised_months,
    )

    def needs(self, event: ProjectedEvent) -> Iterable[tuple[Table, Key]]:
        contract_id = event.data.get("contract_id")
        if isinstance(contract_id, str):
            yield dr_contracts, (contract_id,)
        invoice_id = event.data.get("invoice_id")
        if isinstance(invoice_id, str):
            yield dr_invoices, (invoice_id,)

    def apply(self, rows: Rows, event: ProjectedEvent) -> None:
        data = event.data
        match source_of(event.type):
            case "contract.signed":
                start, end = acc.day(data["start_date"]), acc.day(data["end_date"])
                signed = {
                    "contract_id": data["contract_id"],
                    "customer_id": data["customer_id"],
                    "start_date": start,
                    "end_date": end,
                    "cancelled_on": None,
                    "lines": {
                        line["line_id"]: _new_line(
                            line, [_segment(start, end, 0, line["amount"], None)]
                        )
                        for line in data["lines"]
                    },
                    "position": event.position,
                    "currency": data["currency"],
                }
                rows.put(dr_contracts, signed)
                write_schedules(rows, signed, {}, start)
            case "contract.amended" | "contract.cancelled":
                contract = rows.get(dr_contracts, data["contract_id"])
                if contract is None:  # unreachable for an event the store accepted
                    return
                before = dict(contract["lines"])
                effective = acc.day(data["effective_date"])
                new_lines = {line["line_id"]: line for line in data.get("lines", [])}
                contract["lines"] = _amend(contract, effective, new_lines)
                if source_of(event.type) == "contract.cancelled":
                    contract["cancelled_on"] = effective
                rows.put(dr_contracts, contract)
                write_schedules(rows, contract, before, effective)
            case "obligation.satisfied":
                contract = rows.get(dr_contracts, data["contract_id"])
                if contract is None:
                    return
                before = dict(contract["lines"])
                line = dict(contract["lines"][data["line_id"]])
                line["segments"] = [
                    {**segment, "satisfied_on": data["date"]} for segment in line["segments"]
                ]
                contract["lines"] = {**contract["lines"], data["line_id"]: line}
                rows.put(dr_contracts, contract)
                write_schedules(rows, contract, before, acc.day(data["date"]))
            case "invoice.issued":
                booking = acc.invoice_booking(data)
                rows.put(
                    dr_invoices,
                    {
                        "invoice_id": data["invoice_id"],
                        "contract_id": data.get("contract_id"),
                        **booking,
                    },
                )
                if booking["deferred"]:
                    rows.add(
                        dr_billing,
                        {
                            "contract_id": data["contract_id"],
                            "day": acc.day(data["issue_date"]),
                            "amount": booking["deferred"],
                        },
                    )
            case "invoice.voided" | "credit_note.issued":
                invoice = rows.get(dr_invoices, data["invoice_id"])
                if invoice is None:
                    return
                remaining = {name: invoice[name] for name in ("revenue", "deferred", "tax")}
                if source_of(event.type) == "invoice.voided":
                    parts = remaining
                else:
                    parts = acc.split_credit(
                        remaining, acc.money(data["amount"]), acc.digits_of(data["currency"])
                    )
                rows.put(
                    dr_invoices,
                    {**invoice, **{name: remaining[name] - parts[name] for name in remaining}},
                )
                if parts["deferred"]:
                    rows.add(
                        dr_billing,
                        {
                            "contract_id": invoice["contract_id"],
                            "day": acc.day(data["date"]),
                            "amount": -parts["deferred"],
                        },
                    )
            case _:
                return


def _amend(
    contract: dict[str, Any], effective: date, new_lines: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The contract's lines after a change effective on `effective` (no new lines: cancelled)."""
    end = contract["end_date"]
    lines: dict[str, Any] = {}
    before = effective - acc.one_day
    for line_id, line in contract["lines"].items():
        segments = line["segments"]
        recognised = acc.recognised_by_line(segments_with_recognition(line), before)
        satisfied = segments[-1]["satisfied_on"] if segments else None
        # Segments before the change keep the recognition they had, whatever the new version says.
        kept = [
            {"recognition": line["recognition"], **segment}
            for segment in segments
            if segment["seg_start"] != effective.isoformat()
        ]
        new = new_lines.get(line_id)
        if new is None:  # dropped (or cancelled): recognition stops here
            lines[line_id] = {
                **line,
                "segments": [*kept, _segment(effective, end, recognised, 0, satisfied)],
            }
            continue
        amount = acc.money(new["amount"])
        lines[line_id] = _new_line(
            new,
            [
                *kept,
                {
                    **_segment(effective, end, recognised, amount - recognised, satisfied),
                    "recognition": new["recognition"],
                },
            ],
        )
    for line_id, new in new_lines.items():
        if line_id not in lines:
            lines[line_id] = _new_line(new, [_segment(effective, end, 0, new["amount"], None)])
    return lines


# --- the derived tables ------------------------------------------------------------------------


def write_schedules(rows: Rows, contract: Row, before: dict[str, Any], changed_from: date) -> None:
    """Rewrite a contract's `dr_segments` rows and move its lines' `dr_schedule_months` and
    `dr_recognised_months` from their `before` state (the lines as they were; empty for a new
    contract) to the current one. Before `changed_from` (the start, an amendment's or a
    cancellation's effective date, a satisfaction's date) every line recognised the same, old or
    new: changes are prospective."""
    contract_id, lines = contract["contract_id"], contract["lines"]
    digits = acc.digits_of(contract["currency"])
    stale = {
        (line_id, segment["seg_start"])
        for line_id, line in before.items()
        for segment in line["segments"]
    }
    # In minor units (ints) until the rows are written.
    scheduled: dict[tuple[date, date], int] = {}
    recognised: dict[date, int] = {}
    for line_id, line in lines.items():
        if before.get(line_id) == line:
            stale -= {(line_id, segment["seg_start"]) for segment in line["segments"]}
            continue
        new = _RecognisedBy(line, digits)
        for row in new.segment_rows(contract_id, line_id, digits):
            rows.put(dr_segments, row)
            stale.discard((line_id, row["seg_start"].isoformat()))
        old_line = before.get(line_id)
        months = None if old_line is not None else _fresh_line_months(new, changed_from)
        if months is not None:
            _move(scheduled, months, {})
            for (_start, month), amount in months.items():
                recognised[month] = recognised.get(month, 0) + amount
            continue
        old = _RecognisedBy(old_line, digits)
        if new.latest() != old.latest():
            _move(scheduled, schedule_months(new), schedule_months(old))
        _move(recognised, recognised_months(new, old, changed_from), {})
    for line_id, seg_start in stale:
        rows.delete(dr_segments, contract_id, line_id, acc.day(seg_start))
    for (seg_start, month), amount in scheduled.items():
        if amount:
            rows.add(
                dr_schedule_months,
                {"seg_start": seg_start, "month": month, "amount": _in_units(amount, digits)},
            )
    for month, amount in recognised.items():
        if amount:
            rows.add(dr_recognised_months, {"month": month, "amount": _in_units(amount, digits)})


def _move(totals: dict[Any, int], new: dict[Any, int], old: dict[Any, int]) -> None:
    """Add `new` to `totals` and take `old` off."""
    for key, amount in new.items():
        totals[key] = totals.get(key, 0) + amount
    for key, amount in old.items():
        totals[key] = totals.get(key, 0) - amount


def _in_units(minor: int, digits: int) -> Decimal:
    """Minor units as an amount of the currency, with its digits (12345, 2 -> 123.45)."""
    return Decimal(minor).scaleb(-digits)


# The largest whole number of minor units a bigint column holds.
minor_units_max = 2**63 - 1


def minor_units(amount: Decimal, digits: int, *, rounded: bool) -> int | None:
    """`amount` in minor units: rounded half to even when `rounded`, else only when it is whole
    minor units; None when it is not, or does not fit in a bigint."""
    scaled = amount.scaleb(digits)
    if scaled.adjusted() > 18:  # beyond a bigint (and quantize's 28 digits) whatever the rest
        return None
    if rounded:
        scaled = scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN)
    elif scaled != scaled.to_integral_value():
        return None
    units = int(scaled)
    return units if abs(units) <= minor_units_max else None


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (> 0) rounded to an integer, half to even, exactly."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient & 1):
        quotient += 1
    return quotient


class _Spread:
    """A segment whose base and amount are whole minor units (as nearly every segment a signature
    opens is), evaluated in integers: by the end of a day, `base + amount x elapsed / days` rounded
    half to even in minor units, which is what `accounting.recognised_in_segment` and a report's
    rounding give, without a Decimal division per day. The same digits, not close ones: Decimal
    divides to 28 significant digits and base and amount fit a bigint (19 digits), so at least 8
    digits stay below the minor unit and the quotient is off the exact one by under 1e-8 of a
    minor unit, while an exact quotient that is not a half is at least 1 / (2 x days) >= 1.3e-7
    (days <= 3.7 million, the widest term dates allow) away from one: both round alike
    (`tests/projections/test_recognition_minor_units.py` checks it against the Decimal one)."""

    __slots__ = ("amount", "base", "days", "point_in_time", "satisfied_on", "start")

    def __init__(self, segment: dict[str, Any], base: int, amount: int) -> None:
        self.base, self.amount = base, amount
        self.start = segment["seg_start"]
        self.days = (segment["seg_end"] - self.start).days
        self.point_in_time = segment["recognition"] == "point_in_time"
        self.satisfied_on = segment["satisfied_on"]

    def __call__(self, through: date) -> int:
        if self.point_in_time:
            satisfied = self.satisfied_on
            if satisfied is not None and satisfied <= through:
                return self.base + self.amount
            return self.base
        return self.by_elapsed((through - self.start).days + 1)

    def by_elapsed(self, elapsed: int) -> int:
        """A ratable segment's recognition after `elapsed` days of it (the first counts 1)."""
        days = self.days
        if days <= 0 or elapsed >= days:
            return self.base + self.amount
        if elapsed <= 0:
            return self.base
        return round_half_even(self.base * days + self.amount * elapsed, days)


def _spread(segment: dict[str, Any], digits: int) -> _Spread | None:
    """The integer form of a segment, or None when its base or amount is not whole minor units
    (an amended segment's base is what the line had recognised, in full precision)."""
    base = minor_units(segment["base"], digits, rounded=False)
    amount = minor_units(segment["amount"], digits, rounded=False)
    if base is None or amount is None:
        return None
    return _Spread(segment, base, amount)


class _DecimalSegment(acc.SegmentRecognition):
    """A segment `_Spread` cannot take (its base or amount not whole minor units: an amended
    line's base is what it had recognised, in full precision): `accounting.SegmentRecognition`,
    the one reading of the rule, rounded half to even to minor units as a report rounds it."""

    __slots__ = ("digits", "quantum")

    def __init__(self, segment: dict[str, Any], digits: int) -> None:
        super().__init__(segment)
        self.digits = digits
        self.quantum = Decimal(1).scaleb(-digits)

    def __call__(self, through: date) -> int:
        rounded = self.recognised(through).quantize(self.quantum, rounding=ROUND_HALF_EVEN)
        return int(rounded.scaleb(self.digits))


class _RecognisedBy:
    """A line's segments parsed once (dates and Decimals, which `accounting` takes as well as
    text), and its recognition by the end of a day in minor units, rounded as a report rounds it;
    each day once (the month loops below ask for many of the same days). The segment in force on
    a day is the one `accounting.recognised_by_line` takes, the latest starting on or before it
    (the last of equal starts), found here by bisection; a `_Spread` or a `_DecimalSegment` does
    the rest."""

    def __init__(self, line: dict[str, Any] | None, digits: int) -> None:
        self.segments = _parsed(line)
        self.ordered = sorted(self.segments, key=lambda segment: segment["seg_start"])  # stable
        self.starts = [segment["seg_start"] for segment in self.ordered]
        self.spreads = [_spread(segment, digits) for segment in self.ordered]
        # What each segment in force on a day recognises by its end, in minor units.
        self.evaluators: list[_Spread | _DecimalSegment] = [
            _DecimalSegment(segment, digits) if spread is None else spread
            for segment, spread in zip(self.ordered, self.spreads, strict=True)
        ]
        self.found: dict[date, int] = {}

    def __call__(self, day: date) -> int:
        found = self.found.get(day)
        if found is None:
            index = bisect_right(self.starts, day) - 1
            found = 0 if index < 0 else self.evaluators[index](day)
            self.found[day] = found
        return found

    def latest(self) -> dict[str, Any] | None:
        if not self.segments:
            return None
        return max(self.segments, key=lambda segment: segment["seg_start"])

    def settled(self) -> date | None:
        """The day after which the line recognises nothing more: its last day, its latest
        change or its satisfaction, whichever is last."""
        dates = [segment["seg_start"] for segment in self.segments]
        dates += [segment["seg_end"] - acc.one_day for segment in self.segments]
        dates += [s["satisfied_on"] for s in self.segments if s["satisfied_on"] is not None]
        return max(dates, default=None)

    def segment_rows(self, contract_id: str, line_id: str, digits: int) -> list[Row]:
        """The line's segments as `dr_segments` rows, oldest first (`digits`: the currency's
        minor digits)."""
        found = []
        ordered = self.ordered
        for index, segment in enumerate(ordered):
            base, amount = segment["base"], segment["amount"]
            spread = self.spreads[index]
            if spread is None:
                base_minor = minor_units(base, digits, rounded=True)
                amount_minor = minor_units(amount, digits, rounded=False)
                complete_minor = minor_units(base + amount, digits, rounded=True)
            else:  # whole already: the same integers
                base_minor, amount_minor = spread.base, spread.amount
                complete = base_minor + amount_minor
                complete_minor = complete if abs(complete) <= minor_units_max else None
            found.append(
                {
                    "contract_id": contract_id,
                    "line_id": line_id,
                    "seg_start": segment["seg_start"],
                    "seg_end": segment["seg_end"],
                    "recognition": segment["recognition"],
                    "base": base,
                    "amount": amount,
                    "recognised_when_complete": base + amount,
                    "satisfied_on": segment["satisfied_on"],
                    "next_start": ordered[index + 1]["seg_start"]
                    if index + 1 < len(ordered)
                    else None,
                    "base_minor": base_minor,
                    "amount_minor": amount_minor,
                    "complete_minor": complete_minor,
                }
            )
        return found


def schedule_months(line: _RecognisedBy) -> dict[tuple[date, date], int]:
    """(start of the line's latest segment, first day of a month) -> what that segment recognises
    in the month, rounded per line as a report rounds it (the first month: all it has recognised
    by that month's end, from zero). Nothing unless the latest segment is ratable: the waterfall
    leaves point-in-time lines out.

    Summed over the months up to M it is the line's rounded recognition at the end of M (or at
    its last day): `projections.reports` takes what a line had recognised on the as-of date off
    the as-of month, and what is left is the waterfall the lines' schedules give."""
    latest = line.latest()
    if latest is None or latest["recognition"] != "ratable":
        return {}
    start = latest["seg_start"]
    last_day = max(segment["seg_end"] for segment in line.segments) - acc.one_day
    if last_day < start:
        return {}
    found: dict[tuple[date, date], int] = {}
    previous = 0
    steps = _month_steps(start, last_day)
    spread = line.spreads[0] if len(line.spreads) == 1 else None
    if spread is not None:  # one segment in integers (a signature's): by elapsed days, no dates
        by_elapsed = spread.by_elapsed
        for month, elapsed in steps:
            current = by_elapsed(elapsed)
            found[(start, month)] = current - previous
            previous = current
        return found
    for month, elapsed in steps:
        current = line(start + timedelta(days=elapsed - 1))
        found[(start, month)] = current - previous
        previous = current
    return found


@lru_cache(maxsize=4096)
def _month_steps(start: date, last_day: date) -> tuple[tuple[date, int], ...]:
    """(first day of the month, days from `start` to the month's end or `last_day`, whichever
    comes first, both counted) for every month from `start`'s to `last_day`'s. Terms repeat."""
    return tuple(
        (month_end.replace(day=1), (min(month_end, last_day) - start).days + 1)
        for month_end in _month_ends(start, last_day)
    )


def _fresh_line_months(
    line: _RecognisedBy, changed_from: date
) -> dict[tuple[date, date], int] | None:
    """The months of a line that is new on `changed_from` (a signature's, or one an amendment
    adds) with one unsatisfied segment from that day, as `schedule_months` gives them; they are
    also what it recognises in each month (its recognition by each month's end, less the month
    before's, from zero), so `recognised_months` need not walk the term again. A point-in-time
    line recognises nothing until it is satisfied: no months. None for any other line."""
    if len(line.ordered) != 1:
        return None
    segment = line.ordered[0]
    if segment["seg_start"] != changed_from or segment["satisfied_on"] is not None:
        return None
    if segment["recognition"] == "ratable" and segment["seg_end"] > changed_from:
        return schedule_months(line)
    if segment["recognition"] == "point_in_time" and segment["base"] == 0:
        return {}
    return None


def recognised_months(
    new: _RecognisedBy, old: _RecognisedBy, changed_from: date
) -> dict[date, int]:
    """First day of a month -> how much more (or less) the line recognises in it now than it did
    `old`: by each month's end from `changed_from`'s (the same before) to the one after which
    neither changes any more, the difference of the two, less that of the month before."""
    settled = max(day for day in (new.settled(), old.settled(), changed_from) if day is not None)
    found: dict[date, int] = {}
    previous = 0
    for month_end in _month_ends(changed_from, settled):
        difference = new(month_end) - old(month_end)
        if difference != previous:
            found[month_end.replace(day=1)] = difference - previous
        previous = difference
    return found


def _month_ends(first: date, last: date) -> tuple[date, ...]:
    """The last day of every month from `first`'s to `last`'s (none if `last` is earlier)."""
    return _month_ends_between(first.year, first.month, last.year, last.month)


@lru_cache(maxsize=4096)
def _month_ends_between(year: int, month: int, last_year: int, last_month: int) -> tuple[date, ...]:
    """Terms repeat (a year from the first of a month, many contracts at once): each range once."""
    ends = []
    while (year, month) <= (last_year, last_month):
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        ends.append(date(year, month, 1) - acc.one_day)
    return tuple(ends)


def _parsed(line: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A line's segments with dates and amounts parsed once: the month loops above evaluate them
    at every month end of the term (`accounting` takes either form)."""
    if line is None:
        return []
    return [
        {
            **segment,
            "seg_start": acc.day(segment["seg_start"]),
            "seg_end": acc.day(segment["seg_end"]),
            "base": acc.money(segment["base"]),
            "amount": acc.money(segment["amount"]),
            "satisfied_on": None
            if segment.get("satisfied_on") is None
            else acc.day(segment["satisfied_on"]),
        }
        for segment in segments_with_recognition(line)
    ]
