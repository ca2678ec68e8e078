"""The stateless event contract (`ledger.contract`): what `parse_event` accepts and what it refuses.

It proves three things by feeding `parse_event` / `parse_event_json` plain JSON-shaped events and
comparing the result with exact expectations: (1) a valid example of every v1 type parses to the
normalised form (money padded to the currency's minor digits, nulls dropped, time in UTC, the
default stream); (2) every stateless rejection path answers with exactly the expected
`RejectionCode` at exactly the expected field path (one table, one row per path); (3) the content
hash used for idempotency ignores formatting and `expectedversion` but not content, and
`canonical_json` is byte-for-byte RFC 8785 (checked against `rfc8785` with hypothesis).
"""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.contract import (
    ProposedEvent,
    canonical_json,
    event_bytes_max,
    id_length_max,
    lines_count_max,
    name_length_max,
    parse_event,
    parse_event_json,
    payload_models,
    type_name,
)
from ledger.errors import Rejection, RejectionCode
from tests.ledger.contract_examples import event, example_event, examples

DELETE = object()


def accepted(result: ProposedEvent | list[Rejection]) -> ProposedEvent:
    assert isinstance(result, ProposedEvent), f"rejected: {result}"
    return result


def codes_and_fields(result: ProposedEvent | list[Rejection]) -> list[tuple[RejectionCode, str]]:
    assert isinstance(result, list), f"accepted, expected a rejection: {result}"
    return [(rejection.code, rejection.field) for rejection in result]


def with_data(kind: str, *edits: tuple[tuple[str | int, ...], Any]) -> dict[str, Any]:
    """The example event of `kind` with `data` edited at each path (`DELETE` removes the key)."""
    data = copy.deepcopy(examples[kind].data)
    for path, value in edits:
        target: Any = data
        for part in path[:-1]:
            target = target[part]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return event(kind, data)


def with_envelope(kind: str, **changes: Any) -> dict[str, Any]:
    raw = example_event(kind)
    for name, value in changes.items():
        if value is DELETE:
            del raw[name]
        else:
            raw[name] = value
    return raw


def journal(*lines: dict[str, str]) -> dict[str, Any]:
    return with_data("journal.posted", (("lines",), list(lines)))


# --- every type: the valid example ----------------------------------------------------------


def test_every_v1_type_has_an_example() -> None:
    assert set(examples) == set(payload_models)
    assert len(payload_models) == 14


@pytest.mark.parametrize("kind", sorted(examples))
def test_valid_example_parses_to_normalised_data(kind: str) -> None:
    proposed = accepted(parse_event(example_event(kind, expectedversion=2)))
    assert proposed.kind == kind
    assert proposed.type == type_name(kind)
    assert proposed.tenant_id == "acme"
    assert proposed.event_id == "evt-1"
    assert proposed.data == examples[kind].normalised
    assert proposed.stream_id == examples[kind].stream_id
    assert proposed.expected_version == 2
    assert isinstance(proposed.payload, payload_models[kind])


@pytest.mark.parametrize("kind", sorted(examples))
def test_valid_example_parses_from_json_text(kind: str) -> None:
    text = rfc8785.dumps(example_event(kind))
    assert accepted(parse_event_json(text)).data == examples[kind].normalised
    assert accepted(parse_event_json(text.decode())).data == examples[kind].normalised


@pytest.mark.parametrize(
    ("currency", "amount", "stored"),
    [
        ("USD", "10", "10.00"),
        ("USD", "10.5", "10.50"),
        ("USD", "0", "0.00"),
        ("JPY", "1200", "1200"),
        ("BHD", "1.234", "1.234"),
        ("BHD", "1", "1.000"),
        ("CLF", "1.2345", "1.2345"),
        ("USD", "999999999999999.99", "999999999999999.99"),
    ],
)
def test_money_is_padded_to_the_currency_minor_digits(
    currency: str, amount: str, stored: str
) -> None:
    raw = with_data("invoice.written_off", (("currency",), currency), (("amount",), amount))
    assert accepted(parse_event(raw)).data["amount"] == stored


def test_optional_nulls_are_dropped_from_the_stored_data() -> None:
    raw = with_data(
        "invoice.issued",
        (("contract_id",), None),
        (("lines", 1, "tax_amount"), None),
        (("lines", 1, "line_id"), None),
    )
    data = accepted(parse_event(raw)).data
    assert "contract_id" not in data
    assert data["lines"][1] == {"description": "Setup", "amount": "50.25"}


def test_subject_overrides_the_default_stream() -> None:
    raw = example_event("invoice.issued", subject="invoice/custom")
    assert accepted(parse_event(raw)).stream_id == "invoice/custom"


def test_ids_at_the_length_limit_are_accepted() -> None:
    raw = with_envelope("customer.registered", id="e" * id_length_max)
    assert accepted(parse_event(raw)).event_id == "e" * id_length_max
    raw = with_data("customer.registered", (("name",), "n" * name_length_max))
    assert accepted(parse_event(raw)).data["name"] == "n" * name_length_max


def test_lines_at_the_count_limit_are_accepted() -> None:
    half = lines_count_max // 2
    lines = [{"account": "cash", "debit": "1"}] * half + [{"account": "eq", "credit": "1"}] * half
    assert len(accepted(parse_event(journal(*lines))).data["lines"]) == lines_count_max


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            with_data("contract.signed", (("end_date",), "2026-01-02")), id="end-next-day"
        ),
        pytest.param(
            with_data("contract.signed", (("end_date",), "2126-01-01")), id="term-of-100-years"
        ),
        pytest.param(
            with_data(
                "contract.signed", (("start_date",), "2000-02-29"), (("end_date",), "2100-02-28")
            ),
            id="term-of-100-years-from-29-february",
        ),
        pytest.param(with_data("invoice.issued", (("due_date",), "2026-01-15")), id="due-on-issue"),
        pytest.param(
            with_data("expense.recorded", (("due_date",), "2026-01-31")), id="expense-due-same-day"
        ),
        pytest.param(
            with_data("payment.received", (("allocations", 1, "amount"), "50")),
            id="allocations-equal-payment",
        ),
        pytest.param(with_data("payment.received", (("allocations",), [])), id="no-allocations"),
        pytest.param(with_data("payment.received", (("allocations",), DELETE)), id="unallocated"),
        pytest.param(with_data("expense.recorded", (("due_date",), DELETE)), id="no-due-date"),
        pytest.param(with_envelope("invoice.issued", time="2026-01-15t10:00:00z"), id="lower-t-z"),
    ],
)
def test_boundary_cases_are_accepted(raw: dict[str, Any]) -> None:
    accepted(parse_event(raw))


# --- every stateless rejection path ---------------------------------------------------------

C = RejectionCode
_long_id = "x" * (id_length_max + 1)
_too_many_lines = [{"account": "cash", "debit": "1"}, {"account": "eq", "credit": "1"}] * (
    lines_count_max // 2
) + [{"account": "cash", "debit": "0"}]

rejection_cases = [
    # The request and the envelope.
    pytest.param(b'{"specversion": "1.0",', C.malformed_json, "", id="malformed-json"),
    pytest.param(b"", C.malformed_json, "", id="empty-body"),
    pytest.param(b"[]", C.not_an_object, "", id="array"),
    pytest.param(b'"event"', C.not_an_object, "", id="string"),
    pytest.param(b"null", C.not_an_object, "", id="null"),
    pytest.param(
        with_envelope("invoice.issued", tenantid=DELETE),
        C.missing_field,
        "tenantid",
        id="no-tenant",
    ),
    pytest.param(with_envelope("invoice.issued", id=DELETE), C.missing_field, "id", id="no-id"),
    pytest.param(
        with_envelope("invoice.issued", data=DELETE), C.missing_field, "data", id="no-data"
    ),
    pytest.param(
        with_envelope("invoice.issued", specversion=DELETE),
        C.missing_field,
        "specversion",
        id="no-specversion",
    ),
    pytest.param(
        with_envelope("invoice.issued", colour="red"), C.unknown_field, "colour", id="extra-attr"
    ),
    pytest.param(
        with_envelope("invoice.issued", specversion="0.3"),
        C.invalid_specversion,
        "specversion",
        id="specversion-0.3",
    ),
    pytest.param(
        with_envelope("invoice.issued", specversion=1.0),
        C.invalid_specversion,
        "specversion",
        id="specversion-number",
    ),
    pytest.param(
        with_envelope("invoice.issued", type="ledger.invoice.issued.v2"),
        C.unknown_type,
        "type",
        id="type-v2",
    ),
    pytest.param(
        with_envelope("invoice.issued", type="com.example.thing"),
        C.unknown_type,
        "type",
        id="type-foreign",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid="-acme"),
        C.invalid_tenant,
        "tenantid",
        id="tenant-dash",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid=""),
        C.invalid_tenant,
        "tenantid",
        id="tenant-empty",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid="a" * 65),
        C.invalid_tenant,
        "tenantid",
        id="tenant-65",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid="acme corp"),
        C.invalid_tenant,
        "tenantid",
        id="tenant-space",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid="acme\n"),
        C.invalid_tenant,
        "tenantid",
        id="tenant-newline",
    ),
    pytest.param(
        with_envelope("invoice.issued", tenantid=7),
        C.invalid_tenant,
        "tenantid",
        id="tenant-number",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-01-15T10:00:00"),
        C.invalid_time,
        "time",
        id="time-no-zone",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="yesterday"), C.invalid_time, "time", id="time-garbage"
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-01-15"), C.invalid_time, "time", id="time-date"
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-W03-4T10:00:00Z"),
        C.invalid_time,
        "time",
        id="time-week-date",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="20260115T100000Z"),
        C.invalid_time,
        "time",
        id="time-basic-format",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-01-15T10:00Z"),
        C.invalid_time,
        "time",
        id="time-no-seconds",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-01-15T10:00:00+0200"),
        C.invalid_time,
        "time",
        id="time-offset-no-colon",
    ),
    pytest.param(
        with_envelope("invoice.issued", time="2026-02-30T10:00:00Z"),
        C.invalid_time,
        "time",
        id="time-impossible-day",
    ),
    pytest.param(
        with_envelope("invoice.issued", time=1768471200), C.invalid_time, "time", id="time-number"
    ),
    pytest.param(
        with_envelope("invoice.issued", id=_long_id), C.field_too_long, "id", id="id-too-long"
    ),
    pytest.param(with_envelope("invoice.issued", id=""), C.invalid_value, "id", id="id-empty"),
    pytest.param(
        with_envelope("invoice.issued", expectedversion=-1),
        C.invalid_value,
        "expectedversion",
        id="expectedversion-negative",
    ),
    pytest.param(
        with_envelope("invoice.issued", expectedversion="3"),
        C.invalid_value,
        "expectedversion",
        id="expectedversion-string",
    ),
    pytest.param(
        with_envelope("invoice.issued", data=[]), C.invalid_value, "data", id="data-not-object"
    ),
    *(
        # No UTC form (it raised OverflowError out of the gate).
        pytest.param(with_envelope("invoice.issued", time=time), C.invalid_time, "time", id=name)
        for name, time in (
            ("time-before-year-1-in-utc", "0001-01-01T00:30:00+01:00"),
            ("time-after-year-9999-in-utc", "9999-12-31T23:30:00-02:00"),
            (
                "python-datetime-before-year-1-in-utc",
                datetime(1, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
            ),
        )
    ),
    *(
        # Kept in the stored metadata: JSONB cannot hold NUL (the database refused it, unnamed).
        pytest.param(
            with_envelope("invoice.issued", **{name: "00-a\x00b"}),
            C.invalid_value,
            name,
            id=f"{name}-nul",
        )
        for name in ("dataschema", "traceparent", "tracestate")
    ),
    # The payload's shape.
    pytest.param(
        with_data("invoice.issued", (("total",), DELETE)),
        C.missing_field,
        "data.total",
        id="no-total",
    ),
    pytest.param(
        with_data("invoice.issued", (("lines", 0, "amount"), DELETE)),
        C.missing_field,
        "data.lines[0].amount",
        id="no-line-amount",
    ),
    pytest.param(
        with_data("payment.received", (("allocations", 1, "invoice_id"), DELETE)),
        C.missing_field,
        "data.allocations[1].invoice_id",
        id="no-allocation-invoice",
    ),
    pytest.param(
        with_data("invoice.issued", (("colour",), "red")),
        C.unknown_field,
        "data.colour",
        id="extra-field",
    ),
    pytest.param(
        with_data("contract.signed", (("lines", 1, "colour"), "red")),
        C.unknown_field,
        "data.lines[1].colour",
        id="extra-line-field",
    ),
    pytest.param(
        with_data("contract.signed", (("lines", 0, "recognition"), "monthly")),
        C.invalid_value,
        "data.lines[0].recognition",
        id="recognition-unknown",
    ),
    pytest.param(
        with_data("contract.signed", (("lines", 0, "recurring"), "true")),
        C.invalid_value,
        "data.lines[0].recurring",
        id="recurring-string",
    ),
    pytest.param(
        with_data("invoice.issued", (("lines",), [])),
        C.invalid_value,
        "data.lines",
        id="no-lines",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "2026-02-30")),
        C.invalid_date,
        "data.issue_date",
        id="date-impossible",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "2025-02-29")),
        C.invalid_date,
        "data.issue_date",
        id="date-not-leap-year",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "15/01/2026")),
        C.invalid_date,
        "data.issue_date",
        id="date-day-first",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "2026-1-5")),
        C.invalid_date,
        "data.issue_date",
        id="date-short",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "20260115")),
        C.invalid_date,
        "data.issue_date",
        id="date-basic",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "2026-01-15T00:00:00Z")),
        C.invalid_date,
        "data.issue_date",
        id="date-with-time",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), "2026-01-15\n")),
        C.invalid_date,
        "data.issue_date",
        id="date-newline",
    ),
    pytest.param(
        with_data("invoice.issued", (("issue_date",), 20260115)),
        C.invalid_date,
        "data.issue_date",
        id="date-number",
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), 10)),
        C.invalid_amount,
        "data.amount",
        id="money-int",
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), 10.5)),
        C.invalid_amount,
        "data.amount",
        id="money-float",
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), True)),
        C.invalid_amount,
        "data.amount",
        id="money-bool",
    ),
    pytest.param(
        with_data("invoice.issued", (("lines", 1, "amount"), 50.25)),
        C.invalid_amount,
        "data.lines[1].amount",
        id="money-float-nested",
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), "-10.00")),
        C.negative_amount,
        "data.amount",
        id="money-negative",
    ),
    pytest.param(
        with_data("payment.received", (("allocations", 0, "amount"), "-1")),
        C.negative_amount,
        "data.allocations[0].amount",
        id="money-negative-nested",
    ),
    *(
        pytest.param(
            with_data("invoice.written_off", (("amount",), text)),
            C.invalid_amount,
            "data.amount",
            id=f"money-{label}",
        )
        for label, text in [
            ("exponent", "1e3"),
            ("exponent-upper", "1E+2"),
            ("leading-space", " 10"),
            ("trailing-space", "10 "),
            ("inner-space", "1 000"),
            ("newline", "10\n"),
            ("nan", "NaN"),
            ("infinity", "Infinity"),
            ("empty", ""),
            ("trailing-dot", "10."),
            ("leading-dot", ".5"),
            ("plus", "+10"),
            ("leading-zero", "010"),
            ("comma", "1,000.00"),
            ("hex", "0x10"),
            ("sixteen-digits", "1" + "0" * 15),
        ]
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), "10.001")),
        C.amount_too_many_digits,
        "data.amount",
        id="usd-3-digits",
    ),
    pytest.param(
        with_data("invoice.written_off", (("amount",), "10.12345")),
        C.amount_too_many_digits,
        "data.amount",
        id="usd-5-digits",
    ),
    pytest.param(
        with_data("payment.refunded", (("amount",), "1200.5")),
        C.amount_too_many_digits,
        "data.amount",
        id="jpy-1-digit",
    ),
    pytest.param(
        with_data("payment.refunded", (("amount",), "1200.00")),
        C.amount_too_many_digits,
        "data.amount",
        id="jpy-2-digits",
    ),
    pytest.param(
        with_data("credit_note.issued", (("amount",), "1.2345")),
        C.amount_too_many_digits,
        "data.amount",
        id="bhd-4-digits",
    ),
    pytest.param(
        with_data("payment.received", (("allocations", 1, "amount"), "49.901")),
        C.amount_too_many_digits,
        "data.allocations[1].amount",
        id="usd-3-digits-nested",
    ),
    *(
        pytest.param(
            with_data("invoice.written_off", (("currency",), currency)),
            C.unknown_currency,
            "data.currency",
            id=f"currency-{currency}",
        )
        for currency in ["XYZ", "usd", "US", "USDX", 840]
    ),
    pytest.param(
        with_data("invoice.written_off", (("currency",), DELETE)),
        C.missing_field,
        "data.currency",
        id="currency-missing",
    ),
    pytest.param(
        with_data("invoice.issued", (("invoice_id",), _long_id)),
        C.field_too_long,
        "data.invoice_id",
        id="payload-id-too-long",
    ),
    pytest.param(
        with_data("customer.registered", (("name",), "n" * (name_length_max + 1))),
        C.field_too_long,
        "data.name",
        id="name-too-long",
    ),
    pytest.param(
        with_data("payment.received", (("allocations", 0, "invoice_id"), _long_id)),
        C.field_too_long,
        "data.allocations[0].invoice_id",
        id="nested-id-too-long",
    ),
    pytest.param(
        journal(*_too_many_lines), C.too_many_items, "data.lines", id="too-many-journal-lines"
    ),
    pytest.param(
        with_data(
            "invoice.issued",
            (("lines",), [{"description": "x", "amount": "1"}] * (lines_count_max + 1)),
        ),
        C.too_many_items,
        "data.lines",
        id="too-many-invoice-lines",
    ),
    # Rules within one event.
    pytest.param(
        with_data("contract.signed", (("end_date",), "2026-01-01")),
        C.end_date_not_after_start_date,
        "data.end_date",
        id="end-equals-start",
    ),
    pytest.param(
        with_data("contract.signed", (("end_date",), "2025-12-31")),
        C.end_date_not_after_start_date,
        "data.end_date",
        id="end-before-start",
    ),
    pytest.param(
        with_data("contract.signed", (("end_date",), "2126-01-02")),
        C.contract_term_too_long,
        "data.end_date",
        id="term-over-100-years",
    ),
    pytest.param(
        with_data(
            "contract.signed", (("start_date",), "2000-02-29"), (("end_date",), "2100-03-01")
        ),
        C.contract_term_too_long,
        "data.end_date",
        id="term-over-100-years-from-29-february",
    ),
    pytest.param(
        with_data("invoice.issued", (("due_date",), "2026-01-14")),
        C.due_date_before_issue_date,
        "data.due_date",
        id="invoice-due-before-issue",
    ),
    pytest.param(
        with_data("expense.recorded", (("due_date",), "2026-01-30")),
        C.due_date_before_issue_date,
        "data.due_date",
        id="expense-due-before-incurred",
    ),
    pytest.param(
        with_data("invoice.issued", (("total",), "150.25")),
        C.total_mismatch,
        "data.total",
        id="total-without-taxes",
    ),
    pytest.param(
        with_data("invoice.issued", (("total",), "158.76")),
        C.total_mismatch,
        "data.total",
        id="total-off-by-a-cent",
    ),
    pytest.param(
        with_data("contract.signed", (("lines", 1, "line_id"), "L1")),
        C.duplicate_line_id,
        "data.lines[1].line_id",
        id="duplicate-line-signed",
    ),
    pytest.param(
        with_data("contract.amended", (("lines", 1, "line_id"), "L1")),
        C.duplicate_line_id,
        "data.lines[1].line_id",
        id="duplicate-line-amended",
    ),
    pytest.param(
        with_data(
            "payment.received",
            (("allocations", 1, "invoice_id"), "INV-1"),
            (("allocations", 1, "amount"), "10"),
        ),
        C.duplicate_allocation,
        "data.allocations[1].invoice_id",
        id="duplicate-allocation",
    ),
    pytest.param(
        with_data("payment.received", (("allocations", 1, "amount"), "50.01")),
        C.allocations_exceed_payment,
        "data.allocations",
        id="allocations-exceed",
    ),
    pytest.param(
        journal({"account": "cash", "debit": "5", "credit": "5"}, {"account": "eq", "credit": "0"}),
        C.journal_line_needs_one_side,
        "data.lines[0]",
        id="journal-both-sides",
    ),
    pytest.param(
        journal(
            {"account": "cash", "debit": "5"}, {"account": "eq"}, {"account": "x", "credit": "5"}
        ),
        C.journal_line_needs_one_side,
        "data.lines[1]",
        id="journal-neither-side",
    ),
    pytest.param(
        journal({"account": "cash", "debit": "5"}, {"account": "eq", "credit": "4.99"}),
        C.journal_unbalanced,
        "data.lines",
        id="journal-unbalanced",
    ),
    pytest.param(
        journal({"account": "cash", "debit": "5"}),
        C.invalid_value,
        "data.lines",
        id="journal-one-line",
    ),
]


@pytest.mark.parametrize(("raw", "code", "field"), rejection_cases)
def test_rejection_names_the_code_and_the_field(
    raw: dict[str, Any] | bytes, code: RejectionCode, field: str
) -> None:
    result = parse_event_json(raw) if isinstance(raw, bytes) else parse_event(raw)
    assert codes_and_fields(result) == [(code, field)]
    assert isinstance(result, list)
    assert result[0].message, "a rejection says why in words"


@pytest.mark.parametrize("raw", [None, [], "event", 1])
def test_not_an_object_when_already_decoded(raw: Any) -> None:
    assert codes_and_fields(parse_event(raw)) == [(C.not_an_object, "")]


def test_every_bad_amount_is_reported_not_just_the_first() -> None:
    raw = with_data(
        "invoice.issued",
        (("lines", 0, "amount"), "100.001"),
        (("lines", 1, "tax_amount"), "0.001"),
        (("total",), "158.75"),
    )
    assert sorted(codes_and_fields(parse_event(raw))) == [
        (C.amount_too_many_digits, "data.lines[0].amount"),
        (C.amount_too_many_digits, "data.lines[1].tax_amount"),
    ]


@pytest.mark.parametrize("kind", sorted(examples))
def test_every_required_payload_field_is_named_when_missing(kind: str) -> None:
    model = payload_models[kind]
    required = [name for name, info in model.model_fields.items() if info.is_required()]
    assert required
    for name in required:
        raw = with_data(kind, ((name,), DELETE))
        assert codes_and_fields(parse_event(raw)) == [(C.missing_field, f"data.{name}")], name


@pytest.mark.parametrize("kind", sorted(examples))
def test_every_payload_refuses_an_unknown_field(kind: str) -> None:
    raw = with_data(kind, (("note",), "hello"))
    assert codes_and_fields(parse_event(raw)) == [(C.unknown_field, "data.note")]


# --- Python callers' values ------------------------------------------------------------------


def test_a_python_callers_decimal_is_money_as_its_string() -> None:
    """`LedgerService.append` takes Python dicts: a `Decimal` amount is the decimal string it
    stands for, padded and hashed the same, and refused for the same reasons (it once raised
    AttributeError out of the gate)."""
    as_text = accepted(parse_event(with_data("invoice.written_off", (("amount",), "10.5"))))
    as_decimal = accepted(
        parse_event(with_data("invoice.written_off", (("amount",), Decimal("10.5"))))
    )
    exponent = accepted(
        parse_event(with_data("invoice.written_off", (("amount",), Decimal("1.05E+1"))))
    )
    assert as_decimal.data == as_text.data == exponent.data
    assert as_decimal.data["amount"] == "10.50"
    assert as_decimal.content_hash == as_text.content_hash == exponent.content_hash
    line = with_data("invoice.issued", (("lines", 0, "amount"), Decimal("100.0")))
    assert accepted(parse_event(line)).data["lines"][0]["amount"] == "100.00"
    for value, code in [
        (Decimal("-5"), C.negative_amount),
        (Decimal("NaN"), C.invalid_amount),
        (Decimal("Infinity"), C.invalid_amount),
        (Decimal("10.001"), C.amount_too_many_digits),
        (Decimal("1E+15"), C.invalid_amount),
    ]:
        raw = with_data("invoice.written_off", (("amount",), value))
        assert codes_and_fields(parse_event(raw)) == [(code, "data.amount")], value


def test_a_python_callers_date_is_stored_as_its_iso_text() -> None:
    as_text = accepted(parse_event(with_data("invoice.written_off", (("date",), "2026-06-30"))))
    as_date = accepted(
        parse_event(with_data("invoice.written_off", (("date",), date(2026, 6, 30))))
    )
    assert as_date.data == as_text.data
    assert as_date.data["date"] == "2026-06-30"
    assert as_date.content_hash == as_text.content_hash
    assert as_date.payload == as_text.payload


@pytest.mark.parametrize(("character", "accepted_too"), [("x", True), ("\u20ac", False)])
def test_an_event_over_event_bytes_max_is_refused_whole(character: str, accepted_too: bool) -> None:
    """Every field within its own limit, together over the event's: 1,000 lines of 500
    characters is ~0.6 MB in ASCII and ~1.6 MB in three-byte characters."""
    lines = [
        {"description": character * name_length_max, "amount": "1.00"}
        for _ in range(lines_count_max)
    ]
    raw = with_data("invoice.issued", (("lines",), lines), (("total",), f"{lines_count_max}.00"))
    result = parse_event(raw)
    if accepted_too:
        assert len(canonical_json(accepted(result).data)) < event_bytes_max
        return
    assert codes_and_fields(result) == [(C.event_too_large, "data")]
    assert isinstance(result, list) and f"{event_bytes_max:,}" in result[0].message


# --- the content hash and the time -----------------------------------------------------------


def content_hash(raw: dict[str, Any]) -> str:
    return accepted(parse_event(raw)).content_hash


def test_content_hash_ignores_money_formatting() -> None:
    padded = with_data("invoice.written_off", (("amount",), "10.00"))
    short = with_data("invoice.written_off", (("amount",), "10"))
    half = with_data("invoice.written_off", (("amount",), "10.0"))
    assert content_hash(padded) == content_hash(short) == content_hash(half)


def test_content_hash_ignores_expected_version_and_key_order() -> None:
    plain = example_event("invoice.issued")
    versioned = example_event("invoice.issued", expectedversion=7)
    reordered = dict(reversed(list(plain.items())))
    reordered["data"] = dict(reversed(list(plain["data"].items())))
    assert content_hash(plain) == content_hash(versioned) == content_hash(reordered)


def test_content_hash_ignores_the_time_zone_of_the_same_instant() -> None:
    utc = example_event("invoice.issued", time="2026-01-15T10:00:00Z")
    offset = example_event("invoice.issued", time="2026-01-15T12:00:00+02:00")
    assert content_hash(utc) == content_hash(offset)


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param(with_data("invoice.written_off", (("amount",), "10.01")), id="amount"),
        pytest.param(with_data("invoice.written_off", (("date",), "2026-07-01")), id="date"),
        pytest.param(with_data("invoice.written_off", (("currency",), "EUR")), id="currency"),
        pytest.param(with_envelope("invoice.written_off", id="evt-2"), id="event-id"),
        pytest.param(with_envelope("invoice.written_off", tenantid="other"), id="tenant"),
        pytest.param(with_envelope("invoice.written_off", source="elsewhere"), id="source"),
        pytest.param(with_envelope("invoice.written_off", time="2026-01-15T10:00:01Z"), id="time"),
        pytest.param(with_envelope("invoice.written_off", subject="invoice/other"), id="subject"),
    ],
)
def test_content_hash_changes_with_content(changed: dict[str, Any]) -> None:
    assert content_hash(changed) != content_hash(example_event("invoice.written_off"))


@pytest.mark.parametrize(
    ("time", "utc"),
    [
        ("2026-01-15T12:00:00+02:00", datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)),
        ("2026-01-15T00:30:00-05:00", datetime(2026, 1, 15, 5, 30, 0, tzinfo=UTC)),
        ("2026-01-15T10:00:00.250Z", datetime(2026, 1, 15, 10, 0, 0, 250000, tzinfo=UTC)),
        ("2026-01-15t10:00:00z", datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)),
    ],
)
def test_time_is_normalised_to_utc(time: str, utc: datetime) -> None:
    proposed = accepted(parse_event(example_event("customer.registered", time=time)))
    assert proposed.time == utc
    assert proposed.time.utcoffset() == timedelta(0)


# --- canonical JSON is RFC 8785 --------------------------------------------------------------

# RFC 8785 numbers are IEEE doubles: the integers it accepts are the "safe" ones, |n| < 2^53.
safe_integer_max = 2**53 - 1
_ascii_keys = st.text(alphabet=st.characters(max_codepoint=127), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-safe_integer_max, max_value=safe_integer_max)
    | st.text(alphabet=st.characters(codec="utf-8")),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(_ascii_keys, children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=500)
@given(json_values)
def test_canonical_json_is_rfc8785(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@pytest.mark.parametrize(
    "text", ["\x00", "\x1f", "\x7f", "\u2028", "\ufeff", '"\\/', "\U0001f600", "é", "\b\f\n\r\t"]
)
def test_canonical_json_escapes_like_rfc8785(text: str) -> None:
    value: Any = {"b": text, "a": [text, {"z": 1, "A": None}]}
    assert canonical_json(value) == rfc8785.dumps(value)
