"""The gate's fast path (`ledger.compiled`) agrees with pydantic's, or steps aside.

`parse_event` first runs validators compiled from the contract's models and, when they are not
sure (`Bail`), pydantic's validation. The fast path is only sound if it never accepts what pydantic
refuses and never accepts differently. This checks: every valid example goes the fast way and
gives exactly pydantic's `ProposedEvent` (payload instances, their set fields and nested lines
included); thousands of generated mutations of the examples (wrong types, lengths at and past each
limit, control characters, NUL, lone surrogates, odd money and dates, unknown and missing fields)
either bail or give exactly what pydantic gives; the compiler refuses a field it cannot translate;
and the caches of parsed values stay bounded.
"""

from __future__ import annotations

import copy
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from ledger import contract
from ledger.compiled import Bail, compile_validator
from ledger.contract import (
    ProposedEvent,
    _parse_checked,
    _parse_fast,
    parse_event,
)
from tests.ledger.contract_examples import example_event, examples


def _fast_or_none(raw: Any) -> ProposedEvent | None:
    try:
        return _parse_fast(raw)
    except Bail:
        return None


def _fields_sets(value: Any) -> Any:
    """The set fields of a payload and of every model inside it, for comparison."""
    if isinstance(value, BaseModel):
        return (
            type(value).__name__,
            sorted(value.model_fields_set),
            {name: _fields_sets(item) for name, item in value.__dict__.items()},
        )
    if isinstance(value, list):
        return [_fields_sets(item) for item in value]
    return None


def _assert_same(fast: ProposedEvent, checked: ProposedEvent | list[Any]) -> None:
    assert isinstance(checked, ProposedEvent), f"fast accepted what pydantic refuses: {checked}"
    assert fast == checked
    assert fast.payload.model_dump() == checked.payload.model_dump()
    assert _fields_sets(fast.payload) == _fields_sets(checked.payload)
    assert fast.time.utcoffset() == checked.time.utcoffset()


@pytest.mark.parametrize("kind", sorted(examples))
def test_every_valid_example_goes_the_fast_way_to_pydantics_answer(kind: str) -> None:
    raw = example_event(kind, subject="custom/stream", expectedversion=3, traceparent="00-ab")
    for event in (example_event(kind), raw):
        fast = _fast_or_none(event)
        assert fast is not None, f"{kind}: the fast path bailed on a valid event"
        _assert_same(fast, _parse_checked(event))
        assert parse_event(event) == fast


def test_the_fast_path_leaves_the_callers_event_as_it_was() -> None:
    raw = example_event("invoice.issued")
    before = copy.deepcopy(raw)
    accepted = parse_event(raw)
    assert isinstance(accepted, ProposedEvent)
    assert raw == before
    accepted.data["lines"][0]["amount"] = "changed"
    assert raw == before


# --- generated mutations ---------------------------------------------------------------------


class _Str(str):
    __slots__ = ()


_values: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    10**20,
    Decimal("10.5"),
    Decimal("-1"),
    date(2026, 1, 31),
    [],
    {},
    [{}],
    "",
    " ",
    "x",
    _Str("x"),
    "a\nb",
    "a\tb",
    "a\x00b",
    "a\x7fb",
    "a\x1fb",
    "a\ud800b",
    "caf\u00e9",
    "\u00a0",
    "x" * 127,
    "x" * 128,
    "x" * 129,
    "x" * 500,
    "x" * 501,
    "x" * 1024,
    "x" * 1025,
    "x" * 2001,
    "0",
    "00",
    "01",
    "1",
    "1.",
    ".5",
    "1.5",
    "1.50",
    "1.500",
    "1.5000",
    "1.50000",
    "-1.00",
    "+1.00",
    "1e3",
    "NaN",
    " 1.00",
    "1.00\n",
    "999999999999999",
    "1000000000000000",
    "2026-01-31",
    "1899-12-31",
    "1900-01-01",
    "2999-12-31",
    "3000-01-01",
    "2026-02-30",
    "2026-1-31",
    "2026-01-31T00:00:00",
    "2026-01-31\n",
    "2026-01-15T10:00:00Z",
    "2026-01-15t10:00:00z",
    "2026-01-15T10:00:00",
    "2026-01-15T10:00:00+02:00",
    "2026-01-15T10:00:00+0200",
    "2026-01-15T10:00:00.123456Z",
    "2026-01-15 10:00:00Z",
    "0001-01-01T00:30:00+01:00",
    "9999-12-31T23:30:00-02:00",
    "USD",
    "usd",
    "JPY",
    "KWD",
    "XXX",
    "ratable",
    "point_in_time",
    "1.0",
    "1.1",
    "application/json",
    "text/plain",
    "acme",
    "-acme",
    "a" * 64,
    "a" * 65,
    "ledger.invoice.issued.v1",
    "ledger.payment.received.v1",
    "ledger.unknown.v1",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index path inside an event, containers included."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            paths += _paths(item, (*prefix, index))
    return paths


def _mutate(raw: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> None:
    target: Any = raw
    for part in path[:-1]:
        target = target[part]
    last = path[-1]
    if action == "delete" and isinstance(target, dict):
        del target[last]
    elif action == "delete" and isinstance(target, list):
        target.pop(last)
    elif action == "add" and isinstance(target, dict):
        target["unexpected"] = value
    elif action == "repeat" and isinstance(target[last], list) and target[last]:
        target[last] = target[last] * 1001 if len(target[last]) == 1 else target[last][:1]
    else:
        target[last] = value


mutation = st.tuples(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from(["set", "set", "set", "delete", "add", "repeat"]),
    st.sampled_from(_values),
)
# Every optional envelope attribute, so that mutations reach them too.
_full_envelope = {
    "subject": "custom/stream",
    "expectedversion": 0,
    "datacontenttype": "application/json",
    "dataschema": "https://example.com/schema.json",
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "vendor=value",
}


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(examples)), st.booleans(), st.lists(mutation, min_size=1, max_size=3))
def test_a_mutated_event_bails_or_gets_exactly_pydantics_answer(
    kind: str, full: bool, mutations: list[tuple[int, str, Any]]
) -> None:
    raw = example_event(kind, **(_full_envelope if full else {}))
    for choice, action, value in mutations:
        paths = _paths(raw)
        if not paths:
            break
        _mutate(raw, paths[choice % len(paths)], action, copy.deepcopy(value))
    fast = _fast_or_none(copy.deepcopy(raw))
    checked = _parse_checked(copy.deepcopy(raw))
    if fast is not None:
        _assert_same(fast, checked)
    assert parse_event(copy.deepcopy(raw)) == checked


@settings(max_examples=1500, deadline=None)
@given(
    st.sampled_from(sorted(examples)),
    st.text(max_size=140),
    st.sampled_from(["id", "source", "subject", "tenantid", "name", "memo", "description"]),
)
def test_any_text_in_a_text_field_bails_or_gets_pydantics_answer(
    kind: str, text: str, field: str
) -> None:
    raw = example_event(kind)
    if field in ("id", "source", "subject", "tenantid"):
        raw[field] = text
    else:
        for name in list(raw["data"]):
            if name in (field, "customer_id", "vendor", "category", "entry_id"):
                raw["data"][name] = text
    fast = _fast_or_none(copy.deepcopy(raw))
    checked = _parse_checked(copy.deepcopy(raw))
    if fast is not None:
        _assert_same(fast, checked)
    else:
        assert parse_event(copy.deepcopy(raw)) == checked


@pytest.mark.parametrize("count", [1000, 1001])
def test_a_list_at_and_past_its_limit(count: int) -> None:
    raw = example_event("invoice.issued")
    raw["data"]["lines"] = [{"description": "seat", "amount": "1.00"}] * count
    raw["data"]["total"] = f"{count}.00"
    fast = _fast_or_none(copy.deepcopy(raw))
    checked = _parse_checked(copy.deepcopy(raw))
    if count <= contract.lines_count_max:
        assert fast is not None
        _assert_same(fast, checked)
    else:
        assert fast is None
        assert isinstance(checked, list)
        assert [r.field for r in checked] == ["data.lines"]


# --- the compiler and the caches -------------------------------------------------------------


def test_the_compiler_refuses_a_field_it_cannot_translate() -> None:
    class Lax(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        count: float

    class Loose(BaseModel):
        model_config = ConfigDict(extra="ignore", strict=True)
        name: str

    class Defaulted(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: str = Field(default="x")

    class Doubled(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        name: contract.Id = Field(max_length=5)

    class Stripped(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)
        name: str

    for model in (Lax, Loose, Defaulted, Doubled, Stripped):
        with pytest.raises(NotImplementedError):
            compile_validator(model, patterns={}, translations={})


def test_the_caches_of_parsed_values_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contract, "_parsed_cache_max", 8)
    for day in range(1, 29):
        raw = example_event(
            "invoice.written_off", time=f"2026-01-{day:02d}T10:00:00Z", id=f"evt-{day}"
        )
        raw["data"]["date"] = f"2026-02-{day:02d}"
        raw["data"]["amount"] = f"{day}.5"
        assert isinstance(parse_event(raw), ProposedEvent)
    caches = (contract._money_cache, contract._date_cache, contract._time_cache)
    for cache in (*caches, contract._utc_cache):
        assert 0 < len(cache) <= 8
    assert all(0 < len(cache) <= 8 for cache in contract._padded_cache.values())
