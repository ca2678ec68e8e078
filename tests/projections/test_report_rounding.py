"""The SQL functions the reports round with give the digits Python's `decimal` gives.

`ledger_round_half_even(x, digits)` must be `x.quantize(10**-digits, ROUND_HALF_EVEN)` for any
stored value, and `ledger_round_half_even(ledger_spread(amount, elapsed, days), digits)` must be
what `accounting.recognised_in_segment` rounds to for a segment with nothing recognised before it:
Python divides to 28 significant digits, SQL to 30 decimals, and the two must never round apart. Hypothesis
draws the values where they could: ties (a 5 just past the last kept digit, either sign), values
with 28 significant digits, amounts in whole minor units over any term up to 30 years; each batch
is checked in one query against the real PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from ledger.store.postgres import PostgresEventStore
from projections import accounting as acc

digits_choices = (0, 2, 3)
# Terms up to 30 years: the exactness argument needs days < 10^7.
days_max = 30 * 366
amount_minor_max = 10**13
# Each property runs this many random cases against the database (a connection per module).
examples = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
async def conn(database_url: str) -> AsyncIterator[AsyncConnection[TupleRow]]:
    store = await PostgresEventStore.open(database_url)  # runs the read models' migrations
    await store.close()
    async with await AsyncConnection.connect(database_url, autocommit=True) as connection:
        yield connection


def python_text(amount: Decimal) -> str:
    """How Python writes a rounded amount, but for the sign of zero: PostgreSQL has no negative
    zero, and the reports never show one either, since they add rounded values up from +0
    (0 + -0 is 0 in `decimal`)."""
    text = f"{amount:f}"
    return text.removeprefix("-") if amount.is_zero() else text


def ties(digits: int) -> st.SearchStrategy[Decimal]:
    """x.yy5 exactly (a tie at `digits`), either sign, with an even or odd last kept digit."""
    return st.integers(-(10**12), 10**12).map(
        lambda units: (Decimal(units) + Decimal("0.5")).scaleb(-digits)
    )


def long_values() -> st.SearchStrategy[Decimal]:
    """Values with up to 28 significant digits, as recognition carries from one segment to the
    next, including near-ties such as 12.3450000000000000000000001."""
    near_tie = st.tuples(st.integers(-(10**8), 10**8), st.integers(-9, 9)).map(
        lambda parts: (
            Decimal(parts[0]).scaleb(-2) + Decimal("0.005") + Decimal(parts[1]) * Decimal("1E-25")
        )
    )
    plain = st.decimals(
        min_value=Decimal(-(10**9)), max_value=Decimal(10**9), allow_nan=False, places=25
    )
    return st.one_of(near_tie, plain)


@examples
@given(
    digits=st.sampled_from(digits_choices),
    data=st.data(),
)
async def test_round_half_even_is_pythons_quantize(
    conn: AsyncConnection[TupleRow], digits: int, data: st.DataObject
) -> None:
    values = data.draw(
        st.lists(
            st.one_of(ties(digits), long_values(), st.just(Decimal(0))), min_size=1, max_size=50
        )
    )
    cursor = await conn.execute(
        "SELECT ledger_round_half_even(x, %s)::text FROM unnest(%s::numeric[]) AS x",
        [digits, values],
    )
    found = [row[0] for row in await cursor.fetchall()]
    assert found == [python_text(acc.round_money(value, digits)) for value in values]


def part_way() -> st.SearchStrategy[tuple[int, int, int]]:
    """(amount in minor units, days in the term, days elapsed), part-way through the term."""
    amounts = st.one_of(
        st.integers(0, amount_minor_max),
        st.integers(0, 10_000),
        st.sampled_from([1, 5, 15, 25, 35, 365, 366, 3_650_000]),
    )
    return st.tuples(amounts, st.integers(2, days_max)).flatmap(
        lambda pair: st.tuples(st.just(pair[0]), st.just(pair[1]), st.integers(1, pair[1] - 1))
    )


def bigint_edge() -> st.SearchStrategy[tuple[int, int, int]]:
    """The largest amounts the reports give `ledger_spread_minor`: |amount| x days within a
    bigint (`projections.reports` sends larger ones to Python)."""
    return st.integers(2, 400).flatmap(
        lambda days: st.tuples(
            st.integers((2**63 - 1) // days - 10**6, (2**63 - 1) // days),
            st.just(days),
            st.integers(1, days - 1),
        )
    )


def halfway_ties() -> st.SearchStrategy[tuple[int, int, int]]:
    """An odd number of minor units half-way through an even term: exactly x.5 minor units."""
    return st.tuples(st.integers(0, 10**9), st.integers(1, days_max // 2)).map(
        lambda pair: (2 * pair[0] + 1, 2 * pair[1], pair[1])
    )


@examples
@given(
    digits=st.sampled_from(digits_choices),
    data=st.data(),
)
async def test_spread_half_even_is_pythons_recognition(
    conn: AsyncConnection[TupleRow], digits: int, data: st.DataObject
) -> None:
    segments = data.draw(
        st.lists(st.one_of(part_way(), halfway_ties(), bigint_edge()), min_size=1, max_size=50)
    )
    signs = data.draw(st.lists(st.sampled_from([1, -1]), min_size=len(segments)))
    start = date(2026, 1, 1)
    amounts, minors, elapsed_days, term_days, expected = [], [], [], [], []
    for (minor, days, elapsed), sign in zip(segments, signs, strict=False):
        minor *= sign
        minors.append(minor)
        amount = Decimal(minor).scaleb(-digits)
        segment = {
            "seg_start": start,
            "seg_end": start + timedelta(days=days),
            "recognition": "ratable",
            "base": Decimal(0),
            "amount": amount,
        }
        through = start + timedelta(days=elapsed - 1)  # the end of the elapsed-th day
        amounts.append(amount)
        elapsed_days.append(elapsed)
        term_days.append(days)
        expected.append(
            python_text(acc.round_money(acc.recognised_in_segment(segment, through), digits))
        )
    # What the reports compute: integer minor units, shown with the currency's digits.
    cursor = await conn.execute(
        "SELECT ledger_spread_minor(a, e, d) FROM unnest(%s::bigint[], %s::integer[],"
        " %s::integer[]) AS s(a, e, d)",
        [minors, elapsed_days, term_days],
    )
    found = [python_text(Decimal(row[0]).scaleb(-digits)) for row in await cursor.fetchall()]
    assert found == expected
    # The numeric version of migration 0003, kept in the database, agrees.
    cursor = await conn.execute(
        "SELECT ledger_round_half_even(ledger_spread(a, e, d), %s)::text"
        " FROM unnest(%s::numeric[], %s::integer[], %s::integer[]) AS s(a, e, d)",
        [digits, amounts, elapsed_days, term_days],
    )
    assert [row[0] for row in await cursor.fetchall()] == expected
