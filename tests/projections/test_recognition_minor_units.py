"""The deferred revenue projector's integer recognition gives the digits the Decimal one gives.

`deferred_revenue._Spread` evaluates a segment whose base and amount are whole minor units in
integers; every month schedule the projector writes goes through it. It must equal
`accounting.recognised_in_segment` rounded half to even to the currency's minor unit, for any base
and amount a bigint holds (either sign: an amendment can lower a line), any term, any day, and the
ties where half-to-even decides. `_RecognisedBy` must equal it too on lines mixing whole segments
with an amended one in full precision (which stays on Decimals).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from projections import accounting as acc
from projections.deferred_revenue import (
    _DecimalSegment,
    _fresh_line_months,
    _RecognisedBy,
    _spread,
    minor_units_max,
    recognised_months,
    round_half_even,
)

digits_choices = (0, 2, 3, 4)
first_day, last_day = date(1, 1, 1), date(9999, 12, 31)


def decimal_recognised(segment: dict[str, Any], through: date, digits: int) -> int:
    """What the Decimal arithmetic recognises by `through`, rounded, in minor units."""
    value = acc.recognised_in_segment(segment, through)
    return int(value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN).scaleb(digits))


def segment_of(
    start: date, days: int, base: int, amount: int, digits: int, recognition: str = "ratable"
) -> dict[str, Any]:
    return {
        "seg_start": start,
        "seg_end": start + timedelta(days=days),
        "recognition": recognition,
        "base": Decimal(base).scaleb(-digits),
        "amount": Decimal(amount).scaleb(-digits),
        "satisfied_on": None,
    }


def stored(segment: dict[str, Any]) -> dict[str, Any]:
    """A segment as `dr_contracts.lines` keeps it (text)."""
    return {
        **segment,
        "seg_start": segment["seg_start"].isoformat(),
        "seg_end": segment["seg_end"].isoformat(),
        "base": str(segment["base"]),
        "amount": str(segment["amount"]),
    }


def test_round_half_even_ties_and_signs() -> None:
    assert [round_half_even(n, 2) for n in (-5, -3, -1, 1, 3, 5)] == [-2, -2, 0, 0, 2, 2]
    assert [round_half_even(n, 10) for n in (14, 15, 16, 25, -15, -25, -26)] == [
        1,
        2,
        2,
        2,
        -2,
        -2,
        -3,
    ]
    assert round_half_even(0, 7) == 0


minor = st.integers(min_value=-minor_units_max, max_value=minor_units_max)


@settings(max_examples=400, deadline=None)
@given(
    base=st.one_of(st.just(0), minor),
    amount=st.one_of(minor, st.integers(min_value=-10_000, max_value=10_000)),
    digits=st.sampled_from(digits_choices),
    start_offset=st.integers(min_value=0, max_value=(last_day - first_day).days),
    days=st.one_of(st.integers(min_value=-3, max_value=400), st.integers(min_value=1)),
    through_offset=st.integers(min_value=-5, max_value=4_000_000),
)
def test_spread_equals_decimal_recognition(
    base: int, amount: int, digits: int, start_offset: int, days: int, through_offset: int
) -> None:
    start = first_day + timedelta(days=start_offset)
    days = max(min(days, (last_day - start).days), -start_offset)
    through_offset = min(through_offset, (last_day - start).days)
    if start_offset + through_offset < 0:
        through_offset = -start_offset
    through = start + timedelta(days=through_offset)
    segment = segment_of(start, days, base, amount, digits)
    spread = _spread(segment, digits)
    assert spread is not None
    assert spread(through) == decimal_recognised(segment, through, digits)


@settings(max_examples=200, deadline=None)
@given(
    days=st.integers(min_value=2, max_value=40 * 366),
    digits=st.sampled_from(digits_choices),
    data=st.data(),
)
def test_spread_ties(days: int, digits: int, data: st.DataObject) -> None:
    """Amounts and days where amount x elapsed / days is exactly half a minor unit off a whole."""
    elapsed = data.draw(st.integers(min_value=1, max_value=days - 1))
    # amount x elapsed = days x (k + 1/2): amount = days x (2k + 1) / (2 x elapsed) when whole.
    k = data.draw(st.integers(min_value=0, max_value=10**6))
    numerator = days * (2 * k + 1)
    if numerator % (2 * elapsed):
        numerator *= 2 * elapsed  # not a tie then; still a valid case
    amount = numerator // (2 * elapsed) * data.draw(st.sampled_from((1, -1)))
    base = data.draw(st.integers(min_value=-(10**12), max_value=10**12))
    start = date(2026, 1, 1)
    segment = segment_of(start, days, base, amount, digits)
    through = start + timedelta(days=elapsed - 1)
    spread = _spread(segment, digits)
    assert spread is not None
    assert spread(through) == decimal_recognised(segment, through, digits)


@settings(max_examples=150, deadline=None)
@given(
    amount=st.integers(min_value=0, max_value=10**15),
    new_amount=st.integers(min_value=0, max_value=10**15),
    digits=st.sampled_from((0, 2, 3)),
    days=st.integers(min_value=2, max_value=3 * 366),
    data=st.data(),
)
def test_line_with_an_amendment_equals_decimal_recognition(
    amount: int, new_amount: int, digits: int, days: int, data: st.DataObject
) -> None:
    """A signed segment (whole, on integers), an amendment part-way (its base in full precision,
    on Decimals) and a point-in-time segment satisfied later: every day of the line agrees."""
    start = date(2026, 1, 15)
    end = start + timedelta(days=days)
    effective = start + timedelta(days=data.draw(st.integers(min_value=1, max_value=days - 1)))
    first = segment_of(start, days, 0, amount, digits)
    recognised = acc.recognised_in_segment(first, effective - acc.one_day)
    second = {
        **first,
        "seg_start": effective,
        "base": recognised,
        "amount": Decimal(new_amount).scaleb(-digits) - recognised,
    }
    line = {"recognition": "ratable", "segments": [stored(first), stored(second)]}
    by_day = _RecognisedBy(line, digits)
    assert by_day.spreads[0] is not None
    for through in (
        start - acc.one_day,
        start,
        effective - acc.one_day,
        effective,
        effective + timedelta(days=data.draw(st.integers(min_value=0, max_value=days))),
        end - acc.one_day,
        end,
    ):
        segment = first if through < effective else second
        expected = 0 if through < start else decimal_recognised(segment, through, digits)
        assert by_day(through) == expected


@settings(max_examples=400, deadline=None)
@given(
    base=st.decimals(
        min_value=-(10**15), max_value=10**15, allow_nan=False, allow_infinity=False, places=20
    ),
    amount=st.decimals(
        min_value=-(10**15), max_value=10**15, allow_nan=False, allow_infinity=False, places=6
    ),
    digits=st.sampled_from(digits_choices),
    recognition=st.sampled_from(("ratable", "point_in_time")),
    days=st.integers(min_value=-3, max_value=40 * 366),
    satisfied_offset=st.one_of(st.none(), st.integers(min_value=0, max_value=40 * 366)),
    through_offset=st.integers(min_value=-5, max_value=40 * 366 + 5),
)
def test_decimal_segment_equals_decimal_recognition(
    base: Decimal,
    amount: Decimal,
    digits: int,
    recognition: str,
    days: int,
    satisfied_offset: int | None,
    through_offset: int,
) -> None:
    """`_DecimalSegment`, the segments `_Spread` cannot take (an amended line's base in full
    precision, an amount not whole minor units), gives `recognised_in_segment`'s value and its
    rounding, on every kind of segment and day."""
    start = date(2026, 1, 15)
    segment = {
        "seg_start": start,
        "seg_end": start + timedelta(days=days),
        "recognition": recognition,
        "base": base,
        "amount": amount,
        "satisfied_on": None
        if satisfied_offset is None
        else start + timedelta(days=satisfied_offset),
    }
    through = start + timedelta(days=through_offset)
    evaluator = _DecimalSegment(segment, digits)
    assert evaluator.recognised(through) == acc.recognised_in_segment(segment, through)
    assert evaluator(through) == decimal_recognised(segment, through, digits)


def test_point_in_time_segment() -> None:
    segment = segment_of(date(2026, 3, 1), 365, 0, 12_345, 2, recognition="point_in_time")
    assert _spread(segment, 2) is not None
    satisfied = {**segment, "satisfied_on": date(2026, 4, 10)}
    spread = _spread(satisfied, 2)
    assert spread is not None
    assert spread(date(2026, 4, 9)) == 0 == decimal_recognised(satisfied, date(2026, 4, 9), 2)
    assert spread(date(2026, 4, 10)) == 12_345
    assert decimal_recognised(satisfied, date(2026, 4, 10), 2) == 12_345


def test_not_whole_or_too_large_stays_on_decimals() -> None:
    fraction = segment_of(date(2026, 1, 1), 30, 0, 1, 2)
    assert _spread({**fraction, "amount": Decimal("0.005")}, 2) is None
    assert _spread({**fraction, "base": Decimal("1.0000001")}, 2) is None
    assert _spread({**fraction, "amount": Decimal(minor_units_max + 1).scaleb(-2)}, 2) is None


@settings(max_examples=200)
@given(
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2090, 12, 31)),
    days=st.integers(min_value=1, max_value=6 * 366),
    amount=st.integers(min_value=-(10**15), max_value=10**15),
    digits=st.sampled_from(digits_choices),
    recognition=st.sampled_from(("ratable", "point_in_time")),
    whole=st.booleans(),
)
def test_a_new_lines_months_are_its_schedule_and_its_recognition(
    start: date, days: int, amount: int, digits: int, recognition: str, whole: bool
) -> None:
    """`write_schedules` takes a line new on its start (a signature's) the short way: its
    schedule months, by elapsed days, are also its recognised months. The long way (every month
    end through `_RecognisedBy`, against no old line) gives the same, whole minor units or not."""
    segment = segment_of(start, days, 0, amount, digits, recognition)
    if not whole:  # a line in full precision stays on Decimals
        segment["amount"] += Decimal("0.0000001")
    line = {"recognition": recognition, "segments": [stored(segment)]}
    new, nothing = _RecognisedBy(line, digits), _RecognisedBy(None, digits)
    assert (new.spreads[0] is not None) == whole
    months = _fresh_line_months(new, start)
    assert months is not None
    long_way = recognised_months(new, nothing, start)
    assert {month: amount for (_start, month), amount in months.items() if amount} == long_way
    last = start + timedelta(days=days - 1)
    expected_schedule: dict[tuple[date, date], int] = {}
    if recognition == "ratable":  # every month end (or the last day) through the Decimal path
        previous = 0
        for month_start in sorted(
            {start.replace(day=1)}
            | {(start + timedelta(days=n)).replace(day=1) for n in range(0, days, 27)}
            | {last.replace(day=1)}
        ):
            month_end = (month_start + timedelta(days=32)).replace(day=1) - acc.one_day
            current = decimal_recognised(segment, min(month_end, last), digits)
            expected_schedule[(start, month_start)] = current - previous
            previous = current
    assert months == expected_schedule
    # Not new there (or satisfied, or amended): the long way.
    assert _fresh_line_months(new, start + acc.one_day) is None
